//! Response header names as Python's server writes them (`Content-Length`,
//! `X-BorgStore-Is-Directory`, `WWW-Authenticate`), on every listener and on `--stdio`.
//!
//! HTTP says header names are case-insensitive, but scripts and hand-written clients
//! (the stdio transport is raw HTTP over a pipe) look them up literally. actix-web keeps
//! names lower case, so [`CanonicalHeaders`] sits between the HTTP server and the socket
//! and rewrites the names in each outgoing response head; bodies pass through untouched.
//!
//! To find the heads in the byte stream it follows the framing: a head ends at the empty
//! line, then comes a body of `Content-Length` bytes. Responses without a body despite
//! their `Content-Length` (answers to HEAD) carry the marker header [`NO_BODY`], which the
//! front end adds and this layer removes. Anything it cannot follow (a chunked body, a
//! head larger than [`MAX_HEAD`]) switches the connection to plain copying: names may
//! then stay lower case, but no byte is ever lost or reordered.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Marker header of responses that have no body whatever their `Content-Length` says.
pub const NO_BODY: &str = "x-borgstore-no-body";
/// Heads larger than this are passed on as they are.
pub const MAX_HEAD: usize = 64 * 1024;

/// Canonical spelling of header names whose canonical form is not plain Title-Case.
const SPECIAL: [&str; 4] = ["X-BorgStore-Is-Directory", "X-BorgStore-Atime", "X-BorgStore-Mtime", "WWW-Authenticate"];

/// The canonical spelling of a (lower case) header name: [`SPECIAL`] names as listed,
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

/// An HTTP/1.x server connection that canonicalizes response header names.
pub struct CanonicalHeaders<S> {
    inner: S,
    next: Next,
    /// The head being gathered.
    head: Vec<u8>,
    /// A rewritten head waiting to be written, and how much of it went out.
    out: Vec<u8>,
    sent: usize,
}

impl<S> CanonicalHeaders<S> {
    pub fn new(inner: S) -> Self {
        CanonicalHeaders { inner, next: Next::Head, head: Vec::new(), out: Vec::new(), sent: 0 }
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
                        let taken = end - seen;
                        this.head.truncate(end);
                        let (rewritten, next) = rewrite(&this.head);
                        this.head.clear();
                        this.out = rewritten;
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

impl<S: AsyncRead + Unpin> AsyncRead for CanonicalHeaders<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
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

    #[tokio::test]
    async fn unknown_framing_is_copied_as_it_is() {
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nx-y: z\r\n\r\n";
        let out = through(&[chunked]).await;
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nx-y: z\r\n\r\n");
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(through(&[&huge]).await, huge);
    }
}
