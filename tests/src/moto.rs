//! A real S3 server for tests: `moto_server` (PyPI `moto[server]`, installed into
//! `target/venv` by `tests/run`) on a spare loopback port.
//!
//! - [`Moto::start`] runs `moto_server -H 127.0.0.1 -p PORT`, waits until it listens and
//!   creates the bucket [`BUCKET`] with a plain HTTP PUT (moto takes unsigned requests).
//! - [`Moto::url`] / [`Moto::fresh_url`] give `s3:testing:testing@http://127.0.0.1:PORT/BUCKET/PATH`
//!   URLs, a fresh path per test, so tests can share one server.
//! - [`Moto::kill`], [`Moto::restart`], [`Moto::pause`] and [`Moto::resume`] are for fault tests;
//!   [`Moto::start_with_env`] passes moto settings (e.g. `S3_UPLOAD_PART_MIN_SIZE`).
//! - [`Moto::uploads`], [`Moto::start_upload`] and [`Moto::etag`] look at multipart uploads
//!   and objects behind the backend's back, with plain unsigned HTTP (moto takes it).
//!   moto keeps its state in memory, so a restart loses it, unless the server was
//!   started with [`Moto::start_persistent`]: then moto's request recorder journals every
//!   request to a file and `restart` replays the journal, so what was stored before the
//!   kill is there again (requests cut off by the kill were never journaled).
//! - Dropping a [`Moto`] kills the server.
//! - [`fixture`] gives the conformance suite a fresh store on a server shared by the tests
//!   of one test binary that run at the same time (it stops when the last one is done).
//!
//! A missing `moto_server` is a test failure that says to run `tests/run`, never a skip.

use crate::fixtures::Fixture;
use crate::python::{bin_dir, Version};
use crate::rest::{free_port, wait_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The bucket every test store lives in.
pub const BUCKET: &str = "borgstore-tests";
/// Access key id and secret moto accepts (it accepts any).
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

/// A running `moto_server`.
pub struct Moto {
    child: Option<Child>,
    port: u16,
    persistent: bool,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    log: PathBuf,
}

/// The `moto_server` executable in the test venv; panics with install instructions.
pub fn moto_server() -> PathBuf {
    let exe = bin_dir(Version::V070).join("moto_server");
    assert!(
        exe.exists(),
        "moto_server not found at {}: run tests/run (it installs moto[server] into target/venv), or \
         target/venv/bin/pip install 'moto[server]' boto3",
        exe.display()
    );
    exe
}

impl Moto {
    /// Start a server (in-memory state) with the test bucket.
    pub fn start() -> Moto {
        Self::start_with(false)
    }

    /// Start a server whose state survives [`Moto::restart`] (journal + replay).
    pub fn start_persistent() -> Moto {
        Self::start_with(true)
    }

    /// Start a server (in-memory state) with moto settings in its environment.
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        Self::start_full(false, env)
    }

    fn start_with(persistent: bool) -> Moto {
        Self::start_full(persistent, &[])
    }

    fn start_full(persistent: bool, env: &[(&str, &str)]) -> Moto {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("moto.log");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut moto = Moto { child: None, port: free_port(), persistent, env, dir, log };
        moto.spawn();
        moto.request("PUT", &format!("/{BUCKET}"), 200);
        moto
    }

    fn journal(&self) -> PathBuf {
        self.dir.path().join("journal.jsonl")
    }

    fn spawn(&mut self) {
        let logfile = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("moto log file");
        let mut cmd = Command::new(moto_server());
        cmd.args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("log file"))
            .stderr(logfile)
            // Our own credentials and region must not depend on the developer's AWS setup.
            .env_remove("AWS_PROFILE")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.persistent {
            cmd.env("MOTO_ENABLE_RECORDING", "True").env("MOTO_RECORDER_FILEPATH", self.journal());
        }
        self.child = Some(cmd.spawn().expect("start moto_server"));
        wait_port(self.port, "moto_server", &self.log);
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The store URL of `path` in the test bucket, with credentials.
    pub fn url(&self, path: &str) -> String {
        format!("s3:{ACCESS_KEY}:{SECRET_KEY}@{}/{BUCKET}/{path}", self.endpoint())
    }

    /// A store URL no other test uses.
    pub fn fresh_url(&self) -> String {
        self.url(&unique_path())
    }

    /// Environment for Python/boto3 talking to this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("MOTO_ENDPOINT", self.endpoint()),
        ]
    }

    /// The server's output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL the server (no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill (if running) and start again on the same port. A persistent server gets its
    /// journal replayed; an in-memory one starts empty, with the test bucket created again.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        if self.persistent && self.journal().exists() {
            self.request("POST", "/moto-api/recorder/replay-recording", 200);
        } else {
            self.request("PUT", &format!("/{BUCKET}"), 200);
        }
    }

    /// Bytes that arrived on the server's connections but were not read by it yet (the
    /// receive queues in `/proc/net/tcp`): with the server paused, this shows that an
    /// upload is under way and partly delivered.
    pub fn unread_bytes(&self) -> u64 {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        let port = format!(":{:04X}", self.port);
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local address, remote address, state (01: established), tx_queue:rx_queue
                let (local, state, queues) = (f.get(1)?, f.get(3)?, f.get(4)?);
                if !local.ends_with(&port) || *state != "01" {
                    return None;
                }
                u64::from_str_radix(queues.split(':').nth(1)?, 16).ok()
            })
            .sum()
    }

    /// Freeze the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Thaw a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("moto_server is not running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        nix::sys::signal::kill(pid, sig).expect("signal moto_server");
    }

    /// Put an object behind the backend's back (key relative to the bucket, URL-safe).
    pub fn put_object(&self, key: &str, body: &[u8]) {
        self.request_with_body("PUT", &format!("/{BUCKET}/{key}"), body, 200);
    }

    /// The multipart uploads in progress whose keys start with `prefix` (relative to the
    /// bucket): `(key, upload id)`, sorted.
    pub fn uploads(&self, prefix: &str) -> Vec<(String, String)> {
        let (_, answer) = self.exchange("GET", &format!("/{BUCKET}?uploads&prefix={prefix}"), b"", 200);
        let mut out: Vec<(String, String)> = answer
            .split("<Upload>")
            .skip(1)
            .filter_map(|u| Some((xml_text(u, "Key")?, xml_text(u, "UploadId")?)))
            .collect();
        out.sort();
        out
    }

    /// Start a multipart upload of `key` (relative to the bucket) as some other client
    /// would; its upload id.
    pub fn start_upload(&self, key: &str) -> String {
        let (_, answer) = self.exchange("POST", &format!("/{BUCKET}/{key}?uploads"), b"", 200);
        xml_text(&answer, "UploadId").unwrap_or_else(|| panic!("no UploadId in {answer}"))
    }

    /// The ETag of the object `key` (relative to the bucket), without quotes; None when
    /// there is no such object. (From a listing: moto refuses unsigned HEADs.)
    pub fn etag(&self, key: &str) -> Option<String> {
        let (_, answer) = self.exchange("GET", &format!("/{BUCKET}?list-type=2&prefix={key}"), b"", 200);
        answer
            .split("<Contents>")
            .skip(1)
            .find(|c| xml_text(c, "Key").as_deref() == Some(key))
            .and_then(|c| xml_text(c, "ETag"))
            .map(|t| t.replace("&quot;", "").replace("&#34;", "").trim_matches('"').to_string())
    }

    /// A plain, unsigned HTTP/1.1 request (no body); panics unless the status is `want`.
    fn request(&self, method: &str, target: &str, want: u16) {
        self.request_with_body(method, target, b"", want)
    }

    fn request_with_body(&self, method: &str, target: &str, body: &[u8], want: u16) {
        self.exchange(method, target, body, want);
    }

    /// Send a request; its head and body as text. Panics unless the status is `want`
    /// (0: any status).
    fn exchange(&self, method: &str, target: &str, body: &[u8], want: u16) -> (String, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto_server");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(req.as_bytes()).and_then(|_| s.write_all(body)).expect("send to moto_server");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if want != 0 {
            assert_eq!(status, want, "moto_server: {method} {target} answered:\n{text}\nlog:\n{}", self.log_text());
        }
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (head.to_string(), body.to_string())
    }
}

/// The text of the first `<tag>` element in `xml`.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..start + len].to_string())
}

impl Drop for Moto {
    fn drop(&mut self) {
        // SIGKILL also ends a paused (SIGSTOPped) server.
        self.kill();
    }
}

/// A path (key prefix) unique in this process run.
pub fn unique_path() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("t{}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst), rand::random::<u32>())
}

/// The server shared by the tests of this binary that run at the same time; started on
/// first use, stopped when the last holder drops it.
pub fn shared() -> Arc<Moto> {
    static SHARED: Mutex<Weak<Moto>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = slot.upgrade() {
        return m;
    }
    let m = Arc::new(Moto::start());
    *slot = Arc::downgrade(&m);
    m
}

/// A fresh, not yet created store on the shared moto server, through `s3:` URL parsing.
pub async fn fixture() -> Fixture {
    let moto = tokio::task::spawn_blocking(shared).await.expect("start moto_server");
    let backend = borgstore_daemon::backends::url::backend_from_url(&moto.fresh_url(), Default::default())
        .expect("s3 backend from URL");
    Fixture::new(backend, None, moto)
}
