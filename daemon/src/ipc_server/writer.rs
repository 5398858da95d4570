//! The writer of a connection: one task that writes replies in completion order.
//!
//! The reader hands it [`Outgoing`] messages: replies that are ready, and pending
//! answers it awaits itself, so a finished command wakes the writer directly. Each
//! pending answer carries the request's place in flight, given back once its reply is
//! written. When the client stops reading, writing fails and the remaining replies are
//! dropped; the commands themselves still ran. A large value is written from its own
//! buffer behind its frame's head, not copied into the write buffer; any write buffer
//! grown for a large reply is let go once that reply is written.

use super::framing::ResponseEncoder;
use borgstore_ipc::codec::data_reply_head;
use borgstore_ipc::protocol::{Reply, Response};
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
    Pending(u64, BoxFuture<'static, Reply>, OwnedSemaphorePermit),
}

/// Write what arrives on `rx` to `out` until the reader is done and every pending
/// answer is written, or the client is gone.
pub async fn write_replies<W: AsyncWrite + Unpin>(out: W, max_frame: u32, mut rx: mpsc::Receiver<Outgoing>) {
    let mut frames = FramedWrite::new(out, ResponseEncoder { max: max_frame });
    let mut pending = FuturesUnordered::new();
    let mut reading = true;
    loop {
        let (response, _permit) = tokio::select! {
            biased;
            Some(done) = pending.next(), if !pending.is_empty() => done,
            msg = rx.recv(), if reading => match msg {
                Some(Outgoing::Ready(response)) => (response, None),
                Some(Outgoing::Pending(id, answer, permit)) => {
                    pending.push(async move { (Response { id, body: answer.await }, Some(permit)) });
                    continue;
                }
                None => {
                    reading = false;
                    continue;
                }
            },
            else => break,
        };
        if let Reply::Data(value) = &response.body {
            if value.len() > super::framing::KEEP_BUFFER {
                // A large value goes out from where it is, behind its frame's head,
                // instead of being copied into the write buffer first. (Too large for
                // a frame: the encoder below answers with the error.)
                if let Ok(head) = data_reply_head(response.id, value.len(), max_frame) {
                    let out = frames.get_mut();
                    if out.write_all(&head).await.is_err() || out.write_all(value).await.is_err() {
                        break;
                    }
                    continue;
                }
            }
        }
        let large = matches!(&response.body, Reply::Data(v) if v.len() > super::framing::KEEP_BUFFER);
        if frames.send(response).await.is_err() {
            break; // the client went away; pending replies are dropped
        }
        // Written out: a buffer grown for a large reply is not kept for the connection's
        // lifetime (64 idle connections must not hold 64 large buffers). Its capacity
        // says little once written (the written part is behind its start), so the
        // reply's size decides.
        if large || frames.write_buffer().capacity() > super::framing::KEEP_BUFFER {
            *frames.write_buffer_mut() = bytes::BytesMut::new();
        }
    }
    let _ = frames.close().await;
}
