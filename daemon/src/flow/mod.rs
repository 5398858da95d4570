//! How calls flow from the engine to the primary backend: the layers between
//! [`crate::store::Store`] and the backend a store URL names, each itself a
//! [`Backend`], stacked by [`stack`]:
//!
//! ```text
//! Store (engine: namespaces, soft delete, cache, stats)
//!   └ Coalesce       coalesce.rs: identical concurrent reads become one call
//!      └ Primary     primary.rs: wait for a fair share of the budget (fair.rs),
//!         │           count backend_* stats, emulate latency/bandwidth
//!         └ the primary backend (posixfs, sftp, s3, rclone, rest_client)
//! ```
//!
//! Every local process and every REST client of a store goes through the store's one
//! actor and so through these layers: the budget (`max_concurrency`, `bandwidth_in`,
//! `bandwidth_out`) is shared by all of them, fairly between principals (the caller's
//! profile, carried in a task-local by [`principal`]).

pub mod coalesce;
pub mod fair;
pub mod primary;
pub mod principal;

use crate::backends::Backend;
use crate::store::stats::SharedStats;
use crate::store::Emulator;
use std::sync::Arc;

/// How one store's calls flow (the store keys `max_concurrency`, `bandwidth_in`,
/// `bandwidth_out`, `coalesce_reads`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowSettings {
    /// The budget shared by all callers (no limits: calls never queue).
    pub limits: fair::Limits,
    /// Coalesce identical concurrent loads and infos.
    pub coalesce: bool,
}

/// The layers over `primary`, counted into `stats`, emulated by `emulator`; and the
/// store's budget when it has one (for its gauges).
pub fn stack(
    primary: Arc<dyn Backend>,
    emulator: Emulator,
    settings: FlowSettings,
    stats: SharedStats,
) -> (Arc<dyn Backend>, Option<Arc<fair::Fair>>) {
    let fair = (!settings.limits.is_unlimited()).then(|| fair::Fair::new(settings.limits));
    let metered: Arc<dyn Backend> = Arc::new(primary::Primary::new(primary, emulator, stats.clone(), fair.clone()));
    let top: Arc<dyn Backend> =
        if settings.coalesce { Arc::new(coalesce::Coalesce::new(metered, stats)) } else { metered };
    (top, fair)
}
