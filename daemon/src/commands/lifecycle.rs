//! Commands on the store as a whole: its life (create, destroy, open, close at
//! shutdown), its numbers (stats, quota) and its cache. Those that change what the
//! store is run alone; those that only read counters run free.

use super::Command;
use crate::actor::ordering::Access;
use crate::actor::Served;
use crate::store::cache::Cache;
use borgstore_ipc::{Quota, Result, Stats};

/// Create the store (fails if it exists and is not empty).
pub struct Create;

impl Command for Create {
    type Output = ();
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.create().await
    }
}

/// Remove the store and everything in it.
pub struct Destroy;

impl Command for Destroy {
    type Output = ();
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.destroy().await
    }
}

/// Check that the store exists (a client's `open` and `close`: the daemon keeps served
/// stores open).
pub struct Open;

impl Command for Open {
    type Output = ();
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await.map(|_| ())
    }
}

/// Finish everything that arrived before, then close the store (daemon shutdown).
pub struct Shutdown {
    /// The store's name, for the log.
    pub store: String,
}

impl Command for Shutdown {
    type Output = ();
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.close(&self.store).await
    }
}

/// The store's statistics (counters with Python borgstore's key names).
pub struct GetStats;

impl Command for GetStats {
    type Output = Stats;
    fn access(&self) -> Access {
        Access::Free
    }
    async fn apply(self, served: &Served) -> Result<Stats> {
        Ok(served.store().stats())
    }
}

/// The store's quota (limit 0: none).
pub struct GetQuota;

impl Command for GetQuota {
    type Output = Quota;
    fn access(&self) -> Access {
        Access::Free
    }
    async fn apply(self, served: &Served) -> Result<Quota> {
        served.open().await?.quota().await
    }
}

/// Give the store a cache, or none.
pub struct ConfigureCache {
    /// The new cache (None: no namespace is cached).
    pub cache: Option<Cache>,
}

impl Command for ConfigureCache {
    type Output = ();
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.set_cache(self.cache).await;
        Ok(())
    }
}

/// Drop cached copies: of one item, of a namespace, or (`""`) of everything.
pub struct CacheInvalidate {
    /// The item or namespace.
    pub name: String,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

impl Command for CacheInvalidate {
    type Output = ();
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.cache_invalidate(&self.name, self.deleted).await
    }
}
