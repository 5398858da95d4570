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
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        borgstore_tests::daemon::binary("borgstore-server-rest"),
        bin.join("borgstore-server-rest"),
    )
    .unwrap();
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
