//! Section `ipc`: the store engine in-process and borgstored over IPC (1 and 16
//! clients), against the machine's limits and Python borgstore 0.7.0 in-process.
//!
//! Workload: store, load, info, list, delete of 4 KiB and 8 MiB values in a `data/`
//! namespace with 2 nesting levels, fsync off (as Python does, so the comparison is
//! fair). Limits, measured right before ours: the raw file ops of [`crate::limits::raw_fs`]
//! on 1 thread (in-process), `1 / (socket round trip + raw op)` (one IPC client doing
//! one request at a time), and raw file ops on 16 threads (16 clients). It also records
//! the daemon's memory before and after 64 concurrent clients.

use crate::common::{keys, make_dirs_for, rss_kib, BenchDaemon, Mode, Rates, Results, OPS, PROFILED};
use crate::limits::{raw_fs, settle_writes, socket_pairs, socket_rtt};
use borgstore_client::{Client, ClientOptions};
use borgstore_daemon::backends::durability::FsyncMode;
use borgstore_daemon::backends::posixfs::{PosixFs, PosixFsOptions};
use borgstore_daemon::store::config::namespaces;
use borgstore_daemon::store::{Emulator, Store};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// The workload on the in-process engine (posixfs, fsync off).
/// The workload in-process on the engine; load and info go over the keys `passes`
/// times.
pub async fn engine_run(size: usize, n: usize, passes: usize) -> Rates {
    let dir = tempfile::tempdir().unwrap();
    let options = PosixFsOptions { fsync: FsyncMode::Off, ..Default::default() };
    let be = Arc::new(PosixFs::new(dir.path().join("s"), options).unwrap());
    let s = Store::with_emulator(be, namespaces(&[("data/", &[2]), ("", &[0])]).unwrap(), Emulator::OFF);
    s.create().await.unwrap();
    s.open().await.unwrap();
    let value = Bytes::from(vec![0x5au8; size]);
    let ks = keys(n);
    let mut r = Rates::new();
    make_dirs_for(&dir.path().join("s/data"), &ks);
    settle_writes();
    let t = Instant::now();
    for k in &ks {
        s.store(k, value.clone()).await.unwrap();
    }
    r.insert("store", n as f64 / t.elapsed().as_secs_f64());
    let reads = (n * passes) as f64;
    let t = Instant::now();
    for k in ks.iter().cycle().take(n * passes) {
        assert_eq!(s.load(k, 0, None, false).await.unwrap().len(), size);
    }
    r.insert("load", reads / t.elapsed().as_secs_f64());
    let t = Instant::now();
    for k in ks.iter().cycle().take(n * passes) {
        s.info(k, false).await.unwrap();
    }
    r.insert("info", reads / t.elapsed().as_secs_f64());
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

/// The same workload through the daemon, split over `clients` concurrent clients (list:
/// one call by one client). With `rtt_beside`, a std socket ping-pong of as many round
/// trips runs right before and right after each op's timed loop, and the second map
/// holds their mean per op: on a shared VM the round trip moves by 5x within minutes, so
/// a limit measured at another moment says little about this one. Load and info go over
/// the keys `passes` times.
async fn daemon_run(
    d: &BenchDaemon,
    store: &str,
    (size, n, passes): (usize, usize, usize),
    clients: usize,
    rtt_beside: bool,
) -> (Rates, Rates) {
    let (first, cs) = d.clients(store, clients).await;
    let ks = Arc::new(keys(n));
    let value = Arc::new(vec![0x5au8; size]);
    let mut r = Rates::new();
    let mut rtts = Rates::new();
    for op in ["store", "load", "info", "delete"] {
        let reps = if matches!(op, "load" | "info") { passes } else { 1 };
        // As many round trips as the op makes requests: a window of the same length.
        let rtt_now = || socket_rtt(64, (n * reps).max(200));
        let rtt_before = if rtt_beside { rtt_now() } else { f64::NAN };
        if op == "store" {
            make_dirs_for(&d.store_dir(store).join("data"), &ks[..]);
            settle_writes();
        }
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
                for k in ks.iter().cycle().take(ks.len() * reps).skip(ci).step_by(clients) {
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
        r.insert(op, (n * reps) as f64 / t.elapsed().as_secs_f64());
        if rtt_beside {
            let mean = (rtt_before + rtt_now()) / 2.0;
            rtts.insert(op, mean);
            if op == "delete" {
                rtts.insert("list", mean);
            }
        }
    }
    first.destroy().await.unwrap();
    (r, rtts)
}

/// Python borgstore in-process on the same workload, from the venv tests/run makes.
fn python_run(size: usize, n: usize, passes: usize) -> Result<Rates, String> {
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
        .arg(passes.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let map: BTreeMap<String, f64> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(OPS.iter().map(|op| (*op, map.get(*op).copied().unwrap_or(f64::NAN))).collect())
}

pub async fn section(d: &BenchDaemon, mode: Mode, res: &mut Results) {
    println!(
        "== engine and daemon over IPC vs the machine (posixfs, data/ at 2 nesting levels, fsync = off as in Python)"
    );
    println!("   ops/s; limit = the same work with none of our code (see each table); ratio = ours / limit\n");
    // The floor under every IPC number: a round trip that does no store work at all.
    let rounds = mode.pick(20, 2000, 10000);
    let rtt = socket_rtt(64, rounds);
    let pinger = Client::connect(ClientOptions::new("small").socket(&d.daemon.socket)).await.unwrap();
    let t = Instant::now();
    for _ in 0..rounds {
        pinger.ping().await.unwrap();
    }
    let ping = t.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "round trip without store work: IPC ping {:.1} us, limit std Unix socket 64 B ping-pong {:.1} us, ratio {:.2}\n",
        ping * 1e6,
        rtt * 1e6,
        rtt / ping
    );
    for (label, tag, size, n, store) in
        [("4 KiB", "4k", 4096, mode.pick(20, 500, 3000), "small"), ("8 MiB", "8m", 8 << 20, mode.pick(2, 8, 40), "big")]
    {
        let ks = keys(n);
        // Reads go over the keys several times: one pass over 500 keys took 2 ms on 16
        // threads, too short to measure on a shared VM.
        let passes = if size > 4096 { mode.pick(1, 8, 5) } else { mode.pick(1, 40, 20) };
        if size > 4096 {
            // Warm-up: the first 8 MiB writes of a run were 10x slower than all later ones
            // (the kernel finding pages for them), and the raw stores came first.
            raw_fs(&ks, size, 1, 1);
        }
        let raw1 = raw_fs(&ks, size, 1, passes);
        let raw16 = raw_fs(&ks, size, 16, passes);
        let engine = engine_run(size, n, passes).await;
        let (ipc1, rtt1) = daemon_run(d, store, (size, n, passes), 1, true).await;
        let (ipc16, _) = daemon_run(d, store, (size, n, passes), 16, false).await;
        let profiled =
            if size == 4096 { Some(daemon_run(d, PROFILED, (size, n, passes), 1, true).await) } else { None };
        let python = python_run(size, n, passes);
        // One client waits a round trip per request (list: one call for all n items).
        let lim1 = |op: &str| {
            let rtt = rtt1[op];
            let per = if op == "list" { rtt / n as f64 } else { rtt };
            1.0 / (per + 1.0 / raw1[op])
        };
        let lim16 = |op: &str| raw16.get(op).copied().unwrap_or_else(|| lim1(op));
        println!("{label} values, {n} items (load and info: {passes} passes over them)");
        println!("{:<7} {:>11} {:>9} {:>6} {:>9} {:>7}", "op", "in-process", "raw fs", "ratio", "Python", "ours/py");
        for op in OPS {
            let (e, l) = (engine[op], raw1[op]);
            let p = python.as_ref().map(|p| p[op]).unwrap_or(f64::NAN);
            println!("{op:<7} {e:>11.0} {l:>9.0} {:>6.2} {p:>9.0} {:>7.2}", e / l, e / p);
        }
        if let Err(e) = &python {
            println!("(no Python comparison: {e})");
        }
        println!(
            "{:<7} {:>11} {:>9} {:>6} {:>11} {:>9} {:>6} {:>7}",
            "op", "IPC 1 cl.", "limit", "ratio", "IPC 16 cl.", "limit", "ratio", "16 / 1"
        );
        for op in OPS {
            let (a, la, b, lb) = (ipc1[op], lim1(op), ipc16[op], lim16(op));
            println!("{op:<7} {a:>11.0} {la:>9.0} {:>6.2} {b:>11.0} {lb:>9.0} {:>6.2} {:>7.2}", a / la, b / lb, b / a);
        }
        println!("(limits: in-process = raw file ops, 1 thread; IPC 1 cl. = 1 / (socket round trip + raw op),");
        println!(" the round trip measured right before and after each op's run: mean of the two,");
        println!(" list: one round trip for all items; IPC 16 cl. = raw file ops on 16 threads, list: as 1 cl.)");
        if let Some((p, prtt)) = &profiled {
            // The same limit, from the round trips measured beside this run.
            let limp = |op: &str| 1.0 / (prtt[op] + 1.0 / raw1[op]);
            println!("restricted profile (letters lrwD, checked by the store actor before each command):");
            println!("{:<7} {:>11} {:>9} {:>6} {:>13}", "op", "IPC 1 cl.", "limit", "ratio", "/ unrestricted");
            for op in ["store", "load", "info", "delete"] {
                println!(
                    "{op:<7} {:>11.0} {:>9.0} {:>6.2} {:>13.2}",
                    p[op],
                    limp(op),
                    p[op] / limp(op),
                    p[op] / ipc1[op]
                );
                res.set(format!("ipc1prof/4k/{op}"), p[op]);
                res.set(format!("ipc1proflim/4k/{op}"), limp(op));
            }
            println!("(store without W: one existence check per new item, as Python's 'w' rule asks)");
        }
        if size == 4096 {
            // 16 clients share two cores with the daemon: each request costs both sides
            // a wake-up, whatever the file system does.
            let pairs = socket_pairs(16, n.max(200));
            let lim = 1.0 / (1.0 / pairs + 1.0 / raw16["load"]);
            println!(
                "load, sockets counted: IPC 16 cl. {:.0}, limit {lim:.0}, ratio {:.2}",
                ipc16["load"],
                ipc16["load"] / lim
            );
            println!(
                "(limit: 1 / (1 / round trips/s of 16 std socket ping-pongs at once ({pairs:.0}) + 1 / raw reads/s on 16 threads))"
            );
            res.set("ipc16lim/4k/load-sockets", lim);
        }
        if size > 4096 {
            // For a big value the 64-byte round trip is not the floor: moving the bytes is.
            let moved = socket_rtt(size, mode.pick(2, 20, 100));
            let lim = 1.0 / (moved + 1.0 / raw1["load"]);
            println!(
                "load, transfer counted: IPC 1 cl. {:.0}, limit {lim:.0}, ratio {:.2}",
                ipc1["load"],
                ipc1["load"] / lim
            );
            println!("(limit: 1 / (std Unix socket round trip with an answer of {label} + raw read))");
            res.set(format!("ipc1lim/{tag}/load-moved"), lim);
        }
        println!();
        res.set_rates(&format!("raw1/{tag}"), &raw1);
        res.set_rates(&format!("raw16/{tag}"), &raw16);
        res.set_rates(&format!("engine/{tag}"), &engine);
        res.set_rates(&format!("ipc1/{tag}"), &ipc1);
        res.set_rates(&format!("ipc16/{tag}"), &ipc16);
        for op in OPS {
            res.set(format!("ipc1lim/{tag}/{op}"), lim1(op));
        }
        if let Ok(p) = &python {
            res.set_rates(&format!("python/{tag}"), p);
        }
    }
    // Memory under 64 concurrent clients.
    let pid = d.pid();
    let before = rss_kib(pid);
    let c0 = Client::connect(ClientOptions::new("mem").socket(&d.daemon.socket)).await.unwrap();
    c0.create().await.unwrap();
    let mut tasks = Vec::new();
    for ci in 0..64 {
        let opts = ClientOptions::new("mem").socket(&d.daemon.socket);
        let per = mode.pick(1, 10, 50);
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(opts).await.unwrap();
            for i in 0..per {
                let k = format!("data/{:016x}", ci * 1000 + i);
                c.store(&k, vec![1u8; 65536]).await.unwrap();
                c.load(&k, 0, None, false).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let right_after = rss_kib(pid);
    // The daemon gives freed memory back every TRIM_INTERVAL: what it keeps is what
    // stays once that has run.
    tokio::time::sleep(borgstore_daemon::memory::TRIM_INTERVAL + std::time::Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    res.set("rss/before64", before as f64);
    res.set("rss/after64", after as f64);
    println!(
        "daemon memory (RSS): {before} KiB before, {right_after} KiB right after 64 concurrent clients, \
         {after} KiB a trim interval later (ratio {:.2})\n",
        after as f64 / before.max(1) as f64
    );
}
