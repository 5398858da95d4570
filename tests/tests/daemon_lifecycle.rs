//! Lifecycle: sd_notify messages, socket activation (LISTEN_FDS), and SIGTERM draining
//! under load with nothing acknowledged lost.

use borgstore_client::{Client, ClientOptions, ErrorKind};
use borgstore_daemon::backends::posixfs::{quota, PosixFs, PosixFsOptions};
use borgstore_daemon::Backend;
use borgstore_tests::daemon::{binary, Daemon};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn value_for(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.resize(20_000, name.len() as u8);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let arg = format!("s=file://{}/s", dir.path().display());
    let mut d = Daemon::start_in(dir, &["--store", &arg, "--quota", "s=10000000000"], &[]);
    d.client("s").await.create().await.unwrap();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..8 {
        let c_opts = d.options("s");
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let client = Client::connect(c_opts).await.unwrap();
            for i in 0.. {
                let name = format!("c{c}-{i:06}");
                match client.store(&name, value_for(&name)).await {
                    Ok(()) => acked.lock().unwrap().push(name),
                    Err(e) => return e,
                }
            }
            unreachable!()
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = d.terminate(Duration::from_secs(20));
        (s, d)
    })
    .await
    .unwrap();
    let (status, d) = status;
    assert!(status.success(), "exit status {status:?}; log:\n{}", d.log_text());
    for c in clients {
        let e = tokio::time::timeout(Duration::from_secs(20), c).await.expect("every client got an answer").unwrap();
        assert_eq!(e.kind, ErrorKind::ConnectionLost, "a clean connection error, got {e}");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "the load ran: {} stores acknowledged", acked.len());
    let root = d.path("s");
    let be = PosixFs::new(root.clone(), PosixFsOptions { quota: Some(10_000_000_000), ..Default::default() }).unwrap();
    assert_eq!(quota::read(&root), Some(acked.len() as i64 * 20_000), "quota persisted on shutdown");
    be.open().await.unwrap();
    for name in &acked {
        assert_eq!(be.load(name, 0, None).await.unwrap().to_vec(), value_for(name), "{name} acknowledged but lost");
    }
    be.close().await.unwrap();
    assert!(d.log_text().contains("SIGTERM: draining"));
}

#[tokio::test]
async fn notifies_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let arg = format!("s=file://{}/s", dir.path().display());
    let mut d = Daemon::start_in(dir, &["--store", &arg], &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
    let mut buf = [0u8; 4096];
    let mut seen = String::new();
    while !seen.contains("READY=1") {
        let n = notify.recv(&mut buf).expect("READY=1 within 20 s");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    assert!(d.terminate(Duration::from_secs(10)).success());
    while !seen.contains("STOPPING=1") {
        let n = notify.recv(&mut buf).expect("STOPPING=1 after SIGTERM");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    assert!(seen.contains("STATUS="), "{seen}");
}

#[tokio::test]
async fn adopts_the_socket_passed_by_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let activated = dir.path().join("activated.sock");
    let listener = UnixListener::bind(&activated).unwrap();
    let fd = listener.as_raw_fd();
    let unused = dir.path().join("unused.sock");
    let arg = format!("s=file://{}/s", dir.path().display());
    let mut cmd = std::process::Command::new("sh");
    // LISTEN_PID must be the daemon's pid: the shell's $$ becomes it through exec.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=ipc exec \"$0\" \"$@\"")
        .arg(binary("borgstored"))
        .arg("--socket")
        .arg(&unused)
        .args(["--store", &arg])
        .env_remove("NOTIFY_SOCKET");
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_GETFD)?;
                let mut flags = nix::fcntl::FdFlag::from_bits_truncate(flags);
                flags.remove(nix::fcntl::FdFlag::FD_CLOEXEC);
                nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_SETFD(flags))?;
            } else {
                nix::unistd::dup2(fd, 3)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let client = Client::connect(ClientOptions::new("s").socket(&activated)).await;
    let result = async {
        let c = client?;
        c.create().await?;
        c.store("x", b"via systemd socket".to_vec()).await?;
        c.load("x", 0, None, false).await
    }
    .await;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().unwrap();
    assert_eq!(result.unwrap(), b"via systemd socket");
    assert!(status.success());
    assert!(!unused.exists(), "with an inherited socket the daemon binds nothing itself");
}
