//! HTTP/1.1 on stdin/stdout, for `rest://` clients that start the server over ssh (or
//! locally for `rest:///path`).
//!
//! Rather than a second HTTP implementation, the one actix-web server listens on a Unix
//! socket in a private temporary directory and a pump copies bytes between that socket
//! and stdin/stdout. At EOF on stdin the pump half-closes the socket; the server answers
//! what it still has and closes, the pump flushes stdout and the process exits 0.
//! Nothing but HTTP ever goes to stdout: logs are on stderr.
//!
//! What HTTP needs adjusting (the Python client's stdio transport sends no `Host`
//! header) happens in [`super::wire`], as on every other listener; the pump only copies.

use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

/// Pump stdin -> `socket` and `socket` -> stdout until both directions are done.
pub async fn pump(socket: &std::path::Path) -> std::io::Result<()> {
    let stream = UnixStream::connect(socket).await?;
    let (mut from_server, mut to_server) = stream.into_split();
    let upstream = async move {
        let copied = tokio::io::copy(&mut tokio::io::stdin(), &mut to_server).await.map(|_| ());
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
