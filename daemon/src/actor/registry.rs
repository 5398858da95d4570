//! The registry: store names -> running store actors, who may use them (their
//! [`Grants`]), and the daemon-wide budget of request bytes in memory.
//!
//! Built once from the [`DaemonConfig`]; every store gets its own actor. The actors of
//! `file:` stores live on one arbiter, the store thread, where borgstored also runs its
//! IPC server ([`Registry::spawn_on_store_thread`]): a request read from a socket,
//! ordered by its store's actor and answered on that socket never changes threads
//! except for the file system call, which goes to the blocking pool, so nothing blocks
//! the thread. A remote store (sftp, s3, rclone, REST) gets an arbiter of its own: its
//! network I/O, TLS and the tasks of its client library run there, so a busy or slow
//! remote never takes time from other stores, and the extra thread hop is small next to
//! a network round trip.
//!
//! Stores marked `create` (the implicit default store) are created on start
//! when missing; other stores that do not exist yet are served anyway and answer
//! BackendDoesNotExist until a client creates them.

use super::handle::StoreHandle;
use super::served::Served;
use super::store_actor::StoreActor;
use crate::access::{Caller, Door, Grants, Principal, Refusal};
use crate::backends::posixfs::PosixFsOptions;
use crate::backends::url::{backend_from_url, BackendOptions};
use crate::commands::lifecycle::Shutdown;
use crate::config::{DaemonConfig, StoreSettings};
use crate::limits::Budget;
use crate::store::Store;
use actix::prelude::*;
use borgstore_ipc::{Error, ErrorKind, Result};
use std::collections::BTreeMap;

/// One served store.
pub struct StoreEntry {
    /// The store's name, as clients address it.
    pub name: String,
    /// Its configuration, as the daemon started it.
    pub settings: StoreSettings,
    /// Who may use it, through which door, with which profile (replaced on a reload).
    grants: arc_swap::ArcSwap<Grants>,
    /// The store as its actor serves it (for reloads: its quarantine).
    served: std::sync::Arc<Served>,
    /// Its backend writes large uploads as they arrive (see [`crate::backends::body`]).
    pub streams_uploads: bool,
    /// Its backend may refuse a value depending on the item (permissions, quota).
    pub admits_conditionally: bool,
    handle: StoreHandle,
    /// A remote store's own arbiter (None: it lives on the store thread).
    own_thread: Option<ArbiterHandle>,
}

impl StoreEntry {
    /// The one access decision (see [`crate::access`]).
    pub fn decide(&self, caller: &Caller<'_>) -> std::result::Result<Principal, Refusal> {
        self.grants.load().decide(caller)
    }

    /// Who may use it now.
    pub fn grants(&self) -> std::sync::Arc<Grants> {
        self.grants.load_full()
    }

    /// The URL scheme (what clients may see of the URL; the path stays private).
    pub fn scheme(&self) -> &str {
        self.settings.url.split(':').next().unwrap_or("")
    }

    /// The store's counters per principal (rule label -> counters).
    pub async fn principal_stats(
        &self,
    ) -> std::collections::BTreeMap<String, crate::policy::principals::PrincipalStats> {
        self.handle.run(crate::commands::lifecycle::GetPrincipalStats).await.unwrap_or_default()
    }

    /// The typed way to the store's actor.
    pub fn handle(&self) -> &StoreHandle {
        &self.handle
    }
}

/// All served stores.
pub struct Registry {
    stores: BTreeMap<String, StoreEntry>,
    budget: Budget,
    /// The store thread: every store's actor (and borgstored's IPC server) runs here.
    arbiter: ArbiterHandle,
}

impl Registry {
    /// Build backends and engines for every configured store and start their actors.
    /// Must run inside an actix system.
    pub async fn start(config: &DaemonConfig) -> Result<Registry> {
        let mut stores = BTreeMap::new();
        let arbiter = Arbiter::new().handle();
        for (name, settings) in &config.stores {
            let entry = Self::start_store(name, settings, &config.state_dir, &arbiter)
                .await
                .map_err(|e| Error::new(e.kind, format!("store {name}: {}", e.message)))?;
            stores.insert(name.clone(), entry);
        }
        Ok(Registry { stores, budget: Budget::new(config.max_in_flight), arbiter })
    }

    /// The daemon-wide budget of request bytes in memory.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The stores a caller may use through a door.
    pub fn granted<'a>(&'a self, caller: &'a Caller<'a>) -> impl Iterator<Item = &'a StoreEntry> + 'a {
        self.stores.values().filter(move |e| e.decide(caller).is_ok())
    }

    /// One line per store served through `door`, saying who may use it, for the startup log.
    pub fn describe(&self, door: Door) -> Vec<String> {
        self.stores
            .values()
            .filter(|e| e.grants().serve_on.contains(&door))
            .map(|e| format!("{} ({})", e.name, e.grants().describe(door)))
            .collect()
    }

    /// Run `task` on the store thread (see the module doc); false when it has stopped.
    pub fn spawn_on_store_thread(&self, task: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        self.arbiter.spawn(task)
    }

    async fn start_store(
        name: &str,
        settings: &StoreSettings,
        state_dir: &std::path::Path,
        arbiter: &ArbiterHandle,
    ) -> Result<StoreEntry> {
        let options = BackendOptions {
            posixfs: PosixFsOptions {
                permissions: settings.backend_permissions()?,
                quota: settings.quota,
                fsync: settings.fsync,
                off_thread: true,
            },
            fsync: settings.fsync,
            connections: settings.connections,
            parts: settings.parts(),
            upload_journal: Some(upload_journal(name, state_dir)),
        };
        let backend = backend_from_url(&settings.url, options)?;
        let streams_uploads = backend.streams_uploads();
        let admits_conditionally = backend.admits_conditionally();
        let cache = match &settings.cache_url {
            Some(url) if !settings.cache.is_empty() => {
                let cache_backend = backend_from_url(url, BackendOptions::daemon())
                    .map_err(|e| Error::new(e.kind, format!("cache_url: {}", e.message)))?;
                let policies = settings.cache.iter().map(|(ns, p)| (ns.clone(), *p)).collect();
                Some(crate::store::cache::Cache::new(cache_backend, policies))
            }
            _ => None,
        };
        let store =
            Store::build_with_flow(backend, settings.namespaces()?, settings.emulator()?, cache, &settings.flow());
        store.set_shared(settings.shared_primary());
        if settings.shared_primary() && !settings.write_behind.is_empty() {
            tracing::warn!(
                "store {name}: its primary is shared with other hosts, which do not see the write-behind \
                 namespaces' items until they are uploaded (see README, Many daemons, one store)"
            );
        }
        let opened = match store.open().await {
            Ok(()) => true,
            Err(e) if e.kind == ErrorKind::BackendDoesNotExist && settings.create => {
                store.create().await?;
                store.open().await?;
                tracing::info!(store = name, "created store");
                true
            }
            Err(e) if e.kind == ErrorKind::BackendDoesNotExist => {
                tracing::warn!(store = name, "store does not exist yet; clients may create it");
                false
            }
            // A primary that cannot be reached now (a server down, the network out)
            // must not keep the daemon from serving its other stores: this one opens
            // on its first use, and its clients get the error until then.
            Err(e) if e.kind == ErrorKind::ConnectionLost => {
                tracing::warn!(store = name, "primary not reachable, the store opens on first use: {}", e.message);
                false
            }
            Err(e) => return Err(e),
        };
        let own_thread = (!settings.url.starts_with("file:")).then(|| Arbiter::new().handle());
        let thread = own_thread.as_ref().unwrap_or(arbiter);
        let served = std::sync::Arc::new(Served::new(store, opened));
        served.set_quarantine(quarantine_of(name, settings, state_dir));
        served.set_audit(name, audit_of(settings, None)?);
        let for_actor = served.clone();
        let addr = StoreActor::start_in_arbiter(thread, move |_| StoreActor::new(for_actor));
        Ok(StoreEntry {
            name: name.to_string(),
            settings: settings.clone(),
            grants: arc_swap::ArcSwap::from_pointee(settings.grants(name)?),
            served,
            streams_uploads,
            admits_conditionally,
            handle: StoreHandle::new(name, addr),
            own_thread,
        })
    }

    /// Apply a new configuration to the running stores without dropping a connection:
    /// each store keeps its backend and actor and gets the new rules, credentials,
    /// doors and quarantine. What a reload cannot change (a store added, removed or
    /// moved to another URL, the listeners) is returned as notes for the log; the old
    /// setting stays. Nothing changes when the new configuration has an error.
    pub fn reload(&self, config: &DaemonConfig) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        let mut next = Vec::new();
        for (name, settings) in &config.stores {
            let Some(entry) = self.stores.get(name) else {
                notes.push(format!("store {name} is new: it is served after a restart"));
                continue;
            };
            if settings.url != entry.settings.url {
                notes.push(format!("store {name} has a new URL: it takes effect after a restart"));
                continue;
            }
            if settings.backend_permissions()? != entry.settings.backend_permissions()?
                || settings.quota != entry.settings.quota
            {
                notes.push(format!("store {name}: its backend's own permissions or quota change only with a restart"));
            }
            if settings.flow() != entry.settings.flow()
                || settings.connections != entry.settings.connections
                || settings.parts() != entry.settings.parts()
            {
                notes.push(format!(
                    "store {name}: max_concurrency, bandwidth_in/out, coalesce_reads, connections, write_behind, \
                     part_size, part_concurrency and abandoned_upload_age change only with a restart"
                ));
            }

            let audit = audit_of(settings, entry.served.audit_log())?;
            next.push((entry, settings.grants(name)?, quarantine_of(name, settings, &config.state_dir), audit));
        }
        for name in self.stores.keys().filter(|n| !config.stores.contains_key(*n)) {
            notes.push(format!("store {name} is gone from the configuration: it is served until a restart"));
        }
        for (entry, grants, quarantine, audit) in next {
            entry.grants.store(std::sync::Arc::new(grants));
            entry.served.set_quarantine(quarantine);
            entry.served.set_audit(&entry.name, audit);
            if let Some(settings) = config.stores.get(&entry.name) {
                entry.served.store().set_shared(settings.shared_primary());
            }
        }
        Ok(notes)
    }

    /// The store named `name`; None when no such store is served (whoever asks).
    pub fn get(&self, name: &str) -> Option<&StoreEntry> {
        self.stores.get(name)
    }

    /// Store names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// Every served store, in name order, whoever may use it.
    pub fn entries(&self) -> impl Iterator<Item = &StoreEntry> {
        self.stores.values()
    }

    /// Let every store finish what it has and close it (persisting quota), then stop its
    /// thread and the store thread.
    pub async fn shutdown(&self) -> Vec<(String, Result<()>)> {
        let mut results = Vec::new();
        for entry in self.stores.values() {
            let result = entry.handle.run(Shutdown { store: entry.name.clone() }).await;
            // Everything the store did is in its audit log, on disk, before the exit.
            if let Some(Err(e)) = entry.served.audit_log().map(|l| l.flush()) {
                tracing::error!(store = %entry.name, "flushing the audit log failed: {e}");
            }
            if let Some(thread) = &entry.own_thread {
                thread.stop();
            }
            results.push((entry.name.clone(), result));
        }
        self.arbiter.stop();
        results
    }
}

/// Where store `name`'s S3 backend journals its multipart uploads in flight (only `s3:`
/// and `b2:` stores write there).
fn upload_journal(name: &str, state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("s3-uploads").join(name)
}

/// The delete quarantine a store's settings ask for, its ledger in the state directory.
fn quarantine_of(
    name: &str,
    settings: &StoreSettings,
    state_dir: &std::path::Path,
) -> Option<std::sync::Arc<crate::policy::quarantine::Quarantine>> {
    let days = settings.quarantine_days?;
    let ledger = state_dir.join("quarantine").join(format!("{name}.jsonl"));
    Some(std::sync::Arc::new(crate::policy::quarantine::Quarantine::new(days, ledger)))
}

/// The audit log a store's settings ask for: `current` when it is that file already,
/// else the file opened (its directory made when missing).
fn audit_of(
    settings: &StoreSettings,
    current: Option<std::sync::Arc<crate::audit::AuditLog>>,
) -> Result<Option<std::sync::Arc<crate::audit::AuditLog>>> {
    let Some(path) = &settings.audit else {
        return Ok(None);
    };
    if let Some(log) = current.filter(|l| l.path() == path.as_path()) {
        return Ok(Some(log));
    }
    let mut options = crate::audit::AuditOptions::default();
    if let Some(max) = settings.audit_max_bytes {
        options.max_bytes = max;
    }
    crate::audit::AuditLog::open(path, options)
        .map(|l| Some(std::sync::Arc::new(l)))
        .map_err(|e| Error::invalid(format!("audit log {}: {e}", path.display())))
}
