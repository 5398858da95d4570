//! Differential testing of two REST servers: the same raw HTTP/1.1 requests go to two
//! server processes (over TCP keep-alive connections or one `--stdio` session each), the
//! answers are compared aspect by aspect (status, reason phrase, header names and values
//! as sent on the wire, body), and so are the store trees left on disk.
//!
//! What counts as an allowed difference is not decided here: [`compare`] reports every
//! difference it sees, after the normalisations a [`Rules`] switches on, and the caller
//! filters the result with its own table.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long one answer may take before the request counts as unanswered (a hang guard,
/// not a timing assertion).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One raw HTTP/1.1 request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The template the request came from (differences are grouped by it).
    pub label: String,
    pub method: String,
    /// The request target exactly as sent (already percent-encoded where wanted).
    pub target: String,
    /// Header lines in order (Host and Content-Length are added by [`Request::to_bytes`]).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send `Host: 127.0.0.1` (Python's stdio client sends none).
    pub host: bool,
    /// Send `Content-Length` even for an empty body.
    pub content_length: bool,
    /// Use a connection of its own over TCP (for requests whose body a server may leave
    /// unread on a connection it keeps open).
    pub fresh_connection: bool,
}

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if self.host {
            head.push_str("Host: 127.0.0.1\r\n");
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.content_length || !self.body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// One line for a report: request line, headers, body (shortened).
    pub fn show(&self) -> String {
        let mut s = format!("{} {}", self.method, self.target);
        if !self.host {
            s.push_str(" [no Host]");
        }
        for (k, v) in &self.headers {
            s.push_str(&format!(" | {k}: {v}"));
        }
        if !self.body.is_empty() {
            s.push_str(&format!(" | body {}", shorten(&self.body, 120)));
        }
        s
    }
}

/// A response as it came off the wire.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    /// Header names exactly as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn says_close(&self) -> bool {
        self.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    pub fn show(&self) -> String {
        let mut s = format!("{} {}", self.status, self.reason);
        for (k, v) in &self.headers {
            s.push_str(&format!(" | {k}: {v}"));
        }
        s.push_str(&self.show_body());
        s
    }

    /// The body for a report (a Python error page by its message).
    pub fn show_body(&self) -> String {
        match python_error_message(self) {
            Some(m) => format!(" | body [HTML error page] message: {m:?}"),
            None if self.body.is_empty() => String::new(),
            None => format!(" | body {}", shorten(&self.body, 400)),
        }
    }
}

/// What a request got.
#[derive(Debug, Clone)]
pub enum Outcome {
    Answered(Answer),
    /// No (complete) response: why.
    NoAnswer(String),
}

impl Outcome {
    pub fn show(&self) -> String {
        match self {
            Outcome::Answered(a) => a.show(),
            Outcome::NoAnswer(why) => format!("<no answer: {why}>"),
        }
    }

    /// Status and body only.
    pub fn brief(&self) -> String {
        match self {
            Outcome::Answered(a) => format!("{}{}", a.status, a.show_body()),
            Outcome::NoAnswer(why) => format!("<no answer: {why}>"),
        }
    }
}

/// Bytes for a report: printable ASCII as is, the rest escaped, cut at `max`.
pub fn shorten(bytes: &[u8], max: usize) -> String {
    let mut s: String = bytes.iter().take(max).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
    if bytes.len() > max {
        s.push_str(&format!("...({} bytes)", bytes.len()));
    }
    s
}

/// Reads HTTP responses from a byte stream, keeping what belongs to the next one.
pub struct Wire<R: Read> {
    r: R,
    buf: Vec<u8>,
}

impl<R: Read> Wire<R> {
    pub fn new(r: R) -> Self {
        Wire { r, buf: Vec::new() }
    }

    /// More bytes into the buffer; false at EOF or error.
    fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 65536];
        match self.r.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn need(&mut self, n: usize) -> Result<(), String> {
        while self.buf.len() < n {
            if !self.fill()? {
                return Err(format!("connection closed {} bytes into a {n}-byte read", self.buf.len()));
            }
        }
        Ok(())
    }

    /// Nothing more buffered and the peer closed? (Reads to EOF; for the end of a session.)
    pub fn rest_until_eof(&mut self) -> Vec<u8> {
        while let Ok(true) = self.fill() {}
        std::mem::take(&mut self.buf)
    }

    /// Read one response (`head`: the request was a HEAD, so no body follows).
    pub fn read_answer(&mut self, head: bool) -> Outcome {
        match self.try_read(head) {
            Ok(a) => Outcome::Answered(a),
            Err(e) => Outcome::NoAnswer(e),
        }
    }

    fn try_read(&mut self, head: bool) -> Result<Answer, String> {
        let end = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) if self.buf.is_empty() => return Err("connection closed without a response".into()),
                Ok(false) => {
                    return Err(format!("connection closed inside a response head: {}", shorten(&self.buf, 200)))
                }
                Err(e) => return Err(format!("read failed: {e}")),
            }
        };
        let head_text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
        }
        let status: u16 =
            parts.next().and_then(|s| s.parse().ok()).ok_or(format!("bad status line {status_line:?}"))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|l| match l.split_once(':') {
                Some((k, v)) => (k.to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        let mut answer = Answer { status, reason, headers, body: Vec::new() };
        if head || status < 200 || status == 204 || status == 304 {
            return Ok(answer);
        }
        let chunked = answer.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    if !self.fill()? {
                        return Err("connection closed inside a chunked body".into());
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| format!("bad chunk size {size_text:?}"))?;
                self.buf.drain(..line_end + 2);
                self.need(size + 2)?;
                answer.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
                if size == 0 {
                    return Ok(answer);
                }
            }
        }
        match answer.header("content-length") {
            Some(v) => {
                let len: usize = v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
                self.need(len)?;
                answer.body = self.buf.drain(..len).collect();
            }
            None if answer.says_close() => answer.body = self.rest_until_eof(),
            None => {}
        }
        Ok(answer)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A keep-alive HTTP client on `127.0.0.1:port`: one connection, reopened when the server
/// said `Connection: close` or went away.
pub struct TcpClient {
    port: u16,
    conn: Option<(TcpStream, Wire<TcpStream>)>,
}

/// What happened to a TCP request besides its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpNotes {
    /// The kept-alive connection turned out closed (without a `Connection: close`
    /// before), so the request was sent again on a new one.
    pub silently_closed: bool,
}

impl TcpClient {
    pub fn new(port: u16) -> Self {
        TcpClient { port, conn: None }
    }

    fn connect(&self) -> (TcpStream, Wire<TcpStream>) {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the REST server");
        s.set_read_timeout(Some(ANSWER_TIMEOUT)).ok();
        s.set_nodelay(true).ok();
        let r = s.try_clone().expect("clone socket");
        (s, Wire::new(r))
    }

    pub fn send(&mut self, req: &Request) -> (Outcome, TcpNotes) {
        let bytes = req.to_bytes();
        let head = req.method == "HEAD";
        if req.fresh_connection {
            let (mut s, mut wire) = self.connect();
            let _ = s.write_all(&bytes);
            return (wire.read_answer(head), TcpNotes::default());
        }
        let mut notes = TcpNotes::default();
        let reused = self.conn.is_some();
        let (mut s, mut wire) = self.conn.take().unwrap_or_else(|| self.connect());
        let written = s.write_all(&bytes).is_ok();
        let mut outcome = if written { wire.read_answer(head) } else { Outcome::NoAnswer("write failed".into()) };
        if reused
            && matches!(&outcome, Outcome::NoAnswer(why) if why.starts_with("connection closed without") || why == "write failed")
        {
            notes.silently_closed = true;
            (s, wire) = self.connect();
            outcome = match s.write_all(&bytes) {
                Ok(()) => wire.read_answer(head),
                Err(e) => Outcome::NoAnswer(format!("write failed: {e}")),
            };
        }
        if let Outcome::Answered(a) = &outcome {
            if !a.says_close() {
                self.conn = Some((s, wire));
            }
        }
        (outcome, notes)
    }
}

/// Reads a child's stdout through a thread, so that every read can give up after
/// [`ANSWER_TIMEOUT`].
pub struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl ChannelReader {
    pub fn spawn(mut r: impl Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 65536];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        ChannelReader { rx, pending: Vec::new() }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            match self.rx.recv_timeout(ANSWER_TIMEOUT) {
                Ok(v) => self.pending = v,
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no output for 10 s"))
                }
            }
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

/// A server process speaking HTTP on its stdin/stdout: one connection for the whole
/// session.
pub struct StdioSession {
    child: Child,
    stdin: Option<ChildStdin>,
    wire: Wire<ChannelReader>,
    /// A request went unanswered: the stream is out of step, later requests are not sent.
    broken: Option<String>,
    pub log: PathBuf,
}

/// How a stdio session ended.
#[derive(Debug, Clone)]
pub struct StdioEnd {
    /// Exit status after stdin was closed (None: still running after [`ANSWER_TIMEOUT`], then killed).
    pub status: Option<ExitStatus>,
    /// Bytes on stdout after the last answer that was read.
    pub trailing: Vec<u8>,
}

impl StdioSession {
    /// Start `exe args...` in `cwd`, stderr to `log`.
    pub fn start(exe: &Path, args: &[String], cwd: &Path, log: &Path) -> Self {
        let logfile = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut child = Command::new(exe)
            .args(args)
            .current_dir(cwd)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(logfile)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout pipe");
        StdioSession { child, stdin, wire: Wire::new(ChannelReader::spawn(stdout)), broken: None, log: log.into() }
    }

    /// Write the request, read its answer.
    pub fn send(&mut self, req: &Request) -> Outcome {
        if let Some(why) = &self.broken {
            return Outcome::NoAnswer(format!("not sent: the session broke earlier ({why})"));
        }
        let Some(stdin) = self.stdin.as_mut() else { return Outcome::NoAnswer("stdin closed".into()) };
        if let Err(e) = stdin.write_all(&req.to_bytes()).and_then(|_| stdin.flush()) {
            self.broken = Some(format!("write failed: {e}"));
            return Outcome::NoAnswer(format!("write failed: {e}"));
        }
        let outcome = self.wire.read_answer(req.method == "HEAD");
        if let Outcome::NoAnswer(why) = &outcome {
            self.broken = Some(why.clone());
        }
        outcome
    }

    /// Write raw bytes without reading anything (for framing probes).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin.write_all(bytes).and_then(|_| stdin.flush());
        }
    }

    /// Read one more answer (after [`StdioSession::write_raw`]).
    pub fn read_answer(&mut self, head: bool) -> Outcome {
        self.wire.read_answer(head)
    }

    /// Close stdin, collect what else comes out and how the process ends.
    pub fn finish(mut self) -> StdioEnd {
        drop(self.stdin.take());
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        let status = loop {
            match self.child.try_wait().expect("wait") {
                Some(s) => break Some(s),
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let trailing = self.wire.rest_until_eof();
        StdioEnd { status, trailing }
    }
}

impl Drop for StdioSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stop a server process gracefully (SIGTERM, then SIGKILL after 10 s), so that whatever
/// it persists on shutdown is on disk before the trees are compared.
pub fn stop_gracefully(child: &mut Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One entry of a store tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Other,
}

/// Every path below `root` (relative, `/`-separated) with its type and content; None when
/// `root` does not exist.
pub fn tree(root: &Path) -> Option<BTreeMap<String, Node>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Node>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read store dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                out.insert(name.clone(), Node::Dir);
                walk(&e.path(), &format!("{name}/"), out);
            } else if ft.is_file() {
                out.insert(name, Node::File(std::fs::read(e.path()).expect("read store file")));
            } else {
                out.insert(name, Node::Other);
            }
        }
    }
    if !root.is_dir() {
        return None;
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    Some(out)
}

/// The differences between two trees, one line each.
pub fn tree_differences(ours: &Option<BTreeMap<String, Node>>, python: &Option<BTreeMap<String, Node>>) -> Vec<String> {
    let show = |n: Option<&Node>| match n {
        None => "absent".to_string(),
        Some(Node::Dir) => "directory".to_string(),
        Some(Node::Other) => "special file".to_string(),
        Some(Node::File(c)) => format!("file of {} bytes: {}", c.len(), shorten(c, 60)),
    };
    match (ours, python) {
        (None, None) => vec![],
        (Some(_), None) => vec!["store directory: ours exists, Python's does not".into()],
        (None, Some(_)) => vec!["store directory: Python's exists, ours does not".into()],
        (Some(o), Some(p)) => {
            let paths: BTreeSet<&String> = o.keys().chain(p.keys()).collect();
            paths
                .into_iter()
                .filter(|k| o.get(*k) != p.get(*k))
                .map(|k| format!("{k}: ours {}, Python {}", show(o.get(k)), show(p.get(k))))
                .collect()
        }
    }
}

/// Which normalisations [`compare`] applies (each one an allowed difference of the caller's
/// table).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// Python's `send_error` wraps the message in an HTML page (Content-Type text/html,
    /// Content-Length of the page): compare the unescaped message with our whole body.
    pub unwrap_html_errors: bool,
    /// `Date` and `Server` values differ by nature: compare the Date format only.
    pub ignore_date_server_values: bool,
}

/// One difference between the two answers to one request.
#[derive(Debug, Clone)]
pub struct Diff {
    /// What differs: "answer", "status", "reason", "header-presence", "header-case",
    /// "header-value", "body", "connection", "tree", "stdio".
    pub aspect: &'static str,
    /// The request's template.
    pub label: String,
    /// What groups equal differences (e.g. "Python 200, ours 400").
    pub key: String,
    /// Status and body of both answers, for a one-line listing.
    pub brief: String,
    /// Where: configuration, transport, request number.
    pub place: String,
    pub request: String,
    pub ours: String,
    pub python: String,
}

/// Is `a` an answer of Python's `send_error` (an HTML page; for HEAD only its head)?
pub fn is_python_error_page(a: &Answer) -> bool {
    a.status >= 400 && a.header("content-type").is_some_and(|t| t.starts_with("text/html"))
}

/// The message of a Python `send_error` page (unescaped), if `a` is one with a body.
pub fn python_error_message(a: &Answer) -> Option<String> {
    if !is_python_error_page(a) {
        return None;
    }
    let text = String::from_utf8_lossy(&a.body);
    let start = text.find("<p>Message: ")? + "<p>Message: ".len();
    let end = text[start..].find(".</p>\n        <p>Error code explanation:")? + start;
    Some(unescape_html(&text[start..end]))
}

fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// Is `v` a float as Python's `str(float)` prints a timestamp (`123.0`, `123.456`, `1e+16`)?
pub fn is_python_float(v: &str) -> bool {
    let v = v.strip_prefix('-').unwrap_or(v);
    let (mantissa, exp) = match v.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (v, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((i, f)) => digits(i) && digits(f),
        None => exp.is_some() && digits(mantissa),
    };
    let exp_ok = match exp {
        Some(e) => digits(e.strip_prefix(['+', '-']).unwrap_or(e)),
        None => true,
    };
    mantissa_ok && exp_ok
}

/// An RFC 7231 IMF-fixdate, e.g. `Mon, 30 Nov 2026 04:57:13 GMT`.
pub fn is_http_date(v: &str) -> bool {
    let b = v.as_bytes();
    v.len() == 29
        && b[3] == b','
        && v.ends_with(" GMT")
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[12..16].iter().all(u8::is_ascii_digit)
        && b[17..19].iter().all(u8::is_ascii_digit)
        && b[19] == b':'
}

/// `"atime": 1.5` / `"mtime":1.5` numbers replaced by `<float>` (or `<not a float: ..>`),
/// so listings compare byte for byte apart from the time values.
pub fn mask_json_times(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len());
    let mut rest: &str = &text;
    loop {
        let next = ["\"atime\":", "\"mtime\":"].iter().filter_map(|k| rest.find(k).map(|i| (i, k.len()))).min();
        let Some((i, klen)) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..i + klen]);
        rest = &rest[i + klen..];
        let spaces = rest.len() - rest.trim_start_matches(' ').len();
        out.push_str(&rest[..spaces]);
        rest = &rest[spaces..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c))).unwrap_or(rest.len());
        let number = &rest[..end];
        if is_python_float(number) {
            out.push_str("<float>");
        } else {
            out.push_str(&format!("<not a float: {number}>"));
        }
        rest = &rest[end..];
    }
    out.into_bytes()
}

/// Compare two answers to `req`; every difference found, after the normalisations of
/// `rules`. `place` says where (configuration, transport, number).
pub fn compare(req: &Request, place: &str, ours: &Outcome, python: &Outcome, rules: Rules) -> Vec<Diff> {
    let mut diffs = Vec::new();
    let mut diff = |aspect: &'static str, key: String| {
        diffs.push(Diff {
            aspect,
            label: req.label.clone(),
            key,
            brief: format!("python {} || ours {}", python.brief(), ours.brief()),
            place: place.to_string(),
            request: req.show(),
            ours: ours.show(),
            python: python.show(),
        })
    };
    let (o, p) = match (ours, python) {
        (Outcome::Answered(o), Outcome::Answered(p)) => (o, p),
        (Outcome::NoAnswer(_), Outcome::NoAnswer(_)) => return diffs,
        (Outcome::Answered(o), Outcome::NoAnswer(why)) => {
            diff("answer", format!("Python no answer ({why}), ours {}", o.status));
            return diffs;
        }
        (Outcome::NoAnswer(why), Outcome::Answered(p)) => {
            diff("answer", format!("Python {}, ours no answer ({why})", p.status));
            return diffs;
        }
    };
    // A different status is the finding; what else differs follows from it.
    if o.status != p.status {
        diff("status", format!("Python {}, ours {}", p.status, o.status));
        return diffs;
    }
    let py_message = if rules.unwrap_html_errors { python_error_message(p) } else { None };
    // Python's send_error puts its message into the status line as well.
    if o.reason != p.reason {
        let key = if is_python_error_page(p) {
            "Python's reason phrase is its error message".to_string()
        } else {
            format!("Python {:?}, ours {:?}", p.reason, o.reason)
        };
        diff("reason", key);
    }
    // Headers: every name either side sent.
    let names: BTreeSet<String> = o.headers.iter().chain(&p.headers).map(|(k, _)| k.to_ascii_lowercase()).collect();
    for name in names {
        let os: Vec<&(String, String)> = o.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(&name)).collect();
        let ps: Vec<&(String, String)> = p.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(&name)).collect();
        let html_part =
            rules.unwrap_html_errors && is_python_error_page(p) && (name == "content-type" || name == "content-length");
        if os.len() != ps.len() {
            let key = match (os.first(), ps.first()) {
                (None, Some((k, v))) => format!("{k}: {} only from Python", shown_value(&name, v)),
                (Some((k, v)), None) => format!("{k}: {} only from ours", shown_value(&name, v)),
                _ => format!("{name} sent {} times by Python, {} times by ours", ps.len(), os.len()),
            };
            diff("header-presence", key);
            continue;
        }
        for ((ok, ov), (pk, pv)) in os.iter().zip(ps.iter()) {
            if ok != pk && !(rules.ignore_date_server_values && (name == "date" || name == "server")) {
                diff("header-case", format!("Python `{pk}`, ours `{ok}`"));
            }
            let same = match name.as_str() {
                "date" if rules.ignore_date_server_values => is_http_date(ov) == is_http_date(pv),
                "server" if rules.ignore_date_server_values => true,
                "x-borgstore-atime" | "x-borgstore-mtime" => is_python_float(ov) && is_python_float(pv),
                _ if html_part => true,
                // A listing's length varies with its times' digits: each side's length must be
                // its own body's; the bodies are compared (times masked) below.
                "content-length" if p.header("content-type").is_some_and(|t| t.contains("json")) => {
                    ov.parse() == Ok(o.body.len()) && pv.parse() == Ok(p.body.len())
                }
                _ => ov == pv,
            };
            if !same {
                let key = match name.as_str() {
                    "x-borgstore-atime" | "x-borgstore-mtime" | "date" => format!("{pk} format"),
                    "content-length" => "Content-Length (see body)".to_string(),
                    _ => format!("{pk}: Python {pv:?}, ours {ov:?}"),
                };
                diff("header-value", key);
            }
        }
    }
    // The body.
    if let Some(msg) = &py_message {
        if o.body != msg.as_bytes() {
            diff("body", format!("error message ({})", p.status));
        }
    } else {
        let json = p.header("content-type").is_some_and(|t| t.contains("json"));
        let (ob, pb) =
            if json { (mask_json_times(&o.body), mask_json_times(&p.body)) } else { (o.body.clone(), p.body.clone()) };
        if ob != pb {
            let key = if json && serde_json_equal(&ob, &pb) {
                "JSON formatting only (same values)".to_string()
            } else if p.status >= 400 {
                format!("error message ({})", p.status)
            } else {
                "content".to_string()
            };
            diff("body", key);
        }
    }
    diffs
}

/// A header value for a group key: values that vary per request are left out.
fn shown_value(name: &str, v: &str) -> String {
    match name {
        "date" | "server" | "content-length" | "x-borgstore-atime" | "x-borgstore-mtime" => "…".to_string(),
        _ => v.to_string(),
    }
}

/// Same JSON value, whatever the whitespace? (Times masked as strings first.)
fn serde_json_equal(a: &[u8], b: &[u8]) -> bool {
    let quote = |x: &[u8]| String::from_utf8_lossy(x).replace("<float>", "\"<float>\"");
    match (serde_json::from_str::<serde_json::Value>(&quote(a)), serde_json::from_str::<serde_json::Value>(&quote(b))) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_dates_and_masks() {
        for ok in ["1.0", "1718000000.123456", "1e+16", "-2.5", "1.5e-07"] {
            assert!(is_python_float(ok), "{ok}");
        }
        for bad in ["1", "", "1.", ".5", "abc", "1e"] {
            assert!(!is_python_float(bad), "{bad}");
        }
        assert!(is_http_date("Mon, 30 Nov 2026 04:57:13 GMT"));
        assert!(!is_http_date("Mon, 30 Nov 2026 04:57:13"));
        assert_eq!(
            mask_json_times(br#"[{"atime": 1.5, "mtime":2, "x": 1}]"#),
            br#"[{"atime": <float>, "mtime":<not a float: 2>, "x": 1}]"#.to_vec()
        );
    }

    #[test]
    fn python_error_pages_unwrap() {
        let page = "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: 400</p>\n        <p>Message: a &lt;b&gt; &amp; c.</p>\n        <p>Error code explanation: 400 - Bad request syntax or unsupported method.</p>\n    </body>\n</html>\n";
        let a = Answer {
            status: 400,
            reason: "x".into(),
            headers: vec![("Content-Type".into(), "text/html;charset=utf-8".into())],
            body: page.as_bytes().to_vec(),
        };
        assert_eq!(python_error_message(&a).as_deref(), Some("a <b> & c"));
    }
}
