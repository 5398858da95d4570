//! One connection to the daemon: handshake, a writer that sends whole frames, and a
//! reader task that routes each response to the request with its id.

use borgstore_ipc::codec::{
    data_reply_of, decode_body, encode_frame, read_header, store_request_head, DATA_HEAD_MAX, HEADER,
};
use borgstore_ipc::protocol::{HandshakeReply, Hello, Op, Reply, Request, Response};
use borgstore_ipc::{Error, ErrorKind, Result};
use interprocess::local_socket::traits::tokio::Stream as _;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use interprocess::os::unix::uds_local_socket::tokio::Stream;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

/// Bytes of the frame being received so far and its size, for progress display.
pub type Progress = (u64, u64);

/// Where a response goes.
enum Waiter {
    One(oneshot::Sender<Result<Reply>>),
    Stream(mpsc::Sender<Result<Reply>>),
}

/// A live connection.
pub struct Connection {
    stream: Arc<Stream>,
    writer: tokio::sync::Mutex<()>,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    alive: Arc<AtomicBool>,
    pub max_frame: u32,
    pub server_name: String,
    progress: watch::Receiver<Progress>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lost(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::ConnectionLost, format!("connection to borgstored lost: {what}"))
}

/// One frame as the reader got it.
enum Frame {
    /// A body to decode.
    Body(Vec<u8>),
    /// A large `Reply::Data`, its value read straight into a buffer of its own (no copy
    /// out of the frame, no zero-filled buffer first).
    Data { id: u64, value: Vec<u8> },
}

/// Frames above this size are looked at for a `Reply::Data` head first.
const DIRECT_ABOVE: usize = 1 << 20;

/// Read the rest of a frame into `buf` until it holds `want` bytes, reporting progress
/// as `(done_before + buf.len(), total)`.
async fn fill(
    mut r: &Stream,
    buf: &mut Vec<u8>,
    want: usize,
    done_before: usize,
    total: usize,
    progress: Option<&watch::Sender<Progress>>,
) -> Result<()> {
    buf.reserve_exact(want.saturating_sub(buf.len()));
    while buf.len() < want {
        let n = (&mut r).take((want - buf.len()) as u64).read_buf(buf).await.map_err(lost)?;
        if n == 0 {
            return Err(lost("the daemon closed the connection"));
        }
        if let Some(p) = progress {
            if total > DIRECT_ABOVE {
                p.send_replace(((done_before + buf.len()) as u64, total as u64));
            }
        }
    }
    Ok(())
}

async fn read_frame(stream: &Stream, max_frame: u32, progress: Option<&watch::Sender<Progress>>) -> Result<Frame> {
    let mut r = stream;
    let mut header = [0u8; HEADER];
    r.read_exact(&mut header).await.map_err(lost)?;
    let len = read_header(&header, max_frame).map_err(Error::from)? as usize;
    let mut body = Vec::new();
    if len > DIRECT_ABOVE {
        fill(stream, &mut body, DATA_HEAD_MAX, 0, len, progress).await?;
        if let Some((id, head, value_len)) = data_reply_of(&body) {
            // (Checked: the lengths come from the other end of a socket.)
            if (head as u64).checked_add(value_len) == Some(len as u64) {
                let mut value = body.split_off(head);
                fill(stream, &mut value, value_len as usize, head, len, progress).await?;
                return Ok(Frame::Data { id, value });
            }
        }
    }
    fill(stream, &mut body, len, 0, len, progress).await?;
    Ok(Frame::Body(body))
}

/// One whole frame body (the handshake).
async fn read_body(stream: &Stream, max_frame: u32) -> Result<Vec<u8>> {
    match read_frame(stream, max_frame, None).await? {
        Frame::Body(b) => Ok(b),
        Frame::Data { .. } => Err(Error::invalid("the daemon answered the hello with data")),
    }
}

impl Connection {
    /// Connect to the daemon at `socket` and shake hands.
    pub async fn connect(socket: &Path, client_name: &str) -> Result<Connection> {
        let name = socket
            .to_fs_name::<GenericFilePath>()
            .map_err(|e| Error::invalid(format!("bad socket path {}: {e}", socket.display())))?;
        let stream = Stream::connect(name).await.map_err(|e| {
            Error::new(
                ErrorKind::ConnectionLost,
                format!("cannot connect to borgstored at {}: {e} (is the daemon running?)", socket.display()),
            )
        })?;
        let hello = encode_frame(&Hello::new(client_name), u32::MAX).map_err(Error::from)?;
        (&stream).write_all(&hello).await.map_err(lost)?;
        let body = read_body(&stream, 1 << 20).await?;
        let welcome = match decode_body::<HandshakeReply>(&body).map_err(Error::from)? {
            HandshakeReply::Accepted(w) => w,
            HandshakeReply::Refused(e) => return Err(e),
        };
        let stream = Arc::new(stream);
        let waiters: Arc<Mutex<HashMap<u64, Waiter>>> = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let (ptx, prx) = watch::channel((0, 0));
        let reader = tokio::spawn(reader_loop(stream.clone(), waiters.clone(), alive.clone(), welcome.max_frame, ptx));
        Ok(Connection {
            stream,
            writer: tokio::sync::Mutex::new(()),
            waiters,
            alive,
            max_frame: welcome.max_frame,
            server_name: welcome.server_name,
            progress: prx,
            reader,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Progress of the frame being received.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    fn register(&self, id: u64, w: Waiter) {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(id, w);
    }

    fn unregister(&self, id: u64) {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Send a request. `Ok(false)` means nothing reached the daemon (safe to retry on a
    /// new connection); errors after that are reported through the waiter.
    async fn send(&self, request: &Request, sent: &(dyn Fn(u64, u64) + Sync)) -> Result<bool> {
        let too_large =
            |e| Error::invalid(format!("request too large for one IPC frame (limit {} bytes): {e}", self.max_frame));
        // A large value goes out from where it is, behind its frame's head (no copy into
        // a frame first); the daemon takes it as a slice of the frame it reads.
        let (head, value): (Vec<u8>, &[u8]) = match &request.op {
            Op::Store { name, value } if value.len() > DIRECT_ABOVE => {
                let head = store_request_head(request.id, &request.store, name, value.len(), self.max_frame);
                (head.map_err(too_large)?, value)
            }
            _ => (encode_frame(request, self.max_frame).map_err(too_large)?, &[]),
        };
        let _guard = self.writer.lock().await;
        if !self.is_alive() {
            return Ok(false);
        }
        let mut w = &*self.stream;
        let total = (head.len() + value.len()) as u64;
        let mut done = 0usize;
        for chunk in head.chunks(1 << 20).chain(value.chunks(1 << 20)) {
            if let Err(e) = w.write_all(chunk).await {
                self.alive.store(false, Ordering::SeqCst);
                return if done == 0 { Ok(false) } else { Err(lost(e)) };
            }
            done += chunk.len();
            sent(done as u64, total);
        }
        Ok(true)
    }

    /// Send a request and wait for its one reply.
    pub async fn call(&self, request: Request, sent: &(dyn Fn(u64, u64) + Sync)) -> Result<Option<Reply>> {
        let (tx, rx) = oneshot::channel();
        self.register(request.id, Waiter::One(tx));
        match self.send(&request, sent).await {
            Ok(true) => {}
            Ok(false) => {
                self.unregister(request.id);
                return Ok(None);
            }
            Err(e) => {
                self.unregister(request.id);
                return Err(e);
            }
        }
        rx.await.map_err(|_| lost("no reply"))?.map(Some)
    }

    /// Send a request whose replies stream (list).
    pub async fn call_stream(&self, request: Request) -> Result<Option<mpsc::Receiver<Result<Reply>>>> {
        let (tx, rx) = mpsc::channel(8);
        self.register(request.id, Waiter::Stream(tx));
        match self.send(&request, &|_, _| {}).await {
            Ok(true) => Ok(Some(rx)),
            Ok(false) => {
                self.unregister(request.id);
                Ok(None)
            }
            Err(e) => {
                self.unregister(request.id);
                Err(e)
            }
        }
    }
}

async fn reader_loop(
    stream: Arc<Stream>,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    alive: Arc<AtomicBool>,
    max_frame: u32,
    progress: watch::Sender<Progress>,
) {
    let why = loop {
        let resp = match read_frame(&stream, max_frame, Some(&progress)).await {
            Ok(Frame::Data { id, value }) => Response { id, body: Reply::Data(value) },
            Ok(Frame::Body(body)) => match decode_body::<Response>(&body) {
                Ok(r) => r,
                Err(e) => break Error::from(e),
            },
            Err(e) => break e,
        };
        let is_final = matches!(resp.body, Reply::ListEnd | Reply::Err(_));
        // Chunks of a stream keep its waiter; everything else ends the request.
        let chunk_to = {
            let map = waiters.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&resp.id) {
                Some(Waiter::Stream(tx)) if !is_final => Some(tx.clone()),
                _ => None,
            }
        };
        if let Some(tx) = chunk_to {
            let _ = tx.send(Ok(resp.body)).await;
            continue;
        }
        let waiter = waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&resp.id);
        let result = match resp.body {
            Reply::Err(e) => Err(e),
            other => Ok(other),
        };
        match waiter {
            Some(Waiter::One(tx)) => {
                let _ = tx.send(result);
            }
            Some(Waiter::Stream(tx)) => {
                let _ = tx.send(result).await;
            }
            None => {
                if let Err(e) = result {
                    // Id 0: the daemon could not read a request at all.
                    break e;
                }
            }
        }
    };
    alive.store(false, Ordering::SeqCst);
    let drained: Vec<Waiter> = waiters.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, w)| w).collect();
    let err = if why.kind == ErrorKind::ConnectionLost { why } else { lost(why) };
    for w in drained {
        match w {
            Waiter::One(tx) => {
                let _ = tx.send(Err(err.clone()));
            }
            Waiter::Stream(tx) => {
                let _ = tx.send(Err(err.clone())).await;
            }
        }
    }
}
