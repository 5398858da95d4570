//! Bounded memory on both REST servers (`borgstored --rest` and `borgstore-server-rest`)
//! against clients that send no `Expect: 100-continue` (DESIGN.md section 4, issue 10):
//!
//! - an upload refused for its credentials, Accept header, store, quota, permission
//!   letters, size or missing length is answered (401/406/404/507/403/413/411) from its
//!   head alone, while the client has not sent a byte of its 200 MiB body; then the
//!   server closes the connection instead of reading the body. A client that sends its
//!   body regardless gets the answer before the body is through and cannot keep the
//!   connection: the server drops what arrives for at most a short linger, then closes;
//! - while many such uploads are refused, and while four authorized 200 MiB uploads
//!   stream to a file store, the server's peak resident size grows by less than 64 MiB,
//!   and the stored files are byte for byte what was sent;
//! - the content hash of a streamed upload is verified: a wrong one stores nothing and
//!   leaves no temp file;
//! - an upload abandoned halfway stores nothing, leaves no temp file, and the server
//!   goes on serving.

use borgstore_tests::daemon::Daemon;
use borgstore_tests::memory::{Baseline, MIB};
use borgstore_tests::rest::{daemon_with_rest, free_port, request, Impl, Response, RestServer, ACCEPT};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The announced size of every large upload.
const BIG: u64 = 200 * MIB;
/// How much a client writes at once.
const PIECE: usize = 1 << 20;
/// Generous bound for an answer, only so a broken server fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(20);
/// Allowed growth of the server's peak resident size.
const LIMIT: u64 = 64 * MIB;

const ALICE: (&str, &str) = ("alice", "wonderland");
const USER: (&str, &str) = ("user", "s3cret");

enum Process {
    Daemon(Daemon),
    Single(RestServer),
}

/// A REST server under test, with the one store the tests write to.
struct Target {
    process: Process,
    port: u16,
    /// URL path of the store: `/main` (borgstored) or `` (borgstore-server-rest, store at `/`).
    prefix: &'static str,
    auth: (&'static str, &'static str),
    /// The store's directory on disk.
    store_dir: PathBuf,
}

impl Target {
    /// `borgstored --rest` (see [`daemon_with_rest`]); the store is `main` (alice:wonderland).
    fn borgstored(extra: &[&str]) -> Target {
        let port = free_port();
        let d = daemon_with_rest(port, extra);
        let store_dir = d.path("main");
        Target { process: Process::Daemon(d), port, prefix: "/main", auth: ALICE, store_dir }
    }

    /// `borgstore-server-rest --username user --password s3cret EXTRA...`.
    fn server_rest(extra: &[&str]) -> Target {
        let mut args = vec!["--username", USER.0, "--password", USER.1];
        args.extend_from_slice(extra);
        let s = RestServer::start(Impl::Ours, &args);
        let (port, store_dir) = (s.port, s.store_path());
        Target { process: Process::Single(s), port, prefix: "", auth: USER, store_dir }
    }

    /// `borgstore-server-rest ... EXTRA` on a store that an earlier run without `extra`
    /// created (e.g. `--permissions` that do not allow creating it).
    fn server_rest_created(extra: &[&str]) -> Target {
        let first = Target::server_rest(&[]);
        first.create();
        let Process::Single(s) = first.process else { unreachable!() };
        let dir = s.stop();
        let backend = format!("file://{}", dir.path().join("store").display());
        let mut args = vec!["--username", USER.0, "--password", USER.1];
        args.extend_from_slice(extra);
        let s = RestServer::start_with_backend(Impl::Ours, dir, &backend, &args);
        let (port, store_dir) = (s.port, s.store_path());
        Target { process: Process::Single(s), port, prefix: "", auth: USER, store_dir }
    }

    fn what(&self) -> &'static str {
        match self.process {
            Process::Daemon(_) => "borgstored --rest",
            Process::Single(_) => "borgstore-server-rest",
        }
    }

    fn pid(&self) -> u32 {
        match &self.process {
            Process::Daemon(d) => d.child.id(),
            Process::Single(s) => s.child.id(),
        }
    }

    fn log(&self) -> String {
        match &self.process {
            Process::Daemon(d) => d.log_text(),
            Process::Single(s) => s.log_text(),
        }
    }

    fn assert_alive(&mut self) {
        let alive = match &mut self.process {
            Process::Daemon(d) => d.child.try_wait().expect("wait").is_none(),
            Process::Single(s) => s.alive(),
        };
        assert!(alive, "{} died; log:\n{}", self.what(), self.log());
    }

    /// The URL path of `rel` in the store.
    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }

    /// A well-formed request with the store's credentials.
    fn req(&self, method: &str, rel: &str, body: &[u8]) -> Response {
        request(self.port, method, &self.path(rel), Some(self.auth), &[], body)
    }

    fn create(&self) {
        let r = self.req("POST", "?cmd=create", b"");
        assert_eq!(r.status, 200, "create on {}: {}", self.what(), r.text());
    }

    /// A few ordinary requests, so the server's workers have started before memory is measured.
    fn warm_up(&self) {
        for i in 0..4 {
            assert_eq!(self.req("POST", &format!("config/warm{i}"), &[7u8; 4096]).status, 200);
            assert_eq!(self.req("GET", &format!("config/warm{i}"), b"").status, 200);
            assert_eq!(self.req("GET", "config/missing", b"").status, 404);
        }
        let r = request(self.port, "POST", &self.path("config/warm"), None, &[], b"x");
        assert_eq!(r.status, 401);
    }

    /// Reading `rel` over HEAD: its size, or None when it does not exist.
    fn size_of(&self, rel: &str) -> Option<u64> {
        let r = self.req("HEAD", rel, b"");
        match r.status {
            200 => Some(r.header("content-length").and_then(|v| v.parse().ok()).expect("HEAD gives the size")),
            404 => None,
            other => panic!("HEAD {rel} on {}: {other} {}", self.what(), r.text()),
        }
    }
}

/// The head of a POST upload to `target`: with the REST Accept header or without, with
/// Basic auth or without, `Content-Length: len` (none when `len` is None), extra headers.
/// No `Expect:` and no `Connection: close`: the server must decide to close by itself.
fn upload_head(
    target: &str,
    accept: bool,
    auth: Option<(&str, &str)>,
    len: Option<u64>,
    extra: &[(&str, &str)],
) -> String {
    use base64::Engine;
    let mut h = format!("POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if accept {
        h.push_str(&format!("Accept: {ACCEPT}\r\n"));
    }
    if let Some((u, p)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        h.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    for (k, v) in extra {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(len) = len {
        h.push_str(&format!("Content-Length: {len}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// An HTTP answer as the raw client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Read one answer (head and Content-Length body) within the stream's read timeout.
fn read_answer(s: &mut TcpStream) -> Result<Answer, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed without an answer after {} bytes", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("answer body cut short: {e}")),
        }
    }
    Ok(Answer { status, headers, body })
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// After the answer the server must close the connection: reading gives the end (or a reset).
fn assert_closed(s: &mut TcpStream, what: &str) {
    let mut b = [0u8; 4096];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted) => {}
        Ok(n) => panic!("{what}: {n} unexpected bytes after the answer: {:?}", String::from_utf8_lossy(&b[..n])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{what}: the server left the connection open {WAIT:?} after refusing the upload (waiting for the body?)")
        }
        Err(e) => panic!("{what}: reading after the answer: {e}"),
    }
}

/// Send only the head of an upload and wait for the answer without sending any body byte:
/// it must come with `status`, then the connection must be closed, and sending into it
/// must fail (the first piece may still go into the local socket buffer; the peer's reset
/// fails the next ones) long before the body, or 64 MiB for small bodies, is out.
fn refused_from_head(port: u16, head: &str, len: u64, status: u16, what: &str) -> Answer {
    let mut s = connect(port);
    s.write_all(head.as_bytes()).unwrap();
    let answer = read_answer(&mut s)
        .unwrap_or_else(|e| panic!("{what}: no answer within {WAIT:?} while the {len} byte body was held back: {e}"));
    assert_eq!(answer.status, status, "{what}: {}", String::from_utf8_lossy(&answer.body));
    assert_closed(&mut s, what);
    // The body now has nowhere to go.
    let piece = vec![0u8; PIECE];
    let cap = len.max(64 * MIB);
    let mut sent = 0u64;
    let failed = loop {
        if sent >= cap {
            break false;
        }
        match s.write(&piece[..PIECE.min((cap - sent) as usize)]) {
            Ok(n) => sent += n as u64,
            Err(_) => break true,
        }
    };
    assert!(failed, "{what}: the server took {cap} bytes after refusing the upload and closing");
    answer
}

/// How a client whose upload gets refused sends its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// Only the head; the body waits for the answer (which must come without it).
    HoldBack,
    /// The whole body as fast as the connection takes it, without waiting for the answer.
    Push,
    /// The whole body at about 20 MiB/s (1 MiB every 50 ms: 10 s for 200 MiB), without
    /// waiting for the answer.
    Paced,
    /// Like [`Sending::Paced`], in chunked transfer encoding (1 MiB chunks, then the last).
    PacedChunked,
}

/// How long a paced client waits between two 1 MiB pieces.
const PACE: Duration = Duration::from_millis(50);

/// Send the head and the body without waiting for the answer (a client without
/// `Expect:`), while reading the answer: it must come with `status` before the whole body
/// went out, and then the server must end the connection.
///
/// - paced: the body goes out at 20 MiB/s, so it would take 10 s; the server must have
///   closed the connection long before all of it was through.
/// - fast: the server may read and drop what arrives while it closes gracefully (a
///   short linger so the client sees the answer), but the connection must end.
fn refused_while_pushing(port: u16, head: &str, len: u64, status: u16, how: Sending, what: &str) -> Answer {
    assert_ne!(how, Sending::HoldBack);
    let (paced, chunked) = (how != Sending::Push, how == Sending::PacedChunked);
    let mut s = connect(port);
    let mut w = s.try_clone().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let head = head.to_owned();
    let writer = std::thread::spawn(move || -> (u64, std::io::Result<()>) {
        if let Err(e) = w.write_all(head.as_bytes()) {
            return (0, Err(e));
        }
        let data = vec![0x5au8; PIECE];
        let mut total = 0u64;
        while total < len {
            let n = PIECE.min((len - total) as usize);
            let piece = if chunked {
                [format!("{n:x}\r\n").as_bytes(), &data[..n], b"\r\n"].concat()
            } else {
                data[..n].to_vec()
            };
            if let Err(e) = w.write_all(&piece) {
                return (total, Err(e));
            }
            total += n as u64;
            counter.store(total, Ordering::Relaxed);
            if paced {
                std::thread::sleep(PACE);
            }
        }
        let end = if chunked { w.write_all(b"0\r\n\r\n") } else { Ok(()) };
        (total, end)
    });
    let answer = read_answer(&mut s).unwrap_or_else(|e| panic!("{what}: no answer while sending the body: {e}"));
    let at_answer = sent.load(Ordering::Relaxed);
    assert_eq!(answer.status, status, "{what}: {}", String::from_utf8_lossy(&answer.body));
    assert!(at_answer < len, "{what}: answered only after the whole {len} byte body was sent");
    let (total, ended) = writer.join().unwrap();
    eprintln!(
        "{what}: answered after {} KiB of the body; the client got {} MiB out, then {ended:?}",
        at_answer >> 10,
        total >> 20
    );
    if paced {
        assert!(
            ended.is_err() && total < len,
            "{what}: the server read the whole {len} byte body of a refused upload (sent over {:?}) instead of closing",
            PACE * (len / PIECE as u64) as u32
        );
    }
    assert_closed(&mut s, what);
    answer
}

/// Every file under `root` whose name ends in `.tmp` (an upload's temp file).
fn temp_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".tmp")) {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

/// Wait (a little, the server may still be cleaning up after a vanished client) until no
/// temp file is left in the store.
fn assert_no_temp_files(t: &Target, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = temp_files(&t.store_dir);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("{what}: temp files left in the store of {}: {left:?}", t.what());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One refused upload among several sent at once.
struct Case {
    what: String,
    head: String,
    status: u16,
    send: Sending,
}

/// Run all `cases` at once (one connection each) and check each.
fn run_refusals(t: &Target, cases: &[Case]) {
    std::thread::scope(|scope| {
        for c in cases {
            scope.spawn(move || {
                let what = format!("{}: {}", t.what(), c.what);
                let answer = match c.send {
                    Sending::HoldBack => refused_from_head(t.port, &c.head, BIG, c.status, &what),
                    how => refused_while_pushing(t.port, &c.head, BIG, c.status, how, &what),
                };
                if c.status == 401 {
                    assert!(answer.header("www-authenticate").is_some(), "{what}: 401 without a challenge");
                }
            });
        }
    });
}

/// The refusals every server gives from the head: missing and wrong credentials, no
/// Accept header, four of each at once, and clients sending their body anyway (four as
/// fast as they can, four paced).
fn common_refusals(t: &Target) -> Vec<Case> {
    let mut cases = Vec::new();
    for i in 0..4 {
        let target = t.path(&format!("config/upload{i}"));
        let wrong = (t.auth.0, "not-the-password");
        cases.push(Case {
            what: format!("no credentials #{i}"),
            head: upload_head(&target, true, None, Some(BIG), &[]),
            status: 401,
            send: Sending::HoldBack,
        });
        cases.push(Case {
            what: format!("wrong password #{i}"),
            head: upload_head(&target, true, Some(wrong), Some(BIG), &[]),
            status: 401,
            send: Sending::HoldBack,
        });
        cases.push(Case {
            what: format!("no Accept header #{i}"),
            head: upload_head(&target, false, Some(t.auth), Some(BIG), &[]),
            status: 406,
            send: Sending::HoldBack,
        });
        cases.push(Case {
            what: format!("no credentials, body pushed #{i}"),
            head: upload_head(&target, true, None, Some(BIG), &[]),
            status: 401,
            send: Sending::Push,
        });
        cases.push(Case {
            what: format!("wrong password, body paced #{i}"),
            head: upload_head(&target, true, Some(wrong), Some(BIG), &[]),
            status: 401,
            send: Sending::Paced,
        });
    }
    cases
}

/// After refusals: nothing was stored, the server lives and serves.
fn nothing_stored_and_still_serving(t: &mut Target) {
    for i in 0..4 {
        assert_eq!(t.size_of(&format!("config/upload{i}")), None, "a refused upload was stored");
    }
    assert!(temp_files(&t.store_dir).is_empty(), "{:?}", temp_files(&t.store_dir));
    t.assert_alive();
    assert_eq!(t.req("POST", "config/after", b"fine").status, 200);
    assert_eq!(t.req("GET", "config/after", b"").body, b"fine");
}

#[test]
fn borgstored_answers_refused_uploads_from_the_head_and_closes() {
    let mut t = Target::borgstored(&[]);
    t.create();
    t.warm_up();
    let base = Baseline::take(t.pid());
    let mut cases = common_refusals(&t);
    for i in 0..4 {
        cases.push(Case {
            what: format!("unknown store #{i}"),
            head: upload_head(&format!("/nosuch/config/upload{i}"), true, Some(t.auth), Some(BIG), &[]),
            status: 404,
            send: Sending::HoldBack,
        });
    }
    run_refusals(&t, &cases);
    base.assert_below(LIMIT, "borgstored --rest, 24 refused 200 MiB uploads at once");
    nothing_stored_and_still_serving(&mut t);
}

#[test]
fn server_rest_answers_refused_uploads_from_the_head_and_closes() {
    let mut t = Target::server_rest(&[]);
    t.create();
    t.warm_up();
    let base = Baseline::take(t.pid());
    run_refusals(&t, &common_refusals(&t));
    base.assert_below(LIMIT, "borgstore-server-rest, 20 refused 200 MiB uploads at once");
    nothing_stored_and_still_serving(&mut t);
}

/// Piece `index` of upload `upload`: `base` stamped with both numbers (at its start and in
/// its middle), so every piece differs and a lost, doubled or reordered piece shows in the
/// hash.
fn piece_of(base: &[u8], upload: u64, index: u64, out: &mut [u8]) {
    out.copy_from_slice(base);
    let stamp = [upload.to_le_bytes(), index.to_le_bytes()].concat();
    out[..16].copy_from_slice(&stamp);
    let mid = out.len() / 2;
    out[mid..mid + 16].copy_from_slice(&stamp);
}

/// Upload `len` bytes as `rel` with credentials, writing them a piece at a time as a
/// streaming client does; returns the answer and the SHA-256 of what was sent.
fn stream_upload(t: &Target, rel: &str, upload: u64, base: &[u8], len: u64) -> (Answer, [u8; 32]) {
    let mut s = connect(t.port);
    s.write_all(upload_head(&t.path(rel), true, Some(t.auth), Some(len), &[]).as_bytes()).unwrap();
    let mut piece = vec![0u8; base.len()];
    let mut hash = Sha256::new();
    let mut sent = 0u64;
    let mut index = 0;
    while sent < len {
        piece_of(base, upload, index, &mut piece);
        let n = (len - sent).min(piece.len() as u64) as usize;
        s.write_all(&piece[..n]).unwrap_or_else(|e| panic!("{}: upload {rel} cut at {sent} bytes: {e}", t.what()));
        hash.update(&piece[..n]);
        sent += n as u64;
        index += 1;
    }
    let answer = read_answer(&mut s).unwrap_or_else(|e| panic!("{}: no answer to the upload of {rel}: {e}", t.what()));
    (answer, hash.finalize().into())
}

fn sha256_of_file(path: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    hash.finalize().into()
}

/// Four authorized 200 MiB uploads at once, streamed: all stored byte for byte, the
/// server's peak RSS growing by less than [`LIMIT`].
fn four_streamed_uploads(mut t: Target) {
    t.create();
    t.warm_up();
    let mut base = vec![0u8; PIECE];
    rand::thread_rng().fill_bytes(&mut base);
    let before = Baseline::take(t.pid());
    let sent: Vec<(String, [u8; 32])> = std::thread::scope(|scope| {
        let uploads: Vec<_> = (0..4u64)
            .map(|u| {
                let (t, base) = (&t, &base);
                scope.spawn(move || {
                    let rel = format!("config/upload{u}");
                    let (answer, digest) = stream_upload(t, &rel, u, base, BIG);
                    assert_eq!(
                        answer.status,
                        200,
                        "{}: upload {rel}: {}",
                        t.what(),
                        String::from_utf8_lossy(&answer.body)
                    );
                    (rel, digest)
                })
            })
            .collect();
        uploads.into_iter().map(|h| h.join().unwrap()).collect()
    });
    before.assert_below(LIMIT, &format!("{}, 4 authorized 200 MiB uploads at once", t.what()));
    for (rel, digest) in &sent {
        assert_eq!(t.size_of(rel), Some(BIG), "{}: {rel}", t.what());
        let stored = sha256_of_file(&t.store_dir.join(rel));
        assert_eq!(hex::encode(stored), hex::encode(digest), "{}: {rel} is not what was sent", t.what());
    }
    assert!(temp_files(&t.store_dir).is_empty(), "{:?}", temp_files(&t.store_dir));
    t.assert_alive();
}

#[test]
fn borgstored_streams_authorized_uploads_in_bounded_memory() {
    four_streamed_uploads(Target::borgstored(&["--quota", "main=4000000000"]));
}

#[test]
fn server_rest_streams_authorized_uploads_in_bounded_memory() {
    four_streamed_uploads(Target::server_rest(&[]));
}

/// A streamed upload (over 1 MiB) with a wrong `X-Content-hash-sha256` gets 422 and stores
/// nothing; with the right one it is stored.
fn content_hash_of_a_streamed_upload(t: Target) {
    t.create();
    let mut value = vec![0u8; 8 << 20];
    rand::thread_rng().fill_bytes(&mut value);
    let right = hex::encode(Sha256::digest(&value));
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let path = t.path("config/hashed");
    let r = request(t.port, "POST", &path, Some(t.auth), &[("X-Content-hash-sha256", &wrong)], &value);
    assert_eq!(r.status, 422, "{}: {}", t.what(), r.text());
    assert_eq!(t.size_of("config/hashed"), None, "{}: stored despite a wrong content hash", t.what());
    assert_no_temp_files(&t, "after a hash mismatch");
    let r = request(t.port, "POST", &path, Some(t.auth), &[("X-Content-hash-sha256", &right)], &value);
    assert_eq!(r.status, 200, "{}: {}", t.what(), r.text());
    assert_eq!(std::fs::read(t.store_dir.join("config/hashed")).unwrap(), value, "{}", t.what());
    // A wrong hash on an existing item leaves the old value in place.
    let mut other = value.clone();
    other[4 << 20] ^= 1;
    let r = request(t.port, "POST", &path, Some(t.auth), &[("X-Content-hash-sha256", &right)], &other);
    assert_eq!(r.status, 422, "{}: {}", t.what(), r.text());
    assert_eq!(std::fs::read(t.store_dir.join("config/hashed")).unwrap(), value, "{}: old value replaced", t.what());
    assert_no_temp_files(&t, "after a hash mismatch on an existing item");
}

#[test]
fn content_hash_of_streamed_uploads_is_verified() {
    content_hash_of_a_streamed_upload(Target::borgstored(&["--quota", "main=4000000000"]));
    content_hash_of_a_streamed_upload(Target::server_rest(&[]));
}

#[test]
fn server_rest_decides_quota_permissions_and_size_before_the_body() {
    // Quota: 200 MiB do not fit into 1000000 bytes.
    let mut t = Target::server_rest(&["--quota", "1000000"]);
    t.create();
    let head = upload_head(&t.path("config/big"), true, Some(t.auth), Some(BIG), &[]);
    refused_from_head(t.port, &head, BIG, 507, "over quota");
    refused_while_pushing(t.port, &head, BIG, 507, Sending::Push, "over quota, body pushed");
    refused_while_pushing(t.port, &head, BIG, 507, Sending::Paced, "over quota, body paced");
    assert_eq!(t.size_of("config/big"), None);
    assert_eq!(t.req("POST", "config/small", &[1u8; 1000]).status, 200, "within the quota");
    t.assert_alive();

    // Permissions: read-only refuses a write of data/.
    let mut t = Target::server_rest_created(&["--permissions", "borgbackup-read-only"]);
    let head = upload_head(&t.path("data/0123abcd"), true, Some(t.auth), Some(BIG), &[]);
    refused_from_head(t.port, &head, BIG, 403, "read-only store");
    refused_while_pushing(t.port, &head, BIG, 403, Sending::Push, "read-only store, body pushed");
    refused_while_pushing(t.port, &head, BIG, 403, Sending::Paced, "read-only store, body paced");
    assert_eq!(t.size_of("data/0123abcd"), None);
    assert!(temp_files(&t.store_dir).is_empty());
    t.assert_alive();

    // Size: over --max-body is 413.
    let mut t = Target::server_rest(&["--max-body", "1000000"]);
    t.create();
    let head = upload_head(&t.path("config/big"), true, Some(t.auth), Some(BIG), &[]);
    refused_from_head(t.port, &head, BIG, 413, "over --max-body");
    let head = upload_head(&t.path("config/big"), true, Some(t.auth), Some(1_000_001), &[]);
    refused_from_head(t.port, &head, 1_000_001, 413, "one byte over --max-body");
    assert_eq!(t.size_of("config/big"), None);
    assert_eq!(t.req("POST", "config/fits", &[2u8; 1_000_000]).status, 200, "exactly --max-body fits");
    t.assert_alive();
}

#[test]
fn borgstored_decides_quota_before_the_body() {
    // `main` has a quota of 100000 bytes.
    let mut t = Target::borgstored(&[]);
    t.create();
    let head = upload_head(&t.path("config/big"), true, Some(t.auth), Some(BIG), &[]);
    refused_from_head(t.port, &head, BIG, 507, "over quota");
    refused_while_pushing(t.port, &head, BIG, 507, Sending::Push, "over quota, body pushed");
    refused_while_pushing(t.port, &head, BIG, 507, Sending::Paced, "over quota, body paced");
    assert_eq!(t.size_of("config/big"), None);
    assert_eq!(t.req("POST", "config/small", &[1u8; 1000]).status, 200, "within the quota");
    t.assert_alive();
}

/// Uploads abandoned halfway (a streamed one after 50 of 200 MiB, a small one after 1000
/// of 500000 bytes): nothing stored, no temp file, the server serves on.
fn abandoned_uploads(mut t: Target) {
    t.create();
    let mut base = vec![0u8; PIECE];
    rand::thread_rng().fill_bytes(&mut base);
    for (rel, len, cut) in [("config/streamed", BIG, 50 * MIB), ("config/small", 500_000, 1000)] {
        let mut s = connect(t.port);
        s.write_all(upload_head(&t.path(rel), true, Some(t.auth), Some(len), &[]).as_bytes()).unwrap();
        let mut piece = vec![0u8; PIECE];
        let mut sent = 0u64;
        let mut index = 0;
        while sent < cut {
            piece_of(&base, 9, index, &mut piece);
            let n = (cut - sent).min(PIECE as u64) as usize;
            s.write_all(&piece[..n]).unwrap();
            sent += n as u64;
            index += 1;
        }
        drop(s);
        assert_no_temp_files(&t, &format!("{rel} abandoned after {cut} of {len} bytes"));
        assert_eq!(t.size_of(rel), None, "{}: an abandoned upload was stored as {rel}", t.what());
        t.assert_alive();
    }
    // Both names are free for whole uploads.
    assert_eq!(t.req("POST", "config/small", b"whole").status, 200);
    assert_eq!(t.req("GET", "config/small", b"").body, b"whole");
    let (answer, digest) = stream_upload(&t, "config/streamed", 9, &base, 3 * MIB);
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(sha256_of_file(&t.store_dir.join("config/streamed")), digest);
    assert!(temp_files(&t.store_dir).is_empty());
}

#[test]
fn abandoned_uploads_leave_nothing_behind() {
    abandoned_uploads(Target::borgstored(&["--quota", "main=4000000000"]));
    abandoned_uploads(Target::server_rest(&[]));
}

/// A chunked upload (no Content-Length) is refused from its head (411 with credentials,
/// 401 without) and its connection closed like any other refused upload: the server
/// neither waits for the chunked body nor reads it to its end. All cases run at once
/// (two of each), and each is reported; memory stays flat meanwhile.
fn chunked_uploads_are_refused_and_closed(mut t: Target) {
    t.create();
    t.warm_up();
    let chunked = [("Transfer-Encoding", "chunked")];
    let with = upload_head(&t.path("config/big"), true, Some(t.auth), None, &chunked);
    let without = upload_head(&t.path("config/big"), true, None, None, &chunked);
    let cases = [
        (&with, 411, Sending::PacedChunked, "body paced"),
        (&without, 401, Sending::PacedChunked, "no credentials, body paced"),
        (&with, 411, Sending::HoldBack, "body held back"),
        (&without, 401, Sending::HoldBack, "no credentials, body held back"),
    ];
    let base = Baseline::take(t.pid());
    let failed: Vec<&str> = std::thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .chain(cases.iter())
            .map(|&(head, status, how, w)| {
                let what = format!("{}: chunked upload, {w}", t.what());
                let port = t.port;
                (
                    w,
                    scope.spawn(move || match how {
                        Sending::HoldBack => refused_from_head(port, head, BIG, status, &what),
                        how => refused_while_pushing(port, head, BIG, status, how, &what),
                    }),
                )
            })
            .collect();
        runs.into_iter().filter_map(|(w, h)| h.join().is_err().then_some(w)).collect()
    });
    base.assert_below(LIMIT, &format!("{}, 8 refused chunked uploads", t.what()));
    assert_eq!(t.size_of("config/big"), None);
    t.assert_alive();
    assert!(failed.is_empty(), "{}: refused chunked uploads not closed (see above): {failed:?}", t.what());
}

#[test]
fn borgstored_refuses_chunked_uploads_and_closes() {
    chunked_uploads_are_refused_and_closed(Target::borgstored(&[]));
}

#[test]
fn server_rest_refuses_chunked_uploads_and_closes() {
    chunked_uploads_are_refused_and_closed(Target::server_rest(&[]));
}
