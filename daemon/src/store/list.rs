//! Recursive, sorted, streamed listing of a namespace.
//!
//! Backends list one directory level; [`Lister`] walks the nesting directories depth
//! first and yields only items, either the live ones or the soft-deleted ones (with the
//! `.del` suffix removed). It holds one directory listing per depth, never the whole
//! result, so memory stays bounded for any number of items.
//!
//! On a remote store each directory listing is a round trip, and a namespace nested at
//! one level has 256 directories. So the lister lists up to `list_ahead` of the
//! directories it will enter next concurrently (in the caller's name, for the fair
//! budget), while it reads the current one: at most `list_ahead` listings more per
//! depth are held, and they are cancelled when the listing is dropped.

use super::Store;
use crate::names::DEL_SUFFIX;
use borgstore_ipc::{ItemInfo, Result};
use std::collections::HashMap;
use std::time::Instant;
use tokio::task::JoinHandle;

/// A listing in progress; call [`Lister::next`] until it returns `None`.
pub struct Lister {
    store: Store,
    deleted: bool,
    /// Directory to list next time (the start, or a subdirectory just seen).
    pending: Option<String>,
    /// (directory name, its remaining entries) per depth.
    stack: Vec<(String, std::vec::IntoIter<ItemInfo>)>,
    /// Listings started ahead, by directory.
    ahead: HashMap<String, JoinHandle<Result<Vec<ItemInfo>>>>,
}

impl Drop for Lister {
    fn drop(&mut self) {
        for (_, task) in self.ahead.drain() {
            task.abort();
        }
    }
}

/// `dir/name` (`name` alone at the root).
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

impl Lister {
    pub(super) fn new(store: Store, name: &str, deleted: bool) -> Self {
        Lister { store, deleted, pending: Some(name.to_string()), stack: Vec::new(), ahead: HashMap::new() }
    }

    /// List `dir`: the listing started ahead for it, else now.
    async fn list(&mut self, dir: &str) -> Result<Vec<ItemInfo>> {
        match self.ahead.remove(dir) {
            Some(task) => match task.await {
                Ok(result) => result,
                // The task panicked or was cancelled: list it here instead.
                Err(_) => self.store.backend_list(dir).await,
            },
            None => self.store.backend_list(dir).await,
        }
    }

    /// Start listings of the next directories among the remaining entries of the
    /// deepest directory, so that up to `list_ahead` of them are under way.
    fn look_ahead(&mut self) {
        let want = self.store.inner.list_ahead;
        let Some((dir, entries)) = self.stack.last().filter(|_| want > 0) else { return };
        let next_dirs = entries.as_slice().iter().filter(|i| i.directory).take(want).map(|i| join(dir, &i.name));
        let new: Vec<String> = next_dirs.filter(|d| !self.ahead.contains_key(d)).collect();
        for d in new {
            let (store, name) = (self.store.clone(), d.clone());
            let principal = crate::flow::principal::current();
            let task =
                tokio::spawn(crate::flow::principal::scope(principal, async move { store.backend_list(&name).await }));
            self.ahead.insert(d, task);
        }
    }

    /// The next item, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<ItemInfo>> {
        loop {
            if let Some(dir) = self.pending.take() {
                let entries = self.list(&dir).await?;
                self.stack.push((dir, entries.into_iter()));
                self.look_ahead();
            }
            let Some((dir, entries)) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(info) = entries.next() else {
                self.stack.pop();
                continue;
            };
            if info.directory {
                self.pending = Some(join(dir, &info.name));
                self.look_ahead();
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
