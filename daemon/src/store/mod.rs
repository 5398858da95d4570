//! The store engine: the high-level key/value API over any [`Backend`].
//!
//! What it adds to a backend (DESIGN.md section 3):
//! - namespaces with nesting levels and level migration ([`config`], [`crate::names::nesting`]),
//! - soft delete / undelete and level changes, all as backend moves,
//! - recursive sorted listing ([`list`]),
//! - hash, gather and defrag with namespace-relative names,
//! - statistics with the Python key names ([`stats`]) and latency/bandwidth emulation
//!   ([`emulator`]),
//! - the shared cache of cached namespaces ([`cache`]),
//! - backend-level calls on nested names for the REST front end ([`nested`]), counted and
//!   emulated like everything else.
//!
//! A [`Store`] is a cheap handle (`Clone`) that may be used from many tasks; ordering
//! of operations is the caller's business (the daemon's store actor provides it).

pub mod cache;
pub mod config;
pub mod emulator;
pub mod list;
pub mod nested;
pub mod stats;

use crate::backends::value::Value;
use crate::backends::{Backend, DefragTarget};
use crate::flow::FlowSettings;
use crate::hashing::HashAlgorithm;
use crate::names::nesting::{nest, unnest};
use crate::names::{shown, validate_item_name, DEL_SUFFIX};
use borgstore_ipc::{Error, ItemInfo, Quota, Result, Source, Stats};
use bytes::Bytes;
pub use config::{NamespaceConfig, Namespaces};
pub use emulator::Emulator;
pub use list::Lister;
pub use nested::Nested;
use stats::{SharedStats, StatsCounters};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// How `move` changes an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveAction {
    /// Soft delete: `x` becomes `x.del`.
    Delete,
    /// Reverse a soft delete.
    Undelete,
    /// Move the item (live, or soft-deleted with `deleted`) to the namespace's last level.
    ChangeLevel {
        /// Move the soft-deleted item instead of the live one.
        deleted: bool,
    },
    /// Rename to `new_name` (replacing it); `deleted` addresses soft-deleted items.
    Rename {
        /// The full new name, namespace included.
        new_name: String,
        /// Rename the soft-deleted item, to a soft-deleted `new_name`.
        deleted: bool,
    },
}

/// How defrag names the new item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefragName {
    /// This name (no `/`: the namespace is given separately).
    Given(String),
    /// The hex digest of the content.
    Hash(HashAlgorithm),
}

/// A key/value store: a backend plus namespaces, soft delete, stats and emulation.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The primary under the layers of [`crate::flow`].
    backend: Arc<dyn Backend>,
    namespaces: Namespaces,
    stats: SharedStats,
    /// Swappable: a client may configure the cache of a running store.
    cache: std::sync::RwLock<Option<Arc<cache::Cache>>>,
    /// Other daemons share the primary: a writethrough hit is checked against it first.
    shared: std::sync::atomic::AtomicBool,
    /// Directories a recursive listing lists ahead ([`FlowSettings::list_ahead`]).
    list_ahead: usize,
}

impl cache::CacheStats for Store {
    fn cache_count(&self, key: &str, amount: u64) {
        self.stats_add(key, amount);
    }
}

impl Store {
    /// A store over `backend` with the given namespaces, emulation from the environment.
    pub fn new(backend: Arc<dyn Backend>, namespaces: Namespaces) -> Result<Self> {
        Ok(Self::with_emulator(backend, namespaces, Emulator::from_env()?))
    }

    /// A store with an explicit emulator (tests, per-store daemon config).
    pub fn with_emulator(backend: Arc<dyn Backend>, namespaces: Namespaces, emulator: Emulator) -> Self {
        Self::build(backend, namespaces, emulator, None)
    }

    /// A store with everything explicit, including an optional cache; its calls flow
    /// to the primary unlimited and uncoalesced.
    pub fn build(
        backend: Arc<dyn Backend>,
        namespaces: Namespaces,
        emulator: Emulator,
        cache: Option<cache::Cache>,
    ) -> Self {
        Self::build_with_flow(backend, namespaces, emulator, cache, &FlowSettings::default())
    }

    /// A store whose calls flow to `primary` through the layers `flow` asks for
    /// ([`crate::flow::stack`]).
    pub fn build_with_flow(
        primary: Arc<dyn Backend>,
        namespaces: Namespaces,
        emulator: Emulator,
        cache: Option<cache::Cache>,
        flow: &FlowSettings,
    ) -> Self {
        let stats = SharedStats::default();
        let backend = crate::flow::stack(primary, &namespaces, emulator, flow, stats.clone());
        let cache = std::sync::RwLock::new(cache.map(Arc::new));
        let shared = std::sync::atomic::AtomicBool::new(false);
        let list_ahead = flow.list_ahead;
        Store { inner: Arc::new(Inner { backend, namespaces, stats, cache, shared, list_ahead }) }
    }

    /// Say whether other daemons (other hosts) write to the same primary. When they do,
    /// a cached copy can be stale: a `writethrough` hit is served only after the primary
    /// confirms the item (see [`Store::cached_load`]). Mirror namespaces always read the
    /// primary and need no check.
    pub fn set_shared(&self, shared: bool) {
        self.inner.shared.store(shared, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the primary is shared with other daemons ([`Store::set_shared`]).
    pub fn shared(&self) -> bool {
        self.inner.shared.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cache, when the store has one.
    pub fn cache(&self) -> Option<Arc<cache::Cache>> {
        self.inner.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replace the cache (None: no cache). With `opened`, the old cache is closed and the
    /// new one opened (and its index seeded).
    pub async fn set_cache(&self, new: Option<cache::Cache>, opened: bool) {
        let new = new.map(Arc::new);
        if opened {
            if let Some(c) = &new {
                c.open().await;
            }
        }
        let old = std::mem::replace(&mut *self.inner.cache.write().unwrap_or_else(|p| p.into_inner()), new);
        if let (true, Some(old)) = (opened, old) {
            old.close().await;
        }
    }

    /// The cache and its mode for `name`, when `name` is in a cached namespace.
    pub(crate) fn cached(&self, name: &str) -> Option<(Arc<cache::Cache>, cache::CacheMode)> {
        let c = self.cache()?;
        let (_, policy) = c.policy_for(name);
        policy.on().then_some((c, policy.mode))
    }

    /// Load through the cache (`name`'s namespace is cached): writethrough tries the
    /// cache for the requested range; a miss, or mirror mode, loads the whole item from
    /// the primary, caches it and cuts the range out.
    ///
    /// On a shared primary ([`Store::set_shared`]) another host may have deleted or
    /// replaced the item since we cached it, so a writethrough copy is served only when
    /// the primary still has the item, with the cached size, and not modified after the
    /// copy was made (the primary's mtime is not later than the cached copy's). Else the
    /// copy is dropped: a deleted item is ObjectNotFound, a replaced one is loaded again.
    /// That costs one `info` of the primary per hit instead of the whole value.
    pub(crate) async fn cached_load(
        &self,
        c: &cache::Cache,
        mode: cache::CacheMode,
        nested: &str,
        offset: i64,
        size: Option<u64>,
    ) -> Result<Bytes> {
        if mode == cache::CacheMode::Writethrough {
            if !self.shared() || self.cached_copy_is_fresh(c, nested).await? {
                if let Some(v) = c.load(self, nested, offset, size).await {
                    return Ok(v);
                }
            } else {
                // No copy, or a stale one (dropped): a miss, like one `c.load` finds.
                self.stats_add("cache_misses", 1);
            }
        }
        let full = self.inner.backend.load(nested, 0, None).await?;
        c.store(self, nested, full.clone()).await;
        let len = full.len() as i64;
        let start = if offset < 0 { (len + offset).max(0) } else { offset.min(len) } as usize;
        let end = match size {
            Some(s) => start.saturating_add(usize::try_from(s).unwrap_or(usize::MAX)).min(full.len()),
            None => full.len(),
        };
        Ok(full.slice(start..end))
    }

    /// On a shared primary: may the cached copy of `nested` be served? A copy that the
    /// primary contradicts is dropped (counted as `cache_stale`); an item the primary no
    /// longer has is ObjectNotFound, whatever the cache holds.
    async fn cached_copy_is_fresh(&self, c: &cache::Cache, nested: &str) -> Result<bool> {
        let Some(copy) = c.info(self, nested).await else {
            return Ok(false);
        };
        let primary = self.inner.backend.info(nested).await?;
        let fresh = primary.exists
            && !primary.directory
            && primary.size == copy.size
            && (primary.mtime <= 0.0 || copy.mtime <= 0.0 || primary.mtime <= copy.mtime);
        if !fresh {
            self.stats_add("cache_stale", 1);
            c.delete(self, nested).await;
        }
        if !primary.exists {
            return Err(Error::not_found(nested));
        }
        Ok(fresh)
    }

    /// Drop cached copies: `""` all cached namespaces, a namespace all its items, else
    /// the one item (`deleted`: its soft-deleted copy).
    pub async fn cache_invalidate(&self, name: &str, deleted: bool) -> Result<()> {
        let Some(c) = self.cache() else { return Ok(()) };
        if name.is_empty() || c.is_namespace(name) {
            c.invalidate_dir(self, name).await;
        } else {
            let nested = self.find(name, deleted).await?;
            c.delete(self, &nested).await;
        }
        Ok(())
    }

    /// Evict expired cache items (the store actor calls this periodically).
    pub async fn cache_sweep(&self) {
        if let Some(c) = self.cache() {
            c.sweep(self).await;
        }
    }

    /// The primary backend; calls made on it directly bypass stats, cache and emulation.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The namespaces and their nesting levels.
    pub fn namespaces(&self) -> &Namespaces {
        &self.inner.namespaces
    }

    fn stats_lock(&self) -> std::sync::MutexGuard<'_, StatsCounters> {
        stats::lock(&self.inner.stats)
    }

    fn stats_add(&self, key: &str, amount: u64) {
        self.stats_lock().add(key, amount);
    }

    /// Run one API call, counting `<op>_calls` and `<op>_time` when it succeeds (as
    /// Python borgstore does: failed calls are not counted).
    async fn counted<T>(&self, op: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let result = fut.await;
        if result.is_ok() {
            self.stats_lock().call(op, start.elapsed());
        }
        result
    }

    // ----- lifecycle -----

    /// Create the storage (and all nesting directories, if the backend asks for that).
    pub async fn create(&self) -> Result<()> {
        self.inner.backend.create().await?;
        if let Some(c) = self.cache() {
            c.create().await;
        }
        if self.inner.backend.precreate_dirs() {
            self.inner.backend.open().await?;
            let made = self.create_levels().await;
            self.inner.backend.close().await?;
            made?;
        }
        Ok(())
    }

    /// Remove the storage and everything in it, and the cache's storage; the store must be
    /// closed.
    pub async fn destroy(&self) -> Result<()> {
        self.inner.backend.destroy().await?;
        if let Some(c) = self.cache() {
            c.destroy().await;
        }
        Ok(())
    }

    /// Open the backend, then the cache (a cache that fails to open is disabled, not an
    /// error); BackendDoesNotExist when the storage is missing.
    pub async fn open(&self) -> Result<()> {
        self.inner.backend.open().await?;
        if let Some(c) = self.cache() {
            c.open().await;
        }
        Ok(())
    }

    /// Close the cache, then the backend.
    pub async fn close(&self) -> Result<()> {
        if let Some(c) = self.cache() {
            c.close().await;
        }
        self.inner.backend.close().await
    }

    /// Create every namespace directory and, for nested namespaces, every deepest nesting
    /// directory (256^level of them). The store must be open.
    pub async fn create_levels(&self) -> Result<()> {
        for (ns, levels) in self.inner.namespaces.iter() {
            let ns = ns.trim_end_matches('/');
            let level = levels.iter().copied().max().unwrap_or(0);
            if level == 0 {
                if !ns.is_empty() {
                    self.inner.backend.mkdir(ns).await?;
                }
                continue;
            }
            for i in 0..256u64.pow(level) {
                let bytes = i.to_be_bytes();
                let hexdir = hex::encode(&bytes[8 - level as usize..]);
                let mut dir = String::from(ns);
                for pair in hexdir.as_bytes().chunks(2) {
                    if !dir.is_empty() {
                        dir.push('/');
                    }
                    dir.push_str(std::str::from_utf8(pair).unwrap_or("00"));
                }
                self.inner.backend.mkdir(&dir).await?;
            }
        }
        Ok(())
    }

    // ----- names -----

    /// The nested backend name of `name`: where it is, or where a new item goes.
    ///
    /// With one configured level this is pure computation; with several (a migration),
    /// each level is probed and the first existing one wins, else the last level.
    pub async fn find(&self, name: &str, deleted: bool) -> Result<String> {
        validate_item_name(name)?;
        if name.ends_with(DEL_SUFFIX) {
            return Err(Error::invalid(format!(
                "{} ends with .del: address soft-deleted items with the deleted flag",
                shown(name)
            )));
        }
        let suffix = deleted.then_some(DEL_SUFFIX);
        let levels = self.inner.namespaces.levels_for(name)?;
        if let [level] = levels {
            return nest(name, *level, suffix);
        }
        let mut nested = String::new();
        for level in levels {
            nested = nest(name, *level, suffix)?;
            if self.inner.backend.info(&nested).await?.exists {
                break;
            }
        }
        Ok(nested)
    }

    async fn find_sources(&self, sources: &[Source], namespace: Option<&str>, deleted: bool) -> Result<Vec<Source>> {
        let prefix = ns_prefix(namespace);
        let mut mapped: Vec<Source> = Vec::with_capacity(sources.len());
        let mut seen: std::collections::HashMap<&str, String> = Default::default();
        for s in sources {
            if s.name.contains('/') {
                return Err(Error::invalid(format!(
                    "item name {} must not contain '/' (the namespace is given separately)",
                    shown(&s.name)
                )));
            }
            let nested = match seen.get(s.name.as_str()) {
                Some(n) => n.clone(),
                None => {
                    let n = self.find(&format!("{prefix}{}", s.name), deleted).await?;
                    seen.insert(&s.name, n.clone());
                    n
                }
            };
            mapped.push(Source { name: nested, offset: s.offset, size: s.size });
        }
        Ok(mapped)
    }

    // ----- item operations -----

    /// Metadata of `name` (its soft-deleted item with `deleted`); a missing item gives
    /// `exists: false`, not an error.
    pub async fn info(&self, name: &str, deleted: bool) -> Result<ItemInfo> {
        self.counted("info", async {
            let nested = self.find(name, deleted).await?;
            self.inner.backend.info(&nested).await
        })
        .await
    }

    /// Load `size` bytes (None: to the end) from `offset` (negative: from the end).
    pub async fn load(&self, name: &str, offset: i64, size: Option<u64>, deleted: bool) -> Result<Bytes> {
        self.load_value(name, offset, size, deleted).await?.into_bytes().await
    }

    /// Like [`Store::load`], for a door that sends the value on: a large posixfs value
    /// comes as its open file, to be sent a piece at a time ([`Value`]).
    pub async fn load_value(&self, name: &str, offset: i64, size: Option<u64>, deleted: bool) -> Result<Value> {
        self.counted("load", async {
            let nested = self.find(name, deleted).await?;
            let value = match self.cached(name) {
                Some((c, mode)) => Value::Bytes(self.cached_load(&c, mode, &nested, offset, size).await?),
                None => {
                    let load = self.inner.backend.load_value(&nested, offset, size);
                    load.await?
                }
            };
            self.stats_add("load_volume", value.len());
            Ok(value)
        })
        .await
    }

    /// Store `value` as `name`, replacing an existing item at whatever level it is.
    pub async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        self.counted("store", async {
            let nested = self.find(name, false).await?;
            let len = value.len() as u64;
            self.inner.backend.store(&nested, value.clone()).await?;
            if let Some((c, _)) = self.cached(name) {
                c.store(self, &nested, value).await;
            }
            self.stats_add("store_volume", len);
            Ok(())
        })
        .await
    }

    /// Delete `name` for good (see [`MoveAction::Delete`] for soft deletion).
    pub async fn delete(&self, name: &str, deleted: bool) -> Result<()> {
        self.counted("delete", async {
            let nested = self.find(name, deleted).await?;
            self.inner.backend.delete(&nested).await?;
            if let Some((c, _)) = self.cached(name) {
                c.delete(self, &nested).await;
            }
            Ok(())
        })
        .await
    }

    /// Soft delete, undelete, change level or rename.
    pub async fn move_(&self, name: &str, action: MoveAction) -> Result<()> {
        self.counted("move", async {
            let (from, to) = match &action {
                MoveAction::Delete => {
                    let from = self.find(name, false).await?;
                    let to = format!("{from}{DEL_SUFFIX}");
                    (from, to)
                }
                MoveAction::Undelete => {
                    let from = self.find(name, true).await?;
                    let to = from.strip_suffix(DEL_SUFFIX).unwrap_or(&from).to_string();
                    (from, to)
                }
                MoveAction::ChangeLevel { deleted } => {
                    let from = self.find(name, *deleted).await?;
                    let last = *self.inner.namespaces.levels_for(name)?.last().unwrap_or(&0);
                    (from, nest(name, last, deleted.then_some(DEL_SUFFIX))?)
                }
                MoveAction::Rename { new_name, deleted } => {
                    (self.find(name, *deleted).await?, self.find(new_name, *deleted).await?)
                }
            };
            if from == to {
                return Ok(());
            }
            self.inner.backend.move_(&from, &to).await?;
            if let Some((c, _)) = self.cached(name) {
                c.move_(self, &from, &to).await;
            }
            Ok(())
        })
        .await
    }

    /// All items below namespace `name` (recursively through nesting directories),
    /// sorted; only live items, or with `deleted` only soft-deleted ones.
    pub fn list(&self, name: &str, deleted: bool) -> Result<Lister> {
        crate::names::validate_name(name)?;
        self.stats_add("list_calls", 1);
        Ok(Lister::new(self.clone(), name, deleted))
    }

    /// Hex digest of the content of `name`.
    pub async fn hash(&self, name: &str, algorithm: HashAlgorithm, deleted: bool) -> Result<String> {
        self.counted("hash", async {
            let nested = self.find(name, deleted).await?;
            self.inner.backend.hash(&nested, algorithm).await
        })
        .await
    }

    /// The bytes of many ranges of items in `namespace`, concatenated in order.
    pub async fn gather(&self, sources: &[Source], namespace: Option<&str>, deleted: bool) -> Result<Bytes> {
        self.counted("gather", async {
            let mapped = self.find_sources(sources, namespace, deleted).await?;
            if mapped.is_empty() {
                return Ok(Bytes::new());
            }
            let expected: u64 = mapped.iter().map(|s| s.size).sum();
            if let Some((c, mode)) = self.cached(&ns_prefix(namespace)) {
                // A cached namespace: each range like a load, from the cache or by caching
                // the whole item.
                let mut out = Vec::with_capacity(usize::try_from(expected).unwrap_or(0).min(1 << 30));
                for s in &mapped {
                    let part = self.cached_load(&c, mode, &s.name, s.offset, Some(s.size)).await?;
                    crate::backends::check_range(s, part.len())?;
                    out.extend_from_slice(&part);
                }
                self.stats_add("gather_volume", out.len() as u64);
                return Ok(Bytes::from(out));
            }
            let data = self.inner.backend.gather(&mapped).await?;
            if data.len() as u64 != expected {
                return Err(Error::new(
                    borgstore_ipc::ErrorKind::ReadRangeError,
                    format!("gather returned {} bytes, expected {expected}", data.len()),
                ));
            }
            self.stats_add("gather_volume", data.len() as u64);
            Ok(data)
        })
        .await
    }

    /// Make a new item in `namespace` from ranges of items there; returns its name
    /// (without the namespace). The sources are left in place.
    pub async fn defrag(
        &self,
        sources: &[Source],
        target: DefragName,
        namespace: Option<&str>,
        deleted: bool,
    ) -> Result<String> {
        let prefix = ns_prefix(namespace);
        let mapped = self.find_sources(sources, namespace, deleted).await?;
        let backend_target = match target {
            DefragName::Given(t) => {
                if t.contains('/') {
                    return Err(Error::invalid(format!(
                        "target {} must not contain '/' (the namespace is given separately)",
                        shown(&t)
                    )));
                }
                DefragTarget::Name(self.find(&format!("{prefix}{t}"), deleted).await?)
            }
            DefragName::Hash(algorithm) => {
                let levels = if prefix.is_empty() {
                    0
                } else {
                    *self.inner.namespaces.levels_for(&prefix)?.last().unwrap_or(&0)
                };
                DefragTarget::Hashed { algorithm, namespace: prefix.trim_end_matches('/').to_string(), levels }
            }
        };
        let made = self.inner.backend.defrag(&mapped, &backend_target).await?;
        let name = unnest(&made, &prefix, None)?;
        Ok(name.strip_prefix(prefix.as_str()).unwrap_or(&name).to_string())
    }

    /// Wait until every write acknowledged before this call is on the primary backend
    /// (write-behind namespaces; at once otherwise).
    pub async fn sync(&self) -> Result<()> {
        self.counted("sync", self.inner.backend.sync()).await
    }

    /// Quota limit and usage from the backend ([`Quota::OFF`] when it has none).
    pub async fn quota(&self) -> Result<Quota> {
        self.inner.backend.quota().await
    }

    /// Statistics with the Python key names.
    pub fn stats(&self) -> Stats {
        let disabled = self.cache().is_some_and(|c| c.disabled());
        let mut st = self.stats_lock().snapshot(disabled);
        for (key, value) in self.inner.backend.gauges() {
            st.insert(key.to_string(), borgstore_ipc::StatValue::Int(i64::try_from(value).unwrap_or(i64::MAX)));
        }
        st
    }
}

fn ns_prefix(namespace: Option<&str>) -> String {
    match namespace.map(|n| n.trim_end_matches('/')) {
        Some(n) if !n.is_empty() => format!("{n}/"),
        _ => String::new(),
    }
}
