//! Bad input on the IPC socket never crashes the daemon or disturbs other clients:
//! malformed, truncated and oversize frames, bad handshakes, vanishing clients, and
//! refused peers.

use borgstore_client::ErrorKind;
use borgstore_ipc::codec::{decode_body, encode_frame};
use borgstore_ipc::protocol::{HandshakeReply, Hello, Op, Reply, Request, Response, PROTOCOL_VERSION};
use borgstore_tests::daemon::{binary, Daemon};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let arg = format!("s=file://{}/s", dir.path().display());

    Daemon::start_in(dir, &["--store", &arg, "--max-frame", "1048576"], &[])
}

fn read_msg<T: serde::de::DeserializeOwned>(s: &mut UnixStream) -> Option<T> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).ok()?;
    let mut body = vec![0u8; u32::from_le_bytes(h) as usize];
    s.read_exact(&mut body).ok()?;
    Some(decode_body(&body).expect("daemon sends valid frames"))
}

fn connect(d: &Daemon) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&encode_frame(&Hello::new("raw-test"), u32::MAX).unwrap()).unwrap();
    match read_msg::<HandshakeReply>(&mut s) {
        Some(HandshakeReply::Accepted(w)) => assert_eq!(w.max_frame, 1048576),
        other => panic!("handshake failed: {other:?}"),
    }
    s
}

fn request(s: &mut UnixStream, id: u64, op: Op) -> Response {
    let r = Request { id, store: "s".into(), op };
    s.write_all(&encode_frame(&r, u32::MAX).unwrap()).unwrap();
    read_msg::<Response>(s).expect("a response")
}

/// The daemon still serves a fresh, well-behaved client.
async fn still_serves(d: &Daemon) {
    let c = d.client("s").await;
    c.store("alive", b"yes".to_vec()).await.unwrap();
    assert_eq!(c.load("alive", 0, None, false).await.unwrap(), b"yes");
}

async fn created(d: &Daemon) {
    let c = d.client("s").await;
    if let Err(e) = c.create().await {
        assert_eq!(e.kind, ErrorKind::BackendAlreadyExists);
    }
}

#[tokio::test]
async fn malformed_body_gets_an_error_reply_and_the_connection_goes_on() {
    let d = daemon();
    created(&d).await;
    let mut s = connect(&d);
    for garbage in [vec![0xffu8; 17], vec![], vec![7, 0, 0, 0, 1, 2], b"definitely not bincode".to_vec()] {
        let mut frame = (garbage.len() as u32).to_le_bytes().to_vec();
        frame.extend(&garbage);
        s.write_all(&frame).unwrap();
        let r: Response = read_msg(&mut s).expect("error reply");
        assert_eq!(r.id, 0);
        match r.body {
            Reply::Err(e) => assert_eq!(e.kind, ErrorKind::InvalidArgument),
            other => panic!("expected an error, got {other:?}"),
        }
    }
    // The same connection still works.
    let r = request(&mut s, 5, Op::Ping);
    assert_eq!((r.id, r.body), (5, Reply::Pong));
    still_serves(&d).await;
}

#[tokio::test]
async fn oversize_frame_is_refused_and_the_connection_closed() {
    let d = daemon();
    created(&d).await;
    let mut s = connect(&d);
    s.write_all(&(2_000_000u32).to_le_bytes()).unwrap();
    let r: Response = read_msg(&mut s).expect("error reply");
    match r.body {
        Reply::Err(e) => assert!(e.message.contains("exceeds"), "{e}"),
        other => panic!("{other:?}"),
    }
    let mut rest = Vec::new();
    let n = s.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "closed after the error");
    // A store request above the limit through the client is a clean error, not a hang.
    let c = d.client("s").await;
    let e = c.store("big", vec![0; 2_000_000]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e}");
    still_serves(&d).await;
}

#[tokio::test]
async fn truncated_frames_and_vanishing_clients_do_not_disturb_others() {
    let d = daemon();
    created(&d).await;
    for cut in [1usize, 3, 4, 10, 500] {
        let mut s = connect(&d);
        let r = Request { id: 1, store: "s".into(), op: Op::Store { name: "partial".into(), value: vec![1; 1000] } };
        let frame = encode_frame(&r, u32::MAX).unwrap();
        s.write_all(&frame[..cut.min(frame.len() - 1)]).unwrap();
        drop(s);
    }
    // A client that sends a slow request and disappears before the answer.
    let mut s = connect(&d);
    let r = Request { id: 9, store: "s".into(), op: Op::Store { name: "gone".into(), value: vec![2; 100_000] } };
    s.write_all(&encode_frame(&r, u32::MAX).unwrap()).unwrap();
    drop(s);
    still_serves(&d).await;
    let c = d.client("s").await;
    assert!(!c.info("partial", false).await.unwrap().exists, "a truncated store never happened");
}

#[tokio::test]
async fn bad_handshakes_are_refused_clearly() {
    let d = daemon();
    // Unknown version.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut hello = Hello::new("future-client");
    hello.version = PROTOCOL_VERSION + 41;
    s.write_all(&encode_frame(&hello, u32::MAX).unwrap()).unwrap();
    match read_msg::<HandshakeReply>(&mut s) {
        Some(HandshakeReply::Refused(e)) => assert!(e.message.contains("version"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Wrong magic.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut hello = Hello::new("impostor");
    hello.magic = *b"NOTBORG!";
    s.write_all(&encode_frame(&hello, u32::MAX).unwrap()).unwrap();
    match read_msg::<HandshakeReply>(&mut s) {
        Some(HandshakeReply::Refused(e)) => assert!(e.message.contains("magic"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Plain garbage instead of a hello, then silence.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    drop(s);
    created(&d).await;
    still_serves(&d).await;
}

#[test]
fn peers_without_a_grant_are_refused_and_logged() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !nix::unistd::getuid().is_root() {
        panic!("this test switches to uid 65534 and must run as root (CI and tests/run do)");
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (a, b) = (
        format!("closed=file://{}/closed", dir.path().display()),
        format!("open=file://{}/open", dir.path().display()),
    );
    let d = Daemon::start_in(
        dir,
        &["--store", &a, "--store", &b, "--allow-uid", "open=65534", "--socket-mode", "0666"],
        &[],
    );
    let run_as_nobody = |store: &str, args: &[&str]| {
        std::process::Command::new(binary("borgstore"))
            .arg("--socket")
            .arg(&d.socket)
            .args(["--store", store])
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let refused = run_as_nobody("closed", &["create"]);
    assert_eq!(refused.status.code(), Some(4), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not granted"));
    assert!(!d.path("closed").exists(), "nothing was created for the refused peer");
    let granted = run_as_nobody("open", &["create"]);
    assert!(granted.status.success(), "{}", String::from_utf8_lossy(&granted.stderr));
    let stores = run_as_nobody("open", &["stores"]);
    assert_eq!(String::from_utf8_lossy(&stores.stdout).trim(), "open\tfile", "only granted stores are shown");
    // A granted user still may not point the daemon's cache somewhere.
    let cache = run_as_nobody("open", &["--cache-url", "file:///tmp/evil-cache", "--cache", "=writethrough", "stats"]);
    assert_eq!(cache.status.code(), Some(4), "{}", String::from_utf8_lossy(&cache.stderr));
    assert!(String::from_utf8_lossy(&cache.stderr).contains("only the daemon's own user"));
    assert!(!std::path::Path::new("/tmp/evil-cache").exists());
    std::thread::sleep(Duration::from_millis(200));
    assert!(d.log_text().contains("refused a client without a grant"), "{}", d.log_text());
}

#[tokio::test]
async fn a_client_pipelining_thousands_of_requests_gets_every_reply_once() {
    // More requests than the daemon keeps in flight per connection (1024): reading pauses
    // while replies go out, and nothing is dropped or answered twice.
    let d = daemon();
    created(&d).await;
    d.client("s").await.store("item", b"v".to_vec()).await.unwrap();
    let mut s = connect(&d);
    let mut w = s.try_clone().unwrap();
    const N: u64 = 3000;
    let writer = std::thread::spawn(move || {
        for id in 1..=N {
            let op = if id % 2 == 0 { Op::Ping } else { Op::Info { name: "item".into(), deleted: false } };
            w.write_all(&encode_frame(&Request { id, store: "s".into(), op }, u32::MAX).unwrap()).unwrap();
        }
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..N {
        let r: Response = read_msg(&mut s).expect("a reply for every request");
        match (r.id % 2, &r.body) {
            (0, Reply::Pong) => {}
            (1, Reply::Info(i)) => assert!(i.exists && i.size == 1),
            other => panic!("unexpected reply {other:?}"),
        }
        assert!(seen.insert(r.id), "request {} answered twice", r.id);
    }
    writer.join().unwrap();
    assert_eq!(seen.len() as u64, N);
    still_serves(&d).await;
}
