//! REST servers for tests: ours (`borgstore-server-rest`, `borgstored --rest`) and the
//! Python reference `borgstore-server-rest`, on spare loopback ports; plus a minimal
//! HTTP/1.1 client for requests no well-behaved client would send.

use crate::daemon::{binary, Daemon};
use crate::python::{bin_dir, Version};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The media type every REST request must accept.
pub const ACCEPT: &str = "application/vnd.x.borgstore.rest.v1";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind a spare port").port()
}

/// Wait until something accepts on `127.0.0.1:port`.
pub fn wait_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what} did not listen on port {port}; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// Which server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Ours,
    Python,
}

/// A running REST server process serving one backend at `/`.
pub struct RestServer {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl RestServer {
    /// `borgstore-server-rest --backend file://DIR/store --port P ARGS...` of `which`.
    pub fn start(which: Impl, args: &[&str]) -> RestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = format!("file://{}", dir.path().join("store").display());
        Self::start_with_backend(which, dir, &backend, args)
    }

    pub fn start_with_backend(which: Impl, dir: tempfile::TempDir, backend: &str, args: &[&str]) -> RestServer {
        Self::start_on(which, dir, backend, free_port(), args)
    }

    /// Like [`RestServer::start_with_backend`] on a given port (e.g. to restart a server
    /// where its clients expect it).
    pub fn start_on(which: Impl, dir: tempfile::TempDir, backend: &str, port: u16, args: &[&str]) -> RestServer {
        let exe = match which {
            Impl::Ours => binary("borgstore-server-rest"),
            Impl::Python => bin_dir(Version::V070).join("borgstore-server-rest"),
        };
        Self::start_exe(&exe, dir, backend, port, args)
    }

    /// Like [`RestServer::start_on`] with the server program `exe` (a build of our own
    /// to compare, say).
    pub fn start_exe(exe: &Path, dir: tempfile::TempDir, backend: &str, port: u16, args: &[&str]) -> RestServer {
        let log = dir.path().join("server.log");
        let logfile = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(exe)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--backend", backend])
            .args(args)
            .current_dir(dir.path())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("start borgstore-server-rest");
        wait_port(port, "borgstore-server-rest", &log);
        RestServer { child, port, dir, log }
    }

    /// `http://[user:pass@]127.0.0.1:PORT/`
    pub fn url(&self, auth: Option<(&str, &str)>) -> String {
        match auth {
            Some((u, p)) => format!("http://{u}:{p}@127.0.0.1:{}/", self.port),
            None => format!("http://127.0.0.1:{}/", self.port),
        }
    }

    /// The store directory on disk.
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop the process and hand back its directory (for a restart on the same data).
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let empty = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, empty)
    }

    /// Still running? (A crash shows here.)
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response as a raw client sees it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send raw bytes on a new connection, read one response (the server closes or sends
/// Content-Length). Returns None when the server closed without answering.
pub fn raw_request(port: u16, request: &[u8]) -> Option<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let is_head = request.starts_with(b"HEAD ");
            let want = if is_head { 0 } else { len };
            while buf.len() < end + 4 + want {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = buf[end + 4..buf.len().min(end + 4 + want)].to_vec();
            return Some(Response { status, headers, body });
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A well-formed request: METHOD TARGET with the REST Accept header, optional Basic
/// auth, extra headers and a body.
pub fn request(
    port: u16,
    method: &str,
    target: &str,
    auth: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {ACCEPT}\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw_request(port, &bytes).unwrap_or_else(|| panic!("no response to {method} {target}"))
}

/// `borgstored` with REST on `127.0.0.1:port` and on `rest.sock` in its directory,
/// serving two stores: `main` (data/ at 2 nesting levels, quota 100000 bytes, Basic
/// auth alice:wonderland) and `other` (no auth, declared public on TCP). `extra` adds flags.
pub fn daemon_with_rest(port: u16, extra: &[&str]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let main = format!("main=file://{}/main", dir.path().display());
    let other = format!("other=file://{}/other", dir.path().display());
    let rest = format!("127.0.0.1:{port}");
    let rest_socket = dir.path().join("rest.sock");
    let mut args = vec![
        "--store",
        &main,
        "--store",
        &other,
        "--levels",
        "main:data/=2",
        "--rest",
        &rest,
        "--rest-socket",
        rest_socket.to_str().unwrap(),
        "--rest-auth",
        "main=alice:wonderland",
        "--quota",
        "main=100000",
        "--public-on",
        "other=rest",
    ];
    args.extend_from_slice(extra);
    let d = Daemon::start_in(dir, &args, &[]);
    wait_port(port, "borgstored REST", &d.log);
    d
}

/// An htpasswd file with `users`, written by Apache's `htpasswd -B` (bcrypt).
pub fn htpasswd(path: &Path, users: &[(&str, &str)]) {
    let _ = std::fs::remove_file(path);
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        cmd.args(["-B", "-b", "-C", "5"]);
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd.arg(path).args([user, password]).output().unwrap_or_else(|e| {
            panic!("cannot run htpasswd ({e}): install the Debian package apache2-utils (tests/run does)")
        });
        assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}
