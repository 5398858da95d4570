//! A served store: the engine plus whether the daemon has it open, and the transitions
//! between the two (create, destroy, open on demand, close at shutdown).
//!
//! The daemon keeps each store open while it serves it: a client's `open` and `close`
//! only check that the store exists; `create` creates and opens it, `destroy` closes
//! and removes it. A store that did not exist at start is opened by the first
//! operation after something created it. Commands ([`crate::commands`]) run against a
//! [`Served`]; the lock on the open flag orders the transitions among themselves.

use crate::audit::{AuditLog, AuditRecord};
use crate::policy::principals::Principals;
use crate::policy::quarantine::{Purged, Quarantine};
use crate::store::Store;
use borgstore_ipc::{Error, ErrorKind, Result};
use std::sync::{Arc, RwLock};
use tokio::sync::Mutex;

/// One store as the daemon serves it.
pub struct Served {
    store: Store,
    /// Whether the daemon has the store open.
    opened: Mutex<bool>,
    /// The store's delete quarantine, if it has one (replaced on a config reload).
    quarantine: RwLock<Option<Arc<Quarantine>>>,
    /// Counters per principal.
    principals: Principals,
    /// The store's name and audit log, if it has one (replaced on a config reload).
    audit: RwLock<Option<(String, Arc<AuditLog>)>>,
}

impl Served {
    /// `store`, already opened by the caller when `opened`.
    pub fn new(store: Store, opened: bool) -> Self {
        Served {
            store,
            opened: Mutex::new(opened),
            quarantine: RwLock::new(None),
            principals: Principals::default(),
            audit: RwLock::new(None),
        }
    }

    /// Give the store a delete quarantine, or none.
    pub fn set_quarantine(&self, quarantine: Option<Arc<Quarantine>>) {
        *self.quarantine.write().unwrap_or_else(|p| p.into_inner()) = quarantine;
    }

    /// The store's delete quarantine.
    pub fn quarantine_of(&self) -> Option<Arc<Quarantine>> {
        self.quarantine.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Run a quarantined delete: `f` gets the quarantine and the open engine. Without a
    /// quarantine (it was configured away since the door decided) the delete is refused.
    pub async fn quarantine<F, Fut>(&self, f: F) -> Result<()>
    where
        F: FnOnce(Arc<Quarantine>, Store) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let Some(q) = self.quarantine_of() else {
            return Err(Error::new(ErrorKind::PermissionDenied, "deleting needs permission 'D' here"));
        };
        let store = self.open().await?.clone();
        f(q, store).await
    }

    /// Purge quarantined items whose window has passed (nothing without a quarantine).
    pub async fn purge(&self) -> Result<Purged> {
        match self.quarantine_of() {
            Some(q) => q.purge(self.open().await?, crate::policy::quarantine::now()).await,
            None => Ok(Purged::default()),
        }
    }

    /// Give the store (named `name`) an audit log, or none.
    pub fn set_audit(&self, name: &str, log: Option<Arc<AuditLog>>) {
        *self.audit.write().unwrap_or_else(|p| p.into_inner()) = log.map(|l| (name.to_string(), l));
    }

    /// The store's audit log.
    pub fn audit_log(&self) -> Option<Arc<AuditLog>> {
        self.audit.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, l)| l.clone())
    }

    /// Record a command that changes the store in the store's audit log (if it has one).
    pub fn record(&self, who: &crate::policy::Who, audited: crate::commands::Audited, result: Result<(), &Error>) {
        let Some((store, log)) = self.audit.read().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        let outcome: Result<(), Error> = result.map_err(Clone::clone);
        let mut rec = AuditRecord::new(store, who.principal.clone(), who.door_name(), audited.op)
            .with_names(audited.names)
            .with_outcome(&outcome);
        if let Some(size) = audited.size {
            rec = rec.with_size(size);
        }
        log.record(rec);
    }

    /// The counters per principal.
    pub fn principals(&self) -> &Principals {
        &self.principals
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
