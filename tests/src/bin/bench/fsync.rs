//! Section `fsync`: what durability costs. 4 KiB stores through the daemon with 1 and 16
//! clients under `fsync = off`, `batch` (the default, group commit) and `always`, as
//! ratios against `off` (the engine and IPC sections run with `off`, as Python does).

use crate::common::{keys, BenchDaemon, Mode};
use borgstore_daemon::backends::durability::FsyncMode;
use std::sync::Arc;
use std::time::Instant;

/// Stores/s of `n` 4 KiB values through the daemon, split over `clients` clients.
async fn store_rate(d: &BenchDaemon, store: &str, n: usize, clients: usize) -> f64 {
    let (first, cs) = d.clients(store, clients).await;
    let ks = Arc::new(keys(n));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (ci, c) in cs.into_iter().enumerate() {
        let ks = ks.clone();
        tasks.push(tokio::spawn(async move {
            for k in ks.iter().skip(ci).step_by(clients) {
                c.store(k, vec![0x5a; 4096]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    first.destroy().await.unwrap();
    rate
}

pub async fn section(d: &BenchDaemon, mode: Mode) {
    let modes = [FsyncMode::Off, FsyncMode::Batch, FsyncMode::Always];
    let n = mode.pick(16, 400, 2000);
    println!("== fsync: {n} stores of 4 KiB through the daemon (data/ at 2 levels), stores/s\n");
    println!(
        "{:<8} {:>11} {:>8} {:>11} {:>8} {:>14}",
        "fsync", "1 client", "vs off", "16 clients", "vs off", "16 cl. / 1 cl."
    );
    // A warm-up round first: whichever mode ran first used to pay for the fresh daemon
    // and file system (off looked slower than always).
    for m in modes {
        store_rate(d, m.name(), n / 4 + 1, 16).await;
    }
    let mut off = (f64::NAN, f64::NAN);
    for m in modes {
        let one = store_rate(d, m.name(), n, 1).await;
        let many = store_rate(d, m.name(), n, 16).await;
        if m == FsyncMode::Off {
            off = (one, many);
        }
        println!(
            "{:<8} {one:>11.0} {:>8.2} {many:>11.0} {:>8.2} {:>14.2}",
            m.name(),
            one / off.0,
            many / off.1,
            many / one
        );
    }
    println!("(target: batch with 16 clients >= 0.5 x off; always is for comparison)\n");
}
