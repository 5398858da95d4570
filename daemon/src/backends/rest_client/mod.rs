//! The REST client backend: a store on a borgstore REST server (protocol v1,
//! REST-API.md), such as our `borgstore-server-rest`, `borgstored --rest`, or Python's.
//!
//! What lives where (split like Apache OpenDAL's services, so each file holds one kind of
//! request):
//!
//! - [`url`]: the `http(s)://` and `rest://` URL grammar.
//! - [`stdio`]: HTTP over the pipes of `borgstore-server-rest --stdio` (local or via ssh).
//! - `core`: the transport (HTTP or stdio), requests and answers, the mapping of HTTP
//!   statuses to store errors, and the retries: a lost connection is retried a few times
//!   with a pause; a delete or move whose reply was lost and whose retry finds nothing
//!   counts as done (the first attempt did it).
//! - `reader`: `info`, `load`, and what the server computes (`hash`, `gather`, `quota`);
//!   `writer`: `store` (with `X-Content-hash-sha256`), `mkdir`, `defrag`; `lister`:
//!   `list`; `deleter`: `delete`, `move`, `rmdir`.
//! - here: [`RestClient`], the [`Backend`], which checks names and the open state and
//!   hands each call to those parts; [`from_url`].
//!
//! Concurrency: over `http(s)://` one reqwest client per store, shared without a lock;
//! each request in flight has an HTTP/1.1 connection of its own from reqwest's pool (no
//! limit per host; HTTP/2 streams where an https server offers h2; the store's
//! `connections` does not apply). The stdio transport (`rest://`) is one HTTP/1.1
//! exchange at a time per server process, so a store runs up to `connections` of them
//! (the store's config key, default 4, 1 to 64; [`stdio::StdioPool`]): a request takes
//! an idle one, else starts one while fewer are open, else waits for the first that is
//! free. While the store is open they stay up; `close` ends them all.

mod core;
mod deleter;
mod lister;
mod reader;
pub mod stdio;
pub mod url;
mod writer;

use self::core::{Req, RestCore};
use super::{Backend, DefragTarget};
use crate::hashing::HashAlgorithm;
use crate::names::{validate_item_name, validate_name};
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source};
use bytes::Bytes;
use reqwest::Method;
use std::sync::Arc;
use url::Target;

/// Make a REST client backend for an `http(s)://` or `rest://` URL; a `rest://` one runs
/// up to `connections` server processes (see the module doc), `http(s)://` ignores it.
pub fn from_url(url: &str, connections: usize) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(RestClient::with_connections(url::parse(url, |k| std::env::var(k).ok())?, connections)?))
}

/// A backend that is a REST server somewhere.
pub struct RestClient {
    core: RestCore,
}

impl RestClient {
    /// A client for `target` (nothing is contacted until it is used), over stdio with up
    /// to [`super::url::DEFAULT_CONNECTIONS`] server processes.
    pub fn new(target: Target) -> Result<Self> {
        Self::with_connections(target, super::url::DEFAULT_CONNECTIONS)
    }

    /// A client for `target` that runs up to `connections` server processes over stdio
    /// (1 to 64; others are taken as the nearest of those).
    pub fn with_connections(target: Target, connections: usize) -> Result<Self> {
        Ok(RestClient { core: RestCore::new(target, connections)? })
    }

    fn must_be_open(&self) -> Result<()> {
        self.core.opened.must_be_open()
    }

    fn validate_sources(sources: &[Source]) -> Result<()> {
        sources.iter().try_for_each(|s| validate_name(&s.name))
    }
}

#[async_trait]
impl Backend for RestClient {
    async fn create(&self) -> Result<()> {
        self.core.opened.must_not_be_open()?;
        self.core.call_ok(Req::new(Method::POST, "").query("cmd", "create"), "create").await.map(|_| ())
    }

    async fn destroy(&self) -> Result<()> {
        self.core.opened.must_not_be_open()?;
        self.core.call_ok(Req::new(Method::DELETE, "").query("cmd", "destroy"), "destroy").await.map(|_| ())
    }

    async fn open(&self) -> Result<()> {
        self.core.opened.open()?;
        // Ask the server whether the store exists (410 when not), as a local open would.
        let checked = match self.core.call(Req::new(Method::HEAD, ""), false).await {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) if r.status == 410 || r.status == 404 => {
                Err(Error::new(ErrorKind::BackendDoesNotExist, "the store does not exist on the REST server"))
            }
            Ok(r) => Err(self::core::status_error(&r, "open")),
            Err(e) => Err(e),
        };
        if checked.is_err() {
            let _ = self.close().await;
        }
        checked
    }

    async fn close(&self) -> Result<()> {
        self.core.opened.close()?;
        self.core.close_session().await
    }

    async fn mkdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_name(name)?;
        self.core.mkdir(name).await
    }

    async fn rmdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_name(name)?;
        self.core.rmdir(name).await
    }

    async fn info(&self, name: &str) -> Result<ItemInfo> {
        self.must_be_open()?;
        validate_name(name)?;
        self.core.info(name).await
    }

    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.load(name, offset, size).await
    }

    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.store(name, value).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.delete(name).await
    }

    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(current)?;
        validate_item_name(new)?;
        self.core.move_(current, new).await
    }

    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        self.must_be_open()?;
        validate_name(name)?;
        self.core.list(name).await
    }

    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.hash(name, algorithm).await
    }

    async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        self.must_be_open()?;
        Self::validate_sources(sources)?;
        self.core.gather(sources).await
    }

    async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        self.must_be_open()?;
        Self::validate_sources(sources)?;
        self.core.defrag(sources, target).await
    }

    async fn quota(&self) -> Result<Quota> {
        self.must_be_open()?;
        self.core.quota().await
    }
}
