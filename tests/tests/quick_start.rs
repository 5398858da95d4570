//! The quick start of README.md: `borgstored --rest 127.0.0.1:PORT` with nothing else
//! configured serves the default store to borg 2 over REST, with credentials made on the
//! first start (kept beside the store, mode 0600, the same on the next start), and prints
//! the exact `borg -r http://…` line to use. Run as an ordinary user (the second test
//! user), whose data and runtime directories are in a temp directory.

use borgstore_tests::daemon::binary;
use borgstore_tests::python::{python, Version};
use borgstore_tests::rest::{free_port, request, wait_port};
use borgstore_tests::users::{as_user, second_user};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(home: &Path, port: u16, log: &Path) -> Child {
    let logfile = std::fs::File::create(log).unwrap();
    let mut cmd = Command::new(binary("borgstored"));
    cmd.args(["--rest", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logfile);
    as_user(&mut cmd, second_user()).spawn().expect("start borgstored")
}

/// The `borg -r URL repo-create` line the daemon printed.
fn printed_url(log: &Path) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("borg -r ") && l.contains("repo-create")) {
            let url = line.split_whitespace().nth(2).unwrap().to_string();
            return (url, text);
        }
        assert!(Instant::now() < deadline, "no borg line printed; log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "borgstored exited with {status:?}");
}

#[test]
fn borgstored_rest_alone_serves_the_default_store_to_borg_with_made_credentials() {
    let t2 = second_user();
    let home = tempfile::tempdir().unwrap();
    for d in ["", "data", "run"] {
        let p = home.path().join(d);
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(t2.uid), Some(t2.gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let port = free_port();
    let log = home.path().join("first.log");
    let daemon = start(home.path(), port, &log);
    wait_port(port, "borgstored REST", &log);
    let (url, text) = printed_url(&log);
    assert!(text.contains("credentials made now"), "{text}");
    assert!(url.starts_with("http://borg:") && url.ends_with(&format!("@127.0.0.1:{port}/default/")), "{url}");

    let creds = home.path().join("data/borgstore/default.rest-credentials");
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the credentials are for the user alone");
    let password = std::fs::read_to_string(&creds).unwrap().trim().strip_prefix("borg:").unwrap().to_string();
    assert!(password.len() >= 20 && url.contains(&password));

    // The line works with the real client; without the credentials, nothing does.
    let script = format!(
        r#"
from borgstore.store import Store
s = Store(url="{url}", config={{"data/": {{"levels": [2]}}, "": {{"levels": [0]}}}})
with s:
    s.store("config/hello", b"quick start")
    assert s.load("config/hello") == b"quick start"
print("ok")
"#
    );
    let out = Command::new(python(Version::V070)).arg("-c").arg(&script).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(request(port, "GET", "/default/config/hello", None, &[], b"").status, 401);
    assert!(home.path().join("data/borgstore/default/config/hello").is_file(), "the implicit store holds it");
    stop(daemon);

    // The next start keeps the credentials.
    let log2 = home.path().join("second.log");
    let daemon = start(home.path(), port, &log2);
    wait_port(port, "borgstored REST", &log2);
    let (again, text) = printed_url(&log2);
    assert_eq!(again, url, "the same credentials on the next start");
    assert!(text.contains("credentials kept in"), "{text}");
    stop(daemon);

    // Flags for the default store still decide: public on TCP means no credentials made.
    let log3 = home.path().join("third.log");
    let mut cmd = Command::new(binary("borgstored"));
    cmd.args(["--rest", &format!("127.0.0.1:{port}"), "--public-on", "default=rest"])
        .env_clear()
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .stderr(std::fs::File::create(&log3).unwrap());
    let daemon = as_user(&mut cmd, t2).spawn().unwrap();
    wait_port(port, "borgstored REST", &log3);
    assert_eq!(request(port, "GET", "/default/config/hello", None, &[], b"").body, b"quick start");
    stop(daemon);
    assert!(!std::fs::read_to_string(&log3).unwrap().contains("borg -r"), "no borg line without credentials");
}
