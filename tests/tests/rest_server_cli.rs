//! `borgstore-server-rest` as a drop-in (issue 4 point 3): socket activation through
//! Debian's `systemd-socket-activate`, `FILE:` backends relative to the working directory
//! and with `~`, `--stdio` framing and exit, and clear startup errors.

use borgstore_tests::daemon::binary;
use borgstore_tests::rest::{request, wait_port, Impl, RestServer};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const ACCEPT: &str = "Accept: application/vnd.x.borgstore.rest.v1";

fn unix_request(sock: &std::path::Path, req: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn socket_activation_with_systemd_socket_activate() {
    let activate = "/usr/bin/systemd-socket-activate";
    assert!(
        std::path::Path::new(activate).exists(),
        "systemd-socket-activate is missing: apt-get install systemd (tests/run installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("rest.sock");
    let backend = format!("file://{}/store", dir.path().display());
    let mut child = Command::new(activate)
        .arg("-l")
        .arg(&sock)
        .arg(binary("borgstore-server-rest"))
        .args(["--socket-activation", "--backend", &backend])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // The first connection starts the server, which adopts the listening socket.
    let created = unix_request(
        &sock,
        &format!("POST /?cmd=create HTTP/1.1\r\nHost: x\r\n{ACCEPT}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
    );
    assert!(created.starts_with("HTTP/1.1 200"), "{created}");
    let stored = unix_request(
        &sock,
        &format!(
            "POST /config/x HTTP/1.1\r\nHost: x\r\n{ACCEPT}\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
        ),
    );
    assert!(stored.starts_with("HTTP/1.1 200"), "{stored}");
    assert_eq!(std::fs::read(dir.path().join("store/config/x")).unwrap(), b"hello");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn file_backends_are_relative_to_the_working_directory_or_home() {
    let cwd = tempfile::tempdir().unwrap();
    let s = RestServer::start_with_backend(Impl::Ours, cwd, "FILE:repos/../repos/one", &[]);
    assert_eq!(request(s.port, "POST", "/?cmd=create", None, &[], b"").status, 200);
    assert!(s.dir.path().join("repos/one").is_dir());

    let home = tempfile::tempdir().unwrap();
    let port = borgstore_tests::rest::free_port();
    let log = home.path().join("log");
    let mut child = Command::new(binary("borgstore-server-rest"))
        .args(["--port", &port.to_string(), "--backend", "FILE:~/backups/repo"])
        .env("HOME", home.path())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_port(port, "borgstore-server-rest", &log);
    assert_eq!(request(port, "POST", "/?cmd=create", None, &[], b"").status, 200);
    assert!(home.path().join("backups/repo").is_dir());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn stdio_speaks_only_http_on_stdout_and_exits_zero_at_eof() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary("borgstore-server-rest"))
        .args(["--stdio", "--backend", &format!("FILE:{}/store", dir.path().display())])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Three pipelined requests, the way the Python stdio transport sends them (no Host).
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(
            format!(
                "POST /?cmd=create HTTP/1.1\r\n{ACCEPT}\r\nContent-Length: 0\r\n\r\n\
                 POST /config/x HTTP/1.1\r\n{ACCEPT}\r\nContent-Length: 3\r\n\r\nabc\
                 GET /config/x HTTP/1.1\r\n{ACCEPT}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{stdout}");
    assert!(stdout.starts_with("HTTP/1.1 200 OK\r\n") && stdout.ends_with("\r\n\r\nabc"), "{stdout}");
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty(), "logs go to stderr");
}

#[test]
fn bad_flags_are_clear_startup_errors() {
    for (args, needle) in [
        (vec!["--backend", "file:///tmp/x", "--permissions", "{not json"], "invalid --permissions"),
        (vec!["--backend", "sftp://u@h/p", "--quota", "10"], "--quota only works with file:"),
        (vec!["--backend", "ftp://nowhere/x"], "ftp"),
        (vec!["--backend", "file:///tmp/x", "--permissions", r#"{"": "xyz"}"#], "letters"),
    ] {
        let out = Command::new(binary("borgstore-server-rest")).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
