//! `bench`: ops/s of the store engine in-process vs through borgstored over IPC, in one
//! run, with ratios (DESIGN.md section 9). Speed targets live here, not in tests.
//!
//! `cargo build --release --workspace --bins && target/release/bench [--quick|--smoke]`
//!
//! Workloads: store, load, info, list, delete of 4 KiB and 8 MiB values in a `data/`
//! namespace with 2 nesting levels; each against the in-process engine, the daemon with
//! one client doing one request at a time, and the daemon with 16 concurrent clients.
//! It also prints the daemon's memory before and after 64 concurrent clients, and when
//! idle after the whole run: one daemon serves the ipc and fsync sections.
//!
//! The REST section runs the Python borgstore REST client (store, load, info, list of
//! 4 KiB values) against the Python `borgstore-server-rest` and against ours on the same
//! workload, and `wrk` on GET of one 4 KiB object against both.
//!
//! The cache section loads 64 KiB values from a primary with 10 ms emulated latency
//! without a cache and from a warm writethrough cache.
//!
//! The engine and IPC sections store with `fsync = off` (as Python does, so the
//! comparison is fair); the fsync section measures what durability costs: 4 KiB stores
//! through the daemon with 1 and 16 clients under `fsync = off`, `batch` (the default,
//! group commit) and `always`, as ratios against `off`.
//!
//! Sections: `bench [--quick|--smoke] [ipc] [rest] [cache] [fsync]` (default: all), one
//! file each.

mod cache;
mod common;
mod fsync;
mod ipc;
mod rest;

use common::{rss_kib, BenchDaemon, Mode};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --smoke: tiny counts, for tests/run to prove the benchmark still runs.
    let mode = Mode { quick: args.iter().any(|a| a == "--quick"), smoke: args.iter().any(|a| a == "--smoke") };
    let sections: Vec<&str> = args.iter().filter(|a| !a.starts_with("--")).map(String::as_str).collect();
    let want = |s: &str| sections.is_empty() || sections.contains(&s);
    println!("borgstore-rs benchmark; ops/s, higher is better");
    let profile = if cfg!(debug_assertions) { "debug build: numbers are not representative" } else { "release build" };
    println!("{profile}\n");
    let daemon = (want("ipc") || want("fsync")).then(BenchDaemon::start);
    if let Some(d) = &daemon {
        if want("ipc") {
            ipc::section(d, mode).await;
        }
    }
    if want("rest") {
        rest::section(mode);
    }
    if want("cache") {
        cache::section(mode).await;
    }
    if let Some(d) = &daemon {
        if want("fsync") {
            fsync::section(d, mode).await;
        }
        // Idle: give the daemon a moment to finish closing connections and stores.
        let settle = mode.pick(0, 2, 5);
        tokio::time::sleep(std::time::Duration::from_secs(settle as u64)).await;
        let rss = rss_kib(d.pid());
        println!("daemon memory (RSS) idle after the bench: {rss} KiB ({:.0} MiB)", rss as f64 / 1024.0);
    }
}
