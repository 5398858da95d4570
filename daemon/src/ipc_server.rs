//! The IPC server: IPC protocol v1 (DESIGN.md section 5) over a Unix socket.
//!
//! One task per connection:
//! 1. read the peer's credentials from the kernel ([`LocalPeer`]: SO_PEERCRED and
//!    SO_PEERGROUPS, fixed at connect time),
//! 2. handshake (magic, version) with a deadline; the hello frame may be at most
//!    [`limits::HANDSHAKE_MAX`] bytes, and a peer granted no store at all is refused here,
//! 3. read requests in order and hand each to its store's actor (so a connection's
//!    requests on one item take effect in the order sent), while a writer task awaits
//!    the answers and writes each reply as it completes: clients may pipeline, up to
//!    `MAX_IN_FLIGHT` requests (until their replies are written) and
//!    [`limits::PER_CONNECTION`] request bytes (until their operations are done) per
//!    connection, and within the daemon-wide budget, before reading pauses,
//! 4. stream `list` replies in chunks with an end marker.
//!
//! Every request is decided by [`crate::access`] (door `socket`), the same decision the
//! REST doors use. Room for a request's bytes is reserved from its frame header before
//! the body is read, and given back once its operation is done.
//!
//! Bad input never panics and never disturbs other connections: an oversize frame is
//! answered with an error and the connection closed; a malformed body gets an error
//! reply (id 0) and the connection goes on; a body that stalls for
//! [`limits::BODY_IDLE`] ends the connection. On shutdown a connection stops reading,
//! finishes and answers what it already accepted, then closes.

use crate::access::{Caller, Door, LocalPeer, Refusal};
use crate::actor::{Outcome, Registry};
use crate::limits::{self, Budget, Room};
use borgstore_ipc::codec::{decode_body, encode_frame, read_header, FrameError};
use borgstore_ipc::protocol::{
    HandshakeReply, Hello, Op, Reply, Request, Response, StoreSummary, Welcome, LIST_CHUNK, MAGIC, PROTOCOL_VERSION,
};
use borgstore_ipc::{Error, ErrorKind};
use futures::stream::{FuturesUnordered, StreamExt};
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::os::unix::uds_local_socket::tokio::{Listener, Stream};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// How long a client may take to say hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies queued per connection before request reading pauses (backpressure).
const REPLY_QUEUE: usize = 256;
/// Requests of one connection in the daemon at once (read, not yet answered).
const MAX_IN_FLIGHT: usize = 1024;

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub max_frame: u32,
    pub server_name: String,
}

/// Accept connections until `shutdown` turns true; then wait until every connection
/// has answered what it accepted.
pub async fn serve(
    listener: Listener,
    registry: Arc<Registry>,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let registry = registry.clone();
                    let options = options.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move { connection(stream, registry, options, shutdown).await });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// The credentials of the process at the other end of `stream`.
pub fn peer_of(stream: &Stream) -> std::io::Result<LocalPeer> {
    LocalPeer::of(stream.inner())
}

/// The length of the next frame, checked against `max_frame`; None at a clean end.
async fn read_length(recv: &mut &Stream, max_frame: u32) -> Result<Option<u32>, FrameError> {
    let mut header = [0u8; 4];
    match recv.read_exact(&mut header).await {
        Ok(_) => Ok(Some(read_header(&header, max_frame)?)),
        Err(_) => Ok(None),
    }
}

/// A frame body of `len` bytes; a client that stops sending for [`limits::BODY_IDLE`]
/// (with room for its bytes reserved) loses the connection.
async fn read_body(recv: &mut &Stream, len: u32) -> Result<Vec<u8>, FrameError> {
    let mut body = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < body.len() {
        match tokio::time::timeout(limits::BODY_IDLE, recv.read(&mut body[filled..])).await {
            Ok(Ok(n)) if n > 0 => filled += n,
            _ => return Err(FrameError::Truncated),
        }
    }
    Ok(body)
}

/// One whole frame of at most `max_frame` bytes (the handshake).
async fn read_frame(recv: &mut &Stream, max_frame: u32) -> Result<Option<Vec<u8>>, FrameError> {
    match read_length(recv, max_frame).await? {
        Some(len) => read_body(recv, len).await.map(Some),
        None => Ok(None),
    }
}

async fn write_frame(send: &mut &Stream, bytes: &[u8]) -> std::io::Result<()> {
    send.write_all(bytes).await
}

async fn connection(
    stream: Stream,
    registry: Arc<Registry>,
    options: ServerOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot read peer credentials, dropping connection: {e}");
            return;
        }
    };
    // Reads and writes go through shared references, from two tasks.
    let stream = Arc::new(stream);
    let mut r = &*stream;
    let mut w = &*stream;

    // Handshake: a hello is tiny, so its frame gets a small limit of its own.
    let hello = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut r, limits::HANDSHAKE_MAX)).await {
        Ok(Ok(Some(body))) => decode_body::<Hello>(&body).map_err(Error::from),
        Ok(Ok(None)) => return,
        Ok(Err(FrameError::TooLarge { len, max })) => Err(Error::invalid(format!(
            "handshake frame of {len} bytes exceeds the limit of {max} bytes (not a borgstore IPC client?)"
        ))),
        Ok(Err(e)) => Err(Error::from(e)),
        Err(_) => Err(Error::invalid("handshake timed out")),
    };
    let caller = Caller { door: Door::Socket, peer: Some(&peer), authorization: None };
    let verdict = match hello {
        Ok(h) if h.magic != MAGIC => Err(Error::invalid("not a borgstore IPC client (bad magic)")),
        Ok(h) if h.version != PROTOCOL_VERSION => Err(Error::invalid(format!(
            "unsupported IPC protocol version {} (this daemon speaks {PROTOCOL_VERSION})",
            h.version
        ))),
        Ok(h) if registry.granted(&caller).next().is_none() => {
            // Nothing here for this peer: it never gets to send a request frame.
            tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, client = %h.client_name.escape_debug(), "refused a client granted no store");
            Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("uid {} is not granted any store of this daemon", peer.uid),
            ))
        }
        Ok(h) => {
            tracing::debug!(uid = peer.uid, pid = ?peer.pid, client = %h.client_name.escape_debug(), "client connected");
            Ok(())
        }
        Err(e) => Err(e),
    };
    let reply = match &verdict {
        Ok(()) => HandshakeReply::Accepted(Welcome {
            version: PROTOCOL_VERSION,
            server_name: options.server_name.clone(),
            max_frame: options.max_frame,
        }),
        Err(e) => HandshakeReply::Refused(e.clone()),
    };
    if let Ok(bytes) = encode_frame(&reply, options.max_frame) {
        if write_frame(&mut w, &bytes).await.is_err() || verdict.is_err() {
            return;
        }
    }

    // Replies are written by one task, in completion order. It awaits the actors'
    // answers itself, so a finished operation wakes the writer directly.
    let (tx, mut rx) = mpsc::channel::<Outgoing>(REPLY_QUEUE);
    let max_frame = options.max_frame;
    let write_stream = stream.clone();
    let writer = tokio::spawn(async move {
        let mut w = &*write_stream;
        let mut pending = FuturesUnordered::new();
        let mut reading = true;
        loop {
            let (resp, _permit) = tokio::select! {
                biased;
                Some(done) = pending.next(), if !pending.is_empty() => done,
                msg = rx.recv(), if reading => match msg {
                    Some(Outgoing::Ready(resp)) => (resp, None),
                    Some(Outgoing::Pending(id, answer, permit)) => {
                        pending.push(async move {
                            let outcome = outcome_of(answer).await;
                            (Response { id, body: single_reply(outcome) }, Some(permit))
                        });
                        continue;
                    }
                    None => {
                        reading = false;
                        continue;
                    }
                },
                else => break,
            };
            let bytes = match encode_frame(&resp, max_frame) {
                Ok(b) => b,
                Err(e) => {
                    let err = Response { id: resp.id, body: Reply::Err(Error::from(e)) };
                    match encode_frame(&err, max_frame) {
                        Ok(b) => b,
                        Err(_) => continue,
                    }
                }
            };
            if w.write_all(&bytes).await.is_err() {
                break; // the client went away; pending replies are dropped
            }
        }
        let _ = w.flush().await;
    });

    // At most this many requests of one connection are in the daemon at once; a client
    // that pipelines more waits until replies went out (its socket buffer fills).
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let connection_budget = Budget::new(limits::PER_CONNECTION);
    let daemon_budget = registry.budget().clone();
    let mut lists = JoinSet::new();
    loop {
        let frame = tokio::select! {
            f = read_length(&mut r, max_frame) => f,
            _ = shutdown.changed() => break,
        };
        let len = match frame {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(e) => {
                // Framing is lost (oversize frame): say why, then close.
                let _ = tx.send(Outgoing::Ready(Response { id: 0, body: Reply::Err(Error::from(e)) })).await;
                break;
            }
        };
        // Room for the bytes first (this connection's share, then the daemon's), then the bytes.
        let room = Room::reserve(&connection_budget, &daemon_budget, len as u64).await;
        let body = match read_body(&mut r, len).await {
            Ok(body) => body,
            Err(e) => {
                let _ = tx.send(Outgoing::Ready(Response { id: 0, body: Reply::Err(Error::from(e)) })).await;
                break;
            }
        };
        let request = match decode_body::<Request>(&body) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Outgoing::Ready(Response { id: 0, body: Reply::Err(Error::from(e)) })).await;
                continue;
            }
        };
        let id = request.id;
        let is_list = matches!(request.op, Op::List { .. });
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
        let sent = match dispatch(&registry, &peer, request, room).await {
            Dispatched::Now(body) => tx.send(Outgoing::Ready(Response { id, body })).await.is_ok(),
            Dispatched::Later(answer) if is_list => {
                // A listing streams many replies; it gets its own task.
                let tx = tx.clone();
                lists.spawn(async move {
                    let outcome = outcome_of(answer).await;
                    stream_list(id, outcome, &tx).await;
                    drop(permit);
                });
                true
            }
            Dispatched::Later(answer) => tx.send(Outgoing::Pending(id, answer, permit)).await.is_ok(),
        };
        if !sent {
            break;
        }
        // Reap finished listings so the set does not grow on long connections.
        while lists.try_join_next().is_some() {}
    }
    while lists.join_next().await.is_some() {}
    drop(tx);
    let _ = writer.await;
}

/// What the reader hands the writer: a reply, or an operation whose answer is coming
/// (with the request's place in flight, given back once the reply is out; the room for
/// its bytes went with the operation to the store actor).
enum Outgoing {
    Ready(Response),
    Pending(u64, Answer, OwnedSemaphorePermit),
}

type Answer = tokio::sync::oneshot::Receiver<borgstore_ipc::Result<Outcome>>;

/// The outcome an actor sends; a dropped sender means the store stopped.
async fn outcome_of(answer: Answer) -> borgstore_ipc::Result<Outcome> {
    answer.await.unwrap_or_else(|_| Err(Error::backend("the store stopped")))
}

enum Dispatched {
    Now(Reply),
    Later(Answer),
}

async fn dispatch(registry: &Registry, peer: &LocalPeer, request: Request, room: Room) -> Dispatched {
    let caller = Caller { door: Door::Socket, peer: Some(peer), authorization: None };
    match request.op {
        Op::Ping => return Dispatched::Now(Reply::Pong),
        Op::Stores => {
            let stores = registry
                .granted(&caller)
                .map(|e| StoreSummary { name: e.name.clone(), url_scheme: e.scheme().to_string() })
                .collect();
            return Dispatched::Now(Reply::Stores(stores));
        }
        _ => {}
    }
    let not_here = || {
        Dispatched::Now(Reply::Err(Error::new(
            ErrorKind::BackendDoesNotExist,
            format!("no store named {} is served here", crate::names::shown(&request.store)),
        )))
    };
    let Some(entry) = registry.get(&request.store) else {
        return not_here();
    };
    match entry.decide(&caller) {
        Ok(_) => {}
        Err(Refusal::NotServedHere) => return not_here(),
        Err(refusal) => {
            let why = match refusal {
                Refusal::NotGranted(why) => why,
                _ => format!("store {} needs credentials", entry.name),
            };
            tracing::warn!(store = %entry.name, uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "refused a client without a grant: {why}");
            return Dispatched::Now(Reply::Err(Error::new(ErrorKind::PermissionDenied, why)));
        }
    }
    if matches!(request.op, Op::ConfigureCache { .. }) && peer.uid != crate::config::current_uid() {
        // The cache URL makes the daemon write where it says: only its own user may.
        tracing::warn!(store = %entry.name, uid = peer.uid, "refused a cache configuration from another user");
        return Dispatched::Now(Reply::Err(Error::new(
            ErrorKind::PermissionDenied,
            "only the daemon's own user may configure a store's cache",
        )));
    }
    match entry.enqueue(request.op, Some(room)).await {
        Ok(rx) => Dispatched::Later(rx),
        Err(e) => Dispatched::Now(Reply::Err(e)),
    }
}

/// The reply of an operation that answers once.
fn single_reply(outcome: borgstore_ipc::Result<Outcome>) -> Reply {
    match outcome {
        Ok(Outcome::Reply(body)) => body,
        Ok(Outcome::List(_)) => Reply::Err(Error::backend("internal: a listing where one reply was due")),
        Err(e) => Reply::Err(e),
    }
}

/// Stream a listing in chunks, then its end marker (or the error that stopped it).
async fn stream_list(id: u64, outcome: borgstore_ipc::Result<Outcome>, tx: &mpsc::Sender<Outgoing>) {
    let send = |body| tx.send(Outgoing::Ready(Response { id, body }));
    match outcome {
        Ok(Outcome::List(mut lister)) => loop {
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
        },
        Ok(Outcome::Reply(body)) => {
            let _ = send(body).await;
        }
        Err(e) => {
            let _ = send(Reply::Err(e)).await;
        }
    }
}

/// Make `path` ready for a listening Unix socket: create its directory (0755) when
/// missing, replace a stale socket file (nobody listening), and refuse a live one, so two
/// daemons never fight over one socket. Used for the IPC and the REST sockets.
pub fn prepare_socket_path(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another daemon is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// Bind the IPC socket at `path` with `mode` (see [`prepare_socket_path`]).
pub fn bind(path: &std::path::Path, mode: u32) -> std::io::Result<Listener> {
    use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
    use interprocess::os::unix::local_socket::ListenerOptionsExt;
    prepare_socket_path(path)?;
    let name = path.to_fs_name::<GenericFilePath>()?;
    let listener = ListenerOptions::new().name(name).mode(mode as libc_mode::ModeT).create_tokio_as::<Listener>()?;
    // The umask may have masked bits away; the configured mode is what we promise.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Adopt a listening socket passed by systemd.
pub fn adopt(fd: std::os::fd::OwnedFd) -> std::io::Result<Listener> {
    Listener::try_from(fd)
}

mod libc_mode {
    /// `mode_t` as interprocess takes it.
    pub type ModeT = u32;
}
