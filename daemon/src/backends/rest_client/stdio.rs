//! HTTP/1.1 over a child process's stdin/stdout (`rest://` URLs): the child is
//! `borgstore-server-rest --stdio`, locally or through ssh. hyper's client connection
//! runs over the two pipes; one request at a time, as the stdio server expects.
//! The child's stderr is drained into the log, and its last lines go into the error
//! when the pipe breaks.

use borgstore_ipc::{Error, ErrorKind, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

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
            resp.into_body().collect().await.map_err(|e| lost("reading the body", e))?.to_bytes()
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
