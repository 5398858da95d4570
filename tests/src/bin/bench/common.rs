//! What every section shares: the key set, run sizes, memory readings, the daemon.

use borgstore_daemon::backends::durability::FsyncMode;
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_tests::daemon::Daemon;
use std::collections::BTreeMap;

pub const OPS: [&str; 5] = ["store", "load", "info", "list", "delete"];

pub fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("data/{}", HashAlgorithm::Sha256.hex_digest(&(i as u64).to_le_bytes()))).collect()
}

pub type Rates = BTreeMap<&'static str, f64>;

pub fn pick(smoke: bool, quick: bool, s: usize, q: usize, full: usize) -> usize {
    if smoke {
        s
    } else if quick {
        q
    } else {
        full
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A daemon serving `stores` (name, fsync) under `dir`, data/ at 2 nesting levels.
pub fn bench_daemon(dir: &std::path::Path, stores: &[(&str, FsyncMode)]) -> Daemon {
    let mut args = Vec::new();
    for (name, fsync) in stores {
        args.push("--store".to_string());
        args.push(format!("{name}=file://{}/{name}", dir.display()));
        args.push("--fsync".to_string());
        args.push(format!("{name}={fsync}"));
        args.push("--levels".to_string());
        args.push(format!("{name}:data/=2"));
        args.push("--levels".to_string());
        args.push(format!("{name}:=0"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_in(tempfile::tempdir().unwrap(), &refs, &[])
}
