//! Recursive, sorted, streamed listing of a namespace.
//!
//! Backends list one directory level; [`Lister`] walks the nesting directories depth
//! first and yields only items, either the live ones or the soft-deleted ones (with the
//! `.del` suffix removed). It holds one directory listing per depth, never the whole
//! result, so memory stays bounded for any number of items.

use super::Store;
use crate::names::DEL_SUFFIX;
use borgstore_ipc::{ItemInfo, Result};
use std::time::Instant;

/// A listing in progress; call [`Lister::next`] until it returns `None`.
pub struct Lister {
    store: Store,
    deleted: bool,
    /// Directory to list next time (the start, or a subdirectory just seen).
    pending: Option<String>,
    /// (directory name, its remaining entries) per depth.
    stack: Vec<(String, std::vec::IntoIter<ItemInfo>)>,
}

impl Lister {
    pub(super) fn new(store: Store, name: &str, deleted: bool) -> Self {
        Lister { store, deleted, pending: Some(name.to_string()), stack: Vec::new() }
    }

    /// The next item, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<ItemInfo>> {
        loop {
            if let Some(dir) = self.pending.take() {
                let entries = self.store.backend_list(&dir).await?;
                self.stack.push((dir, entries.into_iter()));
            }
            let Some((dir, entries)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(info) = entries.next() else {
                self.stack.pop();
                continue;
            };
            if info.directory {
                self.pending = Some(if dir.is_empty() { info.name } else { format!("{dir}/{}", info.name) });
                continue;
            }
            let is_deleted = info.name.ends_with(DEL_SUFFIX);
            if self.deleted && is_deleted {
                let name = info.name.trim_end_matches(DEL_SUFFIX).to_string();
                return Ok(Some(ItemInfo { name, ..info }));
            }
            if !self.deleted && !is_deleted {
                return Ok(Some(info));
            }
        }
    }

    /// Up to `max` further items (empty at the end).
    pub async fn next_chunk(&mut self, max: usize) -> Result<Vec<ItemInfo>> {
        let mut out = Vec::with_capacity(max.min(1024));
        while out.len() < max {
            match self.next().await? {
                Some(i) => out.push(i),
                None => break,
            }
        }
        Ok(out)
    }

    /// Everything that is left.
    pub async fn collect(mut self) -> Result<Vec<ItemInfo>> {
        let mut out = Vec::new();
        while let Some(i) = self.next().await? {
            out.push(i);
        }
        Ok(out)
    }
}

impl Store {
    /// One backend list call, timed into `list_time`.
    async fn backend_list(&self, dir: &str) -> Result<Vec<ItemInfo>> {
        let start = Instant::now();
        let result = self.inner.backend.list(dir).await;
        self.stats_add("list_time", start.elapsed().as_nanos() as u64);
        result
    }
}
