//! Backend-level calls through the engine: what the REST protocol speaks.
//!
//! REST clients (Python borgstore's REST backend, borg 2) nest names and soft-delete
//! themselves, so they address the backend directly (`data/01/23/0123...`). Running
//! those calls through the [`Store`] rather than around it keeps one set of books per
//! store: the same stats counters, the same latency emulation and the same backend
//! instance (so the same quota tracking) as the IPC clients of that store.
//!
//! [`Store::nested`] gives the view; every method validates its names first and is
//! counted under the stats key of the matching engine operation (`load_calls`,
//! `store_volume`, ...). Names in a cached namespace go through the store's cache as the
//! engine's do: loads are served or filled by it, stores, deletes and moves are mirrored
//! into it (a streamed upload is not held in memory for that: its old cached copy is
//! dropped, and the next load caches the new value).

use super::Store;
use crate::backends::body::Body;
use crate::backends::value::Value;
use crate::backends::DefragTarget;
use crate::hashing::HashAlgorithm;
use crate::names::validate_name;
use borgstore_ipc::{ItemInfo, Quota, Result, Source};
use bytes::Bytes;

/// The backend-level view of a [`Store`]: names are nested names, `.del` is part of
/// the name, nothing is added or hidden.
pub struct Nested<'a> {
    store: &'a Store,
}

impl Store {
    /// Backend-level calls on nested names (the REST protocol's view of the store).
    pub fn nested(&self) -> Nested<'_> {
        Nested { store: self }
    }
}

fn validate_sources(sources: &[Source]) -> Result<()> {
    sources.iter().try_for_each(|s| validate_name(&s.name))
}

impl Nested<'_> {
    /// Create directory `name` (and its parents).
    pub async fn mkdir(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let s = self.store;
        s.inner.backend.mkdir(name).await
    }

    /// Remove the empty directory `name`.
    pub async fn rmdir(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let s = self.store;
        s.inner.backend.rmdir(name).await
    }

    /// Metadata of `name`; a missing one gives `exists: false`.
    pub async fn info(&self, name: &str) -> Result<ItemInfo> {
        validate_name(name)?;
        let s = self.store;
        s.counted("info", s.inner.backend.info(name)).await
    }

    /// One directory level, sorted.
    pub async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        validate_name(name)?;
        let s = self.store;
        let items = s.inner.backend.list(name).await?;
        s.stats_add("list_calls", 1);
        Ok(items)
    }

    /// `size` bytes (None: to the end) from `offset` (negative: from the end); a large
    /// posixfs value comes as its open file ([`Value`]).
    pub async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Value> {
        validate_name(name)?;
        let s = self.store;
        let load = async {
            match s.cached(name) {
                Some((c, mode)) => Ok(Value::Bytes(s.cached_load(&c, mode, name, offset, size).await?)),
                None => s.inner.backend.load_value(name, offset, size).await,
            }
        };
        let value = s.counted("load", load).await?;
        s.stats_add("load_volume", value.len());
        Ok(value)
    }

    /// Store `value` (which may still be arriving, see [`Body`]) under `name`.
    pub async fn store(&self, name: &str, value: Body) -> Result<()> {
        validate_name(name)?;
        let s = self.store;
        let len = value.len();
        match (s.cached(name), value) {
            // A cached namespace keeps a copy of a value that is in memory anyway.
            (Some((c, _)), Body::Full(bytes)) => {
                s.counted("store", s.inner.backend.store(name, bytes.clone())).await?;
                c.store(s, name, bytes).await;
            }
            // A streamed one is not held in memory for the cache: the old copy goes, and
            // the next load caches the new value.
            (Some((c, _)), stream) => {
                s.counted("store", s.inner.backend.store_body(name, stream)).await?;
                c.delete(s, name).await;
            }
            (None, value) => s.counted("store", s.inner.backend.store_body(name, value)).await?,
        }
        s.stats_add("store_volume", len);
        Ok(())
    }

    /// Delete `name` for good.
    pub async fn delete(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let s = self.store;
        s.counted("delete", s.inner.backend.delete(name)).await?;
        if let Some((c, _)) = s.cached(name) {
            c.delete(s, name).await;
        }
        Ok(())
    }

    /// Rename `current` to `new`.
    pub async fn move_(&self, current: &str, new: &str) -> Result<()> {
        validate_name(current)?;
        validate_name(new)?;
        let s = self.store;
        s.counted("move", s.inner.backend.move_(current, new)).await?;
        match (s.cached(current), s.cached(new)) {
            (Some((c, _)), Some(_)) => c.move_(s, current, new).await,
            (Some((c, _)), None) => c.delete(s, current).await,
            (None, _) => {}
        }
        Ok(())
    }

    /// Hex digest of `name`'s content.
    pub async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        validate_name(name)?;
        let s = self.store;
        s.counted("hash", s.inner.backend.hash(name, algorithm)).await
    }

    /// The bytes of many ranges, concatenated in order.
    pub async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        validate_sources(sources)?;
        let s = self.store;
        let gather = s.inner.backend.gather(sources);
        let data = s.counted("gather", gather).await?;
        s.stats_add("gather_volume", data.len() as u64);
        Ok(data)
    }

    /// A new item from byte ranges; returns its name.
    pub async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        validate_sources(sources)?;
        match target {
            DefragTarget::Name(n) => validate_name(n)?,
            DefragTarget::Hashed { namespace, .. } => validate_name(namespace)?,
        }
        let s = self.store;
        s.counted("defrag", s.inner.backend.defrag(sources, target)).await
    }

    /// The store's quota (limit 0: none).
    pub async fn quota(&self) -> Result<Quota> {
        self.store.inner.backend.quota().await
    }
}
