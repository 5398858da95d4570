//! `bench`: ops/s of the store engine in-process vs through borgstored over IPC, in one
//! run, with ratios (DESIGN.md section 9). Speed targets live here, not in tests.
//!
//! `cargo build --release --workspace --bins && target/release/bench [--quick|--smoke]`
//!
//! Workloads: store, load, info, list, delete of 4 KiB and 8 MiB values in a `data/`
//! namespace with 2 nesting levels; each against the in-process engine, the daemon with
//! one client doing one request at a time, and the daemon with 16 concurrent clients.
//! It also prints the daemon's memory before and after 64 concurrent clients.
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
//! Sections: `bench [--quick|--smoke] [ipc] [rest] [cache] [fsync]` (default: all).

use borgstore_client::{Client, ClientOptions};
use borgstore_daemon::backends::durability::FsyncMode;
use borgstore_daemon::backends::posixfs::{PosixFs, PosixFsOptions};
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::store::config::namespaces;
use borgstore_daemon::store::{Emulator, Store};
use borgstore_tests::daemon::Daemon;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const OPS: [&str; 5] = ["store", "load", "info", "list", "delete"];

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("data/{}", HashAlgorithm::Sha256.hex_digest(&(i as u64).to_le_bytes()))).collect()
}

type Rates = BTreeMap<&'static str, f64>;

async fn engine_run(size: usize, n: usize) -> Rates {
    let dir = tempfile::tempdir().unwrap();
    let options = PosixFsOptions { fsync: FsyncMode::Off, ..Default::default() };
    let be = Arc::new(PosixFs::new(dir.path().join("s"), options).unwrap());
    let s = Store::with_emulator(be, namespaces(&[("data/", &[2]), ("", &[0])]).unwrap(), Emulator::OFF);
    s.create().await.unwrap();
    s.open().await.unwrap();
    let value = Bytes::from(vec![0x5au8; size]);
    let ks = keys(n);
    let mut r = Rates::new();
    let t = Instant::now();
    for k in &ks {
        s.store(k, value.clone()).await.unwrap();
    }
    r.insert("store", n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for k in &ks {
        assert_eq!(s.load(k, 0, None, false).await.unwrap().len(), size);
    }
    r.insert("load", n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for k in &ks {
        s.info(k, false).await.unwrap();
    }
    r.insert("info", n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    let listed = s.list("data", false).unwrap().collect().await.unwrap().len();
    assert_eq!(listed, n);
    r.insert("list", n as f64 / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for k in &ks {
        s.delete(k, false).await.unwrap();
    }
    r.insert("delete", n as f64 / t.elapsed().as_secs_f64());
    s.close().await.unwrap();
    r
}

/// The same workload through the daemon, split over `clients` concurrent clients.
async fn daemon_run(d: &Daemon, store: &str, size: usize, n: usize, clients: usize) -> Rates {
    let first = Client::connect(ClientOptions::new(store).socket(&d.socket)).await.unwrap();
    first.create().await.unwrap();
    let mut cs = Vec::new();
    for _ in 0..clients {
        cs.push(Client::connect(ClientOptions::new(store).socket(&d.socket)).await.unwrap());
    }
    let ks = Arc::new(keys(n));
    let value = Arc::new(vec![0x5au8; size]);
    let mut r = Rates::new();
    for op in ["store", "load", "info", "delete"] {
        if op == "delete" {
            let t = Instant::now();
            let listed = first.list("data", false).await.unwrap().collect().await.unwrap().len();
            assert_eq!(listed, n);
            r.insert("list", n as f64 / t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (ci, c) in cs.iter().enumerate() {
            let (c, ks, value) = (c.clone(), ks.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                for k in ks.iter().skip(ci).step_by(clients) {
                    match op {
                        "store" => c.store(k, value.to_vec()).await.unwrap(),
                        "load" => {
                            assert_eq!(c.load(k, 0, None, false).await.unwrap().len(), value.len())
                        }
                        "info" => assert!(c.info(k, false).await.unwrap().exists),
                        _ => c.delete(k, false).await.unwrap(),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        r.insert(op, n as f64 / t.elapsed().as_secs_f64());
    }
    first.destroy().await.unwrap();
    r
}

/// Python borgstore in-process on the same workload, from the venv tests/run makes.
fn python_run(size: usize, n: usize) -> Result<Rates, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let py = std::env::var_os("BORGSTORE_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target/venv/bin/python"));
    if !py.exists() {
        return Err(format!("{} not found (tests/run creates it)", py.display()));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(&py)
        .arg(root.join("tests/python/bench_engine.py"))
        .arg(dir.path().join("s"))
        .arg(size.to_string())
        .arg(n.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let map: BTreeMap<String, f64> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(OPS.iter().map(|op| (*op, map.get(*op).copied().unwrap_or(f64::NAN))).collect())
}

fn pick(smoke: bool, quick: bool, s: usize, q: usize, full: usize) -> usize {
    if smoke {
        s
    } else if quick {
        q
    } else {
        full
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // --smoke: tiny counts, for tests/run to prove the benchmark still runs.
    let smoke = args.iter().any(|a| a == "--smoke");
    let sections: Vec<&str> = args.iter().filter(|a| !a.starts_with("--")).map(String::as_str).collect();
    let want = |s: &str| sections.is_empty() || sections.contains(&s);
    println!("borgstore-rs benchmark; ops/s, higher is better");
    let profile = if cfg!(debug_assertions) { "debug build: numbers are not representative" } else { "release build" };
    println!("{profile}\n");
    if want("ipc") {
        ipc_section(quick, smoke).await;
    }
    if want("rest") {
        rest_section(quick, smoke);
    }
    if want("cache") {
        cache_section(quick, smoke).await;
    }
    if want("fsync") {
        fsync_section(quick, smoke).await;
    }
}

/// A daemon serving `stores` (name, fsync) under `dir`, data/ at 2 nesting levels.
fn bench_daemon(dir: &std::path::Path, stores: &[(&str, FsyncMode)]) -> Daemon {
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

/// Stores/s of `n` 4 KiB values through the daemon, split over `clients` clients.
async fn store_rate(d: &Daemon, store: &str, n: usize, clients: usize) -> f64 {
    let first = Client::connect(ClientOptions::new(store).socket(&d.socket)).await.unwrap();
    first.create().await.unwrap();
    let mut cs = Vec::new();
    for _ in 0..clients {
        cs.push(Client::connect(ClientOptions::new(store).socket(&d.socket)).await.unwrap());
    }
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

/// What durability costs: 4 KiB stores under each fsync mode, 1 and 16 clients.
async fn fsync_section(quick: bool, smoke: bool) {
    let dir = tempfile::tempdir().unwrap();
    let modes = [FsyncMode::Off, FsyncMode::Batch, FsyncMode::Always];
    let d = bench_daemon(dir.path(), &modes.map(|m| (m.name(), m)));
    let n = pick(smoke, quick, 16, 400, 2000);
    println!("== fsync: {n} stores of 4 KiB through the daemon (data/ at 2 levels), stores/s\n");
    println!(
        "{:<8} {:>11} {:>8} {:>11} {:>8} {:>14}",
        "fsync", "1 client", "vs off", "16 clients", "vs off", "16 cl. / 1 cl."
    );
    // A warm-up round first: whichever mode ran first used to pay for the fresh daemon
    // and file system (off looked slower than always).
    for m in modes {
        store_rate(&d, m.name(), n / 4 + 1, 16).await;
    }
    let mut off = (f64::NAN, f64::NAN);
    for m in modes {
        let one = store_rate(&d, m.name(), n, 1).await;
        let many = store_rate(&d, m.name(), n, 16).await;
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

/// Loads of 64 KiB values from a primary with 10 ms emulated latency per call, without a
/// cache and from a warm writethrough cache, in one run.
async fn cache_section(quick: bool, smoke: bool) {
    use borgstore_daemon::store::cache::{Cache, CacheMode, CachePolicy};
    let n = pick(smoke, quick, 5, 50, 200);
    println!("== cache: load of {n} x 64 KiB, primary with 10 ms latency per call\n");
    let dir = tempfile::tempdir().unwrap();
    let slow = || Emulator { latency: std::time::Duration::from_millis(10), bandwidth: 0.0 };
    let primary = Arc::new(PosixFs::new(dir.path().join("p"), PosixFsOptions::default()).unwrap());
    let ns = || namespaces(&[("data/", &[2]), ("", &[0])]).unwrap();
    let plain = Store::with_emulator(primary.clone(), ns(), slow());
    plain.create().await.unwrap();
    plain.open().await.unwrap();
    let ks = keys(n);
    let value = Bytes::from(vec![7u8; 64 * 1024]);
    for k in &ks {
        plain.store(k, value.clone()).await.unwrap();
    }
    let t = Instant::now();
    for k in &ks {
        plain.load(k, 0, None, false).await.unwrap();
    }
    let uncached = n as f64 / t.elapsed().as_secs_f64();
    plain.close().await.unwrap();
    let cache_be = Arc::new(PosixFs::new(dir.path().join("c"), PosixFsOptions::default()).unwrap());
    let policy = CachePolicy { mode: CacheMode::Writethrough, max_age: None, size: None };
    let cached = Store::build(primary, ns(), slow(), Some(Cache::new(cache_be, vec![("data/".into(), policy)])));
    cached.open().await.unwrap();
    for k in &ks {
        cached.load(k, 0, None, false).await.unwrap(); // warm up: misses fill the cache
    }
    let t = Instant::now();
    for k in &ks {
        cached.load(k, 0, None, false).await.unwrap();
    }
    let warm = n as f64 / t.elapsed().as_secs_f64();
    cached.close().await.unwrap();
    println!("{:<22} {:>10.0} ops/s", "primary (no cache)", uncached);
    println!("{:<22} {:>10.0} ops/s   ratio {:.1}\n", "warm writethrough cache", warm, warm / uncached);
}

async fn ipc_section(quick: bool, smoke: bool) {
    let dir = tempfile::tempdir().unwrap();
    let d = bench_daemon(dir.path(), &[("small", FsyncMode::Off), ("big", FsyncMode::Off), ("mem", FsyncMode::Off)]);
    println!("== engine vs daemon over IPC (posixfs, data/ at 2 nesting levels, fsync = off as in Python)\n");
    // The floor under every IPC number: a round trip that does no store work at all.
    let pinger = Client::connect(ClientOptions::new("small").socket(&d.socket)).await.unwrap();
    let rounds = pick(smoke, quick, 20, 2000, 10000);
    let t = Instant::now();
    for _ in 0..rounds {
        pinger.ping().await.unwrap();
    }
    let ping = rounds as f64 / t.elapsed().as_secs_f64();
    println!("IPC round trip without store work (ping): {ping:.0}/s, {:.0} us each\n", 1e6 / ping);
    for (label, size, n, store) in [
        ("4 KiB", 4096, pick(smoke, quick, 20, 500, 3000), "small"),
        ("8 MiB", 8 << 20, pick(smoke, quick, 2, 8, 40), "big"),
    ] {
        let engine = engine_run(size, n).await;
        let ipc1 = daemon_run(&d, store, size, n, 1).await;
        let ipc16 = daemon_run(&d, store, size, n, 16).await;
        let python = python_run(size, n);
        println!("{label} values, {n} items (ratios are against our in-process engine)");
        println!(
            "{:<7} {:>11} {:>11} {:>6} {:>11} {:>6} {:>11} {:>6}",
            "op", "in-process", "IPC 1 cl.", "ratio", "IPC 16 cl.", "ratio", "Python", "ours/py"
        );
        for op in OPS {
            let (e, a, b) = (engine[op], ipc1[op], ipc16[op]);
            let p = python.as_ref().map(|p| p[op]).unwrap_or(f64::NAN);
            println!("{op:<7} {e:>11.0} {a:>11.0} {:>6.2} {b:>11.0} {:>6.2} {p:>11.0} {:>6.2}", a / e, b / e, e / p);
        }
        if let Err(e) = &python {
            println!("(no Python comparison: {e})");
        }
        println!();
    }
    // Memory under 64 concurrent clients.
    let pid = d.child.id();
    let before = rss_kib(pid);
    let c0 = Client::connect(ClientOptions::new("mem").socket(&d.socket)).await.unwrap();
    c0.create().await.unwrap();
    let mut tasks = Vec::new();
    for ci in 0..64 {
        let opts = ClientOptions::new("mem").socket(&d.socket);
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(opts).await.unwrap();
            for i in 0..pick(smoke, quick, 1, 10, 50) {
                let k = format!("data/{:016x}", ci * 1000 + i);
                c.store(&k, vec![1u8; 65536]).await.unwrap();
                c.load(&k, 0, None, false).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = rss_kib(pid);
    println!(
        "daemon memory (RSS): {before} KiB idle, {after} KiB after 64 concurrent clients (ratio {:.2})",
        after as f64 / before.max(1) as f64
    );
}

/// Python REST client against Python's server and ours; wrk GETs against both.
fn rest_section(quick: bool, smoke: bool) {
    use borgstore_tests::python::{run_ok, Version};
    use borgstore_tests::rest::{request, Impl, RestServer};
    let n = pick(smoke, quick, 20, 300, 2000);
    println!("== REST: Python borgstore REST client, 4 KiB values, {n} items (list: whole listings/s; fsync = off)\n");
    let mut rates: Vec<BTreeMap<String, f64>> = Vec::new();
    let mut wrk_rates = Vec::new();
    for which in [Impl::Python, Impl::Ours] {
        // Python's server does not flush; ours is compared on the same terms.
        let extra: &[&str] = if which == Impl::Ours { &["--fsync", "off"] } else { &[] };
        let server = RestServer::start(which, extra);
        let out = run_ok(Version::V070, "bench_rest.py", &[&server.url(None), "4096", &n.to_string()], &[]);
        rates.push(serde_json::from_str(&out).expect("bench_rest.py output"));
        assert_eq!(request(server.port, "POST", "/?cmd=create", None, &[], b"").status, 200);
        assert_eq!(request(server.port, "POST", "/data/obj", None, &[], &[7u8; 4096]).status, 200);
        let secs = pick(smoke, quick, 1, 5, 10);
        wrk_rates.push(wrk(&format!("http://127.0.0.1:{}/data/obj", server.port), secs));
    }
    println!("{:<7} {:>16} {:>16} {:>8}", "op", "Python server", "our server", "ratio");
    for op in ["store", "load", "info", "list"] {
        let (p, o) = (rates[0][op], rates[1][op]);
        println!("{op:<7} {p:>16.0} {o:>16.0} {:>8.2}", o / p);
    }
    println!();
    match (&wrk_rates[0], &wrk_rates[1]) {
        (Ok(p), Ok(o)) => {
            println!("wrk, GET of one 4 KiB object, 2 threads, 16 connections: requests/s");
            println!("{:<7} {p:>16.0} {o:>16.0} {:>8.2}\n", "GET", o / p);
        }
        (Err(e), _) | (_, Err(e)) => println!("(no wrk numbers: {e})\n"),
    }
}

/// Requests/s of `wrk` GETting `url` for `secs` seconds.
fn wrk(url: &str, secs: usize) -> Result<f64, String> {
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c16", &format!("-d{secs}s"), "-H", "Accept: application/vnd.x.borgstore.rest.v1", url])
        .output()
        .map_err(|e| format!("wrk: {e} (apt-get install wrk)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("unexpected wrk output: {text}"))
}
