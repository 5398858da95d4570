//! The routes of REST-API.md: one dispatcher that judges a request from its head (store,
//! Accept, caller, name, body length) and turns it into one store operation. Bodies are
//! read only once the operation asks for them (see [`pump`]).

use super::{metrics, range, status, Connection, Mount, RestApp};
use crate::access::{Caller, Door, Refusal, CHALLENGE};
use crate::actor::registry::StoreEntry;
use crate::backends::body::{Body, BodySender, BodyStream, STREAM_ABOVE};
use crate::backends::DefragTarget;
use crate::hashing::HashAlgorithm;
use crate::limits::{self, Reservation};
use crate::store::{RawOp, RawReply};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use borgstore_ipc::protocol::{Op, Reply};
use borgstore_ipc::{Error, ErrorKind, Result, Source};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// The media type every request must accept.
pub const ACCEPT: &str = "application/vnd.x.borgstore.rest.v1";

/// Every request lands here.
///
/// A request whose body is not (fully) read is answered at once; actix-web then closes
/// the connection instead of reading the rest. Over `--stdio` the one connection is the
/// whole session, so there the unread rest is read and dropped instead (without keeping
/// it), and the session goes on.
pub async fn dispatch(req: HttpRequest, mut payload: web::Payload, app: web::Data<RestApp>) -> HttpResponse {
    let response = handle(&req, &mut payload, &app).await;
    if app.drain_unread {
        while let Ok(Some(Ok(_))) = tokio::time::timeout(limits::BODY_IDLE, payload.next()).await {}
        return response;
    }
    // actix-web reads a dropped chunked body to its end before the next request; keeping
    // the payload until the answer is out makes it close the connection instead, as it
    // does for an unread body of known length.
    response.map_body(|_, body| HoldPayload { body, _payload: payload }).map_into_boxed_body()
}

/// A response body that keeps its request's payload alive until the response is sent.
struct HoldPayload {
    body: actix_web::body::BoxBody,
    _payload: web::Payload,
}

impl actix_web::body::MessageBody for HoldPayload {
    type Error = <actix_web::body::BoxBody as actix_web::body::MessageBody>::Error;

    fn size(&self) -> actix_web::body::BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<web::Bytes, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_next(cx)
    }
}

async fn handle(req: &HttpRequest, payload: &mut web::Payload, app: &RestApp) -> HttpResponse {
    // Not a store path: no store name starts with '-' (only set for Mount::PerStore).
    if app.metrics && req.uri().path() == metrics::PATH {
        return metrics::respond(req, app).await;
    }
    if ![Method::GET, Method::HEAD, Method::POST, Method::DELETE].contains(req.method()) {
        // Python's http.server answers a method it has no handler for before anything else.
        return text(StatusCode::NOT_IMPLEMENTED, &format!("Unsupported method ('{}')", req.method()));
    }
    if req.headers().get(header::ACCEPT).map(|v| v.as_bytes()) != Some(ACCEPT.as_bytes()) {
        return text(StatusCode::NOT_ACCEPTABLE, "Not Acceptable: unsupported or missing Accept header");
    }
    // The path as Python's server takes it: not percent-decoded (a `%` is part of the
    // name), raw non-ASCII bytes as Latin-1 characters (see wire).
    let raw_target = req.headers().get(super::wire::RAW_TARGET).map(|v| v.as_bytes());
    let path = super::wire::request_path(req.uri().path(), raw_target);
    let (entry, rest) = match &app.mount {
        Mount::Root(store) => match app.registry.get(store) {
            Some(e) => (e, path.as_str()),
            None => return text(StatusCode::INTERNAL_SERVER_ERROR, "store is not configured"),
        },
        Mount::PerStore => {
            let trimmed = path.strip_prefix('/').unwrap_or(&path);
            let (store, rest) = match trimmed.find('/') {
                Some(i) => (&trimmed[..i], &trimmed[i..]),
                None => (trimmed, "/"),
            };
            match app.registry.get(store) {
                Some(e) => (e, rest),
                None => return no_such_store(),
            }
        }
    };
    // The one access decision, from what the connection and the head say.
    let conn = req.conn_data::<Connection>().cloned().unwrap_or(Connection { door: Door::Rest, peer: None });
    if conn.peer.is_none() && conn.door == Door::RestSocket {
        tracing::warn!("cannot read the credentials of a REST socket peer; treating it as unknown");
    }
    let authorization = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let caller = Caller { door: conn.door, peer: conn.peer.as_ref(), authorization };
    if let Err(refusal) = entry.decide(&caller) {
        let uid = conn.peer.as_ref().map(|p| p.uid);
        let response = match refusal {
            Refusal::Unauthenticated => {
                tracing::warn!(store = %entry.name, door = %conn.door, uid, method = %req.method(), "REST request refused: bad or missing credentials");
                HttpResponse::Unauthorized().insert_header((header::WWW_AUTHENTICATE, CHALLENGE)).body("Unauthorized")
            }
            Refusal::NotGranted(why) => {
                tracing::warn!(store = %entry.name, door = %conn.door, uid, method = %req.method(), "REST request refused: {why}");
                text(StatusCode::FORBIDDEN, &why)
            }
            Refusal::NotServedHere => no_such_store(),
        };
        return response;
    }
    // "/" and "" address the root; one leading slash and one trailing slash (the list
    // marker) belong to the protocol, anything else is part of the name and validated.
    // As Python's server: the name is the path without any leading or trailing slashes,
    // and a trailing slash asks for a listing.
    let listing = rest.ends_with('/');
    let name = rest.trim_matches('/');
    // Of a repeated query parameter the first value counts (Python's parse_qs()[0]).
    let mut query: HashMap<String, String> = HashMap::new();
    let pairs = match raw_target {
        Some(raw) => Ok(super::wire::raw_query(raw)),
        None => serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string()),
    };
    match pairs {
        Ok(pairs) => {
            for (k, v) in pairs {
                query.entry(k).or_insert(v);
            }
        }
        Err(_) => return text(StatusCode::BAD_REQUEST, "malformed query string"),
    }
    let result = route(req, entry, app, name, listing, &query, payload).await;
    match result {
        Ok(resp) => resp,
        Err(e) => {
            let code = status::of(e.kind);
            if code == StatusCode::INTERNAL_SERVER_ERROR {
                // The detail stays in our log; clients get what Python's server says.
                tracing::warn!(store = %entry.name, method = %req.method(), "REST request failed: {}", e.message);
                return text(code, "Internal Server Error");
            }
            text(code, &status::message(e.kind, &e.message))
        }
    }
}

fn no_such_store() -> HttpResponse {
    text(StatusCode::NOT_FOUND, "no such store")
}

fn text(code: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(code).content_type("text/plain; charset=utf-8").body(msg.to_string())
}

fn ok() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn param<'a>(query: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    query.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// Refuse the root where a route needs an item name, with `message` (Python's words).
fn need_name(name: &str, message: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(message));
    }
    Ok(())
}

/// One entry of a listing, in the key order Python's server writes.
#[derive(serde::Serialize)]
struct Listed<'a> {
    name: &'a str,
    size: u64,
    directory: bool,
    atime: f64,
    mtime: f64,
}

/// A listing as JSON, formatted as Python's `json.dumps(items, indent=2)` does.
fn listing_json(items: &[borgstore_ipc::ItemInfo]) -> String {
    let items: Vec<Listed> = items
        .iter()
        .map(|i| Listed { name: &i.name, size: i.size, directory: i.directory, atime: i.atime, mtime: i.mtime })
        .collect();
    serde_json::to_string_pretty(&items).unwrap_or_else(|_| "[]".to_string())
}

/// The `[[name, offset, size], ...]` body of gather and defrag, refused with the words
/// of Python's source validation.
fn sources(body: &[u8]) -> Result<Vec<Source>> {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::invalid(e.to_string()))?;
    let list = match value {
        Value::Array(list) => list,
        other => return Err(Error::invalid(format!("'{}' object is not iterable", py_type(&other)))),
    };
    list.iter()
        .map(|source| {
            let Some([name, offset, size]) = source.as_array().and_then(|a| <&[Value; 3]>::try_from(a.as_slice()).ok())
            else {
                return Err(Error::invalid(format!(
                    "source must be a (name, offset, size) tuple, got {}",
                    py_repr(source)
                )));
            };
            let name = name
                .as_str()
                .ok_or_else(|| Error::invalid(format!("source name must be a str, got {}", py_repr(name))))?;
            let offset = offset
                .as_i64()
                .ok_or_else(|| Error::invalid(format!("source offset must be an int, got {}", py_repr(offset))))?;
            let size = size.as_u64().ok_or_else(|| {
                Error::invalid(format!("source size must be a non-negative int, got {}", py_repr(size)))
            })?;
            Ok(Source { name: name.to_string(), offset, size })
        })
        .collect()
}

/// The name of the Python type a JSON value becomes.
fn py_type(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// A JSON value as Python's `repr` shows what `json.loads` made of it.
fn py_repr(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            let mut out = String::from(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&Value::String(k.clone())), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn exec(entry: &StoreEntry, op: Op) -> Result<()> {
    match entry.exec(op).await? {
        crate::actor::store_actor::Outcome::Reply(Reply::Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// How a request body went from the client to the store.
#[derive(Debug, PartialEq, Eq)]
enum Pumped {
    /// All of it, or none because the store refused the request before asking.
    Done,
    /// All of it, and it did not match its `X-Content-hash-sha256`: nothing was stored.
    HashMismatch,
    /// The client went away or stalled: nothing was stored.
    Failed,
}

/// Feed the request body into `tx`, but only once the store asks for it: a request the
/// store refuses (permissions, quota) never has its body read. The pieces are checked
/// against `expected` (hex SHA-256) when given; a mismatch ends the stream in an error,
/// so nothing is stored.
async fn pump(payload: &mut web::Payload, mut tx: BodySender, expected: Option<Vec<u8>>) -> Pumped {
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

/// A request turned away before its store operation ran, with a status of its own.
#[derive(Debug)]
enum Early {
    /// A body without Content-Length (chunked): 411.
    LengthRequired,
    /// A Content-Length that is not a number: 400.
    BadLength,
    /// A body over `max_body`: 413.
    TooLarge { len: u64, max: u64 },
    /// No room in the in-flight budget in time: 503.
    Busy,
    /// Reading the body failed.
    Body(Error),
}

impl Early {
    fn response(self) -> HttpResponse {
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
fn body_length(req: &HttpRequest, max_body: u64) -> std::result::Result<u64, Early> {
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
async fn reserve(app: &RestApp, len: u64) -> std::result::Result<Reservation, Early> {
    match app.registry.budget().reserve_within(len, limits::REST_WAIT).await {
        Some(r) => Ok(r),
        None => {
            tracing::warn!("REST upload of {len} bytes refused: the in-flight budget stayed full");
            Err(Early::Busy)
        }
    }
}

/// A small request body (JSON) read whole, within the budget.
async fn json_body(
    req: &HttpRequest,
    app: &RestApp,
    payload: &mut web::Payload,
) -> std::result::Result<(web::Bytes, Reservation), Early> {
    let len = body_length(req, app.max_body)?;
    let held = reserve(app, len).await?;
    let (tx, stream) = BodyStream::channel(len);
    let (_, body) = futures::join!(pump(payload, tx, None), stream.collect());
    body.map(|b| (b, held)).map_err(Early::Body)
}

macro_rules! early {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(early) => return Ok(Early::response(early)),
        }
    };
}

async fn route(
    req: &HttpRequest,
    entry: &StoreEntry,
    app: &RestApp,
    name: &str,
    listing: bool,
    query: &HashMap<String, String>,
    payload: &mut web::Payload,
) -> Result<HttpResponse> {
    let cmd = param(query, "cmd");
    let raw = |op| entry.raw(op);
    let method = req.method();
    if method == Method::POST {
        match cmd {
            Some("create") => exec(entry, Op::Create).await.map(|_| ok()),
            Some("mkdir") => raw(RawOp::Mkdir(name.into())).await.map(|_| ok()),
            Some("move") => match (param(query, "current"), param(query, "new")) {
                (Some(current), Some(new)) => {
                    raw(RawOp::Move { current: current.into(), new: new.into() }).await.map(|_| ok())
                }
                _ => Err(Error::invalid("Missing current or new name for move")),
            },
            Some("hash") => {
                need_name(name, "Missing name for hash")?;
                let algorithm: HashAlgorithm = param(query, "algorithm").unwrap_or("sha256").parse()?;
                match raw(RawOp::Hash { name: name.into(), algorithm }).await? {
                    RawReply::Text(digest) => Ok(HttpResponse::Ok().content_type("text/plain").body(digest)),
                    _ => Err(Error::backend("internal: unexpected reply to hash")),
                }
            }
            Some("quota") => match raw(RawOp::Quota).await? {
                RawReply::Quota(q) => Ok(HttpResponse::Ok()
                    .content_type("application/json")
                    // Python's json.dumps spacing.
                    .body(format!("{{\"limit\": {}, \"usage\": {}}}", q.limit, q.usage))),
                _ => Err(Error::backend("internal: unexpected reply to quota")),
            },
            Some("gather") => {
                let (body, _held) = early!(json_body(req, app, payload).await);
                match raw(RawOp::Gather(sources(&body)?)).await? {
                    RawReply::Data(d) => Ok(HttpResponse::Ok().content_type("application/octet-stream").body(d)),
                    _ => Err(Error::backend("internal: unexpected reply to gather")),
                }
            }
            Some("defrag") => {
                let target = match (param(query, "target"), param(query, "algorithm")) {
                    (Some(t), _) => DefragTarget::Name(t.into()),
                    (None, Some(a)) => DefragTarget::Hashed {
                        algorithm: a.parse()?,
                        // As Python: a trailing slash is dropped, levels below 1 mean none.
                        namespace: param(query, "namespace").unwrap_or("").trim_end_matches('/').to_string(),
                        levels: match param(query, "levels") {
                            Some(l) => l
                                .parse::<i64>()
                                .map_err(|_| Error::invalid("levels must be a small number"))?
                                .clamp(0, 8) as u32,
                            None => 0,
                        },
                    },
                    (None, None) => return Err(Error::invalid("Missing target or algorithm for defrag")),
                };
                let (body, _held) = early!(json_body(req, app, payload).await);
                match raw(RawOp::Defrag { sources: sources(&body)?, target }).await? {
                    RawReply::Text(t) => Ok(HttpResponse::Ok().content_type("text/plain").body(t)),
                    _ => Err(Error::backend("internal: unexpected reply to defrag")),
                }
            }
            // As Python's server: an unknown command on a name is a store, on the root a bad request.
            _ => {
                need_name(name, "Bad Request")?;
                crate::names::validate_item_name(name)?;
                let len = early!(body_length(req, app.max_body));
                // What is held whole in memory needs room in the budget first; large
                // uploads to a backend that streams them hold only a few pieces.
                let whole = len <= STREAM_ABOVE || !entry.streams_uploads;
                let _held = if whole { early!(reserve(app, len).await) } else { Reservation::none() };
                let expected =
                    req.headers().get("x-content-hash-sha256").map(|v| v.as_bytes().to_vec()).filter(|v| !v.is_empty());
                let (tx, stream) = BodyStream::channel(len);
                let (pumped, stored) = if whole && !entry.admits_conditionally {
                    // Nothing the store could refuse depends on the item (no permissions,
                    // no quota): take the small body here and hand it over whole, which
                    // saves two trips between threads per store.
                    let (pumped, value) = futures::join!(pump(payload, tx, expected), stream.collect());
                    match value {
                        Ok(v) if pumped == Pumped::Done => {
                            (pumped, raw(RawOp::Store { name: name.into(), value: Body::Full(v) }).await)
                        }
                        Ok(_) => (pumped, Err(Error::invalid("the request body was not accepted"))),
                        Err(e) => (pumped, Err(e)),
                    }
                } else {
                    let store = raw(RawOp::Store { name: name.into(), value: Body::Stream(stream) });
                    futures::join!(pump(payload, tx, expected), store)
                };
                if pumped == Pumped::HashMismatch {
                    // Python's server sends this one without a Content-Type.
                    return Ok(
                        HttpResponse::UnprocessableEntity().body("Content hash verification failed, please retry")
                    );
                }
                stored.map(|_| ok())
            }
        }
    } else if method == Method::DELETE {
        match cmd {
            Some("destroy") => exec(entry, Op::Destroy).await.map(|_| ok()),
            Some("rmdir") => raw(RawOp::Rmdir(name.into())).await.map(|_| ok()),
            // As Python's server: an unknown command on a name is a delete.
            _ => {
                need_name(name, "Bad Request")?;
                raw(RawOp::Delete(name.into())).await.map(|_| ok())
            }
        }
    } else if method == Method::HEAD {
        match raw(RawOp::Info(name.into())).await? {
            RawReply::Info(info) if info.exists => Ok(HttpResponse::Ok()
                .insert_header(("X-BorgStore-Is-Directory", if info.directory { "true" } else { "false" }))
                .insert_header(("X-BorgStore-Atime", float(info.atime)))
                .insert_header(("X-BorgStore-Mtime", float(info.mtime)))
                .body(HeadBody(info.size))),
            RawReply::Info(_) => Err(Error::not_found(name)),
            _ => Err(Error::backend("internal: unexpected reply to info")),
        }
    } else if method == Method::GET {
        if listing {
            return match raw(RawOp::List(name.into())).await? {
                RawReply::List(items) => {
                    Ok(HttpResponse::Ok().content_type("application/json").body(listing_json(&items)))
                }
                _ => Err(Error::backend("internal: unexpected reply to list")),
            };
        }
        need_name(name, "Bad Request")?;
        let range_header = match req.headers().get(header::RANGE) {
            Some(v) => Some(v.to_str().map_err(|_| Error::invalid("the Range header is not ASCII"))?),
            None => None,
        };
        let (offset, size) = match range_header {
            Some(h) => range::parse(h)?,
            None => (0, None),
        };
        match raw(RawOp::Load { name: name.into(), offset, size }).await? {
            RawReply::Data(d) => {
                let code = if range_header.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK };
                Ok(HttpResponse::build(code).content_type("application/octet-stream").body(d))
            }
            _ => Err(Error::backend("internal: unexpected reply to load")),
        }
    } else {
        // handle() answered other methods already.
        Ok(text(StatusCode::NOT_IMPLEMENTED, &format!("Unsupported method ('{method}')")))
    }
}

/// The body of a HEAD answer: announces `Content-Length: n` and sends nothing (for HEAD
/// the HTTP encoder writes no body bytes; the length header comes from this size).
struct HeadBody(u64);

impl actix_web::body::MessageBody for HeadBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.0)
    }

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<web::Bytes, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

/// Times as Python prints floats: always with a fractional part.
fn float(t: f64) -> String {
    if t.fract() == 0.0 && t.abs() < 1e16 {
        format!("{t:.1}")
    } else {
        t.to_string()
    }
}
