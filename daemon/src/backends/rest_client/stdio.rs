//! HTTP/1.1 over a child process's stdin/stdout (`rest://` URLs): the child is
//! `borgstore-server-rest --stdio`, locally or through ssh. hyper's client connection
//! runs over the two pipes; one request at a time per child, as the stdio server expects.
//! The child's stderr is drained into the log, and its last lines go into the error
//! when the pipe breaks.
//!
//! Concurrency: a store holds a [`StdioPool`] of up to `connections` sessions (the
//! store's config key, 1 to 64), each a child of its own. A request leases one: an
//! idle session if there is one, else a new child when fewer than `connections` are
//! open, else it waits (a semaphore with one permit per session, no polling) for the
//! first that comes back. So up to `connections` operations run at once, each on its
//! own pipe; the children are independent servers of the same store path.

use borgstore_ipc::{Error, ErrorKind, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A running child and the HTTP connection over its pipes.
pub struct StdioSession {
    child: Child,
    sender: SendRequest<Full<Bytes>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

fn lost(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::ConnectionLost, format!("stdio REST server: {what}: {detail}"))
}

impl StdioSession {
    /// Spawn `command` (program, then arguments) and open HTTP/1.1 over its pipes.
    /// ConnectionLost when it cannot be started or the handshake fails; InvalidArgument when empty.
    pub async fn start(command: &[String]) -> Result<StdioSession> {
        let (program, args) = command.split_first().ok_or_else(|| Error::invalid("empty stdio command"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| lost(&format!("cannot start {program}"), e))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(lost("start", "pipes missing"));
        };
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let t = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "borgstore::rest_client::remote", "{line}");
                let mut q = t.lock().unwrap_or_else(|p| p.into_inner());
                if q.len() == 10 {
                    q.pop_front();
                }
                q.push_back(line);
            }
        });
        let io = hyper_util::rt::TokioIo::new(tokio::io::join(stdout, stdin));
        let (sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| lost("HTTP handshake failed", e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(StdioSession { child, sender, stderr_tail: tail })
    }

    fn tail(&self) -> String {
        let q = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        if q.is_empty() {
            String::new()
        } else {
            format!("; its last messages: {}", q.iter().cloned().collect::<Vec<_>>().join(" | "))
        }
    }

    /// Send one request; returns status, headers and the whole body.
    pub async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<(u16, hyper::HeaderMap, Bytes)> {
        let is_head = req.method() == hyper::Method::HEAD;
        self.sender.ready().await.map_err(|e| lost(&format!("connection closed{}", self.tail()), e))?;
        let resp =
            self.sender.send_request(req).await.map_err(|e| lost(&format!("request failed{}", self.tail()), e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = if is_head {
            Bytes::new()
        } else {
            resp.into_body()
                .collect()
                .await
                .map_err(|e| lost(&format!("reading the body{}", self.tail()), e))?
                .to_bytes()
        };
        Ok((status, headers, body))
    }

    /// End the session: close stdin so the server exits, wait a while for it.
    pub async fn close(mut self) -> Result<()> {
        drop(self.sender);
        match tokio::time::timeout(std::time::Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(Error::backend(format!("stdio REST server exited with {status}{}", {
                let q = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
                q.iter().cloned().collect::<Vec<_>>().join(" | ")
            }))),
            Ok(Err(e)) => Err(Error::backend(format!("waiting for the stdio REST server: {e}"))),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(Error::backend("the stdio REST server did not exit within 30 s after its input closed"))
            }
        }
    }
}

/// Up to `size` sessions of one command: the ones not in use wait in `idle`; a lease
/// holds one of `size` permits for as long as it holds (or starts, or closes) a session,
/// so there are never more than `size` children.
pub struct StdioPool {
    command: Vec<String>,
    size: usize,
    permits: Semaphore,
    idle: Mutex<Vec<StdioSession>>,
}

/// One session lent to one request, with its permit. Dropped without
/// [`Lease::put_back`] or [`Lease::close`] (a cancelled request), the session is
/// dropped, which kills its child: a half-done exchange is never reused.
pub struct Lease<'a> {
    pool: &'a StdioPool,
    session: Option<StdioSession>,
    _permit: SemaphorePermit<'a>,
}

impl StdioPool {
    /// A pool of at most `size` sessions of `command` (`size` taken as 1 to
    /// [`crate::backends::url::MAX_CONNECTIONS`]); nothing is started yet.
    pub fn new(command: Vec<String>, size: usize) -> Self {
        let size = size.clamp(1, crate::backends::url::MAX_CONNECTIONS);
        StdioPool { command, size, permits: Semaphore::new(size), idle: Mutex::default() }
    }

    /// The most sessions this pool opens.
    pub fn size(&self) -> usize {
        self.size
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<StdioSession>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session for one request: an idle one (one whose child is gone is closed on
    /// the way), else a new one; waits while `size` are in use.
    pub async fn lease(&self) -> Result<Lease<'_>> {
        let permit = self.permits.acquire().await.map_err(|_| Error::backend("internal: stdio pool closed"))?;
        loop {
            let Some(s) = self.idle().pop() else { break };
            if s.sender.is_closed() {
                // Its child went away while idle: not worth a failed request.
                let _ = s.close().await;
                continue;
            }
            return Ok(Lease { pool: self, session: Some(s), _permit: permit });
        }
        let s = StdioSession::start(&self.command).await?;
        Ok(Lease { pool: self, session: Some(s), _permit: permit })
    }

    /// Close every session: waits until none is lent (new leases wait meanwhile), then
    /// ends the idle ones. The first error is returned after all were closed.
    pub async fn close_all(&self) -> Result<()> {
        let n = u32::try_from(self.size).unwrap_or(u32::MAX);
        let _all = self.permits.acquire_many(n).await.map_err(|_| Error::backend("internal: stdio pool closed"))?;
        let sessions = std::mem::take(&mut *self.idle());
        let mut first = Ok(());
        for r in futures::future::join_all(sessions.into_iter().map(StdioSession::close)).await {
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Lease<'_> {
    /// Send one request over the lent session ([`StdioSession::send`]).
    pub async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<(u16, hyper::HeaderMap, Bytes)> {
        match self.session.as_mut() {
            Some(s) => s.send(req).await,
            None => Err(Error::backend("internal: no stdio session")),
        }
    }

    /// The session is fine and stays open: back to the idle ones for the next request.
    pub fn put_back(mut self) {
        if let Some(s) = self.session.take() {
            self.pool.idle().push(s);
        }
    }

    /// End the session ([`StdioSession::close`]); the permit is given back only once
    /// its child is gone.
    pub async fn close(mut self) -> Result<()> {
        match self.session.take() {
            Some(s) => s.close().await,
            None => Ok(()),
        }
    }
}
