//! A served store: the engine plus whether the daemon has it open, and the transitions
//! between the two (create, destroy, open on demand, close at shutdown).
//!
//! The daemon keeps each store open while it serves it: a client's `open` and `close`
//! only check that the store exists; `create` creates and opens it, `destroy` closes
//! and removes it. A store that did not exist at start is opened by the first
//! operation after something created it. Commands ([`crate::commands`]) run against a
//! [`Served`]; the lock on the open flag orders the transitions among themselves.

use crate::store::Store;
use borgstore_ipc::Result;
use tokio::sync::Mutex;

/// One store as the daemon serves it.
pub struct Served {
    store: Store,
    /// Whether the daemon has the store open.
    opened: Mutex<bool>,
}

impl Served {
    /// `store`, already opened by the caller when `opened`.
    pub fn new(store: Store, opened: bool) -> Self {
        Served { store, opened: Mutex::new(opened) }
    }

    /// The engine, opened first if it is not open yet (it may have been created since).
    pub async fn open(&self) -> Result<&Store> {
        let mut opened = self.opened.lock().await;
        if !*opened {
            self.store.open().await?;
            *opened = true;
        }
        Ok(&self.store)
    }

    /// The engine as it is, open or not (stats, the cache timer).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the store is open now.
    pub async fn is_open(&self) -> bool {
        *self.opened.lock().await
    }

    /// Create the store. As in Python borgstore, creating over an existing but empty
    /// store is fine; the backend refuses a non-empty one. The store is closed for the
    /// create and reopened whatever the outcome.
    pub async fn create(&self) -> Result<()> {
        let mut opened = self.opened.lock().await;
        if *opened {
            self.store.close().await?;
            *opened = false;
        }
        let created = self.store.create().await;
        match self.store.open().await {
            Ok(()) => *opened = true,
            Err(e) if created.is_ok() => return Err(e),
            Err(_) => {}
        }
        created
    }

    /// Close and remove the store.
    pub async fn destroy(&self) -> Result<()> {
        let mut opened = self.opened.lock().await;
        if *opened {
            self.store.close().await?;
            *opened = false;
        }
        self.store.destroy().await
    }

    /// Close the store (persisting what the backend keeps, e.g. quota) if it is open.
    pub async fn close(&self, name: &str) -> Result<()> {
        let mut opened = self.opened.lock().await;
        if *opened {
            self.store.close().await?;
            *opened = false;
            tracing::info!(store = name, "store closed");
        }
        Ok(())
    }

    /// Give the store `cache` (None: no cache), opening it when the store is open.
    pub async fn set_cache(&self, cache: Option<crate::store::cache::Cache>) {
        let opened = self.opened.lock().await;
        self.store.set_cache(cache, *opened).await;
    }

    /// Sweep expired cache items, when the store is open.
    pub async fn cache_sweep(&self) {
        if *self.opened.lock().await {
            self.store.cache_sweep().await;
        }
    }
}
