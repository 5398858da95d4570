//! The rclone backend beyond the conformance suite: `rclone rcd` lives exactly as long
//! as the open backend (ended on close and on drop), `RCLONE_BINARY` is honoured and an
//! rclone older than 1.57 is refused with a clear error.
//!
//! One test function on purpose: it sets `RCLONE_BINARY` for this process.

use borgstore_daemon::backends::url::backend_from_url;
use borgstore_ipc::ErrorKind;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Our child processes running rclone (zombies excluded).
fn rclone_children() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else { continue };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        if comm == "rclone" && fields.first() != Some(&"Z") && fields.get(1) == Some(&me.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcd_lifetime_binary_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("rclone::local:{}/store", dir.path().display());

    // Lives while open, ends on close.
    let be = backend_from_url(&url, Default::default()).unwrap();
    be.create().await.unwrap();
    assert!(rclone_children().is_empty(), "create leaves no rcd behind");
    be.open().await.unwrap();
    assert_eq!(rclone_children().len(), 1);
    be.store("config/x", Bytes::from_static(b"x")).await.unwrap();
    be.close().await.unwrap();
    wait_until("rcd ended after close", || rclone_children().is_empty());

    // Ends when an open backend is dropped.
    let be = backend_from_url(&url, Default::default()).unwrap();
    be.open().await.unwrap();
    assert_eq!(rclone_children().len(), 1);
    drop(be);
    wait_until("rcd ended after drop", || rclone_children().is_empty());

    // RCLONE_BINARY is used; an old rclone is refused with its version in the message.
    let fake = dir.path().join("old-rclone");
    std::fs::write(&fake, "#!/bin/sh\necho '{\"decomposed\": [1, 56, 2], \"version\": \"v1.56.2\"}'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: the only test in this binary; nothing else reads the environment now.
    unsafe { std::env::set_var("RCLONE_BINARY", &fake) };
    let be = backend_from_url(&url, Default::default()).unwrap();
    let err = be.open().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::BackendDoesNotExist);
    assert!(err.message.contains("1.57") && err.message.contains("v1.56.2"), "{err}");
    unsafe { std::env::set_var("RCLONE_BINARY", dir.path().join("no-such-rclone")) };
    let err = backend_from_url(&url, Default::default()).unwrap().open().await.unwrap_err();
    assert!(err.message.contains("cannot run"), "{err}");
    unsafe { std::env::remove_var("RCLONE_BINARY") };
}
