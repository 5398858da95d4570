//! `bench`: how fast borgstore-rs is, and how close to what the machine can do, in one
//! run (DESIGN.md section 9). Speed targets live here, not in tests.
//!
//! `cargo build --release --workspace --bins && target/release/bench [--quick|--smoke] [ipc] [rest] [cache] [fsync] [remote]`
//!
//! Every figure is printed beside a limit measured in the same run (the machine is
//! shared and its speed varies, so only same-run ratios mean anything): a std Unix-socket
//! ping-pong, raw file operations on the store's own layout, nginx serving the same files
//! statically, and Python borgstore 0.7.0 in-process ([`limits`], `tests/python/bench_engine.py`).
//! On a shared VM even "the same run" is not enough: a socket round trip moved between 8
//! and 50 µs within minutes. So a limit is taken right beside the figure it bounds, over
//! a window of the same length (the one-client round trip right before and after each
//! op, as many round trips as the op makes requests), reads repeat over the keys until
//! a phase lasts long enough to measure, and every store phase starts after a `sync`.
//!
//! Sections (default: all), each in its own file:
//! - `ipc` ([`ipc`]): in-process engine, daemon over IPC with 1 and 16 clients, Python;
//!   daemon memory around 64 concurrent clients;
//! - `rest` ([`rest`]): the Python REST client against Python's server and ours; our
//!   REST front end against nginx and raw file ops;
//! - `cache` ([`cache`]): loads from a slow primary with and without a cache;
//! - `fsync` ([`fsync`]): what durability costs;
//! - `remote` ([`remote`]): sftp, S3 and REST-client stores with 20 ms latency per
//!   call, 1 IPC client vs 16 (a daemon of its own, real sshd and moto on loopback).
//!
//! The end is a table of the targets with PASS/MISS ([`targets`]). One daemon serves
//! every section; its memory when idle after all of them is a target too.

mod cache;
mod common;
mod fsync;
mod ipc;
mod limits;
mod remote;
mod rest;
mod targets;

use common::{rss_kib, BenchDaemon, Mode, Results};

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
    let mut res = Results::default();
    let daemon = (want("ipc") || want("rest") || want("fsync")).then(BenchDaemon::start);
    if let Some(d) = &daemon {
        if want("ipc") {
            ipc::section(d, mode, &mut res).await;
        }
        if want("rest") {
            rest::section(d, mode, &mut res).await;
        }
    }
    if want("cache") {
        cache::section(mode).await;
    }
    if want("remote") {
        remote::section(mode, &mut res).await;
    }
    if let Some(d) = &daemon {
        if want("fsync") {
            fsync::section(d, mode).await;
        }
        // Idle: give the daemon a moment to finish closing connections and stores.
        let settle = mode.pick(0, 2, 5);
        tokio::time::sleep(std::time::Duration::from_secs(settle as u64)).await;
        let rss = rss_kib(d.pid());
        res.set("rss/end", rss as f64);
        println!("daemon memory (RSS) idle after the bench: {rss} KiB ({:.0} MiB)\n", rss as f64 / 1024.0);
    }
    if daemon.is_some() || want("remote") {
        targets::print(&res);
    }
}
