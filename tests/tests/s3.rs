//! The s3 backend against a real S3 server (moto_server on loopback, `borgstore_tests::moto`):
//!
//! - Interop: a store our engine writes on moto (namespace `data/` at nesting level 2,
//!   soft- and hard-deleted items) is seen identically by Python borgstore 0.7.0 on the
//!   same `s3:` URL, and the reverse; both write the same objects under the same keys;
//!   directories made by one side are seen and removed by the other
//!   (`tests/python/s3_interop.py` is the Python side).
//! - Faults: moto killed and restarted (with its request journal replayed, since moto
//!   keeps its state in memory) or frozen with SIGSTOP: calls fail with ConnectionLost
//!   within a bounded time, never hang, work again after the restart, and an upload cut
//!   off midway never leaves a partial object behind. A fault injector in front of moto
//!   shows that throttling/5xx answers and bodies cut off midway are retried, a bounded
//!   number of times.
//! - URLs: `b2:` against an S3 server, credentials from a named profile and from the
//!   environment (in a child process, since the environment is process-wide), a missing
//!   bucket.
//! - Scale: a listing of 10,000 items (10 pages) and a 256 MiB value.

use borgstore_daemon::backends::parts::PartOptions;
use borgstore_daemon::backends::s3::{S3Options, S3};
use borgstore_daemon::backends::url::backend_from_url;
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::store::{Emulator, Store};
use borgstore_daemon::Backend;
use borgstore_ipc::{ErrorKind, ItemInfo};
use borgstore_tests::moto::{self, Moto};
use borgstore_tests::python::{run_ok, Version};
use borgstore_tests::scenario::{self, key, names, value};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn shared_moto() -> Arc<Moto> {
    tokio::task::spawn_blocking(moto::shared).await.unwrap()
}

async fn own_moto(persistent: bool) -> Moto {
    tokio::task::spawn_blocking(move || if persistent { Moto::start_persistent() } else { Moto::start() })
        .await
        .unwrap()
}

/// Run s3_interop.py with Python borgstore 0.7.0 against `moto`.
fn py(moto: &Moto, args: &[&str]) -> String {
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_ok(Version::V070, "s3_interop.py", args, &env)
}

fn py_json(moto: &Moto, args: &[&str]) -> Value {
    serde_json::from_str(&py(moto, args)).unwrap()
}

fn store_for(url: &str) -> Store {
    let be = backend_from_url(url, Default::default()).unwrap();
    Store::with_emulator(be, scenario::namespaces(), Emulator::OFF)
}

async fn rust_write(url: &str) {
    scenario::write(&store_for(url)).await;
}

async fn rust_undelete(url: &str, name: &str) {
    scenario::undelete(&store_for(url), name).await;
}

/// What s3_interop.py `dump` prints, seen through our engine: the scenario dump with
/// ranges, plus the root listing.
async fn rust_dump(url: &str) -> Value {
    let s = store_for(url);
    let mut out = scenario::dump(&s, true).await;
    s.open().await.unwrap();
    let root: Vec<Value> = s.backend().list("").await.unwrap().iter().map(|i| json!([i.name, i.directory])).collect();
    s.close().await.unwrap();
    out.insert("root".into(), json!(root));
    Value::Object(out)
}

/// The dump holds what the scenario put there (it is not trivially equal).
fn check_scenario(dump: &Value) {
    scenario::check(dump);
    assert_eq!(dump["root"], json!([["config", true], ["data", true]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_writes_rust_reads_and_undeletes() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    py(&moto, &["write", &url]);
    let theirs = py_json(&moto, &["dump", &url]);
    check_scenario(&theirs);
    assert_eq!(rust_dump(&url).await, theirs, "our engine sees a Python-written store differently");

    rust_undelete(&url, &key(7)).await;
    let after = py_json(&moto, &["dump", &url]);
    assert!(names(&after, "list").contains(&key(7)));
    assert!(!names(&after, "deleted").contains(&key(7)));
    assert_eq!(after["loads"][key(7)], json!(hex::encode(Sha256::digest(value(7)))));
    assert_eq!(rust_dump(&url).await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_writes_python_reads_and_undeletes() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    rust_write(&url).await;
    let ours = rust_dump(&url).await;
    check_scenario(&ours);
    assert_eq!(py_json(&moto, &["dump", &url]), ours, "Python sees a store we wrote differently");

    py(&moto, &["undelete", &url, &key(3)]);
    let after = rust_dump(&url).await;
    assert!(names(&after, "list").contains(&key(3)));
    assert!(!names(&after, "deleted").contains(&key(3)));
    assert_eq!(py_json(&moto, &["dump", &url]), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_write_the_same_objects_under_the_same_keys() {
    let moto = shared_moto().await;
    let (a, b) = (moto.fresh_url(), moto.fresh_url());
    py(&moto, &["write", &a]);
    rust_write(&b).await;
    let (theirs, ours) = (py_json(&moto, &["keys", &a]), py_json(&moto, &["keys", &b]));
    assert_eq!(ours, theirs, "objects (key below the store prefix, size, sha256)");
    let keys: Vec<&str> = ours.as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
    // The store's own marker, written by create; no other markers, no temp objects.
    assert!(keys.contains(&""), "{keys:?}");
    let k = &key(1)[5..];
    assert!(keys.contains(&format!("data/{}/{}/{k}", &k[..2], &k[2..4]).as_str()));
    assert!(keys.iter().any(|k| k.ends_with(".del")));
    assert!(!keys.iter().any(|k| k.ends_with(".tmp") || (k.ends_with('/') && !k.is_empty())), "{keys:?}");
}

/// Our view of directories in the shape of s3_interop.py `dirinfo`.
async fn rust_dirinfo(be: &dyn Backend, names: &[&str]) -> Value {
    let mut out = Map::new();
    for name in names {
        let info = be.info(name).await.unwrap();
        let listing = match be.list(name).await {
            Ok(items) => json!(items.iter().map(|i: &ItemInfo| json!([i.name, i.directory])).collect::<Vec<_>>()),
            Err(e) if e.kind == ErrorKind::ObjectNotFound => json!("ObjectNotFound"),
            Err(e) => panic!("list {name}: {e}"),
        };
        out.insert(name.to_string(), json!({"exists": info.exists, "directory": info.directory, "list": listing}));
    }
    Value::Object(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_interoperate() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    let be = backend_from_url(&url, Default::default()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    be.mkdir("ours/sub").await.unwrap();
    be.store("ours/item", Bytes::from_static(b"x")).await.unwrap();
    py(&moto, &["mkdir", &url, "theirs/deep"]);

    // Where Python has a marker to look at, both agree.
    let names = ["ours", "ours/sub", "theirs/deep", "missing"];
    let theirs = py_json(&moto, &[&["dirinfo", url.as_str()][..], &names[..]].concat());
    assert_eq!(rust_dirinfo(&*be, &names).await, theirs);
    assert_eq!(theirs["ours"]["list"], json!([["item", false], ["sub", true]]));
    assert_eq!(theirs["theirs/deep"], json!({"exists": true, "directory": true, "list": []}));
    assert_eq!(theirs["missing"], json!({"exists": false, "directory": false, "list": "ObjectNotFound"}));
    // Python's mkdir writes no parent markers, so Python's info does not see "theirs";
    // we see every directory that holds something.
    let info = be.info("theirs").await.unwrap();
    assert!(info.exists && info.directory);

    // Each side removes the other's empty directory.
    py(&moto, &["rmdir", &url, "ours/sub"]);
    be.rmdir("theirs/deep").await.unwrap();
    assert!(!be.info("ours/sub").await.unwrap().exists);
    let after = py_json(&moto, &["dirinfo", &url, "ours/sub", "theirs/deep"]);
    assert_eq!(after["ours/sub"]["exists"], json!(false));
    assert_eq!(after["theirs/deep"]["exists"], json!(false));
    be.close().await.unwrap();
}

// ----- faults -----

/// Short timeouts, so faults show within seconds.
fn fast() -> S3Options {
    S3Options {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        min_throughput: 16 * 1024 * 1024,
        stall_timeout: Duration::from_secs(2),
        copy_timeout: Duration::from_secs(2),
        ..S3Options::default()
    }
}

/// The longest a call may take with [`fast`] options and `bytes` to move (plus slack).
fn bound(bytes: u64) -> Duration {
    let o = fast();
    o.operation_timeout(o.attempt_timeout(bytes)) + Duration::from_secs(3)
}

/// Like [`fast`] with fewer attempts: every attempt against a frozen server waits out its
/// whole budget.
fn frozen() -> S3Options {
    S3Options { max_attempts: 2, ..fast() }
}

fn frozen_bound(bytes: u64) -> Duration {
    let o = frozen();
    o.operation_timeout(o.attempt_timeout(bytes)) + Duration::from_secs(3)
}

/// Run `f`, which must fail as a lost connection (or a backend error) within `limit`.
async fn fails_in_time<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = borgstore_ipc::Result<T>>,
) {
    let start = Instant::now();
    let res = tokio::time::timeout(limit + Duration::from_secs(5), f).await;
    let took = start.elapsed();
    let res = res.unwrap_or_else(|_| panic!("{what} hung for more than {limit:?}"));
    let err = res.expect_err(what);
    assert!(matches!(err.kind, ErrorKind::ConnectionLost | ErrorKind::Backend), "{what}: {err}");
    assert!(took <= limit, "{what} took {took:?} (limit {limit:?})");
    assert!(!err.message.contains("fault/"), "{what}: the store prefix leaked: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_fast_and_recovers_after_restart() {
    let mut moto = own_moto(true).await;
    let be = S3::from_url_with(&moto.url("fault/kill"), fast()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    for i in 0..5 {
        be.store(&key(i), value(i + 1)).await.unwrap();
    }
    moto.kill();
    let limit = bound(0);
    fails_in_time("load", limit, be.load(&key(1), 0, None)).await;
    fails_in_time("store", limit, be.store("config/x", Bytes::from_static(b"x"))).await;
    fails_in_time("info", limit, be.info(&key(1))).await;
    fails_in_time("list", limit, be.list("data")).await;
    fails_in_time("delete", limit, be.delete(&key(2))).await;
    fails_in_time("move", limit, be.move_(&key(3), "data/moved")).await;
    fails_in_time("hash", limit, be.hash(&key(4), HashAlgorithm::Sha256)).await;

    let started = Instant::now();
    let moto = tokio::task::spawn_blocking(move || {
        moto.restart();
        moto
    })
    .await
    .unwrap();
    // The same backend object, not reopened: the client reconnects by itself, and the
    // replayed journal brought back what was stored before the kill.
    for i in 0..5 {
        assert_eq!(be.load(&key(i), 0, None).await.unwrap(), value(i + 1), "item {i} after the restart");
    }
    be.store("config/x", Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(&be.load("config/x", 0, None).await.unwrap()[..], b"after");
    be.move_(&key(3), "data/moved").await.unwrap();
    let names: Vec<String> = be.list("data").await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.contains(&"moved".to_string()));
    be.close().await.unwrap();
    eprintln!("restart, replay and checks took {:?}", started.elapsed());
    drop(moto);
}

/// Old or new value in full, nothing else.
async fn old_or_new(be: &S3, name: &str, old: &Bytes, new: &Bytes) -> &'static str {
    let got = be.load(name, 0, None).await.unwrap();
    if got == *old {
        "old"
    } else if got == *new {
        "new"
    } else {
        panic!("a partial or mixed object is visible: {} bytes", got.len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_cut_by_a_kill_leaves_no_partial_object() {
    const MIB: usize = 1024 * 1024;
    let mut moto = own_moto(true).await;
    let be = S3::from_url_with(&moto.url("fault/cut"), fast()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    let old = Bytes::from(vec![b'o'; MIB]);
    let new = Bytes::from(vec![b'n'; 96 * MIB]);
    be.store("big", old.clone()).await.unwrap();

    // To be sure the kill hits an upload midway, the server runs in short bursts until
    // it has taken the request (the SDK waits for "100 Continue" before a big body) and
    // part of the body waits unread in its socket; then it is killed right away, or after
    // reading for another 20 ms.
    for reading in [Duration::ZERO, Duration::from_millis(20)] {
        moto.pause();
        let upload = {
            let (be, new) = (be.clone(), new.clone());
            tokio::spawn(async move { be.store("big", new).await })
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if moto.unread_bytes() >= MIB as u64 {
                break;
            }
            assert!(Instant::now() < deadline && !upload.is_finished(), "the upload did not get going");
            moto.resume();
            tokio::time::sleep(Duration::from_millis(10)).await;
            moto.pause();
        }
        let arrived = moto.unread_bytes();
        if !reading.is_zero() {
            moto.resume();
            tokio::time::sleep(reading).await;
        }
        moto.kill();
        let killed_at = Instant::now();
        let res = tokio::time::timeout(bound(new.len() as u64), upload).await.expect("the upload hung").unwrap();
        let err = res.expect_err("an upload cut off midway must fail");
        assert!(matches!(err.kind, ErrorKind::ConnectionLost | ErrorKind::Backend), "{err}");
        eprintln!(
            "killed with {} KiB of the body delivered, after {reading:?} of reading; the store failed {:?} later: {err}",
            arrived / 1024,
            killed_at.elapsed()
        );
        moto = tokio::task::spawn_blocking(move || {
            moto.restart();
            moto
        })
        .await
        .unwrap();
        assert_eq!(old_or_new(&be, "big", &old, &new).await, "old");
        let names: Vec<String> = be.list("").await.unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["big"], "no trace of the cut upload");
    }
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_times_out_and_works_after_thaw() {
    let moto = own_moto(false).await;
    let be = S3::from_url_with(&moto.url("fault/freeze"), frozen()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    let old = Bytes::from(vec![b'o'; 64 * 1024]);
    let new = Bytes::from(vec![b'n'; 4 * 1024 * 1024]);
    be.store("item", old.clone()).await.unwrap();

    moto.pause();
    // Several calls at once: each one fails on its own time budget, none hangs.
    let started = Instant::now();
    tokio::join!(
        fails_in_time("load", frozen_bound(0), be.load("item", 0, None)),
        fails_in_time("info", frozen_bound(0), be.info("item")),
        fails_in_time("list", frozen_bound(0), be.list("")),
        fails_in_time("store", frozen_bound(new.len() as u64), be.store("item", new.clone())),
    );
    eprintln!("all calls to the frozen server failed after {:?}", started.elapsed());
    moto.resume();

    // The thawed server still works through the requests queued in its sockets. One it had
    // only partly received when the client gave up is dropped; one it had in full may still
    // be applied now, after the client was told it failed (any HTTP store behaves so). Let
    // the queue drain; then the item holds the old or the new value, never a part.
    let deadline = Instant::now() + Duration::from_secs(20);
    while moto.unread_bytes() > 0 {
        assert!(Instant::now() < deadline, "the thawed server does not read its queued requests");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = old_or_new(&be, "item", &old, &new).await;
    eprintln!("after the thaw the item holds the {seen} value");
    be.store("item", Bytes::from_static(b"fresh")).await.unwrap();
    let got = be.load("item", 0, None).await.unwrap();
    assert!(got == b"fresh"[..], "got {} bytes instead of the fresh value", got.len());
    be.close().await.unwrap();
}

/// A fault injector in front of moto: it answers the next `fail` requests itself with S3
/// throttling and server errors (503 SlowDown, 500 InternalError, alternating), cuts the
/// answers to the next `cut` requests off in the middle, and passes everything else through,
/// without their `Range` headers once told to ignore them (a server that does not do ranges).
struct Injector {
    port: u16,
    fail: Arc<AtomicUsize>,
    cut: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
    ignore_range: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Injector {
    async fn start(upstream: u16) -> Injector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fail, cut, seen, ignore_range) = (Arc::default(), Arc::default(), Arc::default(), Arc::default());
        let task = {
            let (fail, cut, seen): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
                (Arc::clone(&fail), Arc::clone(&cut), Arc::clone(&seen));
            let ignore_range: Arc<AtomicBool> = Arc::clone(&ignore_range);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (fail, cut, seen, ignore) = (fail.clone(), cut.clone(), seen.clone(), ignore_range.clone());
                    tokio::spawn(Self::serve(client, upstream, fail, cut, seen, ignore));
                }
            })
        };
        Injector { port, fail, cut, seen, ignore_range, task }
    }

    async fn serve(
        mut client: TcpStream,
        upstream: u16,
        fail: Arc<AtomicUsize>,
        cut: Arc<AtomicUsize>,
        seen: Arc<AtomicUsize>,
        ignore_range: Arc<AtomicBool>,
    ) {
        // One request per connection: every answer below closes it.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        if ignore_range.load(Ordering::SeqCst) {
            let kept: String = String::from_utf8_lossy(&buf[..head_end])
                .split_inclusive("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("range:"))
                .collect();
            buf = [kept.as_bytes(), &buf[head_end..]].concat();
        }
        let n = seen.fetch_add(1, Ordering::SeqCst);
        if fail.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1)).is_ok() {
            let (status, code) = [("503 Slow Down", "SlowDown"), ("500 Internal Server Error", "InternalError")][n % 2];
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected</Message>\
                 <RequestId>0</RequestId></Error>"
            );
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes()).await;
        } else if let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await {
            if up.write_all(&buf).await.is_ok() {
                if cut.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1)).is_ok() {
                    // The head and half of the body, then the connection drops.
                    let mut answer = Vec::new();
                    let _ = up.read_to_end(&mut answer).await;
                    let head = answer.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| i + 4);
                    let _ = client.write_all(&answer[..head + (answer.len() - head) / 2]).await;
                } else {
                    // moto closes the connection after its answer.
                    let _ = tokio::io::copy(&mut up, &mut client).await;
                }
            }
        }
        let _ = client.shutdown().await;
    }

    /// Answer the next `n` requests with errors.
    fn fail(&self, n: usize) {
        self.fail.store(n, Ordering::SeqCst);
    }

    /// Cut the answers to the next `n` requests off midway.
    fn cut(&self, n: usize) {
        self.cut.store(n, Ordering::SeqCst);
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// Drop the `Range` header of every request from now on.
    fn ignore_range(&self) {
        self.ignore_range.store(true, Ordering::SeqCst);
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried() {
    let moto = own_moto(false).await;
    let inj = Injector::start(moto.port()).await;
    let url = format!("s3:testing:testing@http://127.0.0.1:{}/{}/retry", inj.port, moto::BUCKET);
    let be = S3::from_url_with(&url, fast()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    let attempts = fast().max_attempts as usize;

    // Fewer errors than attempts: every call succeeds, after exactly that many retries
    // (move is two requests: copy and delete).
    let calls: [(&str, usize, usize); 5] =
        [("store", 2, 1), ("load", 2, 1), ("info", 1, 1), ("list", 2, 1), ("move", 2, 2)];
    for (call, errors, requests) in calls {
        inj.fail(errors);
        let before = inj.seen();
        match call {
            "store" => be.store("x", Bytes::from_static(b"retried")).await.unwrap(),
            "load" => assert_eq!(&be.load("x", 0, None).await.unwrap()[..], b"retried"),
            "info" => assert_eq!(be.info("x").await.unwrap().size, 7),
            "list" => assert_eq!(be.list("").await.unwrap().len(), 1),
            _ => be.move_("x", "y").await.unwrap(),
        }
        assert_eq!(inj.seen() - before, errors + requests, "{call}: requests sent");
    }

    // Errors on every attempt: a Backend error naming the cause, after max_attempts requests.
    inj.fail(usize::MAX);
    let before = inj.seen();
    let started = Instant::now();
    let err = be.load("y", 0, None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Backend, "{err}");
    assert!(err.message.contains("SlowDown") || err.message.contains("InternalError"), "{err}");
    assert!(started.elapsed() < bound(0), "gave up after {:?}", started.elapsed());
    assert_eq!(inj.seen() - before, attempts);
    inj.fail(0);
    assert_eq!(&be.load("y", 0, None).await.unwrap()[..], b"retried");

    // An answer that breaks off midway: the object is fetched again, for load and hash.
    let big = Bytes::from(vec![b'b'; 1 << 20]);
    be.store("big", big.clone()).await.unwrap();
    for call in ["load", "hash"] {
        inj.cut(attempts - 1);
        let before = inj.seen();
        match call {
            "load" => assert!(be.load("big", 0, None).await.unwrap() == big, "{call}"),
            _ => {
                assert_eq!(be.hash("big", HashAlgorithm::Sha256).await.unwrap(), HashAlgorithm::Sha256.hex_digest(&big))
            }
        }
        assert_eq!(inj.seen() - before, attempts, "{call}: requests sent");
        // Cut every time: ConnectionLost after max_attempts fetches.
        inj.cut(usize::MAX);
        let before = inj.seen();
        let err = match call {
            "load" => be.load("big", 0, None).await.unwrap_err(),
            _ => be.hash("big", HashAlgorithm::Sha256).await.unwrap_err(),
        };
        assert_eq!(err.kind, ErrorKind::ConnectionLost, "{call}: {err}");
        assert_eq!(inj.seen() - before, attempts, "{call}: requests sent");
        inj.cut(0);
    }
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_range_still_gives_the_right_bytes() {
    const PART: u64 = 5 << 20;
    let moto = own_moto(false).await;
    let inj = Injector::start(moto.port()).await;
    let path = moto::unique_path();
    let parts = PartOptions { part_size: PART, part_concurrency: 4, abandoned_upload_age: None };
    // Stored straight on moto (in parts), loaded through the injector that drops Range.
    let direct = S3::from_url_with_parts(&moto.url(&path), fast(), parts, None).unwrap();
    direct.create().await.unwrap();
    direct.open().await.unwrap();
    let big: Bytes = (0..PART * 7 / 2).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    direct.store("big", big.clone()).await.unwrap();
    direct.store("small", Bytes::from_static(b"0123456789")).await.unwrap();
    let url = format!("s3:testing:testing@http://127.0.0.1:{}/{}/{path}", inj.port, moto::BUCKET);
    let be = S3::from_url_with_parts(&url, fast(), parts, None).unwrap();
    be.open().await.unwrap();
    inj.ignore_range();
    let part = PART as i64;
    for (offset, size) in
        [(0, None), (1, Some(PART * 2)), (part * 3, None), (-5, None), (-(part * 2), Some(7)), (-3, Some(2))]
    {
        for (name, value) in [("big", &big), ("small", &Bytes::from_static(b"0123456789"))] {
            let before = inj.seen();
            let got = be.load(name, offset, size).await.unwrap();
            let len = value.len() as u64;
            let start = if offset >= 0 { (offset as u64).min(len) } else { len.saturating_sub(offset.unsigned_abs()) };
            let want = value.slice(start as usize..(start + size.unwrap_or(u64::MAX).min(len - start)) as usize);
            assert!(got == want, "{name} load({offset}, {size:?}): {} bytes, want {}", got.len(), want.len());
            // The first answer was the whole object: nothing more to ask (a far tail HEADs first).
            assert!(inj.seen() - before <= 2, "{name} load({offset}, {size:?}): {} requests", inj.seen() - before);
        }
    }
    be.close().await.unwrap();
    direct.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b2_urls_work_against_an_s3_server() {
    let moto = shared_moto().await;
    let url = moto.fresh_url().replacen("s3:", "b2:", 1);
    let be = backend_from_url(&url, Default::default()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    for i in 0..25u64 {
        be.store(&format!("data/{:02x}/{}", i % 4, &key(i)[5..]), value(i + 1)).await.unwrap();
    }
    assert_eq!(be.list("data").await.unwrap().len(), 4);
    assert_eq!(be.load(&format!("data/01/{}", &key(5)[5..]), 2, Some(3)).await.unwrap(), value(6).slice(2..5));
    be.close().await.unwrap();
    // Python borgstore reads the same objects through its b2: URL.
    let keys = py_json(&moto, &["keys", &url]);
    assert_eq!(keys.as_array().unwrap().len(), 26, "25 items and the store marker");
    // destroy deletes one by one on B2 (no DeleteObjects).
    be.destroy().await.unwrap();
    assert_eq!(be.open().await.unwrap_err().kind, ErrorKind::BackendDoesNotExist);
    assert_eq!(py_json(&moto, &["keys", &url]), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_and_bad_credentials_are_reported() {
    let moto = shared_moto().await;
    let url = format!("s3:testing:testing@{}/no-such-bucket/store", moto.endpoint());
    let be = backend_from_url(&url, Default::default()).unwrap();
    for (what, res) in [("create", be.create().await), ("open", be.open().await), ("destroy", be.destroy().await)] {
        let err = res.expect_err(what);
        assert_eq!(err.kind, ErrorKind::BackendDoesNotExist, "{what}: {err}");
        assert!(err.message.contains("no-such-bucket"), "{what}: {err}");
    }
    // URLs are checked before anything is contacted.
    let err = backend_from_url(&format!("s3:{}/bucket-only", moto.endpoint()), Default::default()).err().unwrap();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert!(err.message.contains("needs a path inside the bucket"), "{err}");
}

/// Set in the environment of a re-executed test binary: the URL `credentials_child` uses.
const CHILD_URL: &str = "BORGSTORE_S3_TEST_CHILD_URL";
/// Set with CHILD_URL: "ok" (the store must work) or "fail" (create must fail).
const CHILD_EXPECT: &str = "BORGSTORE_S3_TEST_CHILD_EXPECT";

/// Only does something when `credentials_come_from_profiles_and_the_environment` runs this
/// binary again with its own environment (environment variables are process-wide, so
/// tests that need other AWS settings run in a child process).
#[test]
fn credentials_child() {
    let (Ok(url), Ok(expect)) = (std::env::var(CHILD_URL), std::env::var(CHILD_EXPECT)) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let options = S3Options { max_attempts: 1, ..fast() };
        let be = S3::from_url_with(&url, options).unwrap();
        let started = Instant::now();
        let created = be.create().await;
        if expect == "fail" {
            let err = created.expect_err("create without usable credentials");
            assert!(matches!(err.kind, ErrorKind::Backend | ErrorKind::PermissionDenied), "{err}");
            assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
            println!("CHILD-ERROR {err}");
            return;
        }
        created.unwrap();
        be.open().await.unwrap();
        be.store("k", Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(&be.load("k", 0, None).await.unwrap()[..], b"v");
        be.close().await.unwrap();
        be.destroy().await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_profiles_and_the_environment() {
    let moto = shared_moto().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, credentials) = (dir.path().join("config"), dir.path().join("credentials"));
    std::fs::write(&config, "[profile borg-moto]\nregion = us-east-1\n").unwrap();
    std::fs::write(&credentials, "[borg-moto]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
        .unwrap();
    let endpoint = format!("{}/{}", moto.endpoint(), moto::BUCKET);
    let child = |url: String, expect: &str, env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "credentials_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_URL, &url)
            .env(CHILD_EXPECT, expect)
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "child for {url} ({expect}):\n{text}");
        text
    };
    let path = moto::unique_path();
    // A named profile from the AWS config files.
    child(format!("s3:borg-moto@{endpoint}/{path}-profile"), "ok", &[]);
    // The default chain: environment variables.
    child(
        format!("s3:{endpoint}/{path}-env"),
        "ok",
        &[("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")],
    );
    // A profile that does not exist: a clear error, soon.
    let text = child(format!("s3:no-such-profile@{endpoint}/{path}-none"), "fail", &[]);
    assert!(text.contains("CHILD-ERROR"), "{text}");
}

// ----- scale -----
//
// Named big_* so that libtest, which starts tests in name order, starts them first: the
// listing test spends most of its time waiting for moto to take 10,000 PUTs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_listing_of_ten_thousand_items_pages_through() {
    const N: usize = 10_000;
    let moto = own_moto(false).await;
    let url = moto.fresh_url();
    let be = backend_from_url(&url, Default::default()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    // moto takes about 3 ms of CPU per PUT whatever we do; a few requests in flight keep
    // it busy, more only make its threads fight over the GIL.
    let workers = 4;
    for w in 0..workers {
        let be = be.clone();
        tasks.spawn(async move {
            for i in (w..N).step_by(workers) {
                be.store(&format!("many/{i:05x}"), Bytes::from(vec![b'v'; i % 7])).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let stored = started.elapsed();
    // An upload in progress and foreign keys in the same directory are not listed.
    let prefix = url.rsplit('/').next().unwrap();
    moto.put_object(&format!("{prefix}/many/upload.tmp"), b"partial");
    moto.put_object(&format!("{prefix}/many/NotOurs"), b"foreign");
    let started = Instant::now();
    let items = be.list("many").await.unwrap();
    let listed = started.elapsed();
    eprintln!("stored {N} items in {stored:?}, listed them in {listed:?}");
    assert_eq!(items.len(), N);
    let mut want: Vec<String> = (0..N).map(|i| format!("{i:05x}")).collect();
    want.sort();
    let got: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(got, want);
    assert!(items.iter().all(|i| i.exists && !i.directory && i.mtime > 0.0));
    assert!(items.iter().all(|i| i.size == (usize::from_str_radix(&i.name, 16).unwrap() % 7) as u64));
    let root = be.list("").await.unwrap();
    assert_eq!(root.len(), 1);
    be.close().await.unwrap();
    be.destroy().await.unwrap();
    assert_eq!(be.open().await.unwrap_err().kind, ErrorKind::BackendDoesNotExist);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_value_of_256_mib_round_trips() {
    const SIZE: usize = 256 * 1024 * 1024;
    let moto = own_moto(false).await;
    let be = backend_from_url(&moto.url("big"), Default::default()).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    let mut data = vec![0u8; SIZE];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let digest = hex::encode(Sha256::digest(&data));
    let data = Bytes::from(data);
    let started = Instant::now();
    be.store("data/big", data.clone()).await.unwrap();
    let stored = started.elapsed();
    assert_eq!(be.info("data/big").await.unwrap().size, SIZE as u64);
    let started = Instant::now();
    let back = be.load("data/big", 0, None).await.unwrap();
    let loaded = started.elapsed();
    assert_eq!(back.len(), SIZE);
    assert_eq!(hex::encode(Sha256::digest(&back)), digest);
    drop(back);
    let started = Instant::now();
    assert_eq!(be.hash("data/big", HashAlgorithm::Sha256).await.unwrap(), digest);
    let hashed = started.elapsed();
    let tail = be.load("data/big", -4096, Some(100)).await.unwrap();
    assert!(tail[..] == data[SIZE - 4096..SIZE - 3996], "ranged tail load");
    let mid = be.load("data/big", 100 * 1024 * 1024, Some(1 << 20)).await.unwrap();
    assert!(mid[..] == data[100 << 20..101 << 20], "ranged load from the middle");
    eprintln!("256 MiB: store {stored:?}, load {loaded:?}, hash (streamed) {hashed:?}");
    be.close().await.unwrap();
}
