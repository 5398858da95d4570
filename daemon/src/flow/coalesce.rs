//! Coalesced reads: loads of the same range of an item, and infos of the same item,
//! that arrive while an identical call is on its way to the primary join that call
//! instead of making their own. 32 processes that load one item behind a slow link
//! cost one backend load.
//!
//! **No stale reads.** A call may only join a flight that no completed change of its
//! item could have overtaken: every change of an item (store, delete, move, defrag)
//! grounds its flights when it starts and again when it completes, so a load that
//! starts after a store completed never joins a flight that began before the store.
//! (The store actor already runs reads of one item together only between its changes,
//! see [`crate::actor::ordering`]; this layer does not rely on that.)
//!
//! A flight runs as a task of its own, so it completes and leaves the table even when
//! the caller that started it goes away. Joined calls are counted in
//! `coalesced_load_calls` and `coalesced_info_calls`.

use super::principal;
use crate::backends::body::Body;
use crate::backends::value::Value;
use crate::backends::{Backend, DefragTarget};
use crate::hashing::HashAlgorithm;
use crate::store::stats::SharedStats;
use async_trait::async_trait;
use borgstore_ipc::{Error, ItemInfo, Quota, Result, Source};
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

type Flight<T> = Shared<BoxFuture<'static, Result<T>>>;

/// The flights of one item.
#[derive(Default)]
struct Flights {
    /// Loads by (offset, size), with their flight id.
    loads: Vec<(i64, Option<u64>, u64, Flight<Bytes>)>,
    info: Option<(u64, Flight<ItemInfo>)>,
}

#[derive(Default)]
struct Table {
    items: Mutex<HashMap<String, Flights>>,
    next: AtomicU64,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Flights>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A flight landed: forget it (unless a change grounded it already).
    fn land(&self, name: &str, id: u64) {
        let mut items = self.lock();
        if let Some(f) = items.get_mut(name) {
            f.loads.retain(|l| l.2 != id);
            if f.info.as_ref().is_some_and(|i| i.0 == id) {
                f.info = None;
            }
            if f.loads.is_empty() && f.info.is_none() {
                items.remove(name);
            }
        }
    }

    /// Later calls on `name` must not join what flies now.
    fn ground(&self, name: &str) {
        self.lock().remove(name);
    }
}

/// Reads of a backend, coalesced.
pub struct Coalesce {
    inner: Arc<dyn Backend>,
    stats: SharedStats,
    table: Arc<Table>,
}

impl Coalesce {
    /// Coalesce reads of `inner`, counting joined calls into `stats`.
    pub fn new(inner: Arc<dyn Backend>, stats: SharedStats) -> Self {
        Coalesce { inner, stats, table: Arc::default() }
    }

    /// Start a flight: `call` runs as its own task on behalf of the current principal
    /// and leaves the table when it lands.
    fn launch<T: Clone + Send + Sync + 'static>(
        &self,
        name: &str,
        call: impl FnOnce(Arc<dyn Backend>) -> BoxFuture<'static, Result<T>>,
    ) -> (u64, Flight<T>) {
        let id = self.table.next.fetch_add(1, Ordering::Relaxed);
        let (table, owned) = (self.table.clone(), name.to_string());
        let call = principal::scope(principal::current(), call(self.inner.clone()));
        let task = tokio::spawn(async move {
            let result = call.await;
            table.land(&owned, id);
            result
        });
        let flight = async move {
            task.await.unwrap_or_else(|_| Err(Error::backend("internal error while reading from the backend")))
        }
        .boxed()
        .shared();
        (id, flight)
    }

    fn joined(&self, key: &str) {
        crate::store::stats::lock(&self.stats).add(key, 1);
    }

    /// Run a change of the items `names`, grounding their flights before and after.
    async fn change<T>(&self, names: &[&str], call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        names.iter().for_each(|n| self.table.ground(n));
        let result = call.await;
        names.iter().for_each(|n| self.table.ground(n));
        result
    }
}

#[async_trait]
impl Backend for Coalesce {
    async fn create(&self) -> Result<()> {
        self.table.lock().clear();
        self.inner.create().await
    }
    async fn destroy(&self) -> Result<()> {
        self.table.lock().clear();
        let result = self.inner.destroy().await;
        self.table.lock().clear();
        result
    }
    async fn open(&self) -> Result<()> {
        self.inner.open().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    async fn mkdir(&self, name: &str) -> Result<()> {
        self.inner.mkdir(name).await
    }
    async fn rmdir(&self, name: &str) -> Result<()> {
        self.inner.rmdir(name).await
    }
    async fn info(&self, name: &str) -> Result<ItemInfo> {
        let (flight, joined) = {
            let mut items = self.table.lock();
            let flights = items.entry(name.to_string()).or_default();
            match &flights.info {
                Some((_, f)) => (f.clone(), true),
                None => {
                    let owned = name.to_string();
                    let (id, f) = self.launch(name, move |b| async move { b.info(&owned).await }.boxed());
                    flights.info = Some((id, f.clone()));
                    (f, false)
                }
            }
        };
        if joined {
            self.joined("coalesced_info_calls");
        }
        flight.await
    }
    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        let (flight, joined) = {
            let mut items = self.table.lock();
            let flights = items.entry(name.to_string()).or_default();
            match flights.loads.iter().find(|l| l.0 == offset && l.1 == size) {
                Some(l) => (l.3.clone(), true),
                None => {
                    let owned = name.to_string();
                    let (id, f) = self.launch(name, move |b| async move { b.load(&owned, offset, size).await }.boxed());
                    flights.loads.push((offset, size, id, f.clone()));
                    (f, false)
                }
            }
        };
        if joined {
            self.joined("coalesced_load_calls");
        }
        flight.await
    }
    async fn load_value(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Value> {
        self.load(name, offset, size).await.map(Value::Bytes)
    }
    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        self.change(&[name], self.inner.store(name, value)).await
    }
    async fn store_body(&self, name: &str, body: Body) -> Result<()> {
        self.change(&[name], self.inner.store_body(name, body)).await
    }
    fn streams_uploads(&self) -> bool {
        self.inner.streams_uploads()
    }
    fn admits_conditionally(&self) -> bool {
        self.inner.admits_conditionally()
    }
    async fn delete(&self, name: &str) -> Result<()> {
        self.change(&[name], self.inner.delete(name)).await
    }
    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.change(&[current, new], self.inner.move_(current, new)).await
    }
    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        self.inner.list(name).await
    }
    fn precreate_dirs(&self) -> bool {
        self.inner.precreate_dirs()
    }
    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        self.inner.hash(name, algorithm).await
    }
    async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        self.inner.gather(sources).await
    }
    async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        // A hashed target's name is only known afterwards: ground everything.
        let named = match target {
            DefragTarget::Name(n) => Some(n.as_str()),
            DefragTarget::Hashed { .. } => None,
        };
        match named {
            Some(n) => self.change(&[n], self.inner.defrag(sources, target)).await,
            None => {
                self.table.lock().clear();
                let result = self.inner.defrag(sources, target).await;
                self.table.lock().clear();
                result
            }
        }
    }
    async fn quota(&self) -> Result<Quota> {
        self.inner.quota().await
    }
    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }
    fn gauges(&self) -> Vec<(&'static str, u64)> {
        self.inner.gauges()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::posixfs::{PosixFs, PosixFsOptions};
    use crate::flow::primary::Primary;
    use crate::store::Emulator;
    use std::time::Duration;

    async fn slow_store(dir: &std::path::Path) -> (Arc<Coalesce>, SharedStats) {
        slow_store_with(dir, Emulator { latency: Duration::from_millis(50), bandwidth: 0.0 }).await
    }

    async fn slow_store_with(dir: &std::path::Path, slow: Emulator) -> (Arc<Coalesce>, SharedStats) {
        let stats = SharedStats::default();
        let fs = Arc::new(PosixFs::new(dir.join("s"), PosixFsOptions::default()).unwrap());
        fs.create().await.unwrap();
        fs.open().await.unwrap();
        let primary = Arc::new(Primary::new(fs, slow, stats.clone(), None));
        (Arc::new(Coalesce::new(primary, stats.clone())), stats)
    }

    #[tokio::test]
    async fn concurrent_loads_make_one_backend_call() {
        let dir = tempfile::tempdir().unwrap();
        let (c, stats) = slow_store(dir.path()).await;
        c.store("x", Bytes::from_static(b"value")).await.unwrap();
        let loads = (0..32).map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.load("x", 0, None).await.unwrap() })
        });
        for v in futures::future::join_all(loads).await {
            assert_eq!(v.unwrap(), "value");
        }
        let st = crate::store::stats::lock(&stats).clone();
        assert_eq!(st.get("backend_load_calls"), 1);
        assert_eq!(st.get("coalesced_load_calls"), 31);
        assert!(c.table.lock().is_empty(), "landed flights leave the table");
        // Other ranges are other calls.
        assert_eq!(c.load("x", 1, Some(2)).await.unwrap(), "al");
        assert_eq!(crate::store::stats::lock(&stats).get("backend_load_calls"), 2);
    }

    #[tokio::test]
    async fn a_load_after_a_completed_store_never_joins_an_older_flight() {
        let dir = tempfile::tempdir().unwrap();
        // 100 kB/s: the 10 kB old value takes 100 ms to load, the new one no time.
        let (c, _) = slow_store_with(dir.path(), Emulator { latency: Duration::ZERO, bandwidth: 100_000.0 }).await;
        c.store("x", Bytes::from(vec![b'o'; 10_000])).await.unwrap();
        let early = tokio::spawn({
            let c = c.clone();
            async move { c.load("x", 0, None).await.unwrap() }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        // The store completes while the early load is still in flight.
        c.store("x", Bytes::from_static(b"new")).await.unwrap();
        let late = c.load("x", 0, None).await.unwrap();
        assert_eq!(late, "new", "a load that started after the store completed sees it");
        let early = early.await.unwrap();
        assert!(early.len() == 10_000 || early == "new");
    }
}
