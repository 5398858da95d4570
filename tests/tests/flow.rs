//! One scheduler for all local processes (issue 15, points 2 and 3), against a real
//! `borgstored` whose `file://` store is made slow with emulated latency or bandwidth:
//!
//! - coalesced reads: 32 clients load one item behind 50 ms latency and the primary
//!   sees one load; readers racing a writer never see a value older than the last
//!   store that completed before their load was sent;
//! - the shared budget: `max_concurrency` bounds the calls on the primary for all
//!   clients together, and the queueing shows in stats and `/-/metrics`;
//! - fairness: a greedy REST user with 12 requests in flight and a modest one with 2
//!   each get at least 40% of the store's `bandwidth_out` (loads) and `bandwidth_in`
//!   (stores).

use borgstore_client::Client;
use borgstore_ipc::{StatValue, Stats};
use borgstore_tests::daemon::Daemon;
use borgstore_tests::rest::{free_port, htpasswd, request, wait_port};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A daemon with one store `s` at `root/s` whose store table has `keys` besides its URL.
fn daemon(root: &Path, top: &str, keys: &str) -> Daemon {
    let cfg = root.join("borgstored.toml");
    let text = format!(
        "state_dir = \"{root}/state\"\n{top}\n[stores.s]\nurl = \"file://{root}/s\"\ncreate = true\n{keys}\n",
        root = root.display()
    );
    std::fs::write(&cfg, text).unwrap();
    Daemon::start_in(tempfile::tempdir().unwrap(), &["--config", cfg.to_str().unwrap()], &[])
}

fn int(stats: &Stats, key: &str) -> i64 {
    match stats.get(key) {
        Some(StatValue::Int(v)) => *v,
        other => panic!("stat {key}: {other:?}"),
    }
}

async fn clients(d: &Daemon, n: usize) -> Vec<Arc<Client>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let c = d.client("s").await;
        c.open().await.unwrap();
        out.push(Arc::new(c));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_clients_loading_one_item_cost_one_backend_load() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), "", "latency_us = 50000\ncoalesce_reads = true");
    let cs = clients(&d, 32).await;
    // 32 loads sent at once all arrive within the first load's 50 ms on an idle
    // machine; a loaded one may let a straggler start a second call, so up to three
    // rounds, each on a fresh item. Without coalescing every round costs 32 loads.
    let mut seen = Vec::new();
    for round in 0..3 {
        let name = format!("item{round}");
        let value = format!("value of round {round}").into_bytes();
        cs[0].store(&name, value.clone()).await.unwrap();
        let before = cs[0].stats().await.unwrap();
        let loads: Vec<_> = cs
            .iter()
            .map(|c| {
                let (c, name) = (c.clone(), name.clone());
                tokio::spawn(async move { c.load(&name, 0, None, false).await.unwrap() })
            })
            .collect();
        for load in loads {
            assert_eq!(load.await.unwrap(), value, "every client gets the value");
        }
        let after = cs[0].stats().await.unwrap();
        let backend = int(&after, "backend_load_calls") - int(&before, "backend_load_calls");
        let joined = int(&after, "coalesced_load_calls") - int(&before, "coalesced_load_calls");
        assert_eq!(int(&after, "load_calls") - int(&before, "load_calls"), 32, "each load is counted as a call");
        assert_eq!(backend + joined, 32, "each load either made the backend call or joined one");
        seen.push(backend);
        if backend == 1 {
            return;
        }
    }
    panic!("32 concurrent loads never became one backend load: backend loads per round {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_racing_a_writer_never_read_a_value_older_than_a_completed_store() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), "", "latency_us = 20000\ncoalesce_reads = true");
    let cs = clients(&d, 9).await;
    cs[0].store("x", b"0".to_vec()).await.unwrap();
    let completed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for c in cs.iter().skip(1) {
        let (c, completed, done) = (c.clone(), completed.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut loads = 0u64;
            while !done.load(Ordering::SeqCst) {
                let floor = completed.load(Ordering::SeqCst);
                let got = c.load("x", 0, None, false).await.unwrap();
                let version: u64 = String::from_utf8(got).unwrap().parse().unwrap();
                assert!(version >= floor, "stale read: version {version} after version {floor} was stored");
                loads += 1;
            }
            loads
        }));
    }
    for v in 1..=40u64 {
        cs[0].store("x", v.to_string().into_bytes()).await.unwrap();
        completed.store(v, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    let mut loads = 0;
    for r in readers {
        loads += r.await.unwrap();
    }
    let stats = cs[0].stats().await.unwrap();
    assert!(loads >= 40, "the readers ran alongside the writer ({loads} loads)");
    assert!(int(&stats, "coalesced_load_calls") > 0, "loads were coalesced while the writer wrote: {stats:?}");
    assert_eq!(cs[0].load("x", 0, None, false).await.unwrap(), b"40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrency_bounds_all_clients_together_and_queueing_shows() {
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    let top = format!("rest = \"127.0.0.1:{port}\"\nrest_metrics = true");
    let d = daemon(root.path(), &top, "latency_us = 200000\nmax_concurrency = 2\npublic_on = [\"rest\"]");
    wait_port(port, "borgstored REST", &d.log);
    let cs = clients(&d, 12).await;
    for (i, c) in cs.iter().enumerate() {
        c.store(&format!("item{i}"), vec![i as u8; 100]).await.unwrap();
    }
    let loads: Vec<_> = cs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = c.clone();
            tokio::spawn(async move { c.load(&format!("item{i}"), 0, None, false).await.unwrap() })
        })
        .collect();
    let watcher = d.client("s").await;
    let (mut most, mut queued) = (0, 0);
    while loads.iter().any(|l| !l.is_finished()) {
        let st = watcher.stats().await.unwrap();
        most = most.max(int(&st, "backend_in_flight"));
        queued = queued.max(int(&st, "backend_waiting"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, l) in loads.into_iter().enumerate() {
        assert_eq!(l.await.unwrap(), vec![i as u8; 100]);
    }
    assert!((1..=2).contains(&most), "at most max_concurrency calls on the primary, saw {most}");
    assert!(queued >= 1, "12 clients behind a budget of 2 queued");
    let st = watcher.stats().await.unwrap();
    let queue_time = match st.get("backend_queue_time") {
        Some(StatValue::Float(t)) => *t,
        other => panic!("backend_queue_time: {other:?}"),
    };
    assert!(queue_time > 0.0, "queueing time is counted");
    assert!(int(&st, "backend_queue_calls") >= 24, "every primary call went through the budget");
    let metrics = request(port, "GET", "/-/metrics", None, &[], b"").text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("borgstore_backend_queue_time{store=\"s\"}"))
        .unwrap_or_else(|| panic!("no queue time in /-/metrics:\n{metrics}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 0.0, "{line}");
}

/// Two REST users share the store's bandwidth in one `direction` ("out": loads of
/// `SIZE` bytes with `bandwidth_out`, "in": stores with `bandwidth_in`): the greedy one
/// keeps 12 requests going, the modest one 2. Returns their shares of the budget over 4 s.
fn shares_of_two_rest_users(direction: &str) -> [f64; 2] {
    const RATE: u64 = 2_000_000;
    const SIZE: usize = 32 * 1024;
    let root = tempfile::tempdir().unwrap();
    let port = free_port();
    htpasswd(&root.path().join("users"), &[("greedy", "g-pw"), ("modest", "m-pw")]);
    let top = format!("rest = \"127.0.0.1:{port}\"");
    let keys = format!(
        "bandwidth_{direction} = {RATE}\nhtpasswd = \"{}/users\"\n\
         [[stores.s.rules]]\nrest_user = \"greedy\"\npermissions = \"lrwW\"\n\
         [[stores.s.rules]]\nrest_user = \"modest\"\npermissions = \"lrwW\"\n",
        root.path().display()
    );
    let d = daemon(root.path(), &top, &keys);
    wait_port(port, "borgstored REST", &d.log);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = d.client("s").await;
        c.open().await.unwrap();
        for i in 0..8 {
            c.store(&format!("item{i}"), vec![i as u8; SIZE]).await.unwrap();
        }
    });
    let start = Instant::now();
    let (from, to) = (Duration::from_secs(1), Duration::from_secs(5));
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let loads = direction == "out";
    let mut threads = Vec::new();
    for (who, user, n) in [(0, ("greedy", "g-pw"), 12), (1, ("modest", "m-pw"), 2)] {
        for t in 0..n {
            let (stop, bytes) = (stop.clone(), bytes[who].clone());
            threads.push(std::thread::spawn(move || {
                let mut i = t;
                let value = vec![7u8; SIZE];
                while !stop.load(Ordering::SeqCst) {
                    if loads {
                        let r = request(port, "GET", &format!("/s/item{}", i % 8), Some(user), &[], b"");
                        assert_eq!(r.status, 200, "{}", r.text());
                        assert_eq!(r.body.len(), SIZE);
                    } else {
                        let r = request(port, "POST", &format!("/s/{}-{t}", user.0), Some(user), &[], &value);
                        assert!(r.status < 300, "{} {}", r.status, r.text());
                    }
                    let at = start.elapsed();
                    if at > from && at <= to {
                        bytes.fetch_add(SIZE as u64, Ordering::SeqCst);
                    }
                    i += 1;
                }
            }));
        }
    }
    std::thread::sleep(to + Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let budget = RATE as f64 * (to - from).as_secs_f64();
    let shares = [0, 1].map(|i| bytes[i].load(Ordering::SeqCst) as f64 / budget);
    eprintln!("bandwidth_{direction}: shares of the budget: greedy {:.2}, modest {:.2}", shares[0], shares[1]);
    shares
}

/// Each of the two users got at least 40% of the budget, and together not much more
/// than all of it.
fn assert_fair(direction: &str) {
    let [greedy, modest] = shares_of_two_rest_users(direction);
    assert!(greedy >= 0.4 && modest >= 0.4, "shares of the budget: greedy {greedy:.2}, modest {modest:.2}");
    assert!(greedy + modest <= 1.3, "the budget holds: {:.2} of it was used", greedy + modest);
}

#[test]
fn two_rest_users_each_get_at_least_forty_percent_of_bandwidth_out() {
    assert_fair("out");
}

#[test]
fn two_rest_users_each_get_at_least_forty_percent_of_bandwidth_in() {
    assert_fair("in");
}

#[test]
fn a_changed_budget_on_sighup_says_it_needs_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon(root.path(), "", "max_concurrency = 2");
    let cfg = root.path().join("borgstored.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("max_concurrency = 2", "max_concurrency = 3");
    std::fs::write(&cfg, text).unwrap();
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.log_text().contains("reloaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = d.log_text();
    assert!(
        log.contains(
            "store s: max_concurrency, bandwidth_in/out, coalesce_reads, connections, write_behind, part_size, \
             part_concurrency and abandoned_upload_age change only with a restart"
        ),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_is_down_at_start_opens_on_first_use() {
    use borgstore_tests::rest::{Impl, RestServer};
    let root = tempfile::tempdir().unwrap();
    let server = RestServer::start(Impl::Ours, &[]);
    let port = server.port;
    let cfg = root.path().join("borgstored.toml");
    std::fs::write(
        &cfg,
        format!(
            "[stores.s]\nurl = \"file://{root}/s\"\ncreate = true\n[stores.remote]\nurl = \"http://127.0.0.1:{port}/\"\ncreate = true\n",
            root = root.path().display()
        ),
    )
    .unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let mut d = Daemon::start_in(tempfile::tempdir().unwrap(), &args, &[]);
    d.terminate(Duration::from_secs(20));
    // The primary goes away; the daemon starts all the same and serves its other store.
    let dir = server.stop();
    d.restart(&args);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d.log_text().contains("primary not reachable, the store opens on first use") {
        assert!(Instant::now() < deadline, "no warning about the primary; log:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let local = d.client("s").await;
    local.open().await.unwrap();
    local.store("x", b"local".to_vec()).await.unwrap();
    let remote = d.client("remote").await;
    assert!(remote.store("x", b"remote".to_vec()).await.is_err(), "the primary is still down");
    // It comes back where it was: the store opens on the next use.
    let backend = format!("file://{}", dir.path().join("store").display());
    let _server = RestServer::start_on(Impl::Ours, dir, &backend, port, &[]);
    remote.store("x", b"remote".to_vec()).await.unwrap();
    assert_eq!(remote.load("x", 0, None, false).await.unwrap(), b"remote");
    assert_eq!(local.load("x", 0, None, false).await.unwrap(), b"local");
}
