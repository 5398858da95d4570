//! A value to store that may still be arriving: a REST upload handed to the backend
//! piece by piece while the client sends it.
//!
//! The REST front end decides from the request head whether to accept an upload, then
//! feeds its body into a [`BodySender`]; the backend reads the matching [`BodyStream`].
//! The channel holds only a few pieces, so a slow backend slows the client down instead
//! of filling memory. A backend that can write pieces as they come (posixfs) streams
//! values larger than [`STREAM_ABOVE`]; every other backend, and small values, collect
//! the pieces first ([`BodyStream::collect`]).
//!
//! A stream ends cleanly only after exactly its announced length and a clean end from
//! the sender; a short, long or failed upload (the client went away, its content hash did
//! not match, it stalled for [`crate::limits::BODY_IDLE`]) is an error, and the backend
//! then stores nothing.

use borgstore_ipc::{Error, ErrorKind, Result};
use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

/// Values up to this size are collected in memory before they are stored; larger ones
/// stream where the backend can.
pub const STREAM_ABOVE: u64 = 1 << 20;
/// Pieces buffered between the sender and the backend.
const PIECES: usize = 8;

/// A value to store, whole or arriving.
#[derive(Debug)]
pub enum Body {
    /// The whole value, already in memory.
    Full(Bytes),
    /// A value still arriving from the client.
    Stream(BodyStream),
}

impl Body {
    /// Its length in bytes (announced, for a stream).
    pub fn len(&self) -> u64 {
        match self {
            Body::Full(b) => b.len() as u64,
            Body::Stream(s) => s.len,
        }
    }

    /// Is the (announced) length zero?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole value in memory.
    pub async fn collect(self) -> Result<Bytes> {
        match self {
            Body::Full(b) => Ok(b),
            Body::Stream(s) => s.collect().await,
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Body {
        Body::Full(b)
    }
}

/// The receiving end: what a backend reads.
#[derive(Debug)]
pub struct BodyStream {
    len: u64,
    received: u64,
    rx: mpsc::Receiver<Result<Bytes>>,
    /// Tells the sender that the backend wants the value (fired by the first `next`).
    wanted: Option<oneshot::Sender<()>>,
}

/// The sending end: what the front end feeds.
#[derive(Debug)]
pub struct BodySender {
    tx: mpsc::Sender<Result<Bytes>>,
    wanted: Option<oneshot::Receiver<()>>,
}

impl BodySender {
    /// Wait until the backend asks for the first piece: true then, false when it gave
    /// up on the value without reading any (it refused it). Nothing should be read from
    /// the client before this says true.
    pub async fn wanted(&mut self) -> bool {
        match self.wanted.take() {
            Some(rx) => rx.await.is_ok(),
            None => !self.tx.is_closed(),
        }
    }

    /// Hand on a piece; false when the backend no longer wants any (it refused or failed).
    pub async fn send(&self, piece: Bytes) -> bool {
        self.tx.send(Ok(piece)).await.is_ok()
    }

    /// End the stream with an error instead of a clean end: nothing gets stored.
    pub async fn fail(self, error: Error) {
        let _ = self.tx.send(Err(error)).await;
    }

    /// Has the backend stopped reading (refused the value or failed)?
    pub fn abandoned(&self) -> bool {
        self.tx.is_closed()
    }
}

impl BodyStream {
    /// A stream of `len` bytes and the sender that feeds it. Dropping the sender after
    /// exactly `len` bytes ends the stream cleanly.
    pub fn channel(len: u64) -> (BodySender, BodyStream) {
        let (tx, rx) = mpsc::channel(PIECES);
        let (want_tx, want_rx) = oneshot::channel();
        (BodySender { tx, wanted: Some(want_rx) }, BodyStream { len, received: 0, rx, wanted: Some(want_tx) })
    }

    /// The announced length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Is the announced length zero?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next piece, or None at a clean end. More or fewer bytes than announced, a
    /// sender's error, or no piece for [`crate::limits::BODY_IDLE`] is an error.
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        if let Some(w) = self.wanted.take() {
            let _ = w.send(());
        }
        let piece = match tokio::time::timeout(crate::limits::BODY_IDLE, self.rx.recv()).await {
            Ok(p) => p,
            Err(_) => return Some(Err(Error::new(ErrorKind::ConnectionLost, "the client stopped sending the value"))),
        };
        match piece {
            Some(Ok(p)) => {
                self.received += p.len() as u64;
                if self.received > self.len {
                    return Some(Err(Error::invalid(format!(
                        "the value is longer than the announced {} bytes",
                        self.len
                    ))));
                }
                Some(Ok(p))
            }
            Some(Err(e)) => Some(Err(e)),
            None if self.received == self.len => None,
            None => Some(Err(Error::new(
                ErrorKind::ConnectionLost,
                format!("the value ended after {} of {} bytes", self.received, self.len),
            ))),
        }
    }

    /// Every piece, in one buffer.
    pub async fn collect(mut self) -> Result<Bytes> {
        let mut first: Option<Bytes> = None;
        let mut buf: Option<BytesMut> = None;
        while let Some(piece) = self.next().await {
            let piece = piece?;
            match (&mut first, &mut buf) {
                // A value that arrives in one piece is passed on without a copy.
                (None, None) => first = Some(piece),
                (Some(f), None) => {
                    let mut b = BytesMut::with_capacity(usize::try_from(self.len).unwrap_or(0));
                    b.extend_from_slice(f);
                    b.extend_from_slice(&piece);
                    buf = Some(b);
                    first = None;
                }
                (_, Some(b)) => b.extend_from_slice(&piece),
            }
        }
        Ok(match (first, buf) {
            (_, Some(b)) => b.freeze(),
            (Some(f), None) => f,
            (None, None) => Bytes::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clean_end_only_after_the_announced_length() {
        let (tx, s) = BodyStream::channel(6);
        let feed = async move {
            assert!(tx.send(Bytes::from_static(b"abc")).await);
            assert!(tx.send(Bytes::from_static(b"def")).await);
        };
        let (_, got) = tokio::join!(feed, s.collect());
        assert_eq!(got.unwrap(), "abcdef");

        let (tx, s) = BodyStream::channel(6);
        let feed = async move {
            tx.send(Bytes::from_static(b"abc")).await;
        };
        let (_, got) = tokio::join!(feed, s.collect());
        assert_eq!(got.unwrap_err().kind, ErrorKind::ConnectionLost, "short upload");

        let (tx, s) = BodyStream::channel(2);
        let feed = async move {
            tx.send(Bytes::from_static(b"abc")).await;
        };
        let (_, got) = tokio::join!(feed, s.collect());
        assert_eq!(got.unwrap_err().kind, ErrorKind::InvalidArgument, "long upload");

        let (tx, s) = BodyStream::channel(3);
        let feed = async move {
            tx.send(Bytes::from_static(b"abc")).await;
            tx.fail(Error::invalid("hash mismatch")).await;
        };
        let (_, got) = tokio::join!(feed, s.collect());
        assert!(got.unwrap_err().message.contains("hash mismatch"), "a failed upload after all bytes");

        let (tx, s) = BodyStream::channel(0);
        drop(tx);
        assert!(s.collect().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_stream_tells_the_sender() {
        let (mut tx, s) = BodyStream::channel(10);
        drop(s);
        assert!(!tx.wanted().await, "refused before reading: the sender reads nothing");
        assert!(tx.abandoned());
        assert!(!tx.send(Bytes::from_static(b"x")).await);
    }

    #[tokio::test]
    async fn the_sender_learns_when_the_backend_wants_the_value() {
        let (mut tx, mut s) = BodyStream::channel(1);
        let wanted = tokio::spawn(async move { (tx.wanted().await, tx) });
        tokio::task::yield_now().await;
        assert!(!wanted.is_finished(), "nobody asked yet");
        let reader = tokio::spawn(async move { s.next().await.map(|p| p.unwrap()) });
        let (yes, tx) = wanted.await.unwrap();
        assert!(yes);
        assert!(tx.send(Bytes::from_static(b"x")).await);
        assert_eq!(reader.await.unwrap().unwrap(), "x");
    }
}
