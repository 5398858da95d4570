//! The writer of a connection: one task that writes replies in completion order.
//!
//! The reader hands it [`Outgoing`] messages: replies that are ready, and pending
//! answers it awaits itself, so a finished command wakes the writer directly. Each
//! pending answer carries the request's place in flight, given back once its reply is
//! written. When the client stops reading, writing fails and the remaining replies are
//! dropped; the commands themselves still ran. A large value is written from its own
//! buffer behind its frame's head, not copied into the write buffer; a value that is
//! still in its file ([`Answer::File`]) follows its head a piece at a time, each piece
//! read while the client takes the last one; any write buffer grown for a large reply is
//! let go once that reply is written. A file that fails mid-value (it was cut short
//! behind the daemon's back) ends the connection: its length was already sent.

use super::framing::ResponseEncoder;
use crate::backends::value::FileRange;
use borgstore_ipc::codec::data_reply_head;
use borgstore_ipc::protocol::{Reply, Response};
use borgstore_ipc::Error;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::SinkExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::codec::FramedWrite;

/// What the reader hands the writer.
pub enum Outgoing {
    /// A reply to write as it is.
    Ready(Response),
    /// The answer of request `id`, coming; the permit is its place in flight.
    Pending(u64, BoxFuture<'static, Answer>, OwnedSemaphorePermit),
}

/// The answer to one request.
pub enum Answer {
    /// A reply as it is.
    Reply(Reply),
    /// A `Reply::Data` whose value is still in its file, sent a piece at a time.
    File(FileRange),
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer::Reply(reply)
    }
}

/// Write the `Reply::Data` frame of `range`: its head, then its pieces. Err: the
/// connection is unusable (written in part, or the client is gone).
async fn write_file<W: AsyncWrite + Unpin>(out: &mut W, id: u64, mut range: FileRange, head: &[u8]) -> Result<(), ()> {
    out.write_all(head).await.map_err(|_| ())?;
    loop {
        match range.next_piece().await {
            Ok(Some(piece)) => out.write_all(&piece).await.map_err(|_| ())?,
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::warn!(id, "a value failed while it was sent; closing the connection: {}", e.message);
                return Err(());
            }
        }
    }
}

/// Write what arrives on `rx` to `out` until the reader is done and every pending
/// answer is written (true), or writing failed: the client is gone, or a frame could
/// only be written in part (false: the connection must end).
pub async fn write_replies<W: AsyncWrite + Unpin>(out: W, max_frame: u32, mut rx: mpsc::Receiver<Outgoing>) -> bool {
    let mut frames = FramedWrite::new(out, ResponseEncoder { max: max_frame });
    let mut pending = FuturesUnordered::new();
    let mut reading = true;
    loop {
        let (id, answer, _permit) = tokio::select! {
            biased;
            Some(done) = pending.next(), if !pending.is_empty() => done,
            msg = rx.recv(), if reading => match msg {
                Some(Outgoing::Ready(response)) => (response.id, Answer::Reply(response.body), None),
                Some(Outgoing::Pending(id, answer, permit)) => {
                    pending.push(async move { (id, answer.await, Some(permit)) });
                    continue;
                }
                None => {
                    reading = false;
                    continue;
                }
            },
            else => break,
        };
        let response = match answer {
            Answer::Reply(body) => Response { id, body },
            Answer::File(range) => {
                let len = usize::try_from(range.left()).unwrap_or(usize::MAX);
                match data_reply_head(id, len, max_frame) {
                    Ok(head) => {
                        if frames.flush().await.is_err()
                            || write_file(frames.get_mut(), id, range, &head).await.is_err()
                        {
                            return false;
                        }
                        continue;
                    }
                    // Too large for a frame: the refusal goes out like any reply.
                    Err(e) => Response { id, body: Reply::Err(Error::from(e)) },
                }
            }
        };
        if let Reply::Data(value) = &response.body {
            if value.len() > super::framing::KEEP_BUFFER {
                // A large value goes out from where it is, behind its frame's head,
                // instead of being copied into the write buffer first. (Too large for
                // a frame: the encoder below answers with the error.)
                if let Ok(head) = data_reply_head(response.id, value.len(), max_frame) {
                    let out = frames.get_mut();
                    if out.write_all(&head).await.is_err() || out.write_all(value).await.is_err() {
                        return false;
                    }
                    continue;
                }
            }
        }
        let large = matches!(&response.body, Reply::Data(v) if v.len() > super::framing::KEEP_BUFFER);
        if frames.send(response).await.is_err() {
            return false; // the client went away; pending replies are dropped
        }
        // Written out: a buffer grown for a large reply is not kept for the connection's
        // lifetime (64 idle connections must not hold 64 large buffers). Its capacity
        // says little once written (the written part is behind its start), so the
        // reply's size decides.
        if large || frames.write_buffer().capacity() > super::framing::KEEP_BUFFER {
            *frames.write_buffer_mut() = bytes::BytesMut::new();
        }
    }
    frames.close().await.is_ok()
}
