//! HTTP/1.1 on stdin/stdout, for `rest://` clients that start the server over ssh (or
//! locally for `rest:///path`).
//!
//! Rather than a second HTTP implementation, the one actix-web server listens on a Unix
//! socket in a private temporary directory and a pump copies bytes between that socket
//! and stdin/stdout. At EOF on stdin the pump half-closes the socket; the server answers
//! what it still has and closes, the pump flushes stdout and the process exits 0.
//! Nothing but HTTP ever goes to stdout: logs are on stderr.
//!
//! One rewrite happens on the way in: the Python client's stdio transport sends no
//! `Host` header, which HTTP/1.1 requires and actix-web enforces, so the pump adds
//! `Host: stdio` to request heads that lack one. To find request heads it follows the
//! framing (`Content-Length` bodies); a chunked or unparsable request switches it to
//! plain copying for the rest of the session.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Request heads larger than this are passed through untouched (the server refuses them).
const MAX_HEAD: usize = 64 * 1024;

/// Pump stdin -> `socket` and `socket` -> stdout until both directions are done.
pub async fn pump(socket: &std::path::Path) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket).await?;
    let (mut from_server, mut to_server) = stream.into_split();
    let upstream = async move {
        let copied = forward_requests(tokio::io::stdin(), &mut to_server).await;
        // Half-close: the server finishes the requests it has and then closes.
        let _ = to_server.shutdown().await;
        copied
    };
    let downstream = async move {
        // Unbuffered: every chunk the server sends reaches the client at once.
        let mut stdout = tokio::io::stdout();
        tokio::io::copy(&mut from_server, &mut stdout).await?;
        stdout.flush().await
    };
    let (up, down) = tokio::join!(upstream, downstream);
    up.and(down)
}

/// Copy requests from `input` to `output`, adding `Host` to heads without one.
pub async fn forward_requests(
    mut input: impl AsyncRead + Unpin,
    output: &mut (impl AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Gather one request head.
        let parsed = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let has_host = req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("host"));
                    let chunked = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding") && !h.value.eq_ignore_ascii_case(b"identity")
                    });
                    let length = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    break Some((head_len, has_host, chunked, length.unwrap_or(0)));
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => break None,
            }
            let n = input.read(&mut chunk).await?;
            if n == 0 {
                // EOF: pass on whatever partial data there is.
                output.write_all(&buf).await?;
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Some((head_len, has_host, chunked, length)) = parsed else {
            // Not something we can follow: hand everything over as it is.
            output.write_all(&buf).await?;
            tokio::io::copy(&mut input, output).await?;
            return Ok(());
        };
        if has_host {
            output.write_all(&buf[..head_len]).await?;
        } else {
            let line_end = buf.windows(2).position(|w| w == b"\r\n").map_or(0, |i| i + 2);
            output.write_all(&buf[..line_end]).await?;
            output.write_all(b"Host: stdio\r\n").await?;
            output.write_all(&buf[line_end..head_len]).await?;
        }
        buf.drain(..head_len);
        if chunked {
            output.write_all(&buf).await?;
            tokio::io::copy(&mut input, output).await?;
            return Ok(());
        }
        // The body: what is buffered, then straight from the input.
        let mut remaining = length;
        let from_buf = remaining.min(buf.len() as u64) as usize;
        output.write_all(&buf[..from_buf]).await?;
        buf.drain(..from_buf);
        remaining -= from_buf as u64;
        while remaining > 0 {
            let want = remaining.min(chunk.len() as u64) as usize;
            let n = input.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Ok(());
            }
            output.write_all(&chunk[..n]).await?;
            remaining -= n as u64;
        }
        output.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::forward_requests;

    async fn run(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        forward_requests(input, &mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn adds_host_where_missing_and_keeps_bodies_intact() {
        let input = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /bGET /b HTTP/1.1\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\n\r\n";
        let out = run(input).await;
        assert_eq!(
            out,
            b"POST /a HTTP/1.1\r\nHost: stdio\r\nContent-Length: 5\r\n\r\nGET /bGET /b HTTP/1.1\r\nHost: h\r\n\r\nHEAD / HTTP/1.1\r\nHost: stdio\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn garbage_and_chunked_pass_through() {
        assert_eq!(run(b"\x00\x01 nonsense\r\n\r\nmore").await, b"\x00\x01 nonsense\r\n\r\nmore");
        let chunked = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(run(chunked).await, chunked);
        assert_eq!(run(b"GET / HTTP/1.1\r\nHo").await, b"GET / HTTP/1.1\r\nHo");
    }
}
