//! Write-behind: a [`Backend`] over the primary that acknowledges a store of a name in a
//! write-behind namespace once the value is durable in that namespace's local spool
//! ([`spool`]), and uploads it in the background ([`uploader`]).
//!
//! What each call does for a name in a write-behind namespace (other names go straight
//! to the primary):
//!
//! - `store`, `store_body`: wait for room in the spool (its bound), write the entry
//!   (temp file, fsync, rename, fsync of the directory), acknowledge. The upload follows
//!   in the background, retried until it succeeds; a newer store of the name replaces
//!   an entry not uploaded yet, and uploads of one name never overlap, so an older value
//!   never lands after a newer one.
//! - `load`, `load_value`, `info`, `hash`, `gather`: a spooled name is answered from the
//!   spool, without the primary.
//! - `list`: the primary's listing merged with the spooled items of the directory and
//!   the directories that exist only because of spooled items below them (nesting
//!   directories), sorted, each name once; a directory the primary lacks lists as empty
//!   when the spool has items below it.
//! - `delete`, `move_`: wait until the names they touch have nothing pending, then go to
//!   the primary (a pending upload landing after them would undo them). `rmdir` waits
//!   for everything below the directory. `defrag` that touches a write-behind namespace
//!   is built here from the spool-aware gather and stored through the spool.
//! - `sync`: the barrier; returns once everything acknowledged before it is on the
//!   primary.
//! - `open` replays the spools and starts the uploads; `close` stops them without
//!   waiting (the spool is durable: the next open goes on); `destroy` and `create` drop
//!   the spools.

pub mod spool;
pub mod uploader;

use crate::backends::body::Body;
use crate::backends::value::Value;
use crate::backends::{defrag_target_name, Backend, DefragTarget};
use crate::hashing::HashAlgorithm;
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source};
use bytes::Bytes;
use spool::{Spool, SpoolStats, Writer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Default bound of a spool: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The spool of one namespace, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The namespace (`data/`; `""` for the root).
    pub namespace: String,
    /// The spool directory (absolute).
    pub dir: PathBuf,
    /// Writers wait while the spool would hold more value bytes than this.
    pub max_bytes: u64,
}

/// The write-behind layer.
pub struct WriteBehind {
    primary: Arc<dyn Backend>,
    /// Every namespace prefix of the store, longest first, with its spool if it has one.
    namespaces: Vec<(String, Option<Arc<Spool>>)>,
    spools: Vec<Arc<Spool>>,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn prefix_of(ns: &str) -> String {
    let ns = ns.trim_end_matches('/');
    if ns.is_empty() {
        String::new()
    } else {
        format!("{ns}/")
    }
}

fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::new(ErrorKind::Backend, format!("write-behind: {e}")))?
}

impl WriteBehind {
    /// The layer over `primary` for a store whose namespaces are `namespaces` (all of
    /// them, for the longest-prefix match), with `spools` for those that write behind.
    pub fn new<'a>(
        primary: Arc<dyn Backend>,
        namespaces: impl IntoIterator<Item = &'a str>,
        spools: &[SpoolConfig],
    ) -> WriteBehind {
        let spools: Vec<Arc<Spool>> =
            spools.iter().map(|s| Arc::new(Spool::new(&prefix_of(&s.namespace), s.dir.clone(), s.max_bytes))).collect();
        let mut all: Vec<String> = namespaces.into_iter().map(prefix_of).collect();
        all.extend(spools.iter().map(|s| s.prefix.clone()));
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        let namespaces = all.into_iter().map(|p| (p.clone(), spools.iter().find(|s| s.prefix == p).cloned())).collect();
        WriteBehind { primary, namespaces, spools, workers: Mutex::default() }
    }

    /// The spool of the namespace `name` belongs to, when it writes behind.
    fn spool_for(&self, name: &str) -> Option<&Arc<Spool>> {
        self.namespaces.iter().find(|(p, _)| name.starts_with(p.as_str())).and_then(|(_, s)| s.as_ref())
    }

    /// The counters of all spools together.
    pub fn stats(&self) -> SpoolStats {
        self.spools.iter().map(|s| s.stats()).fold(SpoolStats::default(), |a, b| SpoolStats {
            pending_items: a.pending_items + b.pending_items,
            pending_bytes: a.pending_bytes + b.pending_bytes,
            uploads: a.uploads + b.uploads,
        })
    }

    fn stop_workers(&self) {
        for w in std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner())) {
            w.abort();
        }
        for s in &self.spools {
            s.close();
        }
    }

    /// Store through the spool: wait for room, write durably, acknowledge.
    async fn spool_store(&self, spool: &Arc<Spool>, name: &str, body: Body) -> Result<()> {
        crate::names::validate_item_name(name)?;
        let len = body.len();
        let seq = spool.reserve(len).await?;
        match write_entry(spool.dir().to_path_buf(), seq, name, body).await {
            Ok(()) => {
                if let Some(old) = spool.acknowledge(name, seq, len) {
                    let _ = blocking(move || Ok(std::fs::remove_file(old))).await;
                }
                Ok(())
            }
            Err(e) => {
                spool.unreserve(len);
                Err(e)
            }
        }
    }

    /// `offset`/`size` of `name` from its spool, or None when it is not spooled (or was
    /// uploaded while we looked).
    async fn spool_load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Option<Bytes>> {
        let Some((entry, path)) = self.spool_for(name).and_then(|s| s.lookup(name)) else { return Ok(None) };
        let (start, len) = spool::range(entry.size, offset, size);
        let owned = name.to_string();
        blocking(move || match spool::read_range(&path, &owned, start, len) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::new(ErrorKind::Backend, format!("write-behind spool: read: {}", e.kind()))),
        })
        .await
    }

    async fn wait_names(&self, names: &[&str]) {
        for n in names {
            if let Some(s) = self.spool_for(n) {
                s.wait_name(n).await;
            }
        }
    }

    fn spooled(&self, name: &str) -> bool {
        self.spool_for(name).is_some_and(|s| s.lookup(name).is_some())
    }
}

async fn write_entry(dir: PathBuf, seq: u64, name: &str, body: Body) -> Result<()> {
    let len = body.len();
    let owned = name.to_string();
    let mut w = blocking(move || Writer::create(&dir, seq, &owned, len)).await?;
    match body {
        Body::Full(b) => {
            w = blocking(move || w.write(&b).map(|_| w)).await?;
        }
        Body::Stream(mut s) => {
            while let Some(piece) = s.next().await {
                let piece = piece?;
                w = blocking(move || w.write(&piece).map(|_| w)).await?;
            }
        }
    }
    blocking(move || w.commit()).await
}

#[async_trait]
impl Backend for WriteBehind {
    async fn create(&self) -> Result<()> {
        self.primary.create().await?;
        // A new store: nothing of an old one may be uploaded into it.
        for s in &self.spools {
            s.clear().await?;
        }
        Ok(())
    }

    async fn destroy(&self) -> Result<()> {
        self.stop_workers();
        for s in &self.spools {
            s.clear().await?;
        }
        self.primary.destroy().await
    }

    async fn open(&self) -> Result<()> {
        self.primary.open().await?;
        for s in &self.spools {
            if let Err(e) = s.open().await {
                self.stop_workers();
                let _ = self.primary.close().await;
                return Err(e);
            }
        }
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        for s in &self.spools {
            workers.extend(uploader::start(s, &self.primary));
        }
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        // Not waiting for uploads: the spool is durable, the next open goes on.
        let pending = self.stats();
        if pending.pending_items > 0 {
            tracing::info!(
                items = pending.pending_items,
                bytes = pending.pending_bytes,
                "write-behind: closing with uploads pending; they continue at the next open"
            );
        }
        self.stop_workers();
        self.primary.close().await
    }

    async fn mkdir(&self, name: &str) -> Result<()> {
        self.primary.mkdir(name).await
    }

    async fn rmdir(&self, name: &str) -> Result<()> {
        for s in &self.spools {
            s.wait_below(name).await;
        }
        self.primary.rmdir(name).await
    }

    async fn info(&self, name: &str) -> Result<ItemInfo> {
        if let Some((e, _)) = self.spool_for(name).and_then(|s| s.lookup(name)) {
            return Ok(ItemInfo {
                name: leaf(name).to_string(),
                exists: true,
                size: e.size,
                directory: false,
                atime: e.mtime,
                mtime: e.mtime,
            });
        }
        let info = self.primary.info(name).await?;
        if !info.exists && self.spools.iter().any(|s| s.has_below(name)) {
            return Ok(ItemInfo {
                name: leaf(name).to_string(),
                exists: true,
                size: 0,
                directory: true,
                atime: 0.0,
                mtime: 0.0,
            });
        }
        Ok(info)
    }

    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        match self.spool_load(name, offset, size).await? {
            Some(b) => Ok(b),
            None => self.primary.load(name, offset, size).await,
        }
    }

    async fn load_value(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Value> {
        match self.spool_load(name, offset, size).await? {
            Some(b) => Ok(Value::Bytes(b)),
            None => self.primary.load_value(name, offset, size).await,
        }
    }

    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        match self.spool_for(name).filter(|s| s.is_open()) {
            Some(s) => self.spool_store(s, name, Body::Full(value)).await,
            None => self.primary.store(name, value).await,
        }
    }

    async fn store_body(&self, name: &str, body: Body) -> Result<()> {
        match self.spool_for(name).filter(|s| s.is_open()) {
            Some(s) => self.spool_store(s, name, body).await,
            None => self.primary.store_body(name, body).await,
        }
    }

    fn streams_uploads(&self) -> bool {
        self.primary.streams_uploads()
    }

    fn admits_conditionally(&self) -> bool {
        self.primary.admits_conditionally()
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.wait_names(&[name]).await;
        self.primary.delete(name).await
    }

    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.wait_names(&[current, new]).await;
        self.primary.move_(current, new).await
    }

    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        let below: Vec<ItemInfo> = self.spools.iter().flat_map(|s| s.children(name)).collect();
        let listed = match self.primary.list(name).await {
            Ok(l) => l,
            Err(e) if e.kind == ErrorKind::ObjectNotFound && !below.is_empty() => Vec::new(),
            Err(e) => return Err(e),
        };
        if below.is_empty() {
            return Ok(listed);
        }
        let mut merged: BTreeMap<String, ItemInfo> = listed.into_iter().map(|i| (i.name.clone(), i)).collect();
        for i in below {
            if !i.directory {
                merged.insert(i.name.clone(), i);
            } else {
                merged.entry(i.name.clone()).or_insert(i);
            }
        }
        Ok(merged.into_values().collect())
    }

    fn precreate_dirs(&self) -> bool {
        self.primary.precreate_dirs()
    }

    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        match self.spool_load(name, 0, None).await? {
            Some(data) => Ok(algorithm.hex_digest(&data)),
            None => self.primary.hash(name, algorithm).await,
        }
    }

    async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        if !sources.iter().any(|s| self.spooled(&s.name)) {
            return self.primary.gather(sources).await;
        }
        let mut out = Vec::new();
        for s in sources {
            if s.size == 0 {
                continue;
            }
            let chunk = self.load(&s.name, s.offset, Some(s.size)).await?;
            crate::backends::check_range(s, chunk.len())?;
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        let target_ns = match target {
            DefragTarget::Name(n) => n.clone(),
            DefragTarget::Hashed { namespace, .. } => prefix_of(namespace),
        };
        if self.spool_for(&target_ns).is_none() && !sources.iter().any(|s| self.spooled(&s.name)) {
            return self.primary.defrag(sources, target).await;
        }
        let data = self.gather(sources).await?;
        let name = defrag_target_name(target, &data)?;
        self.store(&name, data).await?;
        Ok(name)
    }

    async fn quota(&self) -> Result<Quota> {
        self.primary.quota().await
    }

    async fn sync(&self) -> Result<()> {
        for s in &self.spools {
            s.sync().await?;
        }
        self.primary.sync().await
    }

    fn gauges(&self) -> Vec<(&'static str, u64)> {
        let st = self.stats();
        let mut gauges = vec![
            ("write_behind_pending_items", st.pending_items),
            ("write_behind_pending_bytes", st.pending_bytes),
            ("write_behind_uploads", st.uploads),
        ];
        gauges.extend(self.primary.gauges());
        gauges
    }
}

#[cfg(test)]
mod tests;
