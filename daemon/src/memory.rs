//! Memory given back to the system once a burst is over.
//!
//! glibc's allocator keeps what the daemon frees in its arenas for reuse: after a burst
//! of large values (8 MiB loads from 16 clients, big uploads) the daemon would sit at
//! its peak resident size long after the last request. [`give_back`] asks the allocator
//! to return free memory (`malloc_trim`: free pages at the tops of the heaps and, since
//! glibc 2.8, free pages inside them); [`give_back_periodically`] does that every few
//! seconds, which costs a walk over the heaps and keeps the idle daemon small. The
//! next burst allocates again; nothing else changes. [`few_arenas`] caps glibc's
//! per-thread arenas (by default eight per core, each keeping its own free memory): the
//! daemon's threads share a few, so less free memory is spread where no trim reaches it.

use std::time::Duration;

/// How often [`give_back_periodically`] trims.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Return the allocator's free memory to the system (no-op where the allocator is not
/// glibc's).
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; any pad is valid.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Arenas the allocator may use: two per core, at least four (glibc's default is eight
/// per core; fewer means less free memory spread out, a few more than cores keeps
/// threads from queueing for one).
pub fn arenas() -> i32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cores).clamp(4, 64) as i32
}

/// Cap the allocator's arenas at [`arenas`]; call it first thing in `main`, before
/// threads start (no-op where the allocator is not glibc's).
pub fn few_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas());
    }
}

/// Trim every [`TRIM_INTERVAL`], forever (spawn it on the daemon's runtime).
pub async fn give_back_periodically() {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Off the runtime's threads: the walk takes a while on a large heap.
        let _ = tokio::task::spawn_blocking(give_back).await;
    }
}
