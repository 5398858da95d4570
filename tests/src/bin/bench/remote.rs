//! Section `remote`: does a remote store carry concurrent clients (issue 15)? One
//! `borgstored` of its own serves three remote stores, each with 20 ms emulated latency
//! per primary backend call (`latency_us = 20000`), fsync off:
//!
//! - `sftp`: a real OpenSSH sshd on loopback (`tests/src/sshd.rs`), the store's default
//!   4 SSH connections;
//! - `s3`: moto_server on loopback (`tests/src/moto.rs`);
//! - `rest`: the REST client backend (`http://`) against our `borgstore-server-rest`
//!   with a `file://` store.
//!
//! For each: stores, then loads, of 64 KiB values by 1 IPC client doing one operation
//! at a time, and by 16 IPC clients at once (each one at a time, different items). With
//! the latency dominating, 16 clients should get close to 16 times the rate of one; the
//! targets ask for 10 times. What limits it otherwise is printed beside: the server
//! (moto is one Python process), this machine's cores, or something that serializes.
//!
//! Then all 16 clients load one hot item at once: with coalescing (the default of remote
//! stores) most loads join another's backend call, so the line shows the backend loads
//! each load cost; the `coalescing off` line of each backend is the same store without.
//! The `write-behind on` line is the same store with its `data/` namespace spooled
//! locally: stores are acknowledged from the spool, and its `synced` line counts them
//! until a `sync` after them returned (everything on the primary). The `no latency`
//! line measures the server's own limit. More lines per backend go into [`variants`].

use crate::common::{keys, Mode, Results};
use borgstore_client::{Client, ClientOptions};
use borgstore_tests::daemon::Daemon;
use borgstore_tests::moto::Moto;
use borgstore_tests::rest::{Impl, RestServer};
use borgstore_tests::sshd::Sshd;
use std::sync::Arc;
use std::time::Instant;

/// Emulated latency per primary backend call, µs.
pub const LATENCY_US: u32 = 20_000;
/// Value size.
const SIZE: usize = 64 * 1024;
/// Concurrent clients of the second column.
const CLIENTS: usize = 16;
/// The backends, in the order measured (and their result keys `remote/<name>/...`).
pub const BACKENDS: [&str; 3] = ["sftp", "s3", "rest"];

/// One store of the section's daemon: its name there, the backend it measures, and its
/// `[stores.NAME]` table without the header.
#[derive(Clone)]
pub struct StoreConfig {
    /// Store name in the daemon (`sftp`, `s3`, `rest`; variants add `-label`).
    pub name: String,
    /// Which of [`BACKENDS`].
    pub backend: &'static str,
    /// What the line says beside the backend ("" for the plain store).
    pub label: String,
    /// TOML keys of the store table.
    pub toml: String,
    /// More TOML keys of its `data/` namespace table (`{SPOOL}` becomes a fresh spool
    /// directory).
    pub data_ns: String,
}

/// The stores to measure for one backend, given its plain store: the plain one first.
///
/// THE PLACE FOR MORE LINES: add a variant per feature setting here, e.g. coalescing
/// on/off and write-behind on/off, once those have store config keys: clone `base`, give
/// it a new `name` (`format!("{}-wb", base.name)`) and `label` ("write-behind on"), and
/// append the keys to `toml`. Each variant is a store of its own in the same daemon, on
/// a fresh path of the same server, measured and printed like the plain one (targets are
/// only checked for the plain store).
fn variants(base: &StoreConfig) -> Vec<StoreConfig> {
    let mut off = base.clone();
    off.name = format!("{}-nocoalesce", base.name);
    off.label = "coalescing off".into();
    off.toml.push_str("coalesce_reads = false\n");
    // The same server without the emulated latency: what it (and this machine) can do
    // at most with 16 clients, the limit the 16-client figures are held against.
    let mut fast = base.clone();
    fast.name = format!("{}-nolatency", base.name);
    fast.label = NO_LATENCY.into();
    fast.toml = fast.toml.replace(&format!("latency_us = {LATENCY_US}"), "latency_us = 0");
    // Stores acknowledged from a local spool, uploaded in the background.
    let mut wb = base.clone();
    wb.name = format!("{}-wb", base.name);
    wb.label = WRITE_BEHIND.into();
    wb.data_ns = "write_behind = \"{SPOOL}\"\n".into();
    vec![base.clone(), off, wb, fast]
}

/// The label of the write-behind variant.
const WRITE_BEHIND: &str = "write-behind on";

/// The label of the variant that measures the server's own limit.
const NO_LATENCY: &str = "no latency";

/// Rates of one store: `store`/`load` with 1 and with [`CLIENTS`] clients, and loads of
/// one hot item by all clients at once with the backend loads each of them cost.
struct Line {
    store1: f64,
    store16: f64,
    /// Stores until a `sync` after them returned (all on the primary).
    store1_synced: f64,
    store16_synced: f64,
    load1: f64,
    load16: f64,
    hot16: f64,
    hot_backend_per_load: f64,
}

/// The peers and the daemon of the section (kept alive together, dropped at the end).
struct Setup {
    daemon: Daemon,
    sshd: Sshd,
    _moto: Moto,
    _rest: Vec<RestServer>,
    stores: Vec<StoreConfig>,
}

fn setup() -> Setup {
    let sshd = Sshd::start();
    let moto = Moto::start();
    let mut rest = vec![RestServer::start(Impl::Ours, &[])];
    let plain = |backend: &'static str, url: String| StoreConfig {
        name: backend.to_string(),
        backend,
        label: String::new(),
        toml: format!(
            "url = \"{url}\"\ncreate = true\nlatency_us = {LATENCY_US}\nfsync = \"off\"\nserve_on = [\"socket\"]\n"
        ),
        data_ns: String::new(),
    };
    // Each variant gets a fresh place: a new path on the same sshd and moto, a REST
    // server of its own (one serves one store).
    let mut stores = Vec::new();
    for (backend, url) in [("sftp", sshd.url()), ("s3", moto.fresh_url()), ("rest", rest[0].url(None))] {
        for (i, mut v) in variants(&plain(backend, url)).into_iter().enumerate() {
            if i > 0 {
                let fresh = match backend {
                    "sftp" => sshd.url(),
                    "s3" => moto.fresh_url(),
                    _ => {
                        rest.push(RestServer::start(Impl::Ours, &[]));
                        rest[rest.len() - 1].url(None)
                    }
                };
                v.toml = v.toml.replacen(&first_url(&v.toml), &fresh, 1);
            }
            stores.push(v);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::new();
    for s in &stores {
        let spool = dir.path().join(format!("spool-{}", s.name));
        config.push_str(&format!(
            "[stores.{name}]\n{toml}[stores.{name}.namespaces.\"data/\"]\nlevels = [2]\n{data_ns}\
             [stores.{name}.namespaces.\"\"]\nlevels = [0]\n",
            name = s.name,
            toml = s.toml,
            data_ns = s.data_ns.replace("{SPOOL}", &spool.display().to_string())
        ));
    }
    let path = dir.path().join("remote.toml");
    std::fs::write(&path, config).unwrap();
    let env = sshd.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let daemon = Daemon::start_in(dir, &["--config", path.to_str().unwrap()], &env);
    Setup { daemon, sshd, _moto: moto, _rest: rest, stores }
}

/// The value of the `url = "..."` line of a store table.
fn first_url(toml: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix("url = \"").and_then(|r| r.strip_suffix('"')))
        .unwrap_or_default()
        .to_string()
}

/// `op` (store or load) of every key in `ks`, split over `clients` (client `i` takes
/// every `clients`-th key from `i`, one at a time); ops/s.
async fn phase(clients: &[Client], op: &'static str, ks: Arc<Vec<String>>, value: Arc<Vec<u8>>) -> f64 {
    let n = clients.len();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (ci, c) in clients.iter().enumerate() {
        let (c, ks, value) = (c.clone(), ks.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            for k in ks.iter().skip(ci).step_by(n) {
                if op == "store" {
                    c.store(k, value.to_vec()).await.unwrap_or_else(|e| panic!("store {k}: {e}"));
                } else {
                    let v = c.load(k, 0, None, false).await.unwrap_or_else(|e| panic!("load {k}: {e}"));
                    assert!(v == *value, "load {k}: another value came back");
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    ks.len() as f64 / t.elapsed().as_secs_f64()
}

async fn measure(daemon: &Daemon, store: &str, n1: usize, n16: usize) -> Line {
    let connect = || Client::connect(ClientOptions::new(store).socket(&daemon.socket));
    let one = vec![connect().await.unwrap()];
    let mut many = Vec::new();
    for _ in 0..CLIENTS {
        many.push(connect().await.unwrap());
    }
    // Warm up (connections, nesting directories on the way) outside the timed phases.
    let warm = keys(n1 + n16 + 4);
    for k in &warm[n1 + n16..] {
        one[0].store(k, vec![1; SIZE]).await.unwrap_or_else(|e| panic!("store {k}: {e}"));
        one[0].load(k, 0, None, false).await.unwrap_or_else(|e| panic!("load {k}: {e}"));
    }
    let all = keys(n1 + n16);
    let (k1, k16) = (Arc::new(all[..n1].to_vec()), Arc::new(all[n1..].to_vec()));
    let value: Arc<Vec<u8>> = Arc::new((0..SIZE).map(|i| (i % 251) as u8).collect());
    let store1 = phase(&one, "store", k1.clone(), value.clone()).await;
    let store1_synced = synced(&one[0], k1.len(), store1).await;
    let store16 = phase(&many, "store", k16.clone(), value.clone()).await;
    let store16_synced = synced(&one[0], k16.len(), store16).await;
    let load1 = phase(&one, "load", k1, value.clone()).await;
    let load16 = phase(&many, "load", k16.clone(), value.clone()).await;
    // Every client loads the same item, n16 loads in all: what coalescing saves.
    let hot = Arc::new(vec![k16[0].clone(); n16]);
    let before = backend_loads(&one[0]).await;
    let hot16 = phase(&many, "load", hot, value).await;
    let hot_backend_per_load = (backend_loads(&one[0]).await - before) as f64 / n16 as f64;
    Line { store1, store16, store1_synced, store16_synced, load1, load16, hot16, hot_backend_per_load }
}

/// The rate of `n` stores that went at `rate` ops/s, counted until a `sync` after them
/// returned (for a store without write-behind, `sync` returns at once).
async fn synced(c: &Client, n: usize, rate: f64) -> f64 {
    let t = Instant::now();
    c.sync().await.expect("sync");
    n as f64 / (n as f64 / rate + t.elapsed().as_secs_f64())
}

async fn backend_loads(c: &Client) -> i64 {
    match c.stats().await.expect("stats").get("backend_load_calls") {
        Some(borgstore_ipc::StatValue::Int(n)) => *n,
        other => panic!("backend_load_calls: {other:?}"),
    }
}

pub async fn section(mode: Mode, res: &mut Results) {
    // 1 client: n1 operations of >= 20 ms each; 16 clients: n16 / 16 rounds of them.
    let n1 = mode.pick(3, 20, 60);
    let n16 = mode.pick(CLIENTS, 320, 960);
    println!(
        "== remote: 64 KiB values, {} ms emulated latency per backend call, 1 client ({n1} ops) vs \
         {CLIENTS} clients ({n16} ops), ops/s\n",
        LATENCY_US / 1000
    );
    let s = tokio::task::spawn_blocking(setup).await.unwrap();
    println!("{:<22} {:>6} {:>10} {:>10} {:>7}", "store", "op", "1 client", "16 clients", "ratio");
    let mut plain: std::collections::HashMap<&str, (f64, f64, f64, f64)> = Default::default();
    for store in &s.stores {
        let line = measure(&s.daemon, &store.name, n1, n16).await;
        if store.label.is_empty() {
            plain.insert(store.backend, (line.store1, line.store16, line.load1, line.load16));
        }
        if store.label == NO_LATENCY {
            // 16 clients can at best do 16 times one client, or what the server does
            // without latency, whichever is less.
            if let Some((s1, s16, l1, l16)) = plain.get(store.backend).copied() {
                for (op, one, ours, fast) in [("store", s1, s16, line.store16), ("load", l1, l16, line.load16)] {
                    let limit = (CLIENTS as f64 * one).min(fast);
                    println!(
                        "{:<22} {op:>6} 16 clients {ours:.1} vs limit {limit:.1} = min(16 x 1 client, {fast:.1} \
                         without latency): ratio {:.2}",
                        format!("{} vs limit", store.backend),
                        ours / limit
                    );
                    res.set(format!("remote/{}/{op}16lim", store.backend), limit);
                }
            }
            continue;
        }
        let shown = if store.label.is_empty() {
            store.backend.to_string()
        } else {
            format!("{} {}", store.backend, store.label)
        };
        for (op, one, many) in [("store", line.store1, line.store16), ("load", line.load1, line.load16)] {
            println!("{shown:<22} {op:>6} {one:>10.1} {many:>10.1} {:>6.1}x", many / one);
        }
        if store.label == WRITE_BEHIND {
            res.set(format!("remote/{}/wb/store1", store.backend), line.store1);
            println!(
                "{shown:<22} {:>6} {:>10.1} {:>10.1} {:>6.1}x   (stores until a sync after them returned)",
                "synced",
                line.store1_synced,
                line.store16_synced,
                line.store16_synced / line.store1_synced
            );
        }
        println!(
            "{shown:<22} {:>6} {:>10} {:>10.1} {:>6.1}x   (one item, all clients; {:.2} backend loads per load)",
            "hot",
            "",
            line.hot16,
            line.hot16 / line.load1,
            line.hot_backend_per_load
        );
        if store.label.is_empty() {
            let key = format!("remote/{}", store.backend);
            res.set(format!("{key}/store1"), line.store1);
            res.set(format!("{key}/store16"), line.store16);
            res.set(format!("{key}/load1"), line.load1);
            res.set(format!("{key}/load16"), line.load16);
            res.set(format!("{key}/hot_backend_per_load"), line.hot_backend_per_load);
        }
        if store.backend == "sftp" && store.label.is_empty() {
            println!("{:<22} SSH connections open after it: {}", "", s.sshd.established());
        }
    }
    println!();
    drop(s);
}
