//! The reader of a connection: frames in, commands to the stores, in the order sent.
//!
//! For each frame it first reserves room for the announced bytes (the connection's
//! share [`limits::PER_CONNECTION`], then the daemon-wide budget), then reads the body,
//! decodes the request and hands it to [`super::commands::dispatch`]. Because requests
//! are submitted in order, a connection's requests on one item take effect in the order
//! sent. At most [`MAX_IN_FLIGHT`] requests of a connection are unanswered at once;
//! a client that pipelines more waits (its socket buffer fills).
//!
//! Bad input never panics and never disturbs other connections: an oversize frame is
//! answered with an error (id 0) and the connection closed; a malformed body gets an
//! error reply (id 0) and the connection goes on; a body that does not arrive in time
//! (nothing sent for [`limits::BODY_IDLE`]) ends the connection. On shutdown the reader stops at the
//! next frame boundary.

use super::commands::{dispatch, Dispatched};
use super::framing::{FrameCodec, Incoming};
use super::writer::Outgoing;
use crate::access::LocalPeer;
use crate::actor::{Pending, Registry};
use crate::limits::{self, Budget, Room};
use crate::store::Lister;
use borgstore_ipc::codec::{decode_body, store_request_of, FrameError};
use borgstore_ipc::protocol::{Op, Reply, Request, Response, LIST_CHUNK};
use borgstore_ipc::Error;
use futures::{Stream, StreamExt};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;

/// Requests of one connection in the daemon at once (read, not yet answered).
pub const MAX_IN_FLIGHT: usize = 1024;

/// Store requests above this many bytes keep their value in the frame they came in
/// (below it, copying the value costs less than looking for it).
const STORE_SLICE_ABOVE: usize = 64 << 10;

/// The body of an announced frame, as long as the client keeps sending: a client that
/// sends nothing for [`limits::BODY_IDLE`] (with room reserved for its bytes) gets None
/// and loses the connection, however large the frame. (`FramedRead` keeps what it read
/// when a wait is cut short, so the wait can be resumed.)
async fn body_while_sending<R>(frames: &mut FramedRead<R, FrameCodec>) -> Option<Result<Incoming, FrameError>>
where
    FramedRead<R, FrameCodec>: Stream<Item = Result<Incoming, FrameError>> + Unpin,
{
    let mut buffered = frames.read_buffer().len();
    loop {
        match tokio::time::timeout(limits::BODY_IDLE, frames.next()).await {
            Ok(next) => return next,
            Err(_) if frames.read_buffer().len() > buffered => buffered = frames.read_buffer().len(),
            Err(_) => return None,
        }
    }
}

/// Read requests from `frames` until the client ends, breaks framing, or `shutdown`;
/// replies go to the writer through `tx`. Returns once every listing it started has
/// finished streaming.
pub async fn read_requests<R>(
    mut frames: FramedRead<R, FrameCodec>,
    registry: &Registry,
    peer: &LocalPeer,
    tx: mpsc::Sender<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
) where
    FramedRead<R, FrameCodec>: Stream<Item = Result<Incoming, FrameError>> + Unpin,
{
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let connection_budget = Budget::new(limits::PER_CONNECTION);
    let daemon_budget = registry.budget().clone();
    let mut lists = JoinSet::new();
    let mut decided = super::commands::Decided::default();
    let refuse = |e: FrameError| Outgoing::Ready(Response { id: 0, body: Reply::Err(Error::from(e)) });
    loop {
        let next = tokio::select! {
            next = frames.next() => next,
            _ = shutdown.changed() => break,
        };
        let len = match next {
            None => break,
            Some(Ok(Incoming::Announced(len))) => len,
            Some(Ok(Incoming::Frame(_))) => continue, // not reached: every frame is announced first
            Some(Err(e)) => {
                // Framing is lost (oversize or truncated frame): say why, then close.
                let _ = tx.send(refuse(e)).await;
                break;
            }
        };
        // Room for the bytes first (this connection's share, then the daemon's), then the bytes.
        let room = Room::reserve(&connection_budget, &daemon_budget, len as u64).await;
        let body = match body_while_sending(&mut frames).await {
            Some(Ok(Incoming::Frame(body))) => body,
            Some(Err(e)) => {
                let _ = tx.send(refuse(e)).await;
                break;
            }
            _ => {
                let _ = tx.send(refuse(FrameError::Truncated)).await;
                break;
            }
        };
        // A large store's value is taken as a slice of its frame: no copy, no decoding.
        // Other requests are decoded; decoding copies any bytes out of the frame, which
        // for a large frame takes milliseconds the store thread (every store, every
        // connection) should not spend, so that happens on the blocking pool.
        let store = (len as usize > STORE_SLICE_ABOVE).then(|| store_request_of(&body)).flatten();
        let decoded = if let Some(head) = store {
            let value = body.freeze().slice(head.value_at..);
            Ok(Request { id: head.id, store: head.store, op: Op::Store { name: head.name, value } })
        } else if len as usize > super::framing::KEEP_BUFFER {
            tokio::task::spawn_blocking(move || decode_body::<Request>(&body))
                .await
                .unwrap_or_else(|_| Err(FrameError::Malformed("decoding the request failed".into())))
        } else {
            decode_body::<Request>(&body)
        };
        let request = match decoded {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(refuse(e)).await;
                continue;
            }
        };
        // A buffer grown for a large frame is not kept for the connection's lifetime
        // (only when nothing of the next frame is in it yet).
        // (A frame's body shares the buffer's allocation, so its size is what counts,
        // not the capacity left behind it.)
        let buffer = frames.read_buffer_mut();
        if buffer.is_empty() && len as usize > super::framing::KEEP_BUFFER {
            *buffer = bytes::BytesMut::new();
        }
        let id = request.id;
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let sent = match dispatch(registry, peer, &mut decided, request, room).await {
            Dispatched::Now(body) => tx.send(Outgoing::Ready(Response { id, body })).await.is_ok(),
            Dispatched::Later(answer) => tx.send(Outgoing::Pending(id, answer, permit)).await.is_ok(),
            Dispatched::Listing(lister) => {
                // A listing streams many replies; it gets its own task.
                let tx = tx.clone();
                lists.spawn(async move {
                    stream_list(id, lister, &tx).await;
                    drop(permit);
                });
                true
            }
        };
        if !sent {
            break;
        }
        // Reap finished listings so the set does not grow on long connections.
        while lists.try_join_next().is_some() {}
    }
    while lists.join_next().await.is_some() {}
}

/// Stream a listing in chunks, then its end marker (or the error that stopped it).
async fn stream_list(id: u64, lister: Pending<Lister>, tx: &mpsc::Sender<Outgoing>) {
    let send = |body| tx.send(Outgoing::Ready(Response { id, body }));
    let mut lister = match lister.await {
        Ok(lister) => lister,
        Err(e) => {
            let _ = send(Reply::Err(e)).await;
            return;
        }
    };
    loop {
        match lister.next_chunk(LIST_CHUNK).await {
            Ok(chunk) if chunk.is_empty() => {
                let _ = send(Reply::ListEnd).await;
                break;
            }
            Ok(chunk) => {
                if send(Reply::ListChunk(chunk)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = send(Reply::Err(e)).await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// A frame of `len` bytes announced, then `pieces` of 100 bytes with `pause` between.
    async fn body_after(len: u32, pieces: usize, pause: Duration) -> Option<Result<Incoming, FrameError>> {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut frames = FramedRead::new(server, FrameCodec::new(u32::MAX));
        client.write_all(&len.to_le_bytes()).await.unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), Incoming::Announced(len));
        tokio::spawn(async move {
            for _ in 0..pieces {
                tokio::time::sleep(pause).await;
                client.write_all(&[7; 100]).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(client);
        });
        body_while_sending(&mut frames).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_is_waited_for_however_long_it_takes() {
        // Ten pieces, each just inside the idle limit: 9.5 minutes in all.
        let got = body_after(1000, 10, limits::BODY_IDLE - Duration::from_secs(3)).await;
        assert!(matches!(got, Some(Ok(Incoming::Frame(b))) if b.len() == 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_ends_after_the_idle_limit() {
        let started = tokio::time::Instant::now();
        // A large frame announced (room reserved for it), a little of it, then nothing:
        // the wait does not grow with the announced size.
        assert!(body_after(256 << 20, 5, Duration::from_secs(1)).await.is_none());
        let waited = started.elapsed();
        assert!(waited >= limits::BODY_IDLE && waited < limits::BODY_IDLE * 3, "gave up after {waited:?}");
    }
}
