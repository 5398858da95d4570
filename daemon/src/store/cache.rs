//! The shared cache of a store: a second backend that keeps copies of items of the
//! namespaces that have a cache policy (DESIGN.md section 3, Caching).
//!
//! Semantics follow Python borgstore 0.7.0: the cache holds the same nested names as
//! the primary; `writethrough` serves loads (also partial and tail loads) from the cache
//! and on a miss loads the whole item from the primary and caches it; `mirror` always
//! reads the primary and refreshes the cache; stores, deletes and moves (soft delete,
//! undelete, level changes) are mirrored; list always asks the primary. A cache failure
//! is logged and counted in `cache_errors`, never returned to the caller; a cache that
//! cannot be opened is switched off for the session (`cache_disabled`).
//!
//! One difference comes from the daemon: it is the only user of its cache, so the
//! in-memory index (size and last use of every cached item, per namespace with a
//! `size` or `max_age` limit) is seeded by one scan at open and then kept exact by the
//! operations themselves; Python must rescan to see what other processes did. Eviction
//! runs on every insert (make room: least recently used first, expired ones before
//! anything else) and on every sweep the store actor triggers while the store is used
//! (expired items), not only at open and close.

use crate::backends::Backend;
use crate::names::validate_name;
use borgstore_ipc::{Error, ErrorKind, Result};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// How a namespace uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Not cached.
    Off,
    /// Loads always read the primary and refresh the cached copy; writes are mirrored.
    Mirror,
    /// Loads are served from the cache when it has the item (else loaded whole from the
    /// primary and cached); writes are mirrored.
    Writethrough,
}

impl std::str::FromStr for CacheMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(CacheMode::Off),
            "mirror" => Ok(CacheMode::Mirror),
            "writethrough" => Ok(CacheMode::Writethrough),
            _ => Err(Error::invalid(format!("unknown cache mode {s:?}: use off, mirror or writethrough"))),
        }
    }
}

/// Cache policy of one namespace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CachePolicy {
    /// How the namespace uses the cache.
    pub mode: CacheMode,
    /// Items not used for this long (s) are evicted; None: no age limit.
    pub max_age: Option<f64>,
    /// The namespace's cached items never exceed this many bytes (least recently used
    /// go first); None: no size limit.
    pub size: Option<u64>,
}

impl CachePolicy {
    /// Not cached, no limits: the policy of namespaces without one.
    pub const OFF: CachePolicy = CachePolicy { mode: CacheMode::Off, max_age: None, size: None };

    /// Is the namespace cached at all (mode not [`CacheMode::Off`])?
    pub fn on(self) -> bool {
        self.mode != CacheMode::Off
    }
}

/// Where the cache reads the time for item ages: seconds since the UNIX epoch, the scale
/// of the file times the index is seeded from. [`SystemClock`] unless a test gives the
/// cache another one ([`Cache::with_clock`]) to age items without waiting.
pub trait Clock: Send + Sync {
    /// Seconds since the UNIX epoch.
    fn now(&self) -> f64;
}

/// The system's time of day.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
    }
}

/// Size and last use of the cached items of one limited namespace, LRU ordered.
#[derive(Debug, Default)]
struct NsIndex {
    /// name -> (size, last use, sequence number in `order`)
    entries: HashMap<String, (u64, f64, u64)>,
    /// sequence number -> name, oldest use first.
    order: BTreeMap<u64, String>,
    total: u64,
    next: u64,
}

impl NsIndex {
    fn touch(&mut self, name: &str, size: u64, used: f64) {
        self.remove(name);
        let seq = self.next;
        self.next += 1;
        self.entries.insert(name.to_string(), (size, used, seq));
        self.order.insert(seq, name.to_string());
        self.total += size;
    }

    fn remove(&mut self, name: &str) {
        if let Some((size, _, seq)) = self.entries.remove(name) {
            self.order.remove(&seq);
            self.total -= size;
        }
    }

    /// Names to evict so that `needed` more bytes fit under `policy`, expired ones first.
    fn victims(&self, policy: &CachePolicy, needed: u64, now: f64) -> Vec<String> {
        let mut out = Vec::new();
        let mut total = self.total;
        for name in self.order.values() {
            let (size, used, _) = self.entries[name];
            let expired = policy.max_age.is_some_and(|age| now - used > age);
            let too_big = policy.size.is_some_and(|limit| total + needed > limit);
            if !(expired || too_big) {
                // LRU order: everything after this one was used later, so it is not
                // expired either, and the room is made.
                break;
            }
            out.push(name.clone());
            total -= size;
        }
        out
    }
}

/// Counters the cache reports into the store's stats.
pub trait CacheStats: Send + Sync {
    /// Add `amount` to the counter `key` (`cache_hits`, `cache_store_volume`, ...).
    fn cache_count(&self, key: &str, amount: u64);
}

/// A store's cache.
pub struct Cache {
    backend: Arc<dyn Backend>,
    /// (namespace, policy), longest namespace first.
    policies: Vec<(String, CachePolicy)>,
    disabled: AtomicBool,
    /// Limited namespaces -> their index.
    index: Mutex<HashMap<String, NsIndex>>,
    clock: Arc<dyn Clock>,
}

impl Cache {
    /// A cache on `backend` for the namespaces of `policies` (those with mode `off` are
    /// dropped); not opened yet.
    pub fn new(backend: Arc<dyn Backend>, mut policies: Vec<(String, CachePolicy)>) -> Self {
        policies.retain(|(_, p)| p.on());
        policies.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Cache {
            backend,
            policies,
            disabled: AtomicBool::new(false),
            index: Mutex::new(HashMap::new()),
            clock: Arc::new(SystemClock),
        }
    }

    /// Read item ages from `clock` instead of the system's time (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> f64 {
        self.clock.now()
    }

    /// The cache's own backend (not the store's primary).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// True when the cache could not be opened: it is off until the next open.
    pub fn disabled(&self) -> bool {
        self.disabled.load(Ordering::SeqCst)
    }

    /// The policy for `name` (a logical or nested name: namespaces prefix both).
    pub fn policy_for(&self, name: &str) -> (Option<&str>, CachePolicy) {
        self.policies
            .iter()
            .find(|(ns, _)| name.starts_with(ns.as_str()))
            .map(|(ns, p)| (Some(ns.as_str()), *p))
            .unwrap_or((None, CachePolicy::OFF))
    }

    fn limited(p: &CachePolicy) -> bool {
        p.max_age.is_some() || p.size.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NsIndex>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, stats: &dyn CacheStats, what: &str, name: &str, e: &Error) {
        tracing::warn!("cache {what} of {} failed: {}", crate::names::shown(name), e.message);
        stats.cache_count("cache_errors", 1);
    }

    // ----- lifecycle -----

    /// Create the cache's storage; an existing one is fine, other failures are logged.
    pub async fn create(&self) {
        if let Err(e) = self.backend.create().await {
            if e.kind != ErrorKind::BackendAlreadyExists {
                tracing::warn!("cache create failed: {}", e.message);
            }
        }
    }

    /// Remove the cache's storage; a missing one is fine, other failures are logged.
    pub async fn destroy(&self) {
        if let Err(e) = self.backend.destroy().await {
            if e.kind != ErrorKind::BackendDoesNotExist {
                tracing::warn!("cache destroy failed: {}", e.message);
            }
        }
    }

    /// Open the cache (creating it when missing) and seed the index; on failure the cache
    /// is off for this session.
    pub async fn open(&self) {
        self.disabled.store(false, Ordering::SeqCst);
        let mut opened = self.backend.open().await;
        if matches!(&opened, Err(e) if e.kind == ErrorKind::BackendDoesNotExist) {
            let _ = self.backend.create().await;
            opened = self.backend.open().await;
        }
        if let Err(e) = opened {
            tracing::warn!("cache open failed, running without a cache: {}", e.message);
            self.disabled.store(true, Ordering::SeqCst);
            return;
        }
        let mut fresh = HashMap::new();
        for (ns, policy) in &self.policies {
            if !Self::limited(policy) {
                continue;
            }
            let mut idx = NsIndex::default();
            let mut items = Vec::new();
            self.scan(ns.trim_end_matches('/'), &mut items).await;
            // Oldest use first, so the index order is LRU order.
            items.sort_by(|a, b| a.2.total_cmp(&b.2));
            for (name, size, used) in items {
                idx.touch(&name, size, used);
            }
            fresh.insert(ns.clone(), idx);
        }
        *self.lock() = fresh;
    }

    /// Every cached item below `dir`: (nested name, size, last use).
    async fn scan(&self, dir: &str, out: &mut Vec<(String, u64, f64)>) {
        let mut stack = vec![dir.to_string()];
        while let Some(d) = stack.pop() {
            let Ok(items) = self.backend.list(&d).await else { continue };
            for i in items {
                let name = if d.is_empty() { i.name.clone() } else { format!("{d}/{}", i.name) };
                if i.directory {
                    stack.push(name);
                } else {
                    let used = if i.atime > 0.0 { i.atime.max(i.mtime) } else { i.mtime };
                    out.push((name, i.size, used));
                }
            }
        }
    }

    /// Close the cache backend (unless disabled) and forget the index.
    pub async fn close(&self) {
        if !self.disabled() {
            let _ = self.backend.close().await;
        }
        self.lock().clear();
    }

    // ----- item operations (nested names) -----

    /// Try the cache; None on a miss or an error (counted).
    pub async fn load(&self, stats: &dyn CacheStats, nested: &str, offset: i64, size: Option<u64>) -> Option<Bytes> {
        if self.disabled() {
            return None;
        }
        stats.cache_count("cache_load_calls", 1);
        match self.backend.load(nested, offset, size).await {
            Ok(v) => {
                stats.cache_count("cache_hits", 1);
                stats.cache_count("cache_load_volume", v.len() as u64);
                let (ns, policy) = self.policy_for(nested);
                if let (Some(ns), true) = (ns, Self::limited(&policy)) {
                    let mut idx = self.lock();
                    // Only refresh what the index knows: an unknown item is being evicted or
                    // replaced right now, and `v` may be just a range of it.
                    if let Some(i) = idx.get_mut(ns) {
                        if let Some(size) = i.entries.get(nested).map(|e| e.0) {
                            i.touch(nested, size, self.now());
                        }
                    }
                }
                Some(v)
            }
            Err(e) if e.kind == ErrorKind::ObjectNotFound => {
                stats.cache_count("cache_misses", 1);
                self.forget(nested);
                None
            }
            Err(e) => {
                self.error(stats, "load", nested, &e);
                None
            }
        }
    }

    /// Metadata of the cached copy of `nested`; None when there is none (or on an error,
    /// counted).
    pub async fn info(&self, stats: &dyn CacheStats, nested: &str) -> Option<borgstore_ipc::ItemInfo> {
        if self.disabled() {
            return None;
        }
        match self.backend.info(nested).await {
            Ok(i) if i.exists && !i.directory => Some(i),
            Ok(_) => None,
            Err(e) => {
                self.error(stats, "info", nested, &e);
                None
            }
        }
    }

    fn forget(&self, nested: &str) {
        let (ns, _) = self.policy_for(nested);
        if let Some(ns) = ns {
            if let Some(i) = self.lock().get_mut(ns) {
                i.remove(nested);
            }
        }
    }

    /// Put a value into the cache, making room first.
    pub async fn store(&self, stats: &dyn CacheStats, nested: &str, value: Bytes) {
        if self.disabled() {
            return;
        }
        let (ns, policy) = self.policy_for(nested);
        let len = value.len() as u64;
        if let (Some(ns), true) = (ns, Self::limited(&policy)) {
            if policy.size.is_some_and(|limit| len > limit) {
                // It can never fit; do not keep an older value either.
                self.delete(stats, nested).await;
                return;
            }
            // Choose the victims and reserve our room in one critical section: stores of
            // other items run concurrently, and each must see the others' bytes as taken
            // before any of them writes, or together they overshoot the budget.
            let victims = {
                let mut idx = self.lock();
                let i = idx.entry(ns.to_string()).or_default();
                i.remove(nested);
                let victims = i.victims(&policy, len, self.now());
                for v in &victims {
                    i.remove(v);
                }
                i.touch(nested, len, self.now());
                victims
            };
            for v in victims {
                self.delete(stats, &v).await;
            }
        }
        stats.cache_count("cache_store_calls", 1);
        match self.backend.store(nested, value).await {
            Ok(()) => {
                stats.cache_count("cache_store_volume", len);
                if let (Some(ns), true) = (ns, Self::limited(&policy)) {
                    // A concurrent store of another item may have picked our reservation
                    // as its victim while we wrote (its delete may even have run before
                    // our write). Eviction wins: the room is promised to someone else.
                    let evicted = !self.lock().get(ns).is_some_and(|i| i.entries.contains_key(nested));
                    if evicted {
                        self.delete(stats, nested).await;
                    }
                }
            }
            Err(e) => {
                self.forget(nested);
                self.error(stats, "store", nested, &e)
            }
        }
    }

    /// Drop the cached copy of `nested`, if any; failures are logged and counted.
    pub async fn delete(&self, stats: &dyn CacheStats, nested: &str) {
        if self.disabled() {
            return;
        }
        stats.cache_count("cache_delete_calls", 1);
        self.forget(nested);
        match self.backend.delete(nested).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::ObjectNotFound => {}
            Err(e) => self.error(stats, "delete", nested, &e),
        }
    }

    /// Mirror a move of the primary (soft delete, undelete, level change, rename) from
    /// nested name `from` to `to`; failures are logged and counted.
    pub async fn move_(&self, stats: &dyn CacheStats, from: &str, to: &str) {
        if self.disabled() {
            return;
        }
        let size = {
            let (ns, _) = self.policy_for(from);
            ns.and_then(|ns| self.lock().get(ns).and_then(|i| i.entries.get(from).map(|e| e.0)))
        };
        match self.backend.move_(from, to).await {
            Ok(()) => {
                self.forget(from);
                let (ns, policy) = self.policy_for(to);
                if let (Some(ns), true, Some(size)) = (ns, Self::limited(&policy), size) {
                    self.lock().entry(ns.to_string()).or_default().touch(to, size, self.now());
                }
            }
            Err(e) if e.kind == ErrorKind::ObjectNotFound => self.forget(from),
            Err(e) => self.error(stats, "move", from, &e),
        }
    }

    /// Drop every cached item below `dir` (a namespace, or "" for all cached namespaces).
    pub async fn invalidate_dir(&self, stats: &dyn CacheStats, dir: &str) {
        if self.disabled() {
            return;
        }
        let dirs: Vec<String> = if dir.is_empty() {
            self.policies.iter().map(|(ns, _)| ns.trim_end_matches('/').to_string()).collect()
        } else {
            vec![dir.trim_end_matches('/').to_string()]
        };
        for d in dirs {
            if validate_name(&d).is_err() {
                continue;
            }
            let mut items = Vec::new();
            self.scan(&d, &mut items).await;
            for (name, _, _) in items {
                self.delete(stats, &name).await;
            }
        }
    }

    /// Is `name` (without trailing slash) one of the cached namespaces?
    pub fn is_namespace(&self, name: &str) -> bool {
        self.policies.iter().any(|(ns, _)| ns.trim_end_matches('/') == name.trim_end_matches('/'))
    }

    /// Evict what has expired (called periodically while the store is used).
    pub async fn sweep(&self, stats: &dyn CacheStats) {
        if self.disabled() {
            return;
        }
        let t = self.now();
        let victims: Vec<String> = {
            let idx = self.lock();
            self.policies
                .iter()
                .filter(|(_, p)| p.max_age.is_some())
                .filter_map(|(ns, p)| idx.get(ns).map(|i| i.victims(p, 0, t)))
                .flatten()
                .collect()
        };
        for v in victims {
            self.delete(stats, &v).await;
        }
    }

    /// Bytes the index counts for `namespace` (tests, stats).
    pub fn indexed_bytes(&self, namespace: &str) -> u64 {
        self.lock().get(namespace).map(|i| i.total).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_victims_expired_first_then_oldest() {
        let p = CachePolicy { mode: CacheMode::Writethrough, max_age: Some(100.0), size: Some(100) };
        let mut i = NsIndex::default();
        i.touch("a", 40, 1000.0);
        i.touch("b", 40, 1050.0);
        i.touch("c", 10, 1090.0);
        assert!(i.victims(&p, 0, 1095.0).is_empty());
        assert_eq!(i.victims(&p, 20, 1095.0), ["a"]);
        assert_eq!(i.victims(&p, 60, 1095.0), ["a", "b"]);
        // a expired (used 1000, now 1101, max_age 100), the rest fits.
        assert_eq!(i.victims(&p, 0, 1101.0), ["a"]);
        i.touch("a", 40, 1101.0); // used again: now the newest
        assert_eq!(i.victims(&p, 20, 1101.0), ["b"]);
        i.remove("b");
        assert_eq!(i.total, 50);
    }

    struct NoStats;
    impl CacheStats for NoStats {
        fn cache_count(&self, _: &str, _: u64) {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_stores_of_different_items_stay_within_the_budget() {
        use crate::backends::posixfs::{PosixFs, PosixFsOptions};
        let dir = tempfile::tempdir().unwrap();
        let be: Arc<dyn Backend> = Arc::new(PosixFs::new(dir.path().join("c"), PosixFsOptions::default()).unwrap());
        let policy = CachePolicy { mode: CacheMode::Writethrough, max_age: None, size: Some(1000) };
        let cache = Cache::new(be.clone(), vec![("data/".into(), policy)]);
        cache.create().await;
        cache.open().await;
        for round in 0..20u8 {
            // join! starts every store before any write finishes: each must see the
            // others' bytes as taken already.
            let names: Vec<String> = (0..5).map(|i| format!("data/{round:02}{i}")).collect();
            let v = || Bytes::from(vec![round; 400]);
            let (n0, n1, n2, n3, n4) = (&names[0], &names[1], &names[2], &names[3], &names[4]);
            tokio::join!(
                cache.store(&NoStats, n0, v()),
                cache.store(&NoStats, n1, v()),
                cache.store(&NoStats, n2, v()),
                cache.store(&NoStats, n3, v()),
                cache.store(&NoStats, n4, v()),
            );
            let on_disk: u64 = be.list("data").await.unwrap().iter().map(|i| i.size).sum();
            assert!(on_disk <= 1000, "round {round}: {on_disk} bytes cached, budget 1000");
            assert!(cache.indexed_bytes("data/") <= 1000);
            assert!(on_disk <= cache.indexed_bytes("data/"), "a cached file the index does not count");
        }
        cache.close().await;
    }

    #[test]
    fn modes_parse() {
        assert_eq!("Writethrough".parse::<CacheMode>().unwrap(), CacheMode::Writethrough);
        assert!("sometimes".parse::<CacheMode>().is_err());
    }
}
