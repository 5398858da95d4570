//! Bad input on the IPC socket never crashes the daemon or disturbs other clients:
//! malformed, truncated and oversize frames, bad handshakes, vanishing clients, and
//! refused peers.

use borgstore_client::ErrorKind;
use borgstore_ipc::codec::{decode_body, encode_frame};
use borgstore_ipc::protocol::{HandshakeReply, Hello, Op, Reply, Request, Response, PROTOCOL_VERSION};
use borgstore_tests::daemon::{binary, Daemon};
use std::collections::HashMap;
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
        let r =
            Request { id: 1, store: "s".into(), op: Op::Store { name: "partial".into(), value: vec![1; 1000].into() } };
        let frame = encode_frame(&r, u32::MAX).unwrap();
        s.write_all(&frame[..cut.min(frame.len() - 1)]).unwrap();
        drop(s);
    }
    // A client that sends a slow request and disappears before the answer.
    let mut s = connect(&d);
    let r = Request { id: 9, store: "s".into(), op: Op::Store { name: "gone".into(), value: vec![2; 100_000].into() } };
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

/// A raw connection that has not said hello yet.
fn raw(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// The daemon closed the connection: nothing more to read.
fn assert_closed(s: &mut UnixStream, what: &str) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: {n} more bytes instead of the end"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: the connection was not closed: {e}"),
    }
}

/// A hello whose frame body is exactly `len` bytes (its client name fills it up).
fn hello_of_size(len: usize) -> Vec<u8> {
    // The name's length prefix grows with the name, so aim and correct a few times.
    let mut name_len = len;
    for _ in 0..8 {
        let frame = encode_frame(&Hello::new("x".repeat(name_len)), u32::MAX).unwrap();
        let body = frame.len() - 4;
        if body == len {
            return frame;
        }
        name_len = (name_len as i64 + len as i64 - body as i64) as usize;
    }
    panic!("a hello of {len} bytes cannot be made")
}

#[tokio::test]
async fn oversize_hellos_are_refused_from_their_header_and_closed() {
    let d = daemon();
    created(&d).await;
    // Only a header announcing a large hello, then nothing: the daemon must answer from
    // the header (it would otherwise wait for the body until its handshake deadline and
    // say "timed out"), then close.
    for announced in [65_537u32, 1 << 20, u32::MAX] {
        let what = format!("a hello announcing {announced} bytes");
        let mut s = raw(&d);
        s.write_all(&announced.to_le_bytes()).unwrap();
        match read_msg::<HandshakeReply>(&mut s) {
            Some(HandshakeReply::Refused(e)) => {
                assert!(e.message.contains("handshake") && e.message.contains("exceeds"), "{what}: {e}");
                assert_eq!(e.kind, ErrorKind::InvalidArgument, "{what}: {e}");
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_closed(&mut s, &what);
    }
    // A whole, valid hello one byte over 64 KiB is refused the same way.
    let mut s = raw(&d);
    // The daemon refuses from the header and may close before the rest of the 64 KiB is
    // written (the write then fails with EPIPE, as CI saw once); its refusal was sent
    // before the close and is still there to read.
    let _ = s.write_all(&hello_of_size(65_537));
    match read_msg::<HandshakeReply>(&mut s) {
        Some(HandshakeReply::Refused(e)) => assert!(e.message.contains("exceeds"), "{e}"),
        other => panic!("a hello of 65537 bytes: {other:?}"),
    }
    assert_closed(&mut s, "a hello of 65537 bytes");
    still_serves(&d).await;
}

#[tokio::test]
async fn malformed_small_hellos_are_refused_and_closed() {
    let d = daemon();
    created(&d).await;
    let request_frame = encode_frame(&Request { id: 1, store: "s".into(), op: Op::Ping }, u32::MAX).unwrap();
    let mut garbage = 20u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 20]);
    let mut short = 3u32.to_le_bytes().to_vec();
    short.extend_from_slice(&[1, 2, 3]);
    let mut trailing = encode_frame(&Hello::new("ok"), u32::MAX).unwrap();
    trailing.push(0);
    let n = (trailing.len() - 4) as u32;
    trailing[..4].copy_from_slice(&n.to_le_bytes());
    for (what, frame) in [
        ("20 bytes of garbage", garbage),
        ("an empty hello", 0u32.to_le_bytes().to_vec()),
        ("a 3 byte hello", short),
        ("a request instead of a hello", request_frame),
        ("a hello with a trailing byte", trailing),
    ] {
        let mut s = raw(&d);
        s.write_all(&frame).unwrap();
        match read_msg::<HandshakeReply>(&mut s) {
            Some(HandshakeReply::Refused(e)) => assert_eq!(e.kind, ErrorKind::InvalidArgument, "{what}: {e}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_closed(&mut s, what);
    }
    // A hello cut short (header says 100, 10 bytes come, then the client goes): no reply
    // is owed, the daemon just drops the connection.
    let mut s = raw(&d);
    let mut cut = 100u32.to_le_bytes().to_vec();
    cut.extend_from_slice(&[0; 10]);
    s.write_all(&cut).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    match read_msg::<HandshakeReply>(&mut s) {
        None | Some(HandshakeReply::Refused(_)) => {}
        other => panic!("a hello cut short: {other:?}"),
    }
    assert_closed(&mut s, "a hello cut short");
    // A hello that stalls halfway is refused at the handshake deadline (10 s).
    let mut s = raw(&d);
    s.write_all(&cut).unwrap();
    match read_msg::<HandshakeReply>(&mut s) {
        Some(HandshakeReply::Refused(e)) => assert!(e.message.contains("timed out"), "{e}"),
        other => panic!("a stalled hello: {other:?}"),
    }
    assert_closed(&mut s, "a stalled hello");
    still_serves(&d).await;
}

/// A daemon whose store `s` takes 200 ms per backend call, so pipelined requests pile up.
fn slow_daemon(extra: &[&str]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let arg = format!("s=file://{}/s", dir.path().display());
    let mut args = vec!["--store", arg.as_str(), "--max-frame", "1048576", "--latency", "s=200000"];
    args.extend_from_slice(extra);
    Daemon::start_in(dir, &args, &[])
}

/// Size of the values pipelined below: as large as a 1 MiB frame allows.
const NEAR_MIB: usize = 1_040_000;

/// The value stored as `big<conn>-<id>`: its numbers at both ends and in the middle.
fn value_of(conn: u64, id: u64) -> Vec<u8> {
    let mut v = vec![(id % 251) as u8; NEAR_MIB];
    let stamp = [conn.to_le_bytes(), id.to_le_bytes()].concat();
    for at in [0, NEAR_MIB / 2, NEAR_MIB - 16] {
        v[at..at + 16].copy_from_slice(&stamp);
    }
    v
}

/// On `connections` connections at once, pipeline `per_connection` stores of ~1 MiB each
/// without reading a reply until all are sent; then read every reply (each exactly once,
/// each Ok). The daemon's peak RSS must grow by less than `limit` bytes; then every value
/// must be on disk byte for byte.
async fn pipeline_big_stores(d: &Daemon, connections: u64, per_connection: u64, limit: u64) {
    use borgstore_tests::memory::Baseline;
    created(d).await;
    // Warm up: the store is open and a few values went through.
    {
        let mut s = connect(d);
        for id in 1..=4 {
            let op = Op::Store { name: format!("warm{id}"), value: vec![1; NEAR_MIB].into() };
            assert_eq!(request(&mut s, id, op).body, Reply::Ok);
        }
    }
    let base = Baseline::take(d.child.id());
    let runs: Vec<_> = (0..connections)
        .map(|conn| {
            let mut s = connect(d);
            s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            let mut w = s.try_clone().unwrap();
            std::thread::spawn(move || {
                for id in 1..=per_connection {
                    let op = Op::Store { name: format!("big{conn}-{id}"), value: value_of(conn, id).into() };
                    let frame = encode_frame(&Request { id, store: "s".into(), op }, u32::MAX).unwrap();
                    w.write_all(&frame).unwrap_or_else(|e| panic!("connection {conn}: sending request {id}: {e}"));
                }
                // Every request is sent (the daemon read them all); now the replies.
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..per_connection {
                    let r: Response = read_msg(&mut s).unwrap_or_else(|| panic!("connection {conn}: a reply missing"));
                    assert_eq!(r.body, Reply::Ok, "connection {conn}, request {}", r.id);
                    assert!((1..=per_connection).contains(&r.id), "connection {conn}: unknown id {}", r.id);
                    assert!(seen.insert(r.id), "connection {conn}: request {} answered twice", r.id);
                }
                s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                assert!(read_msg::<Response>(&mut s).is_none(), "connection {conn}: a reply too many");
            })
        })
        .collect();
    for r in runs {
        r.join().expect("a pipelining connection failed");
    }
    base.assert_below(limit, &format!("{connections} connection(s) pipelining {per_connection} stores of ~1 MiB each"));
    // Everything is stored, byte for byte.
    for conn in 0..connections {
        for id in 1..=per_connection {
            let path = d.path(&format!("s/big{conn}-{id}"));
            let stored = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(stored == value_of(conn, id), "{} differs from what was sent", path.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_are_bounded_per_connection() {
    // 300 stores of ~1 MiB pipelined on one connection against a slow store: without a
    // per-connection byte budget (64 MiB) the daemon would read all ~300 MiB at once.
    let d = slow_daemon(&[]);
    pipeline_big_stores(&d, 1, 300, 150 << 20).await;
    still_serves(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_are_bounded_daemon_wide() {
    // Four such connections, each within its own 64 MiB, share a daemon-wide budget of
    // 16 MiB: without it they would hold about 4 x 64 MiB.
    let d = slow_daemon(&["--max-in-flight", "16777216"]);
    pipeline_big_stores(&d, 4, 100, 100 << 20).await;
    still_serves(&d).await;
}

/// A request whose frame body is `len` bytes: a store whose value fills it up.
fn store_frame_of_size(id: u64, name: &str, len: usize) -> Vec<u8> {
    let frame = |n: usize| {
        let op = Op::Store { name: name.into(), value: vec![(n % 251) as u8; n].into() };
        encode_frame(&Request { id, store: "s".into(), op }, u32::MAX).unwrap()
    };
    let mut n = len;
    for _ in 0..8 {
        let body = frame(n).len() - 4;
        if body == len {
            return frame(n);
        }
        n = (n as i64 + len as i64 - body as i64) as usize;
    }
    panic!("a store request of {len} bytes cannot be made")
}

#[tokio::test]
async fn frames_up_to_their_limit_are_decoded_whatever_their_size() {
    // Every frame within its limit is decoded, also those just below the sizes where the
    // decoder switches its allocation bound (4 KiB, 64 KiB, 1 MiB, ...) and those whose
    // integers are small on the wire: a hello of exactly 64 KiB (the handshake limit);
    // store requests of every size in the last 32 bytes below 4 KiB, 64 KiB and 1 MiB
    // (--max-frame here); gather requests of 40 to 60 borg-style sources.
    let d = daemon();
    created(&d).await;
    let mut failures = Vec::new();
    let mut s = raw(&d);
    s.write_all(&hello_of_size(65_536)).unwrap();
    match read_msg::<HandshakeReply>(&mut s) {
        Some(HandshakeReply::Accepted(_)) => {}
        other => failures.push(format!("a hello of exactly 64 KiB: {other:?}")),
    }
    let mut s = connect(&d);
    let mut id = 0;
    for limit in [1usize << 12, 1 << 16, 1 << 20] {
        for len in limit - 31..=limit {
            id += 1;
            s.write_all(&store_frame_of_size(id, &format!("edge{len}"), len)).unwrap();
            let r: Response = read_msg(&mut s).expect("a reply");
            if (r.id, &r.body) != (id, &Reply::Ok) {
                failures.push(format!("a store request of {len} bytes: {:?}", r.body));
            }
        }
    }
    for n in 40..=60u64 {
        id += 1;
        let sources =
            (0..n).map(|i| borgstore_ipc::Source { name: format!("data/{i:064x}"), offset: 0, size: 100 }).collect();
        let op = Op::Gather { sources, namespace: None, deleted: false };
        let frame = encode_frame(&Request { id, store: "s".into(), op }, u32::MAX).unwrap();
        s.write_all(&frame).unwrap();
        // The items do not exist: any answer to this request will do, but it must be one.
        let r: Response = read_msg(&mut s).expect("a reply");
        if r.id != id {
            failures.push(format!("a gather request of {n} sources ({} bytes): {:?}", frame.len() - 4, r.body));
        }
    }
    assert!(
        failures.is_empty(),
        "{} frames within their limit were not decoded:\n{}",
        failures.len(),
        failures.join("\n")
    );
    still_serves(&d).await;
}

/// Eight connections pipeline store/load pairs on ONE item, all frames of a connection
/// written before any answer is read. Per item the store runs commands in arrival order,
/// so: each load right after a connection's own store sees that store or another
/// connection's (never its own older or newer value), and the values a connection sees
/// from any one writer never go back in that writer's order. Runs against whatever
/// executes commands (actor thread, inline file system calls, blocking pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_pipelining_on_one_item_keep_fifo_order() {
    const CLIENTS: u64 = 8;
    const ROUNDS: u64 = 150;
    let d = daemon();
    created(&d).await;
    let value = |c: u64, k: u64| format!("{c:02}:{k:04}:{}", "x".repeat((k % 5) as usize * 900)).into_bytes();
    let parse = |v: &[u8]| -> (u64, u64) {
        let s = std::str::from_utf8(v).expect("a value we stored");
        let (c, k) = (s[..2].parse().expect("client"), s[3..7].parse().expect("round"));
        assert_eq!(v, value(c, k).as_slice(), "a torn value");
        (c, k)
    };
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut s = connect(&d);
            std::thread::spawn(move || {
                let mut frames = Vec::new();
                for k in 0..ROUNDS {
                    let store = Op::Store { name: "shared".into(), value: value(c, k).into() };
                    let load = Op::Load { name: "shared".into(), offset: 0, size: None, deleted: false };
                    for (i, op) in [(2 * k + 1, store), (2 * k + 2, load)] {
                        frames.extend(encode_frame(&Request { id: i, store: "s".into(), op }, u32::MAX).unwrap());
                    }
                }
                let mut writer = s.try_clone().unwrap();
                let sender = std::thread::spawn(move || writer.write_all(&frames).unwrap());
                let mut loads = std::collections::BTreeMap::new();
                for _ in 0..2 * ROUNDS {
                    let r = read_msg::<Response>(&mut s).expect("every request is answered");
                    match r.body {
                        Reply::Ok => assert_eq!(r.id % 2, 1, "Ok answers a store"),
                        Reply::Data(v) => {
                            loads.insert(r.id / 2 - 1, v);
                        }
                        other => panic!("request {}: {other:?}", r.id),
                    }
                }
                sender.join().unwrap();
                (c, loads)
            })
        })
        .collect();
    for t in threads {
        let (c, loads) = t.join().unwrap();
        assert_eq!(loads.len() as u64, ROUNDS);
        let mut newest_seen: HashMap<u64, u64> = HashMap::new();
        for (k, v) in loads {
            let (writer, round) = parse(&v);
            if writer == c {
                assert_eq!(round, k, "client {c}, round {k}: its load saw its own round {round}");
            }
            let newest = newest_seen.entry(writer).or_insert(0);
            assert!(round >= *newest, "client {c}: saw writer {writer}'s round {round} after round {newest}");
            *newest = round;
        }
    }
    still_serves(&d).await;
}

/// Sixteen connections each store and load one 8 MiB value and then stay open, idle. A
/// connection must not keep the buffers it grew for those frames, and the daemon gives
/// freed memory back to the system: a few seconds later its resident size is near where
/// it was (it would hold 16 x 2 x 8 MiB otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_keep_the_buffers_of_large_frames() {
    const BIG: usize = 8 << 20;
    let d = large_frames_daemon().await;
    let open = || welcomed(&d, "idle-test");
    // Warm up (the store open, the allocator's arenas in use), then the baseline.
    let mut warm = open();
    assert_eq!(request(&mut warm, 1, Op::Store { name: "warm".into(), value: vec![7; BIG].into() }).body, Reply::Ok);
    drop(warm);
    std::thread::sleep(Duration::from_secs(3));
    let before = borgstore_tests::memory::read(d.child.id()).rss;
    let mut idle = Vec::new();
    for c in 0..16u8 {
        let mut s = open();
        let name = format!("big{c}");
        assert_eq!(request(&mut s, 1, Op::Store { name: name.clone(), value: vec![c; BIG].into() }).body, Reply::Ok);
        match request(&mut s, 2, Op::Load { name, offset: 0, size: None, deleted: false }).body {
            Reply::Data(v) => assert!(v.len() == BIG && v.iter().all(|b| *b == c)),
            other => panic!("load: {other:?}"),
        }
        idle.push(s);
    }
    // Longer than two trim intervals of the daemon.
    std::thread::sleep(Duration::from_secs(5));
    let after = borgstore_tests::memory::read(d.child.id()).rss;
    let grown = after.saturating_sub(before);
    eprintln!(
        "memory: RSS {} MiB before, {} MiB with 16 idle connections after 8 MiB frames",
        before >> 20,
        after >> 20
    );
    assert!(grown < 48 << 20, "16 idle connections hold {} MiB more than before them", grown >> 20);
    drop(idle);
    still_serves(&d).await;
}

/// The file of the only item under `root` that is `len` bytes long.
fn file_of_len(root: &std::path::Path, len: u64) -> std::path::PathBuf {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                dirs.push(e.path());
            } else if md.len() == len {
                return e.path();
            }
        }
    }
    panic!("no file of {len} bytes under {}", root.display());
}

/// A daemon with store `s` (created) in `DIR/s` and frames of the default size limit.
async fn large_frames_daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let arg = format!("s=file://{}/s", dir.path().display());
    let d = Daemon::start_in(dir, &["--store", &arg], &[]);
    created(&d).await;
    d
}

/// A raw connection past its handshake (any frame size the daemon allows).
fn welcomed(d: &Daemon, client: &str) -> UnixStream {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&encode_frame(&Hello::new(client), u32::MAX).unwrap()).unwrap();
    assert!(matches!(read_msg::<HandshakeReply>(&mut s), Some(HandshakeReply::Accepted(_))));
    s
}

/// Send a load of `name` on a fresh raw connection and do not read the answer.
fn load_unread(d: &Daemon, name: &str) -> UnixStream {
    let mut s = welcomed(d, "unread");
    let load =
        Request { id: 1, store: "s".into(), op: Op::Load { name: name.into(), offset: 0, size: None, deleted: false } };
    s.write_all(&encode_frame(&load, u32::MAX).unwrap()).unwrap();
    s
}

/// A large value goes out from its open file a piece at a time. When another program
/// cuts the file short while it is being sent, the length already announced cannot be
/// kept: that connection ends (the client sees a short frame, never wrong bytes passed
/// off as whole), and the daemon goes on serving everybody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_cut_short_while_it_is_sent_ends_that_connection_only() {
    const BIG: usize = 8 << 20;
    let d = large_frames_daemon().await;
    let root = d.dir.path().join("s");
    let c = d.client("s").await;
    c.store("big", vec![0x42; BIG]).await.unwrap();
    let file = file_of_len(&root, BIG as u64);

    let mut s = load_unread(&d, "big");
    // The daemon writes until the socket is full, then waits for the client.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(1000).unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap();
    let announced = u32::from_le_bytes(header) as usize;
    assert!(announced > BIG, "the frame announces the whole value");
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("the daemon neither sent the value nor closed the connection: {e}"),
        }
    }
    assert!(got < announced, "a short file cannot fill the frame ({got} of {announced} bytes)");

    still_serves(&d).await;
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("became shorter"), "the daemon says why it closed: {log}");
    assert!(!log.contains(&root.display().to_string()), "no storage path in the log line");
}

/// Clients that ask for large values and do not read them hold a piece of each, not the
/// values: 16 loads of 8 MiB left unread cost the daemon far less than 128 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_large_loads_do_not_hold_their_values_in_memory() {
    const BIG: usize = 8 << 20;
    let d = large_frames_daemon().await;
    let c = d.client("s").await;
    for i in 0..16u8 {
        c.store(&format!("big{i}"), vec![i; BIG]).await.unwrap();
    }
    // Longer than two trim intervals: what the stores used is given back first.
    std::thread::sleep(Duration::from_secs(5));
    let before = borgstore_tests::memory::read(d.child.id()).rss;
    let unread: Vec<UnixStream> = (0..16u8).map(|i| load_unread(&d, &format!("big{i}"))).collect();
    std::thread::sleep(Duration::from_secs(1));
    let held = borgstore_tests::memory::read(d.child.id()).rss.saturating_sub(before);
    eprintln!("16 unread 8 MiB loads: daemon RSS grew by {} MiB", held >> 20);
    assert!(held < 32 << 20, "16 unread loads hold {} MiB", held >> 20);
    // Each still arrives whole once its client reads.
    for (i, mut s) in unread.into_iter().enumerate() {
        match read_msg::<Response>(&mut s).expect("the answer").body {
            Reply::Data(v) => assert!(v.len() == BIG && v.iter().all(|b| *b == i as u8)),
            other => panic!("load: {other:?}"),
        }
    }
    still_serves(&d).await;
}

/// Large store frames are taken apart without decoding (the value stays a slice of the
/// frame). Frames that only look like one go through the full decoder: bytes after the
/// value, a value shorter than announced, a bad name, another uid's store name. None
/// stores anything or disturbs the connection.
#[tokio::test]
async fn large_store_frames_that_only_look_right_are_refused_and_store_nothing() {
    use borgstore_ipc::codec::store_request_head;
    let d = daemon();
    created(&d).await;
    let mut s = connect(&d);
    let value = vec![0x33u8; 200_000];
    let framed = |id: u64, store: &str, name: &str, value: &[u8], extra: &[u8]| {
        let mut f = store_request_head(id, store, name, value.len(), u32::MAX).unwrap();
        f.extend_from_slice(value);
        f.extend_from_slice(extra);
        let len = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&len.to_le_bytes());
        f
    };
    // One byte after the value: not a store request, and not a valid frame either.
    s.write_all(&framed(1, "s", "trailing", &value, &[0])).unwrap();
    let r: Response = read_msg(&mut s).expect("a reply");
    assert!(matches!((r.id, &r.body), (0, Reply::Err(e)) if e.kind == ErrorKind::InvalidArgument), "{r:?}");
    // The head announces more value than the frame holds.
    let mut short = framed(2, "s", "short", &value, &[]);
    let len = u32::from_le_bytes(short[..4].try_into().unwrap()) - 10;
    short.truncate(short.len() - 10);
    short[..4].copy_from_slice(&len.to_le_bytes());
    s.write_all(&short).unwrap();
    let r: Response = read_msg(&mut s).expect("a reply");
    assert!(matches!((r.id, &r.body), (0, Reply::Err(e)) if e.kind == ErrorKind::InvalidArgument), "{r:?}");
    // Well formed, but a name no store accepts, and a store that is not served.
    s.write_all(&framed(3, "s", "../escape", &value, &[])).unwrap();
    let r: Response = read_msg(&mut s).expect("a reply");
    assert!(matches!((r.id, &r.body), (3, Reply::Err(e)) if e.kind == ErrorKind::InvalidArgument), "{r:?}");
    s.write_all(&framed(4, "elsewhere", "x", &value, &[])).unwrap();
    let r: Response = read_msg(&mut s).expect("a reply");
    assert!(matches!((r.id, &r.body), (4, Reply::Err(e)) if e.kind == ErrorKind::BackendDoesNotExist), "{r:?}");
    // A right one is stored whole, on the same connection.
    s.write_all(&framed(5, "s", "right", &value, &[])).unwrap();
    assert_eq!(read_msg::<Response>(&mut s).expect("a reply").body, Reply::Ok);
    match request(&mut s, 6, Op::Load { name: "right".into(), offset: 0, size: None, deleted: false }).body {
        Reply::Data(v) => assert_eq!(v, value),
        other => panic!("load: {other:?}"),
    }
    let c = d.client("s").await;
    let names: Vec<String> =
        c.list("", false).await.unwrap().collect().await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["right"], "only the well-formed store left an item");
}
