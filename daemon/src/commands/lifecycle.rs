//! Commands on the store as a whole: its life (create, destroy, open, close at
//! shutdown), its numbers (stats, quota) and its cache. Those that change what the
//! store is run alone; those that only read counters run free.

use super::Audited;
use crate::actor::ordering::Access;
use crate::policy::Need;
use crate::store::cache::Cache;
use borgstore_ipc::{Quota, Stats};

/// Create the store (fails if it exists and is not empty).
pub struct Create;

command!(Create -> (), access |_| Access::Exclusive, need |_| Need::letters("wW", ""), apply |c, served| served.create().await,
    audit |_| Audited::new("create", &[], None));

/// Remove the store and everything in it.
pub struct Destroy;

command!(Destroy -> (), access |_| Access::Exclusive, need |_| Need::letters("D", ""), apply |c, served| served.destroy().await,
    audit |_| Audited::new("destroy", &[], None));

/// Check that the store exists (a client's `open` and `close`: the daemon keeps served
/// stores open).
pub struct Open;

command!(Open -> (), access |_| Access::Exclusive, need |_| Need::Nothing, apply |c, served| served.open().await.map(|_| ()));

/// Finish everything that arrived before, then close the store (daemon shutdown).
pub struct Shutdown {
    /// The store's name, for the log.
    pub store: String,
}

command!(Shutdown -> (), access |_| Access::Exclusive, need |_| Need::Owner, apply |c, served| served.close(&c.store).await);

/// The store's statistics (counters with Python borgstore's key names).
pub struct GetStats;

command!(GetStats -> Stats, access |_| Access::Free, need |_| Need::Nothing, apply |c, served| Ok(served.store().stats()));

/// The store's counters per principal.
pub struct GetPrincipalStats;

command!(GetPrincipalStats -> std::collections::BTreeMap<String, crate::policy::principals::PrincipalStats>,
    access |_| Access::Free,
    need |_| Need::Nothing,
    apply |c, served| Ok(served.principals().snapshot()));

/// Wait until everything acknowledged before is on the primary backend (the
/// write-behind barrier; at once without write-behind). Free: it neither waits for nor
/// holds up other commands; what it waits for is the uploads.
pub struct Sync;

command!(Sync -> (), access |_| Access::Free, need |_| Need::Nothing, apply |c, served| served.open().await?.sync().await);

/// The store's quota (limit 0: none).
pub struct GetQuota;

command!(GetQuota -> Quota, access |_| Access::Free, need |_| Need::Nothing, apply |c, served| served.open().await?.quota().await);

/// Give the store a cache, or none.
pub struct ConfigureCache {
    /// The new cache (None: no namespace is cached).
    pub cache: Option<Cache>,
}

command!(ConfigureCache -> (), access |_| Access::Exclusive, need |_| Need::Owner, apply |c, served| {
    served.set_cache(c.cache).await;
    Ok(())
});

/// Drop cached copies: of one item, of a namespace, or (`""`) of everything.
pub struct CacheInvalidate {
    /// The item or namespace.
    pub name: String,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

command!(CacheInvalidate -> (),
    access |_| Access::Exclusive,
    need |_| Need::Nothing,
    apply |c, served| served.open().await?.cache_invalidate(&c.name, c.deleted).await);

/// Delete for good the quarantined items whose window has passed (see
/// [`crate::policy::quarantine`]); needs `D` at the store's root.
pub struct Purge;

command!(Purge -> crate::policy::quarantine::Purged,
    access |_| Access::Exclusive,
    need |_| Need::letters("D", ""),
    apply |c, served| served.purge().await,
    audit |_| Audited::new("purge", &[], None));
