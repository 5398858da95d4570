//! What every REST request shares: the transport (an HTTP client, or the pipes of a stdio
//! server), one transport-independent request ([`Req`]) and answer ([`Resp`]), the
//! mapping of HTTP statuses to store errors, and [`RestCore::call`], which reconnects and
//! retries after a lost connection (under the common policy of `backends::retry`).
//!
//! Concurrency is carried by the transport, never by a lock here: reqwest's pool of
//! connections over HTTP, a [`StdioPool`] of up to `connections` children over stdio.
//! A stdio session lives, while the store is open, from the first request that needed it
//! until `close`, which ends them all; outside open/close (create, destroy) a session
//! lives for one request; a session whose request failed is closed, never reused.
//!
//! It lives apart from the reader, writer, lister and deleter so that each of those only
//! says which request an operation is and how to read its answer.

use super::stdio::StdioPool;
use super::url::Target;
use crate::backends::retry::{Failure, Retry};
use borgstore_ipc::{Error, ErrorKind, Result, Source};
use bytes::Bytes;
use std::time::Duration;

const ACCEPT: &str = "application/vnd.x.borgstore.rest.v1";
/// A lost connection is retried after these pauses; other failures are answers.
const RETRY: Retry = Retry::Pauses(&[Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(3)]);

enum Transport {
    Http { client: reqwest::Client, base: String, auth: Option<(String, String)> },
    Stdio(Box<StdioPool>),
}

/// The connection to one REST server and the open state of its store.
pub struct RestCore {
    transport: Transport,
    /// Whether the backend is open.
    pub opened: crate::backends::open_state::OpenState,
}

/// One request, transport-independent.
pub struct Req<'a> {
    method: reqwest::Method,
    /// Object name ("" for the root); `list` adds the trailing slash.
    name: &'a str,
    /// A directory listing: the path gets a trailing slash.
    pub list: bool,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl<'a> Req<'a> {
    /// A request of `method` for object `name` (`""`: the store).
    pub fn new(method: reqwest::Method, name: &'a str) -> Self {
        Req { method, name, list: false, query: vec![], headers: vec![], body: Bytes::new() }
    }

    /// Add the query parameter `k=v`.
    pub fn query(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }

    /// Add the header `k: v`.
    pub fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }

    /// Send `b` as the body.
    pub fn body(mut self, b: Bytes) -> Self {
        self.body = b;
        self
    }

    fn path_and_query(&self) -> String {
        const SEGMENT: &percent_encoding::AsciiSet =
            &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
        let mut p = format!("/{}", percent_encoding::utf8_percent_encode(self.name, SEGMENT));
        if self.list && !self.name.is_empty() {
            p.push('/');
        }
        if !self.query.is_empty() {
            p.push('?');
            p.push_str(&serde_urlencoded::to_string(&self.query).unwrap_or_default());
        }
        p
    }
}

/// A server's answer.
pub struct Resp {
    /// The HTTP status.
    pub status: u16,
    headers: reqwest::header::HeaderMap,
    /// The body (empty for HEAD).
    pub body: Bytes,
}

impl Resp {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name`, if it is there and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Header `name` as a number (missing or malformed: 0).
    pub fn float_header(&self, name: &str) -> f64 {
        self.header(name).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }
}

/// The store error an answer other than 200/206 stands for; `what` names the operation.
pub fn status_error(r: &Resp, what: &str) -> Error {
    let text = r.text();
    let msg = format!("{what}: {}", text.trim());
    let kind = match r.status {
        404 => ErrorKind::ObjectNotFound,
        410 => ErrorKind::BackendDoesNotExist,
        409 => ErrorKind::BackendAlreadyExists,
        412 if text.contains("must not be open") => ErrorKind::BackendMustNotBeOpen,
        412 if text.contains("must be open") => ErrorKind::BackendMustBeOpen,
        401 => {
            return Error::new(ErrorKind::PermissionDenied, format!("{what}: the REST server refused our credentials"))
        }
        403 => ErrorKind::PermissionDenied,
        507 => ErrorKind::QuotaExceeded,
        416 => ErrorKind::ReadRangeError,
        400 | 413 | 422 => ErrorKind::InvalidArgument,
        _ => ErrorKind::Backend,
    };
    Error::new(kind, msg)
}

/// The answer when it is 200 or 206, else its error.
pub fn ok_or_status(r: Resp, what: &str) -> Result<Resp> {
    if r.status == 200 || r.status == 206 {
        Ok(r)
    } else {
        Err(status_error(&r, what))
    }
}

/// reqwest errors name the URL, which may hold credentials: keep only the cause.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "connection failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

/// The JSON body of gather and defrag: `[[name, offset, size], ...]`.
pub fn sources_json(sources: &[Source]) -> Bytes {
    let list: Vec<(&str, i64, u64)> = sources.iter().map(|s| (s.name.as_str(), s.offset, s.size)).collect();
    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

impl RestCore {
    /// A client for `target` (nothing is contacted until it is used); over stdio it
    /// runs up to `connections` children (1 to 64) to carry concurrent requests.
    pub fn new(target: Target, connections: usize) -> Result<Self> {
        let transport = match target {
            Target::Http { base, username, password } => {
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(15))
                    .read_timeout(Duration::from_secs(120))
                    .pool_idle_timeout(Duration::from_secs(50))
                    .tcp_nodelay(true)
                    .build()
                    .map_err(|e| Error::backend(format!("cannot set up the HTTP client: {e}")))?;
                let auth = match (username, password) {
                    (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, p)),
                    _ => None,
                };
                Transport::Http { client, base, auth }
            }
            Target::Stdio { command } => Transport::Stdio(Box::new(StdioPool::new(command, connections))),
        };
        Ok(RestCore { transport, opened: Default::default() })
    }

    /// End every stdio session, once the requests on them are done (an HTTP client keeps
    /// nothing open).
    pub async fn close_session(&self) -> Result<()> {
        if let Transport::Stdio(pool) = &self.transport {
            pool.close_all().await?;
        }
        Ok(())
    }

    /// One HTTP exchange, no retries.
    async fn exchange(&self, req: &Req<'_>) -> Result<Resp> {
        match &self.transport {
            Transport::Http { client, base, auth } => {
                let url = format!("{base}{}", req.path_and_query());
                let mut rb = client
                    .request(req.method.clone(), url)
                    .header(reqwest::header::ACCEPT, ACCEPT)
                    .body(req.body.clone());
                for (k, v) in &req.headers {
                    rb = rb.header(*k, v);
                }
                if let Some((u, p)) = auth {
                    rb = rb.basic_auth(u, Some(p));
                }
                let resp = rb.send().await.map_err(|e| {
                    Error::new(ErrorKind::ConnectionLost, format!("REST server not reachable: {}", without_url(&e)))
                })?;
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = if req.method == reqwest::Method::HEAD {
                    Bytes::new()
                } else {
                    resp.bytes().await.map_err(|e| {
                        Error::new(ErrorKind::ConnectionLost, format!("REST response cut off: {}", without_url(&e)))
                    })?
                };
                Ok(Resp { status, headers, body })
            }
            Transport::Stdio(pool) => {
                let mut b = hyper::Request::builder()
                    .method(req.method.as_str())
                    .uri(req.path_and_query())
                    .header("host", "stdio")
                    .header("accept", ACCEPT);
                for (k, v) in &req.headers {
                    b = b.header(*k, v);
                }
                let hreq = b
                    .body(http_body_util::Full::new(req.body.clone()))
                    .map_err(|e| Error::invalid(format!("cannot build the request: {e}")))?;
                let mut lease = pool.lease().await?;
                let sent = lease.send(hreq).await;
                // Outside open/close (create, destroy) the session lives for one request;
                // a failed one is not reused. `close` ends the idle ones; one that comes
                // back after `close` began sees the store closed and ends here.
                if sent.is_err() || !self.opened.is_open() {
                    let closed = lease.close().await;
                    if sent.is_ok() {
                        closed?;
                    }
                } else {
                    lease.put_back();
                }
                let (status, headers, body) = sent?;
                let mut map = reqwest::header::HeaderMap::new();
                for (k, v) in headers.iter() {
                    if let (Ok(k), Ok(v)) = (
                        reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()),
                        reqwest::header::HeaderValue::from_bytes(v.as_bytes()),
                    ) {
                        map.append(k, v);
                    }
                }
                Ok(Resp { status, headers: map, body })
            }
        }
    }

    /// A request with reconnect-and-retry on a lost connection ([`RETRY`]). With
    /// `gone_is_done`, a 404 on a retry means an earlier attempt did the work and its
    /// reply was lost.
    pub async fn call(&self, req: Req<'_>, gone_is_done: bool) -> Result<Resp> {
        let what = format!("REST {} {}", req.method, crate::names::shown(req.name));
        let req = &req;
        let answer = RETRY.run(&what, |attempt| async move {
            match self.exchange(req).await {
                Ok(r) if gone_is_done && attempt > 0 && r.status == 404 => {
                    Ok(Resp { status: 200, headers: r.headers, body: Bytes::new() })
                }
                Ok(r) => Ok(r),
                Err(e) => Err(Failure::if_lost(e)),
            }
        });
        Ok(answer.await?)
    }

    /// [`RestCore::call`] without `gone_is_done`, and the answer must be 200 or 206.
    pub async fn call_ok(&self, req: Req<'_>, what: &str) -> Result<Resp> {
        ok_or_status(self.call(req, false).await?, what)
    }
}
