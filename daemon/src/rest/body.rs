//! Request bodies: refused from their head when they cannot be taken, held in memory
//! only with room in the daemon-wide budget, read only once the store asks for them.
//!
//! [`pump`] feeds a body into a [`BodySender`] once the store asks for it, so a request
//! the store refuses (permissions, quota) never has its body read, and checks it against
//! `X-Content-hash-sha256` on the way. [`Early`] is every way a body turns a request
//! away before its command ran, with the status Python's server (or HTTP) gives.

use super::handlers::text;
use super::{status, RestApp};
use crate::backends::body::{BodySender, BodyStream};
use crate::limits::{self, Reservation};
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use borgstore_ipc::{Error, ErrorKind};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// How a request body went from the client to the store.
#[derive(Debug, PartialEq, Eq)]
pub enum Pumped {
    /// All of it, or none because the store refused the request before asking.
    Done,
    /// All of it, and it did not match its `X-Content-hash-sha256`: nothing was stored.
    HashMismatch,
    /// The client went away or stalled: nothing was stored.
    Failed,
}

/// Feed the request body into `tx`, but only once the store asks for it. The pieces are
/// checked against `expected` (hex SHA-256) when given; a mismatch ends the stream in
/// an error, so nothing is stored.
pub async fn pump(payload: &mut web::Payload, mut tx: BodySender, expected: Option<Vec<u8>>) -> Pumped {
    if !tx.wanted().await {
        return Pumped::Done;
    }
    let mut hasher = expected.as_ref().map(|_| Sha256::new());
    loop {
        match tokio::time::timeout(limits::BODY_IDLE, payload.next()).await {
            Ok(Some(Ok(piece))) => {
                if let Some(h) = hasher.as_mut() {
                    h.update(&piece);
                }
                if !tx.send(piece).await {
                    return Pumped::Done;
                }
            }
            Ok(Some(Err(e))) => {
                tx.fail(Error::new(ErrorKind::ConnectionLost, format!("reading the request body failed: {e}"))).await;
                return Pumped::Failed;
            }
            Ok(None) => break,
            Err(_) => {
                tx.fail(Error::new(ErrorKind::ConnectionLost, "the client stopped sending the request body")).await;
                return Pumped::Failed;
            }
        }
    }
    if let (Some(h), Some(expected)) = (hasher, expected) {
        // Compared exactly, as Python does: the digest is lower-case hex.
        if hex::encode(h.finalize()).as_bytes() != expected.as_slice() {
            tx.fail(Error::invalid("Content hash verification failed, please retry")).await;
            return Pumped::HashMismatch;
        }
    }
    Pumped::Done
}

/// A request turned away before its store command ran, with a status of its own.
#[derive(Debug)]
pub enum Early {
    /// A body without Content-Length (chunked): 411.
    LengthRequired,
    /// A Content-Length that is not a number: 400.
    BadLength,
    /// A body over `max_body`: 413.
    TooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// No room in the in-flight budget in time: 503.
    Busy,
    /// Reading the body failed.
    Body(Error),
}

impl Early {
    /// The answer to the client.
    pub fn response(self) -> HttpResponse {
        match self {
            Early::LengthRequired => text(StatusCode::LENGTH_REQUIRED, "a request body needs a Content-Length"),
            Early::BadLength => text(StatusCode::BAD_REQUEST, "malformed Content-Length"),
            Early::TooLarge { len, max } => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body of {len} bytes exceeds the limit of {max} bytes"),
            ),
            Early::Busy => HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, "10"))
                .content_type("text/plain; charset=utf-8")
                .body("the server has too many uploads in flight, retry later"),
            Early::Body(e) => text(status::of(e.kind), &e.message),
        }
    }
}

/// The announced body length: Content-Length, 0 without one. A body of unknown length
/// (chunked) or over `max_body` is refused here, before any of it is read.
pub fn body_length(req: &HttpRequest, max_body: u64) -> Result<u64, Early> {
    if req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Err(Early::LengthRequired);
    }
    let len = match req.headers().get(header::CONTENT_LENGTH) {
        None => 0,
        Some(v) => v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or(Early::BadLength)?,
    };
    if len > max_body {
        return Err(Early::TooLarge { len, max: max_body });
    }
    Ok(len)
}

/// Room in the daemon-wide budget for `len` bytes held in memory; 503 when there is
/// none within [`limits::REST_WAIT`].
pub async fn reserve(app: &RestApp, len: u64) -> Result<Reservation, Early> {
    match app.registry.budget().reserve_within(len, limits::REST_WAIT).await {
        Some(r) => Ok(r),
        None => {
            tracing::warn!("REST upload of {len} bytes refused: the in-flight budget stayed full");
            Err(Early::Busy)
        }
    }
}

/// A small request body (JSON) read whole, within the budget.
pub async fn json_body(
    req: &HttpRequest,
    app: &RestApp,
    payload: &mut web::Payload,
) -> Result<(web::Bytes, Reservation), Early> {
    let len = body_length(req, app.max_body)?;
    let held = reserve(app, len).await?;
    let (tx, stream) = BodyStream::channel(len);
    let (_, body) = futures::join!(pump(payload, tx, None), stream.collect());
    body.map(|b| (b, held)).map_err(Early::Body)
}
