//! Per-principal profiles and delete quarantine (issue 14, points 1, 3 and 5), proven
//! against the real `borgstored` with two local users besides the daemon's own (root):
//!
//! - `borgstore-t2` is the backup client: borg's `no-delete` letters, a quota share, its
//!   deletes quarantined; `borgstore-t3` reads only; nobody else has a rule;
//! - the same decision on the IPC socket (the CLI) and the REST Unix socket (curl);
//! - a quarantined delete is a soft delete: gone from listings, there with `--deleted`,
//!   restorable by the daemon's own user, purged once the window has passed (the
//!   daemon's clock is shifted through a file, not slept), by `borgstore purge` and in
//!   the background;
//! - storing and deleting again cannot push a quarantined version out;
//! - counters per principal, in `borgstore stats --by-principal` and `/-/metrics`.
//!
//! Runs as root (tests/run and CI do): it creates the users and switches to them.

use borgstore_tests::callers::{cli, cli_ok, cli_refused, curl, Who};
use borgstore_tests::daemon::Daemon;
use borgstore_tests::users::{second_user, third_user};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const DAY: u64 = 86_400;

/// A temp dir the other users can traverse (to reach the sockets in it).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Shift the daemon's quarantine clock to `secs` seconds from now.
fn set_clock(file: &Path, secs: u64) {
    std::fs::write(file, secs.to_string()).unwrap();
}

/// Wait until `cond` holds (polling), or fail with `what`.
#[track_caller]
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(30), "{what} did not happen within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(out)))
}

#[test]
fn each_principal_gets_its_rule_and_quarantined_deletes_wait_for_their_window() {
    let backup = second_user();
    let reader = third_user();
    let (b, r) = (Who::User(backup), Who::User(reader));
    let dir = shared_dir();
    let root = dir.path().to_path_buf();
    let clock = root.join("clock");
    set_clock(&clock, 0);
    let config = root.join("borgstored.toml");
    std::fs::write(
        &config,
        format!(
            r#"
socket_mode = "0666"
rest_socket = "{root}/rest.sock"
state_dir = "{root}/state"

[stores.main]
url = "file://{root}/main"
create = true
quota = 100000000
quarantine_days = 14

[[stores.main.rules]]
name = "backup"
uid = {backup_uid}
permissions = "no-delete"
quota = 20000

[[stores.main.rules]]
uid = {reader_uid}
permissions = "read-only"

[stores.other]
url = "file://{root}/other"
create = true
"#,
            root = root.display(),
            backup_uid = backup.uid,
            reader_uid = reader.uid
        ),
    )
    .unwrap();
    let clock_env = clock.display().to_string();
    let d = Daemon::start_in(
        dir,
        &["--config", config.to_str().unwrap()],
        &[("BORGSTORED_TEST_CLOCK_FILE", &clock_env), ("BORGSTORED_TEST_PURGE_INTERVAL_MS", "200")],
    );
    let main = root.join("main");
    let rest_sock = root.join("rest.sock");

    // The backup client adds and reads, but cannot overwrite.
    cli_ok(&d, b, "main", &["store", "data/0001"], Some(b"first"));
    assert_eq!(cli_ok(&d, b, "main", &["load", "data/0001"], None), b"first");
    let why = cli_refused(&d, b, "main", &["store", "data/0001"], Some(b"changed"));
    assert!(why.contains("'W'"), "{why}");
    assert_eq!(std::fs::read(main.join("data/0001")).unwrap(), b"first");
    // The reader reads only: no store, no delete (not even a quarantined one).
    assert_eq!(cli_ok(&d, r, "main", &["load", "data/0001"], None), b"first");
    cli_refused(&d, r, "main", &["store", "data/0002"], Some(b"x"));
    cli_refused(&d, r, "main", &["delete", "data/0001"], None);
    assert!(main.join("data/0001").exists());
    // Nobody has no rule; the backup client has none on the other store.
    cli_refused(&d, Who::Nobody, "main", &["load", "data/0001"], None);
    cli_refused(&d, b, "other", &["list", ""], None);

    // A delete by the backup client is a soft delete kept in quarantine.
    cli_ok(&d, b, "main", &["delete", "data/0001"], None);
    assert!(!main.join("data/0001").exists() && main.join("data/0001.del").exists());
    let live = cli_ok(&d, b, "main", &["list", "data"], None);
    assert!(!String::from_utf8_lossy(&live).contains("0001"), "{live:?}");
    let deleted = cli_ok(&d, b, "main", &["list", "data", "--deleted"], None);
    assert!(String::from_utf8_lossy(&deleted).contains("0001"), "{deleted:?}");
    // Deleting the quarantined item leaves it in quarantine (borg's compact deletes what
    // its prune soft-deleted); it cannot restore it or purge the quarantine.
    cli_ok(&d, b, "main", &["delete", "data/0001", "--deleted"], None);
    cli_refused(&d, b, "main", &["move", "data/0001", "--undelete"], None);
    cli_refused(&d, b, "main", &["purge"], None);
    assert!(main.join("data/0001.del").exists());

    // The same decision through the REST socket.
    let put = curl(&rest_sock, b, "POST", "/main/data/0002", None, Some(b"second"));
    assert_eq!(put.status, 200, "{:?}", put.text());
    let again = curl(&rest_sock, b, "POST", "/main/data/0002", None, Some(b"changed"));
    assert_eq!(again.status, 403, "{:?}", again.text());
    let del = curl(&rest_sock, b, "DELETE", "/main/data/0002", None, None);
    assert_eq!(del.status, 200, "{:?}", del.text());
    assert!(main.join("data/0002.del").exists() && !main.join("data/0002").exists());
    assert_eq!(curl(&rest_sock, r, "DELETE", "/main/data/0002.del", None, None).status, 403);
    assert_eq!(curl(&rest_sock, Who::Nobody, "GET", "/main/data/0001.del", None, None).status, 403);

    // Storing and deleting again cannot push the quarantined version out ...
    cli_ok(&d, b, "main", &["store", "data/0001"], Some(b"ransom"));
    let why = cli_refused(&d, b, "main", &["delete", "data/0001"], None);
    assert!(why.contains("quarantine"), "{why}");
    assert_eq!(std::fs::read(main.join("data/0001.del")).unwrap(), b"first");
    // ... but the same bytes again (borg's content-addressed packs) may go.
    cli_ok(&d, b, "main", &["store", "data/0002"], Some(b"second"));
    cli_ok(&d, b, "main", &["delete", "data/0002"], None);
    assert!(!main.join("data/0002").exists());
    assert_eq!(std::fs::read(main.join("data/0002.del")).unwrap(), b"second");

    // The quota share: the backup client's writes stop at 20000 bytes of store usage;
    // the daemon's own user is not held to it.
    let big = vec![7u8; 30000];
    let why = cli(&d, b, "main", &["store", "data/big"], Some(&big));
    assert_eq!(why.status.code(), Some(4), "{}", String::from_utf8_lossy(&why.stderr));
    assert!(String::from_utf8_lossy(&why.stderr).contains("Quota exceeded"));
    assert!(!main.join("data/big").exists());
    cli_ok(&d, Who::Root, "main", &["store", "data/big"], Some(&big));
    // A defrag writes too: the share holds for it (REST, the backup client's own item).
    let sources = br#"[["data/0002.del", 0, 6]]"#;
    let defrag = curl(&rest_sock, b, "POST", "/main/?cmd=defrag&target=data/copy", None, Some(sources));
    assert_eq!(defrag.status, 507, "{:?}", defrag.text());
    assert!(!main.join("data/copy").exists());

    // Inside the window nothing is purged; the daemon's own user may restore.
    set_clock(&clock, 13 * DAY);
    let p = json(&cli_ok(&d, Who::Root, "main", &["purge", "--json"], None));
    assert_eq!((p["purged"].as_u64(), p["kept"].as_u64()), (Some(0), Some(2)), "{p}");
    cli_ok(&d, Who::Root, "main", &["delete", "data/0001"], None);
    cli_ok(&d, Who::Root, "main", &["move", "data/0001", "--undelete"], None);
    assert_eq!(cli_ok(&d, b, "main", &["load", "data/0001"], None), b"first");

    // Past the window the background purge removes what is still quarantined; the
    // restored item stays.
    set_clock(&clock, 15 * DAY);
    eventually("the background purge of data/0002.del", || !main.join("data/0002.del").exists());
    assert!(main.join("data/0001").exists());
    let p = json(&cli_ok(&d, Who::Root, "main", &["purge", "--json"], None));
    assert_eq!((p["purged"].as_u64(), p["kept"].as_u64()), (Some(0), Some(0)), "{p}");

    // Counters per principal: the owner sees all, a principal its own.
    let all = json(&cli_ok(&d, Who::Root, "main", &["stats", "--by-principal", "--json"], None));
    let names: Vec<&str> = all.as_array().unwrap().iter().filter_map(|p| p["principal"].as_str()).collect();
    assert!(names.contains(&"backup") && names.contains(&format!("uid:{}", reader.uid).as_str()), "{all}");
    let backup_row = all.as_array().unwrap().iter().find(|p| p["principal"] == "backup").unwrap();
    assert!(backup_row["refusals"].as_u64().unwrap() >= 5, "{backup_row}");
    assert!(backup_row["bytes_in"].as_u64().unwrap() >= 11, "{backup_row}");
    assert!(backup_row["bytes_out"].as_u64().unwrap() >= 10, "{backup_row}");
    let own = json(&cli_ok(&d, b, "main", &["stats", "--by-principal", "--json"], None));
    assert_eq!(own.as_array().map(Vec::len), Some(1), "{own}");
    assert_eq!(own[0]["principal"], "backup");
}

/// A connection keeps its principal while the store's rules stay the same; a SIGHUP
/// that changes them applies to the next request on the same connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_reaches_connections_that_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let config = root.join("borgstored.toml");
    let write = |letters: &str| {
        let uid = nix::unistd::getuid().as_raw();
        let text = format!(
            "[stores.main]\nurl = \"file://{}/main\"\ncreate = true\n[[stores.main.rules]]\nuid = {uid}\npermissions = \"{letters}\"\n",
            root.display()
        );
        std::fs::write(&config, text).unwrap();
    };
    write("lr");
    let d = Daemon::start_in(dir, &["--config", config.to_str().unwrap()], &[]);
    let client = d.client("main").await;
    let e = client.store("data/0001", b"x".to_vec()).await.unwrap_err();
    assert_eq!(e.kind, borgstore_ipc::ErrorKind::PermissionDenied, "{e}");
    write("lrw");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let start = Instant::now();
    while client.store("data/0001", b"x".to_vec()).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "the reload never reached the open connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.load("data/0001", 0, None, false).await.unwrap(), b"x");
    // And back: the same connection is refused again.
    write("lr");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let start = Instant::now();
    for i in 0.. {
        // A new name each time: only the rule can refuse it.
        match client.store(&format!("data/n{i}"), b"y".to_vec()).await {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.kind, borgstore_ipc::ErrorKind::PermissionDenied, "{e}");
                break;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the second reload never reached the connection");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
