//! Many REST users per store, their profiles, SIGHUP reloads and the audit log (issue
//! 14, points 2, 4, 5 and 7), against the real `borgstored` on REST over TCP:
//!
//! - two REST users from an htpasswd file written by Apache's own `htpasswd -B`: the
//!   backup client (no delete, quarantined) and the admin (everything); a wrong
//!   password and an unknown user get the same answer;
//! - SIGHUP under load: the htpasswd file and the rules change while a client keeps a
//!   connection busy; the new users and rules apply, no request of the busy client
//!   fails;
//! - the audit log: every call that changes the store, with its principal and door,
//!   never a value or a password; a daemon killed with SIGKILL while it writes leaves
//!   only whole lines, and the next start goes on appending;
//! - `/-/metrics` counts per principal, labelled by the rules only.

use borgstore_ipc::audit::AuditLine;
use borgstore_tests::daemon::Daemon;
use borgstore_tests::rest::{free_port, htpasswd, request, wait_port, Response};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BACKUP: (&str, &str) = ("backup", "backup-pw");
const ADMIN: (&str, &str) = ("admin", "admin-pw");
const CAROL: (&str, &str) = ("carol", "carol-pw");
const VALUE: &[u8] = b"the value itself must never reach the audit log";

fn config(root: &Path, port: u16, admin_rule: &str) -> String {
    format!(
        r#"
rest = "127.0.0.1:{port}"
rest_metrics = true
state_dir = "{root}/state"

[stores.main]
url = "file://{root}/main"
create = true
htpasswd = "{root}/users.htpasswd"
quarantine_days = 7
audit = "{root}/audit/main.jsonl"

[[stores.main.rules]]
rest_user = "backup"
permissions = "no-delete"

[[stores.main.rules]]
{admin_rule}
"#,
        root = root.display()
    )
}

fn start(root: &Path, port: u16, admin_rule: &str) -> Daemon {
    std::fs::write(root.join("borgstored.toml"), config(root, port, admin_rule)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = root.join("borgstored.toml");
    let d = Daemon::start_in(dir, &["--config", cfg.to_str().unwrap()], &[]);
    wait_port(port, "borgstored REST", &d.log);
    d
}

fn put(port: u16, who: (&str, &str), name: &str, body: &[u8]) -> Response {
    request(port, "POST", &format!("/main/{name}"), Some(who), &[], body)
}

fn del(port: u16, who: (&str, &str), name: &str) -> Response {
    request(port, "DELETE", &format!("/main/{name}"), Some(who), &[], b"")
}

fn get(port: u16, who: (&str, &str), name: &str) -> Response {
    request(port, "GET", &format!("/main/{name}"), Some(who), &[], b"")
}

#[track_caller]
fn status(r: &Response, want: u16, what: &str) {
    assert_eq!(r.status, want, "{what}: {} {:?}", r.status, r.text());
}

fn audit_lines(path: &Path) -> Vec<AuditLine> {
    let text = std::fs::read(path).unwrap_or_default();
    assert!(text.is_empty() || text.ends_with(b"\n"), "the audit log ends in a torn line");
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| AuditLine::parse(l).unwrap_or_else(|| panic!("not an audit line: {:?}", String::from_utf8_lossy(l))))
        .collect()
}

#[test]
fn rest_users_from_htpasswd_get_their_rules_and_the_audit_log_records_them() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    htpasswd(&root.join("users.htpasswd"), &[BACKUP, ADMIN]);
    let port = free_port();
    let mut d = start(root, port, "rest_user = \"admin\"");
    let main = root.join("main");

    // The backup client adds, reads, cannot overwrite; its delete is quarantined.
    status(&put(port, BACKUP, "data/0001", VALUE), 200, "backup stores");
    status(&get(port, BACKUP, "data/0001"), 200, "backup loads");
    status(&put(port, BACKUP, "data/0001", b"other"), 403, "backup overwrites");
    status(&del(port, BACKUP, "data/0001"), 200, "backup deletes (quarantined)");
    assert!(main.join("data/0001.del").exists() && !main.join("data/0001").exists());
    status(&del(port, BACKUP, "data/0001.del"), 200, "backup deletes the quarantined item (it stays)");
    assert!(main.join("data/0001.del").exists() && !main.join("data/0001.del.del").exists());
    // The admin deletes for good.
    status(&del(port, ADMIN, "data/0001.del"), 200, "admin deletes the quarantined item");
    assert!(!main.join("data/0001.del").exists());

    // A huge overwrite the profile refuses is answered from its head: the body is not
    // waited for (only 5 of 64 MiB are sent).
    {
        use base64::Engine;
        use std::io::{Read, Write};
        status(&put(port, ADMIN, "data/huge", b"small"), 200, "admin stores");
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", BACKUP.0, BACKUP.1));
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "POST /main/data/huge HTTP/1.1\r\nHost: x\r\nAccept: {}\r\nAuthorization: Basic {token}\r\n\
             Content-Length: {}\r\n\r\nhello",
            borgstore_tests::rest::ACCEPT,
            64 << 20
        );
        sock.write_all(head.as_bytes()).unwrap();
        let mut answer = [0u8; 12];
        sock.read_exact(&mut answer).expect("an answer before the body");
        assert_eq!(&answer, b"HTTP/1.1 403", "{:?}", String::from_utf8_lossy(&answer));
        assert_eq!(std::fs::read(main.join("data/huge")).unwrap(), b"small");
    }

    // A wrong password and an unknown user look the same.
    let wrong = get(port, ("backup", "nope"), "data/");
    let unknown = get(port, ("mallory", "backup-pw"), "data/");
    status(&wrong, 401, "wrong password");
    status(&unknown, 401, "unknown user");
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.header("WWW-Authenticate"), unknown.header("WWW-Authenticate"));

    // Per principal in /-/metrics, labelled by the rules.
    let metrics = request(port, "GET", "/-/metrics", None, &[], b"").text();
    assert!(metrics.contains("borgstore_principal_calls{store=\"main\",principal=\"rest:backup\"}"), "{metrics}");
    assert!(
        metrics.contains("borgstore_principal_refused_calls{store=\"main\",principal=\"rest:backup\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("mallory"), "{metrics}");

    // The audit log: the calls that changed (or tried to change) the store.
    let audit = root.join("audit/main.jsonl");
    let want = |l: &AuditLine, op: &str, who: &str, ok: bool| {
        l.op == op && l.principal == who && l.door == "rest" && l.is_ok() == ok
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = audit_lines(&audit);
        let found = [
            lines.iter().any(|l| want(l, "store", "REST user backup", true) && l.size == Some(VALUE.len() as u64)),
            lines.iter().any(|l| want(l, "store", "REST user backup", false)),
            lines.iter().any(|l| want(l, "quarantine", "REST user backup", true)),
            lines.iter().any(|l| want(l, "quarantine", "REST user backup", true) && l.names == ["data/0001.del"]),
            lines.iter().any(|l| want(l, "delete", "REST user admin", true) && l.names == ["data/0001.del"]),
        ];
        if found.iter().all(|f| *f) {
            assert!(lines.iter().all(|l| l.store == "main"));
            assert!(!lines.iter().any(|l| l.op == "load"), "reads are not audited");
            break;
        }
        assert!(Instant::now() < deadline, "audit log incomplete ({found:?}):\n{lines:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = String::from_utf8(std::fs::read(&audit).unwrap()).unwrap();
    for secret in ["the value itself", "backup-pw", "admin-pw", "nope"] {
        assert!(!text.contains(secret), "the audit log holds {secret:?}");
    }

    // SIGHUP under load: the admin keeps a connection busy while the users and rules
    // change; carol replaces backup, and the admin becomes read-only.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        std::thread::spawn(move || {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", ADMIN.0, ADMIN.1));
            let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let req = format!(
                    "GET /main/data/ HTTP/1.1\r\nHost: x\r\nAccept: {}\r\nAuthorization: Basic {token}\r\n\r\n",
                    borgstore_tests::rest::ACCEPT
                );
                match keep_alive_get(&mut sock, req.as_bytes()) {
                    Some(200) => served.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("busy client: request {} got {other:?}", served.load(Ordering::Relaxed));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    let busy = |n: u64| {
        let start = served.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(20);
        while served.load(Ordering::Relaxed) < start + n {
            assert!(Instant::now() < deadline, "the busy client stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    busy(20);
    htpasswd(&root.join("users.htpasswd"), &[ADMIN, CAROL]);
    std::fs::write(
        root.join("borgstored.toml"),
        config(root, port, "rest_user = \"admin\"\npermissions = \"read-only\""),
    )
    .unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("borgstored.toml"))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b"\n[[stores.main.rules]]\nrest_user = \"carol\"\npermissions = \"all\"\n")
        })
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while put(port, CAROL, "data/0002", b"carol").status != 200 {
        assert!(Instant::now() < deadline, "carol never got in after SIGHUP:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    busy(20);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests of the busy client failed across the reload");
    status(&get(port, BACKUP, "data/0002"), 401, "backup after it was removed");
    status(&put(port, ADMIN, "data/0003", b"x"), 403, "admin, read-only after the reload");
    status(&get(port, ADMIN, "data/0002"), 200, "admin reads");
    // A broken config on SIGHUP changes nothing.
    std::fs::write(root.join("borgstored.toml"), "this is not toml").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log_text().contains("configuration not reloaded") {
        assert!(Instant::now() < deadline, "no warning about the broken config:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    status(&put(port, CAROL, "data/0004", b"carol"), 200, "carol after a broken reload");

    // SIGKILL while clients write: only whole lines, and the next start appends.
    let writers: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let r = std::panic::catch_unwind(|| put(port, CAROL, &format!("data/k{t}-{i}"), b"v"));
                    if r.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while audit_lines(&audit).iter().filter(|l| l.names.iter().any(|n| n.starts_with("data/k"))).count() < 50 {
        assert!(Instant::now() < deadline, "the writers' calls never reached the audit log");
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = d.child.wait();
    for w in writers {
        let _ = w.join();
    }
    let before = audit_lines(&audit).len();
    std::fs::write(root.join("borgstored.toml"), config(root, port, "rest_user = \"admin\"")).unwrap();
    d.restart(&["--config", root.join("borgstored.toml").to_str().unwrap()]);
    wait_port(port, "borgstored REST after SIGKILL", &d.log);
    status(&put(port, BACKUP, "data/after-kill", b"v"), 401, "backup is not in the htpasswd file any more");
    status(&put(port, ADMIN, "data/after-kill", b"v"), 200, "admin stores after the restart");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = audit_lines(&audit);
        if lines.len() > before && lines.last().is_some_and(|l| l.names == ["data/after-kill"]) {
            break;
        }
        assert!(Instant::now() < deadline, "nothing appended after the restart");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One GET on a kept-alive connection: its status (None when the connection failed).
fn keep_alive_get(sock: &mut std::net::TcpStream, req: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    sock.write_all(req).ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if sock.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())?;
    let mut body = vec![0; length];
    sock.read_exact(&mut body).ok()?;
    Some(status)
}

/// `borgstore-server-rest --htpasswd FILE`: its users, a bad file refused at start, the
/// file read again on SIGHUP (a broken one keeps the users loaded before).
#[test]
fn the_rest_server_takes_its_users_from_an_htpasswd_file_and_reloads_it() {
    use borgstore_tests::rest::{Impl, RestServer};
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("users.htpasswd");
    htpasswd(&file, &[BACKUP, ADMIN]);
    let server = RestServer::start(Impl::Ours, &["--htpasswd", file.to_str().unwrap()]);
    let port = server.port;
    let create = request(port, "POST", "/?cmd=create", Some(ADMIN), &[], b"");
    status(&create, 200, "admin creates");
    status(&request(port, "POST", "/data/x", Some(BACKUP), &[], b"v"), 200, "backup stores");
    status(&request(port, "GET", "/data/x", Some(("backup", "wrong")), &[], b""), 401, "wrong password");
    status(&request(port, "GET", "/data/x", None, &[], b""), 401, "no credentials");

    // A changed file on SIGHUP: carol in, backup out.
    htpasswd(&file, &[ADMIN, CAROL]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.child.id() as i32), nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while request(port, "GET", "/data/x", Some(CAROL), &[], b"").status != 200 {
        assert!(Instant::now() < deadline, "carol never got in:\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    status(&request(port, "GET", "/data/x", Some(BACKUP), &[], b""), 401, "backup after the reload");
    // A broken file keeps carol.
    std::fs::write(&file, "carol:$apr1$abc$def\n").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.child.id() as i32), nix::sys::signal::Signal::SIGHUP)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log_text().contains("users not reloaded") {
        assert!(Instant::now() < deadline, "no warning:\n{}", server.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    status(&request(port, "GET", "/data/x", Some(CAROL), &[], b""), 200, "carol after a broken reload");

    // A file with an unsupported hash is refused at start, naming the line, not the hash.
    let out = Command::new(borgstore_tests::daemon::binary("borgstore-server-rest"))
        .args(["--backend", "file:///nonexistent", "--htpasswd", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && !err.contains("$apr1$abc"), "{err}");
}
