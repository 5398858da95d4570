//! The REST front end inside `borgstored` (issue 4 points 1 and 2): every store under
//! `/<name>/` with its own credentials, on TCP and on a Unix socket, and REST and IPC
//! clients of one store sharing its ordering, stats and quota.

use borgstore_client::{ErrorKind, MoveAction};
use borgstore_tests::rest::{daemon_with_rest, free_port, request};
use std::io::{Read, Write};

const KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread")]
async fn rest_and_ipc_clients_share_one_store() {
    let port = free_port();
    let d = daemon_with_rest(port, &[]);
    let alice = Some(("alice", "wonderland"));
    let ipc = d.client("main").await;
    ipc.create().await.unwrap();

    // REST speaks nested names; IPC sees the same item by its key.
    let nested = format!("/main/data/01/23/{KEY}");
    assert_eq!(request(port, "POST", &nested, alice, &[], b"from rest").status, 200);
    assert_eq!(ipc.load(&format!("data/{KEY}"), 0, None, false).await.unwrap(), b"from rest");
    ipc.store(&format!("data/{KEY}"), b"from ipc".to_vec()).await.unwrap();
    assert_eq!(request(port, "GET", &nested, alice, &[], b"").body, b"from ipc");

    // A REST soft delete (a move to .del) is an IPC soft delete.
    let mv = format!("/main/?cmd=move&current=data/01/23/{KEY}&new=data/01/23/{KEY}.del");
    assert_eq!(request(port, "POST", &mv, alice, &[], b"").status, 200);
    assert_eq!(ipc.list("data", true).await.unwrap().collect().await.unwrap().len(), 1);
    ipc.move_(&format!("data/{KEY}"), MoveAction::Undelete).await.unwrap();
    assert_eq!(request(port, "HEAD", &nested, alice, &[], b"").status, 200);

    // One quota and one set of stats.
    let q: serde_json::Value =
        serde_json::from_slice(&request(port, "POST", "/main/?cmd=quota", alice, &[], b"").body).unwrap();
    assert_eq!(q["usage"], 8);
    assert_eq!(ipc.quota().await.unwrap().usage, 8);
    let r = request(port, "POST", "/main/data/01/23/0123ffff", alice, &[], &[0u8; 100_000]);
    assert_eq!(r.status, 507);
    let err = ipc.store("data/0123eeee", vec![0u8; 100_000]).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::QuotaExceeded);
    let stats = ipc.stats().await.unwrap();
    let n = |k: &str| stats.get(k).map(|v| v.as_f64()).unwrap_or(0.0);
    assert_eq!(n("store_calls"), 2.0, "one REST and one IPC store: {stats:?}");
    assert_eq!(n("load_calls"), 2.0, "one REST and one IPC load: {stats:?}");

    // Credentials are per store: main needs alice, other needs nothing.
    assert_eq!(request(port, "GET", &nested, None, &[], b"").status, 401);
    assert_eq!(request(port, "GET", &nested, Some(("alice", "x")), &[], b"").status, 401);
    assert_eq!(request(port, "POST", "/other/?cmd=create", None, &[], b"").status, 200);
    assert_eq!(request(port, "POST", "/other/config/x", None, &[], b"o").status, 200);
    assert_eq!(request(port, "GET", "/other/config/x", None, &[], b"").body, b"o");
    assert_eq!(request(port, "GET", "/nosuchstore/config/x", None, &[], b"").status, 404);
    assert!(!d.path("other/data").exists() && d.path("other/config/x").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_on_a_unix_socket() {
    let port = free_port();
    let d = daemon_with_rest(port, &[]);
    let sock = d.path("rest.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(
        b"POST /other/?cmd=create HTTP/1.1\r\nHost: x\r\nAccept: application/vnd.x.borgstore.rest.v1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o660);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_rest_and_ipc_cleanly() {
    let port = free_port();
    let mut d = daemon_with_rest(port, &[]);
    assert_eq!(request(port, "POST", "/other/?cmd=create", None, &[], b"").status, 200);
    let status = d.terminate(std::time::Duration::from_secs(30));
    assert!(status.success(), "{status:?}; log:\n{}", d.log_text());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// A large value leaves its file a piece at a time. Cut short by another program while
/// it is sent, the answer cannot reach its announced length: that connection is closed
/// (the client sees a short body, never a shorter value passed off as whole), and the
/// front end goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_value_cut_short_while_it_is_sent_closes_that_connection() {
    const BIG: usize = 8 << 20;
    let port = free_port();
    let d = daemon_with_rest(port, &[]);
    assert_eq!(request(port, "POST", "/other/?cmd=create", None, &[], b"").status, 200);
    assert_eq!(request(port, "POST", "/other/config/big", None, &[], &vec![7u8; BIG]).status, 200);

    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let get = format!("GET /other/config/big HTTP/1.1\r\nHost: x\r\nAccept: {}\r\n\r\n", borgstore_tests::rest::ACCEPT);
    s.write_all(get.as_bytes()).unwrap();
    // The server sends until the socket is full, then waits for this client.
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::fs::OpenOptions::new().write(true).open(d.path("other/config/big")).unwrap().set_len(1000).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the server neither sent the value nor closed the connection: {e}"),
        }
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("an answer head") + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200") && head.contains(&format!("content-length: {BIG}")), "{head}");
    assert!(got.len() - head_end < BIG, "a short file cannot fill the body");

    assert_eq!(request(port, "POST", "/other/config/small", None, &[], b"still").status, 200);
    assert_eq!(request(port, "GET", "/other/config/small", None, &[], b"").body, b"still");
}
