//! The layer right above the primary backend: each call waits for its share of the
//! store's budget ([`super::fair`]), then runs, is counted in the `backend_*` stats, and
//! is slowed down by the latency/bandwidth emulator ([`crate::store::Emulator`]).
//!
//! Being the lowest layer, it sees exactly the calls that reach the primary: a load
//! that [`super::coalesce`] answered from another caller's call is not counted here,
//! and the emulated latency of a call holds its place in the budget, as a slow remote
//! would.

use super::fair::{Direction, Fair, Permit};
use super::principal;
use crate::backends::body::Body;
use crate::backends::value::Value;
use crate::backends::{Backend, DefragTarget};
use crate::hashing::HashAlgorithm;
use crate::store::stats::SharedStats;
use crate::store::Emulator;
use async_trait::async_trait;
use borgstore_ipc::{ItemInfo, Quota, Result, Source};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// The primary, metered.
pub struct Primary {
    inner: Arc<dyn Backend>,
    emulator: Emulator,
    stats: SharedStats,
    fair: Option<Arc<Fair>>,
}

impl Primary {
    /// `inner` counted into `stats`, emulated by `emulator`, and when `fair` is given,
    /// held to its budget.
    pub fn new(inner: Arc<dyn Backend>, emulator: Emulator, stats: SharedStats, fair: Option<Arc<Fair>>) -> Self {
        Primary { inner, emulator, stats, fair }
    }

    /// Run one call: `key` names its `backend_<key>_calls/_volume` counters (None: not
    /// counted), `volume` says how many bytes it moved.
    async fn pass<T>(
        &self,
        key: Option<&str>,
        direction: Direction,
        volume: impl Fn(&T) -> u64,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let permit = self.place(direction).await;
        let start = Instant::now();
        let result = call.await?;
        let moved = volume(&result);
        if let Some(key) = key {
            let mut st = crate::store::stats::lock(&self.stats);
            st.add(&format!("backend_{key}_calls"), 1);
            st.add(&format!("backend_{key}_volume"), moved);
        }
        if let (Some(p), Direction::Out) = (&permit, direction) {
            p.charge_out(moved);
        }
        self.emulator.delay(start.elapsed(), moved).await;
        Ok(result)
    }

    async fn place(&self, direction: Direction) -> Option<Permit> {
        let fair = self.fair.as_ref()?;
        let permit = fair.acquire(principal::current(), direction).await;
        let mut st = crate::store::stats::lock(&self.stats);
        st.add("backend_queue_calls", 1);
        st.add("backend_queue_time", permit.waited.as_nanos().min(u64::MAX as u128) as u64);
        Some(permit)
    }
}

fn nothing<T>(_: &T) -> u64 {
    0
}

#[async_trait]
impl Backend for Primary {
    async fn create(&self) -> Result<()> {
        self.inner.create().await
    }
    async fn destroy(&self) -> Result<()> {
        self.inner.destroy().await
    }
    async fn open(&self) -> Result<()> {
        self.inner.open().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
    async fn mkdir(&self, name: &str) -> Result<()> {
        self.pass(None, Direction::Neither, nothing, self.inner.mkdir(name)).await
    }
    async fn rmdir(&self, name: &str) -> Result<()> {
        self.pass(None, Direction::Neither, nothing, self.inner.rmdir(name)).await
    }
    async fn info(&self, name: &str) -> Result<ItemInfo> {
        self.pass(None, Direction::Neither, nothing, self.inner.info(name)).await
    }
    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        let len = |v: &Bytes| v.len() as u64;
        self.pass(Some("load"), Direction::Out, len, self.inner.load(name, offset, size)).await
    }
    async fn load_value(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Value> {
        self.pass(Some("load"), Direction::Out, Value::len, self.inner.load_value(name, offset, size)).await
    }
    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        let len = value.len() as u64;
        self.pass(Some("store"), Direction::In(len), |_| len, self.inner.store(name, value)).await
    }
    async fn store_body(&self, name: &str, body: Body) -> Result<()> {
        let len = body.len();
        self.pass(Some("store"), Direction::In(len), |_| len, self.inner.store_body(name, body)).await
    }
    fn streams_uploads(&self) -> bool {
        self.inner.streams_uploads()
    }
    fn admits_conditionally(&self) -> bool {
        self.inner.admits_conditionally()
    }
    async fn delete(&self, name: &str) -> Result<()> {
        self.pass(Some("delete"), Direction::Neither, nothing, self.inner.delete(name)).await
    }
    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.pass(None, Direction::Neither, nothing, self.inner.move_(current, new)).await
    }
    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        self.pass(None, Direction::Neither, nothing, self.inner.list(name)).await
    }
    fn precreate_dirs(&self) -> bool {
        self.inner.precreate_dirs()
    }
    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        self.pass(None, Direction::Neither, nothing, self.inner.hash(name, algorithm)).await
    }
    async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        let len = |v: &Bytes| v.len() as u64;
        self.pass(Some("gather"), Direction::Out, len, self.inner.gather(sources)).await
    }
    async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        self.pass(None, Direction::Neither, nothing, self.inner.defrag(sources, target)).await
    }
    async fn quota(&self) -> Result<Quota> {
        self.inner.quota().await
    }
    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }
    fn gauges(&self) -> Vec<(&'static str, u64)> {
        let mut gauges = self.inner.gauges();
        if let Some(fair) = &self.fair {
            // The budget: calls on the primary now, and calls queued for it.
            let (in_flight, waiting) = fair.load();
            gauges.push(("backend_in_flight", in_flight as u64));
            gauges.push(("backend_waiting", waiting as u64));
        }
        gauges
    }
}
