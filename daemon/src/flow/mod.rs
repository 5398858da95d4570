//! How calls flow from the engine to the primary backend: the layers between
//! [`crate::store::Store`] and the backend a store URL names, each itself a
//! [`Backend`], stacked by [`stack`]:
//!
//! ```text
//! Store (engine: namespaces, soft delete, cache, stats)
//!   └ Coalesce          coalesce.rs: identical concurrent reads become one call
//!      └ WriteBehind    write_behind/: stores of chosen namespaces acknowledged once
//!         │              in a local spool, uploaded in the background
//!         └ Primary     primary.rs: wait for a fair share of the budget (fair.rs),
//!            │           count backend_* stats, emulate latency/bandwidth
//!            └ the primary backend (posixfs, sftp, s3, rclone, rest_client)
//! ```
//!
//! Each layer is there only when the store asks for it (`Primary` always is). The
//! order matters: reads coalesce before they reach the spool; what is spooled costs
//! the budget (and the emulated latency) only when it is uploaded.
//!
//! Every local process and every REST client of a store goes through the store's one
//! actor and so through these layers: the budget (`max_concurrency`, `bandwidth_in`,
//! `bandwidth_out`) is shared by all of them, fairly between principals (the caller's
//! profile, carried in a task-local by [`principal`]).

pub mod coalesce;
pub mod fair;
pub mod primary;
pub mod principal;
pub mod write_behind;

use crate::backends::Backend;
use crate::store::stats::SharedStats;
use crate::store::{Emulator, Namespaces};
use std::sync::Arc;

/// How one store's calls flow (the store keys `max_concurrency`, `bandwidth_in`,
/// `bandwidth_out`, `coalesce_reads`, and the namespace keys `write_behind`,
/// `write_behind_max_bytes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowSettings {
    /// The budget shared by all callers (no limits: calls never queue).
    pub limits: fair::Limits,
    /// Coalesce identical concurrent loads and infos.
    pub coalesce: bool,
    /// The spools of write-behind namespaces (none: every store is written through).
    pub spools: Vec<write_behind::SpoolConfig>,
    /// Directories a recursive listing lists ahead of the one it is reading, concurrently
    /// (0: one after another; see [`crate::store::list`]).
    pub list_ahead: usize,
}

/// The layers over `primary` for a store with `namespaces`, counted into `stats`,
/// emulated by `emulator`.
pub fn stack(
    primary: Arc<dyn Backend>,
    namespaces: &Namespaces,
    emulator: Emulator,
    settings: &FlowSettings,
    stats: SharedStats,
) -> Arc<dyn Backend> {
    let fair = (!settings.limits.is_unlimited()).then(|| fair::Fair::new(settings.limits));
    let mut top: Arc<dyn Backend> = Arc::new(primary::Primary::new(primary, emulator, stats.clone(), fair));
    if !settings.spools.is_empty() {
        let names = namespaces.iter().map(|(ns, _)| ns);
        top = Arc::new(write_behind::WriteBehind::new(top, names, &settings.spools));
    }
    if settings.coalesce {
        top = Arc::new(coalesce::Coalesce::new(top, stats));
    }
    top
}
