//! The REST client backend beyond the conformance suite: a server restart under the
//! client (reconnect and retry, bounded), credentials and clear errors.

use borgstore_daemon::backends::url::backend_from_url;
use borgstore_ipc::ErrorKind;
use borgstore_tests::rest::{Impl, RestServer};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_restarts() {
    let server = RestServer::start(Impl::Ours, &[]);
    let (port, backend_url) = (server.port, format!("file://{}", server.store_path().display()));
    let be = backend_from_url(&server.url(None), Default::default()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    be.store("config/a", Bytes::from_static(b"before")).await.unwrap();

    // Down: a request fails with ConnectionLost after the bounded retries.
    let dir = server.stop();
    let started = Instant::now();
    let err = be.load("config/a", 0, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ConnectionLost, "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "gave up only after {:?}", started.elapsed());

    // Back up on the same port during a retry pause: the call succeeds.
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(500));
        RestServer::start_on(Impl::Ours, dir, &backend_url, port, &[])
    });
    let stored = be.store("config/b", Bytes::from_static(b"after")).await;
    let _server = restart.await.unwrap();
    stored.unwrap();
    assert_eq!(be.load("config/a", 0, None).await.unwrap(), "before");
    assert_eq!(be.load("config/b", 0, None).await.unwrap(), "after");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_permission_denied_and_urls_stay_secret() {
    let server = RestServer::start(Impl::Ours, &["--username", "u", "--password", "right"]);
    let be = backend_from_url(&server.url(Some(("u", "wrong"))), Default::default()).unwrap();
    let err = be.create().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    assert!(!err.message.contains("wrong"), "{err}");
    let err = backend_from_url("http://u:secret@127.0.0.1:1/", Default::default()).unwrap();
    let e = err.create().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConnectionLost);
    assert!(!e.message.contains("secret"), "{e}");
}

/// `rest://user@host:port/path` through a real sshd: the client runs `BORGSTORE_RSH`
/// (here a wrapper around ssh with the fixture's key, known_hosts and port that puts our
/// `borgstore-server-rest` on the remote PATH) and speaks HTTP over the ssh channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_over_ssh_stdio_with_borgstore_rsh() {
    use borgstore_daemon::backends::rest_client::{url, RestClient};
    use borgstore_daemon::Backend;
    let sshd = borgstore_tests::sshd::Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let bin = server_bin_dir(dir.path());
    let rsh = dir.path().join("rsh");
    std::fs::write(
        &rsh,
        format!(
            "#!/bin/sh\nhost=$1; shift\nexec ssh -p {port} -i {key} -o UserKnownHostsFile={kh} -o BatchMode=yes \
             -o StrictHostKeyChecking=yes \"$host\" env PATH={bin}:/usr/bin:/bin \"$@\"\n",
            port = sshd.port(),
            key = sshd.client_key().display(),
            kh = sshd.known_hosts().display(),
            bin = bin.display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rsh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("remote-store");
    let rest_url = format!("rest://{}@127.0.0.1:{}/{}", sshd.user(), sshd.port(), store.display());
    let env = |k: &str| if k == "BORGSTORE_RSH" { Some(rsh.display().to_string()) } else { None };
    let target = url::parse(&rest_url, env).unwrap();
    let be = RestClient::new(target).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    be.store("data/00/0000aa", Bytes::from_static(b"over ssh")).await.unwrap();
    assert_eq!(be.load("data/00/0000aa", -3, None).await.unwrap(), "ssh");
    assert_eq!(be.list("data/00").await.unwrap().len(), 1);
    be.close().await.unwrap();
    assert_eq!(std::fs::read(store.join("data/00/0000aa")).unwrap(), b"over ssh");
    be.destroy().await.unwrap();
    assert!(!store.exists());
}

/// A TCP proxy in front of the server that, once, forwards a request whose first line
/// starts with `victim` but swallows the server's answer and cuts the client's
/// connection: the operation happened, its reply was lost.
fn reply_eating_proxy(server_port: u16, victim: &'static str) -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let eaten = std::sync::Arc::new(AtomicBool::new(false));
    let flag = eaten.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let flag = flag.clone();
            std::thread::spawn(move || {
                let mut client = client;
                let mut upstream = std::net::TcpStream::connect(("127.0.0.1", server_port)).unwrap();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    // One request: small bodies only, read until the head is complete.
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let eat = buf[..n].starts_with(victim.as_bytes()) && !flag.swap(true, Ordering::SeqCst);
                    upstream.write_all(&buf[..n]).unwrap();
                    let mut resp = vec![0u8; 1 << 16];
                    let m = upstream.read(&mut resp).unwrap_or(0);
                    if eat {
                        let _ = client.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    if m == 0 || client.write_all(&resp[..m]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, eaten)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_or_move_whose_reply_was_lost_counts_as_done() {
    let server = RestServer::start(Impl::Ours, &[]);
    let setup = backend_from_url(&server.url(None), Default::default()).unwrap();
    setup.create().await.unwrap();
    setup.open().await.unwrap();
    setup.store("config/gone", Bytes::from_static(b"x")).await.unwrap();
    setup.store("config/from", Bytes::from_static(b"y")).await.unwrap();

    for (victim, op) in [("DELETE /config/gone", "delete"), ("POST /?cmd=move", "move")] {
        let (port, eaten) = reply_eating_proxy(server.port, victim);
        let be = backend_from_url(&format!("http://127.0.0.1:{port}/"), Default::default()).unwrap();
        be.open().await.unwrap();
        let result = match op {
            "delete" => be.delete("config/gone").await,
            _ => be.move_("config/from", "config/to").await,
        };
        assert!(eaten.load(std::sync::atomic::Ordering::SeqCst), "the proxy ate a reply for {op}");
        result.unwrap_or_else(|e| panic!("{op} after a lost reply: {e}"));
        be.close().await.unwrap();
    }
    assert!(!setup.info("config/gone").await.unwrap().exists);
    assert!(!setup.info("config/from").await.unwrap().exists);
    assert_eq!(setup.load("config/to", 0, None).await.unwrap(), "y");
    // Without a lost reply, a missing item is still an error.
    assert_eq!(setup.delete("config/gone").await.unwrap_err().kind, ErrorKind::ObjectNotFound);
    setup.close().await.unwrap();
}

/// A `rest://` store on our `borgstore-server-rest --stdio` (absolute path, so no PATH
/// games) at a fresh local path, with up to `connections` children.
fn stdio_store(connections: usize) -> (borgstore_daemon::backends::rest_client::RestClient, tempfile::TempDir, String) {
    use borgstore_daemon::backends::rest_client::{url::Target, RestClient};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let backend = format!("FILE:{}", root.display());
    let command = vec![
        borgstore_tests::daemon::binary("borgstore-server-rest").display().to_string(),
        "--stdio".into(),
        "--backend".into(),
        backend.clone(),
    ];
    (RestClient::with_connections(Target::Stdio { command }, connections).unwrap(), dir, backend)
}

/// [`stdio_store`] created and opened, with the directory `data/00`; and the one child
/// that carried that.
async fn opened_stdio_store(
    connections: usize,
) -> (borgstore_daemon::backends::rest_client::RestClient, tempfile::TempDir, String, Vec<u32>) {
    use borgstore_daemon::Backend;
    let (be, dir, backend) = stdio_store(connections);
    be.create().await.unwrap();
    assert!(servers(&backend).is_empty(), "create's session lives for that request only");
    be.open().await.unwrap();
    be.mkdir("data/00").await.unwrap();
    let first = servers(&backend);
    assert_eq!(first.len(), 1, "one child carried open and mkdir, one after the other");
    (be, dir, backend, first)
}

/// `dir/bin` holding `borgstore-server-rest`, for a PATH that finds the server.
fn server_bin_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        borgstore_tests::daemon::binary("borgstore-server-rest"),
        bin.join("borgstore-server-rest"),
    )
    .unwrap();
    bin
}

/// The live (not zombie) children of process `parent` whose arguments include `arg`.
fn children_with_arg(parent: u32, arg: &str) -> Vec<u32> {
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold anything, so split after its last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next().and_then(|p| p.parse::<u32>().ok()));
        if state == Some("Z") || ppid != Some(parent) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Our own children serving `backend` (`FILE:...`, unique per test).
fn servers(backend: &str) -> Vec<u32> {
    children_with_arg(std::process::id(), backend)
}

fn value(i: usize) -> Bytes {
    Bytes::from(format!("value {i} ").repeat(100 + i))
}

/// 16 stores, then 16 loads, all at once; every load returns its own value.
async fn sixteen_at_once(be: &dyn borgstore_daemon::Backend, round: usize) {
    let names: Vec<String> = (0..16).map(|i| format!("data/00/{round:02}{i:04}")).collect();
    let stores = names.iter().enumerate().map(|(i, n)| be.store(n, value(i + round)));
    for r in futures::future::join_all(stores).await {
        r.unwrap();
    }
    let loads = names.iter().map(|n| be.load(n, 0, None));
    for (i, r) in futures::future::join_all(loads).await.into_iter().enumerate() {
        assert_eq!(r.unwrap(), value(i + round), "{}", names[i]);
    }
}

/// With `connections = 4`, concurrent operations are spread over several children (the
/// ones they need, never more than 4), kept while open; `close` ends every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_pool_runs_concurrent_operations_on_several_children() {
    use borgstore_daemon::Backend;
    let (be, _dir, backend, _) = opened_stdio_store(4).await;
    sixteen_at_once(&be, 0).await;
    let n = servers(&backend).len();
    assert!((2..=4).contains(&n), "16 concurrent operations ran on {n} children");
    // Kept while open: the next round reuses them and starts no more than the cap.
    sixteen_at_once(&be, 1).await;
    assert!((n..=4).contains(&servers(&backend).len()));
    be.close().await.unwrap();
    assert!(servers(&backend).is_empty(), "children left after close: {:?}", servers(&backend));
    // Reopened: a fresh child, and everything is there.
    be.open().await.unwrap();
    assert_eq!(be.list("data/00").await.unwrap().len(), 32);
    be.close().await.unwrap();
    assert!(servers(&backend).is_empty());
}

/// With `connections = 1`, the same concurrent operations take turns on one child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_pool_of_one_uses_exactly_one_child() {
    use borgstore_daemon::Backend;
    let (be, _dir, backend, first) = opened_stdio_store(1).await;
    let watch = async {
        // Never a second child while the 16 run.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            seen.extend(servers(&backend));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen
    };
    let ((), seen) = tokio::join!(sixteen_at_once(&be, 0), watch);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), first, "only the one child");
    assert_eq!(servers(&backend), first);
    be.close().await.unwrap();
    assert!(servers(&backend).is_empty());
}

/// A child killed with SIGKILL in the middle of concurrent operations costs at most the
/// requests it carried, which the retry policy sends again on another child: every
/// operation succeeds, and later ones work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_pool_survives_a_killed_child() {
    use borgstore_daemon::Backend;
    let (be, _dir, backend, _) = opened_stdio_store(4).await;
    sixteen_at_once(&be, 0).await;
    let before = servers(&backend);
    assert!(before.len() >= 2, "{before:?}");
    let victim = before[0];
    // Kill one while 16 loads of large values are in flight (whether it is carrying one
    // then or is idle, the outcome must be the same: all succeed).
    let big = Bytes::from(vec![7u8; 4 << 20]);
    be.store("data/00/big", big.clone()).await.unwrap();
    let loads = futures::future::join_all((0..16).map(|_| be.load("data/00/big", 0, None)));
    let kill = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    };
    let (results, ()) = tokio::join!(loads, kill);
    for r in results {
        assert_eq!(r.unwrap(), big);
    }
    assert!(!servers(&backend).contains(&victim), "the killed child is not in use any more");
    sixteen_at_once(&be, 1).await;
    let after = servers(&backend);
    assert!(!after.contains(&victim) && (1..=4).contains(&after.len()), "{after:?}");
    be.close().await.unwrap();
    assert!(servers(&backend).is_empty());
}

/// The store key `connections` reaches `rest://` stores of the daemon: with 1, its
/// concurrent clients take turns on one `borgstore-server-rest --stdio` child; with 4,
/// they are spread over several, never more than 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_rest_stores_run_up_to_connections_children() {
    let dir = tempfile::tempdir().unwrap();
    let bin = server_bin_dir(dir.path());
    let d = dir.path().display().to_string();
    let config = format!(
        "[stores.one]\nurl = \"rest:///{d}/one\"\ncreate = true\nconnections = 1\n\
         [stores.four]\nurl = \"rest:///{d}/four\"\ncreate = true\nconnections = 4\n"
    );
    let cfg = dir.path().join("borgstored.toml");
    std::fs::write(&cfg, config).unwrap();
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let daemon = borgstore_tests::daemon::Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &["--config", cfg.to_str().unwrap()],
        &[("PATH", &path)],
    );
    let children = |store: &str| children_with_arg(daemon.child.id(), &format!("FILE:{d}/{store}"));
    for (store, cap) in [("one", 1), ("four", 4)] {
        let c = daemon.client(store).await;
        c.open().await.unwrap();
        let names: Vec<String> = (0..16).map(|i| format!("config/k{i}")).collect();
        let stores = names.iter().enumerate().map(|(i, n)| c.store(n, value(i).to_vec()));
        for r in futures::future::join_all(stores).await {
            r.unwrap();
        }
        let mut most = 0;
        for _round in 0..20 {
            let loads = names.iter().map(|n| c.load(n, 0, None, false));
            for (i, r) in futures::future::join_all(loads).await.into_iter().enumerate() {
                assert_eq!(r.unwrap(), value(i), "{store}: {}", names[i]);
            }
            let n = children(store).len();
            assert!((1..=cap).contains(&n), "{store}: {n} children, connections = {cap}");
            most = most.max(n);
            if most > 1 || cap == 1 {
                break;
            }
        }
        assert_eq!(most > 1, cap > 1, "{store}: at most {most} children at once");
        c.close().await.unwrap();
    }
    drop(daemon);
}
