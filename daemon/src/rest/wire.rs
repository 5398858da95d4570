//! The REST connection as Python's server speaks it, on every listener and on `--stdio`:
//! [`CanonicalHeaders`] sits between actix-web and the socket and adjusts message heads
//! in both directions; bodies pass through untouched.
//!
//! Outgoing: response header names as Python's server writes them (`Content-Length`,
//! `X-BorgStore-Is-Directory`, `WWW-Authenticate`). HTTP says names are case-insensitive,
//! but scripts and hand-written clients (the stdio transport is raw HTTP over a pipe)
//! look them up literally, and actix-web keeps them lower case.
//!
//! Incoming: what Python's server accepts and actix-web would refuse before our code
//! sees it: a request without a `Host` header (Python's stdio transport sends none) gets
//! `Host: localhost`, and raw bytes above 0x7f in the request target (Python reads them
//! as Latin-1) are escaped for actix-web's parser; the original target travels in the
//! [`RAW_TARGET`] header, from which the front end takes the path ([`request_path`]).
//!
//! To find the heads in each byte stream it follows the framing: a head ends at the empty
//! line, then comes a body of `Content-Length` bytes. Responses without a body despite
//! their `Content-Length` (answers to HEAD) carry the marker header [`NO_BODY`], which the
//! front end adds and this layer removes. Anything it cannot follow (a chunked body, a
//! head larger than [`MAX_HEAD`]) switches that direction to plain copying: no byte is
//! ever lost or reordered.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Marker header of responses that have no body whatever their `Content-Length` says.
pub const NO_BODY: &str = "x-borgstore-no-body";
/// Header carrying a request target that had raw bytes above 0x7f, percent-encoded
/// (`%` itself as `%25`). Only this layer sets it: a client's own is removed.
pub const RAW_TARGET: &str = "x-borgstore-raw-target";
/// Heads larger than this are passed on as they are.
pub const MAX_HEAD: usize = 64 * 1024;

/// Canonical spelling of header names whose canonical form is not plain Title-Case.
const SPECIAL: [&str; 4] = ["X-BorgStore-Is-Directory", "X-BorgStore-Atime", "X-BorgStore-Mtime", "WWW-Authenticate"];

/// The canonical spelling of a (lower case) header name: the few special names as listed,
/// all others Title-Case (`content-length` -> `Content-Length`).
pub fn canonical(name: &[u8]) -> Vec<u8> {
    if let Some(s) = SPECIAL.iter().find(|s| s.as_bytes().eq_ignore_ascii_case(name)) {
        return s.as_bytes().to_vec();
    }
    let mut out = name.to_vec();
    let mut start = true;
    for c in out.iter_mut() {
        if start {
            c.make_ascii_uppercase();
        } else {
            c.make_ascii_lowercase();
        }
        start = *c == b'-';
    }
    out
}

/// What the writer expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The head of a response.
    Head,
    /// This many body bytes.
    Body(u64),
    /// Unknown framing: copy everything.
    Copy,
}

/// An HTTP/1.x server connection whose message heads are adjusted (see the module docs).
pub struct CanonicalHeaders<S> {
    inner: S,
    next: Next,
    /// The head being gathered.
    head: Vec<u8>,
    /// A rewritten head waiting to be written, and how much of it went out.
    out: Vec<u8>,
    sent: usize,
    /// What the reading side expects next.
    next_in: Next,
    /// Bytes read but not yet looked at (part of a request head).
    raw_in: Vec<u8>,
    /// Bytes ready to be handed to the server, and how many were.
    ready: Vec<u8>,
    taken: usize,
}

impl<S> CanonicalHeaders<S> {
    /// The connection `inner`, adjusted from its first byte on (each direction starts at
    /// a message head).
    pub fn new(inner: S) -> Self {
        CanonicalHeaders {
            inner,
            next: Next::Head,
            head: Vec::new(),
            out: Vec::new(),
            sent: 0,
            next_in: Next::Head,
            raw_in: Vec::new(),
            ready: Vec::new(),
            taken: 0,
        }
    }

    /// The connection underneath (for peer credentials).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Rewrite a complete head (ending in an empty line): names in canonical case, the
/// [`NO_BODY`] marker removed. Returns the new head and what follows it.
fn rewrite(head: &[u8]) -> (Vec<u8>, Next) {
    let mut out = Vec::with_capacity(head.len());
    let mut length: Option<u64> = None;
    let mut no_body = false;
    let mut chunked = false;
    let mut lines = head.split_inclusive(|&b| b == b'\n');
    let status = lines.next().unwrap_or_default();
    out.extend_from_slice(status);
    // 1xx, 204 and 304 answers never have a body.
    let code = status.get(9..12).and_then(|c| std::str::from_utf8(c).ok()).and_then(|c| c.parse::<u16>().ok());
    let bodiless = code.is_some_and(|c| c < 200 || c == 204 || c == 304);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            out.extend_from_slice(line); // the empty line at the end
            continue;
        };
        let (name, rest) = line.split_at(colon);
        if name.eq_ignore_ascii_case(NO_BODY.as_bytes()) {
            no_body = true;
            continue;
        }
        let value = String::from_utf8_lossy(&rest[1..]).trim().to_string();
        if name.eq_ignore_ascii_case(b"content-length") {
            length = value.parse().ok();
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        }
        out.extend_from_slice(&canonical(name));
        out.extend_from_slice(rest);
    }
    let next = if chunked {
        Next::Copy
    } else if no_body || bodiless {
        Next::Head
    } else {
        match length {
            Some(0) | None => Next::Head,
            Some(n) => Next::Body(n),
        }
    };
    (out, next)
}

impl<S: AsyncWrite + Unpin> CanonicalHeaders<S> {
    /// Write out a pending rewritten head.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CanonicalHeaders<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_out(cx))?;
        match this.next {
            Next::Copy => Pin::new(&mut this.inner).poll_write(cx, buf),
            Next::Body(left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &buf[..take]))?;
                let left = left - n as u64;
                this.next = if left == 0 { Next::Head } else { Next::Body(left) };
                Poll::Ready(Ok(n))
            }
            Next::Head => {
                // Gather up to the end of the head; the bytes are ours once taken.
                let seen = this.head.len();
                this.head.extend_from_slice(buf);
                let from = seen.saturating_sub(3);
                let end = this.head[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| from + i + 4);
                match end {
                    Some(end) => {
                        let mut taken = end - seen;
                        this.head.truncate(end);
                        let (rewritten, mut next) = rewrite(&this.head);
                        this.head.clear();
                        this.out = rewritten;
                        // The body bytes that came with the head go out with it: one write
                        // for a small answer, as without this layer.
                        if let Next::Body(left) = next {
                            let more = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len() - taken);
                            this.out.extend_from_slice(&buf[taken..taken + more]);
                            taken += more;
                            let left = left - more as u64;
                            next = if left == 0 { Next::Head } else { Next::Body(left) };
                        }
                        this.next = next;
                        // Start sending; whatever does not go now goes on the next call.
                        if let Poll::Ready(Err(e)) = this.poll_out(cx) {
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(taken))
                    }
                    None if this.head.len() > MAX_HEAD => {
                        // Not a head we can follow: hand it on as it is, copy from now on.
                        this.out = std::mem::take(&mut this.head);
                        this.next = Next::Copy;
                        if let Poll::Ready(Err(e)) = this.poll_out(cx) {
                            return Poll::Ready(Err(e));
                        }
                        Poll::Ready(Ok(buf.len()))
                    }
                    None => Poll::Ready(Ok(buf.len())),
                }
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_out(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_out(cx))?;
        if !self.head.is_empty() {
            // An unfinished head at the end: pass it on as it is.
            self.out = std::mem::take(&mut self.head);
            ready!(self.poll_out(cx))?;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Rewrite a complete request head: `Host` added where missing, raw bytes above 0x7f of
/// the request target escaped. Returns the new head and what follows it.
fn rewrite_request(head: &[u8]) -> (Vec<u8>, Next) {
    let mut out = Vec::with_capacity(head.len() + 24);
    let mut lines = head.split_inclusive(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let mut raw_target = None;
    match (parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version)) => {
            out.extend_from_slice(method);
            out.push(b' ');
            let raw = target.iter().any(|&b| b >= 0x80);
            let mut kept = Vec::new();
            for &b in target {
                if b >= 0x80 {
                    out.extend_from_slice(format!("%{b:02X}").as_bytes());
                } else {
                    out.push(b);
                }
                if raw {
                    match b {
                        b'%' => kept.extend_from_slice(b"%25"),
                        b if b >= 0x80 => kept.extend_from_slice(format!("%{b:02X}").as_bytes()),
                        b => kept.push(b),
                    }
                }
            }
            out.push(b' ');
            out.extend_from_slice(version);
            raw_target = raw.then_some(kept);
        }
        _ => out.extend_from_slice(request_line),
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut has_host = false;
    let mut rest = Vec::with_capacity(head.len());
    for line in lines {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.eq_ignore_ascii_case(RAW_TARGET.as_bytes()) {
                continue; // only we say what the raw target was
            }
            if name.eq_ignore_ascii_case(b"host") {
                has_host = true;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                length = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse().ok());
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = !String::from_utf8_lossy(value).trim().eq_ignore_ascii_case("identity");
            }
        }
        rest.extend_from_slice(line);
    }
    if !has_host {
        out.extend_from_slice(b"Host: localhost\r\n");
    }
    if let Some(kept) = raw_target {
        out.extend_from_slice(RAW_TARGET.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&kept);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&rest);
    let next = match (chunked, length) {
        (true, _) => Next::Copy,
        (false, Some(n)) if n > 0 => Next::Body(n),
        _ => Next::Head,
    };
    (out, next)
}

/// The path of a request as Python's server reads it: as sent, not percent-decoded (a
/// `%` is part of the name); where the target had raw bytes above 0x7f, those bytes as
/// Latin-1 characters (from [`RAW_TARGET`]).
pub fn request_path(path: &str, raw_target: Option<&[u8]>) -> String {
    match raw_target {
        Some(raw) => latin_1_target(raw).split(['?', '#']).next().unwrap_or("").to_string(),
        None => path.to_string(),
    }
}

/// The query parameters of a request whose target had raw bytes above 0x7f, as Python's
/// `parse_qs` reads them from a Latin-1 request line: `+` is a blank, `%XX` runs are
/// UTF-8, raw bytes are Latin-1 characters.
pub fn raw_query(raw_target: &[u8]) -> Vec<(String, String)> {
    let target = latin_1_target(raw_target);
    let Some(query) = target.split('#').next().and_then(|t| t.split_once('?')).map(|(_, q)| q.to_string()) else {
        return Vec::new();
    };
    let unquote = |s: &str| -> String {
        let mut out = String::new();
        let mut run: Vec<u8> = Vec::new();
        let chars: Vec<char> = s.replace('+', " ").chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let hex: String = chars[i + 1..(i + 3).min(chars.len())].iter().collect();
            if chars[i] == '%' && hex.len() == 2 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                run.push(u8::from_str_radix(&hex, 16).unwrap_or(0));
                i += 3;
                continue;
            }
            out.push_str(&String::from_utf8_lossy(&std::mem::take(&mut run)));
            out.push(chars[i]);
            i += 1;
        }
        out.push_str(&String::from_utf8_lossy(&run));
        out
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unquote(k), unquote(v))
        })
        .collect()
}

/// The target as Python's server reads it (Latin-1), from [`RAW_TARGET`].
fn latin_1_target(raw: &[u8]) -> String {
    percent_encoding::percent_decode(raw).map(char::from).collect()
}

impl<S: AsyncRead + Unpin> AsyncRead for CanonicalHeaders<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.taken < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.taken);
                buf.put_slice(&this.ready[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.ready.len() {
                    this.ready.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.next_in {
                Next::Copy if this.raw_in.is_empty() => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Next::Copy => this.ready = std::mem::take(&mut this.raw_in),
                Next::Body(left) if this.raw_in.is_empty() => {
                    // Straight into the server's buffer, no further than the body goes.
                    let limit = usize::try_from(left).unwrap_or(usize::MAX).min(buf.remaining());
                    let mut part = buf.take(limit);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                    let n = part.filled().len();
                    // SAFETY: the inner reader initialised (and filled) the first n unfilled
                    // bytes of buf through `part`.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    let left = left - n as u64;
                    this.next_in = if left == 0 { Next::Head } else { Next::Body(left) };
                    return Poll::Ready(Ok(()));
                }
                Next::Body(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(this.raw_in.len());
                    this.ready = this.raw_in.drain(..n).collect();
                    let left = left - n as u64;
                    this.next_in = if left == 0 { Next::Head } else { Next::Body(left) };
                }
                Next::Head => {
                    if let Some(end) = this.raw_in.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) {
                        let head: Vec<u8> = this.raw_in.drain(..end).collect();
                        let (rewritten, next) = rewrite_request(&head);
                        this.ready = rewritten;
                        this.next_in = next;
                        continue;
                    }
                    if this.raw_in.len() > MAX_HEAD {
                        this.next_in = Next::Copy;
                        continue;
                    }
                    let mut chunk = [0u8; 8192];
                    let mut part = ReadBuf::new(&mut chunk);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                    if part.filled().is_empty() {
                        // The end: hand on whatever partial head there is.
                        if this.raw_in.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        this.next_in = Next::Copy;
                        continue;
                    }
                    this.raw_in.extend_from_slice(part.filled());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn through(pieces: &[&[u8]]) -> Vec<u8> {
        let mut w = CanonicalHeaders::new(Vec::new());
        for p in pieces {
            w.write_all(p).await.unwrap();
        }
        w.flush().await.unwrap();
        w.inner
    }

    #[test]
    fn names_become_canonical() {
        assert_eq!(canonical(b"content-length"), b"Content-Length");
        assert_eq!(canonical(b"x-borgstore-is-directory"), b"X-BorgStore-Is-Directory");
        assert_eq!(canonical(b"www-authenticate"), b"WWW-Authenticate");
        assert_eq!(canonical(b"cache-control"), b"Cache-Control");
        assert_eq!(canonical(b"date"), b"Date");
    }

    #[tokio::test]
    async fn heads_are_rewritten_and_bodies_kept_whatever_the_pieces() {
        let body = b"content-length: 99\r\nnot a header";
        let stream = [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 33\r\nx-borgstore-atime: 1.0\r\n\r\n"[..],
            body,
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nx-borgstore-no-body: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        ]
        .concat();
        let want = [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 33\r\nX-BorgStore-Atime: 1.0\r\n\r\n"[..],
            body,
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ]
        .concat();
        assert_eq!(through(&[&stream]).await, want, "in one piece");
        for size in [1, 2, 3, 5, 17, 64] {
            let pieces: Vec<&[u8]> = stream.chunks(size).collect();
            assert_eq!(through(&pieces).await, want, "in pieces of {size}");
        }
    }

    async fn read_through(input: &[u8], piece: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(64);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            for p in input.chunks(piece) {
                client.write_all(p).await.unwrap();
            }
        });
        let mut r = CanonicalHeaders::new(server);
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            match tokio::time::timeout(std::time::Duration::from_millis(200), r.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("{e}"),
            }
        }
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn requests_get_a_host_and_raw_target_bytes_escaped_bodies_untouched() {
        let input = "POST /a HTTP/1.1\r\nContent-Length: 12\r\nX-BorgStore-Raw-Target: /forged\r\n\r\nGET /b HTTP/1.1GET /\u{e9}t%\u{e9}?x=\u{e9} HTTP/1.1\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\n\r\n";
        let want = "POST /a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 12\r\n\r\nGET /b HTTP/1.1GET /%C3%A9t%%C3%A9?x=%C3%A9 HTTP/1.1\r\nx-borgstore-raw-target: /%C3%A9t%25%C3%A9?x=%C3%A9\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        for piece in [1, 3, 5, 64, 1000] {
            assert_eq!(
                String::from_utf8(read_through(input.as_bytes(), piece).await).unwrap(),
                want,
                "pieces of {piece}"
            );
        }
        let chunked = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /\xff HTTP/1.1\r\n\r\n";
        assert_eq!(read_through(chunked, 4).await, chunked.to_vec(), "unknown framing: copied as it is");
    }

    #[test]
    fn raw_queries_are_read_as_python_reads_them() {
        let q = raw_query(b"/?cmd=move&current=%C3%A9t%C3%A9&new=a+b%2Fc&x");
        assert_eq!(
            q,
            [("cmd", "move"), ("current", "\u{c3}\u{a9}t\u{c3}\u{a9}"), ("new", "a b/c"), ("x", "")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn paths_are_taken_as_sent_and_raw_bytes_as_latin_1() {
        assert_eq!(request_path("/%C3%A9/%2F/%41/%", None), "/%C3%A9/%2F/%41/%", "client escapes stay");
        assert_eq!(request_path("/x", Some(b"/%C3%A9t%25%C3%A9?x=1")), "/\u{c3}\u{a9}t%\u{c3}\u{a9}");
    }

    #[tokio::test]
    async fn unknown_framing_is_copied_as_it_is() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nx-y: z\r\n\r\n";
        let out = through(&[chunked]).await;
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nx-y: z\r\n\r\n");
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(through(&[&huge]).await, huge);
    }
}
