//! The REST client backend: a store on a borgstore REST server (protocol v1,
//! REST-API.md), such as our `borgstore-server-rest`, `borgstored --rest`, or Python's.
//!
//! - [`url`]: the `http(s)://` and `rest://` URL grammar.
//! - [`stdio`]: HTTP over the pipes of `borgstore-server-rest --stdio` (local or via ssh).
//! - here: the [`Backend`] over either transport. Stores send `X-Content-hash-sha256`;
//!   hash, gather and defrag run on the server. A lost connection is retried a few times
//!   with a pause; a delete or move whose reply was lost and whose retry finds nothing
//!   counts as done (the first attempt did it).

pub mod stdio;
pub mod url;

use super::{Backend, DefragTarget};
use crate::hashing::HashAlgorithm;
use crate::names::{validate_item_name, validate_name};
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use stdio::StdioSession;
use tokio::sync::Mutex;
use url::Target;

const ACCEPT: &str = "application/vnd.x.borgstore.rest.v1";
/// Pauses before the retries after a lost connection.
const RETRY_WAITS: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(3)];

/// Make a REST client backend for an `http(s)://` or `rest://` URL.
pub fn from_url(url: &str) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(RestClient::new(url::parse(url, |k| std::env::var(k).ok())?)?))
}

enum Transport {
    Http { client: reqwest::Client, base: String, auth: Option<(String, String)> },
    Stdio { command: Vec<String>, session: Box<Mutex<Option<StdioSession>>> },
}

/// A backend that is a REST server somewhere.
pub struct RestClient {
    transport: Transport,
    opened: super::open_state::OpenState,
}

/// One request, transport-independent.
struct Req<'a> {
    method: reqwest::Method,
    /// Object name ("" for the root); `list` adds the trailing slash.
    name: &'a str,
    list: bool,
    query: Vec<(&'static str, String)>,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl<'a> Req<'a> {
    fn new(method: reqwest::Method, name: &'a str) -> Self {
        Req { method, name, list: false, query: vec![], headers: vec![], body: Bytes::new() }
    }
    fn query(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }
    fn body(mut self, b: Bytes) -> Self {
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

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn status_error(r: &Resp, what: &str) -> Error {
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

fn ok_or_status(r: Resp, what: &str) -> Result<Resp> {
    if r.status == 200 || r.status == 206 {
        Ok(r)
    } else {
        Err(status_error(&r, what))
    }
}

impl RestClient {
    pub fn new(target: Target) -> Result<Self> {
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
            Target::Stdio { command } => Transport::Stdio { command, session: Box::new(Mutex::new(None)) },
        };
        Ok(RestClient { transport, opened: Default::default() })
    }

    fn must_be_open(&self) -> Result<()> {
        self.opened.must_be_open()
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
            Transport::Stdio { command, session } => {
                let mut guard = session.lock().await;
                let temporary = guard.is_none();
                if temporary {
                    *guard = Some(StdioSession::start(command).await?);
                }
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
                let sent = match guard.as_mut() {
                    Some(s) => s.send(hreq).await,
                    None => Err(Error::backend("internal: no stdio session")),
                };
                // Outside open/close (create, destroy) the session lives for one request.
                if temporary || sent.is_err() || !self.opened.is_open() {
                    if let Some(s) = guard.take() {
                        let closed = s.close().await;
                        if sent.is_ok() {
                            closed?;
                        }
                    }
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

    /// A request with reconnect-and-retry on a lost connection. With `gone_is_done`, a
    /// 404 on a retry means an earlier attempt did the work and its reply was lost.
    async fn call(&self, req: Req<'_>, gone_is_done: bool) -> Result<Resp> {
        let mut result = self.exchange(&req).await;
        for wait in RETRY_WAITS {
            match &result {
                Err(e) if e.kind == ErrorKind::ConnectionLost => {
                    tracing::warn!("REST connection lost ({}); retrying in {wait:?}", e.message);
                    tokio::time::sleep(wait).await;
                    result = self.exchange(&req).await;
                    if gone_is_done {
                        if let Ok(r) = &result {
                            if r.status == 404 {
                                return Ok(Resp { status: 200, headers: r.headers.clone(), body: Bytes::new() });
                            }
                        }
                    }
                }
                _ => break,
            }
        }
        result
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

fn sources_json(sources: &[Source]) -> Bytes {
    let list: Vec<(&str, i64, u64)> = sources.iter().map(|s| (s.name.as_str(), s.offset, s.size)).collect();
    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

fn float_header(r: &Resp, name: &str) -> f64 {
    r.header(name).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[async_trait]
impl Backend for RestClient {
    async fn create(&self) -> Result<()> {
        self.opened.must_not_be_open()?;
        let r = self.call(Req::new(reqwest::Method::POST, "").query("cmd", "create"), false).await?;
        ok_or_status(r, "create").map(|_| ())
    }

    async fn destroy(&self) -> Result<()> {
        self.opened.must_not_be_open()?;
        let r = self.call(Req::new(reqwest::Method::DELETE, "").query("cmd", "destroy"), false).await?;
        ok_or_status(r, "destroy").map(|_| ())
    }

    async fn open(&self) -> Result<()> {
        self.opened.open()?;
        // Ask the server whether the store exists (410 when not), as a local open would.
        let checked = match self.call(Req::new(reqwest::Method::HEAD, ""), false).await {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) if r.status == 410 || r.status == 404 => {
                Err(Error::new(ErrorKind::BackendDoesNotExist, "the store does not exist on the REST server"))
            }
            Ok(r) => Err(status_error(&r, "open")),
            Err(e) => Err(e),
        };
        if checked.is_err() {
            let _ = self.close().await;
        }
        checked
    }

    async fn close(&self) -> Result<()> {
        self.opened.close()?;
        if let Transport::Stdio { session, .. } = &self.transport {
            if let Some(s) = session.lock().await.take() {
                s.close().await?;
            }
        }
        Ok(())
    }

    async fn mkdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_name(name)?;
        let r = self.call(Req::new(reqwest::Method::POST, name).query("cmd", "mkdir"), false).await?;
        ok_or_status(r, "mkdir").map(|_| ())
    }

    async fn rmdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_name(name)?;
        let r = self.call(Req::new(reqwest::Method::DELETE, name).query("cmd", "rmdir"), false).await?;
        ok_or_status(r, "rmdir").map(|_| ())
    }

    async fn info(&self, name: &str) -> Result<ItemInfo> {
        self.must_be_open()?;
        validate_name(name)?;
        let r = self.call(Req::new(reqwest::Method::HEAD, name), false).await?;
        if r.status == 404 {
            return Ok(ItemInfo::missing(name));
        }
        let r = ok_or_status(r, "info")?;
        Ok(ItemInfo {
            name: name.rsplit('/').next().unwrap_or(name).to_string(),
            exists: true,
            size: r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0),
            directory: r.header("x-borgstore-is-directory") == Some("true"),
            atime: float_header(&r, "x-borgstore-atime"),
            mtime: float_header(&r, "x-borgstore-mtime"),
        })
    }

    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        self.must_be_open()?;
        validate_item_name(name)?;
        if size == Some(0) {
            // Still tell a missing item from an empty range.
            return match self.info(name).await? {
                i if i.exists => Ok(Bytes::new()),
                _ => Err(Error::new(ErrorKind::ObjectNotFound, format!("{} not found", crate::names::shown(name)))),
            };
        }
        let range = crate::backends::http_range(offset, size);
        let mut req = Req::new(reqwest::Method::GET, name);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let r = ok_or_status(self.call(req, false).await?, "load")?;
        let mut data = r.body;
        crate::backends::cut_tail(&mut data, offset, size);
        Ok(data)
    }

    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        let digest = hex::encode(Sha256::digest(&value));
        let req = Req::new(reqwest::Method::POST, name).header("x-content-hash-sha256", digest).body(value);
        ok_or_status(self.call(req, false).await?, "store").map(|_| ())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        ok_or_status(self.call(Req::new(reqwest::Method::DELETE, name), true).await?, "delete").map(|_| ())
    }

    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(current)?;
        validate_item_name(new)?;
        let req = Req::new(reqwest::Method::POST, "").query("cmd", "move").query("current", current).query("new", new);
        ok_or_status(self.call(req, true).await?, "move").map(|_| ())
    }

    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        self.must_be_open()?;
        validate_name(name)?;
        let mut req = Req::new(reqwest::Method::GET, name);
        req.list = true;
        let r = ok_or_status(self.call(req, false).await?, "list")?;
        #[derive(serde::Deserialize)]
        struct Entry {
            name: String,
            size: u64,
            #[serde(default)]
            directory: bool,
            #[serde(default)]
            atime: f64,
            #[serde(default)]
            mtime: f64,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&r.body)
            .map_err(|e| Error::backend(format!("the REST server sent an invalid listing: {e}")))?;
        let mut items: Vec<ItemInfo> = entries
            .into_iter()
            .map(|e| ItemInfo {
                name: e.name,
                exists: true,
                size: e.size,
                directory: e.directory,
                atime: e.atime,
                mtime: e.mtime,
            })
            .collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }

    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        self.must_be_open()?;
        validate_item_name(name)?;
        let req = Req::new(reqwest::Method::POST, name).query("cmd", "hash").query("algorithm", algorithm.to_string());
        Ok(ok_or_status(self.call(req, false).await?, "hash")?.text().trim().to_string())
    }

    async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        self.must_be_open()?;
        for s in sources {
            validate_name(&s.name)?;
        }
        let req = Req::new(reqwest::Method::POST, "").query("cmd", "gather").body(sources_json(sources));
        Ok(ok_or_status(self.call(req, false).await?, "gather")?.body)
    }

    async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        self.must_be_open()?;
        for s in sources {
            validate_name(&s.name)?;
        }
        let mut req = Req::new(reqwest::Method::POST, "").query("cmd", "defrag");
        match target {
            DefragTarget::Name(n) => {
                validate_name(n)?;
                req = req.query("target", n.clone());
            }
            DefragTarget::Hashed { algorithm, namespace, levels } => {
                req = req.query("algorithm", algorithm.to_string());
                if !namespace.is_empty() {
                    req = req.query("namespace", namespace.clone());
                }
                if *levels > 0 {
                    req = req.query("levels", levels.to_string());
                }
            }
        }
        let req = req.body(sources_json(sources));
        Ok(ok_or_status(self.call(req, false).await?, "defrag")?.text().trim().to_string())
    }

    async fn quota(&self) -> Result<Quota> {
        self.must_be_open()?;
        let r =
            ok_or_status(self.call(Req::new(reqwest::Method::POST, "").query("cmd", "quota"), false).await?, "quota")?;
        let q: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|e| Error::backend(format!("invalid quota answer: {e}")))?;
        Ok(Quota { limit: q["limit"].as_i64().unwrap_or(-1), usage: q["usage"].as_i64().unwrap_or(-1) })
    }
}
