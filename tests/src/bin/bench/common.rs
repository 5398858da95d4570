//! What every section shares: run sizes, the key set, the daemon the whole run talks to,
//! and the table of measured figures the targets are checked against.
//!
//! One daemon serves every section (IPC, REST, fsync) so that its memory at the end is
//! the memory of a daemon that did the whole bench.

use borgstore_client::{Client, ClientOptions};
use borgstore_daemon::backends::durability::FsyncMode;
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_tests::daemon::Daemon;
use std::collections::BTreeMap;

/// The per-item operations, in the order every workload runs them.
pub const OPS: [&str; 5] = ["store", "load", "info", "list", "delete"];

/// ops/s by operation.
pub type Rates = BTreeMap<&'static str, f64>;

/// Run length: `--smoke` (tests/run proves the bench still runs), `--quick`, or full.
#[derive(Clone, Copy)]
pub struct Mode {
    pub quick: bool,
    pub smoke: bool,
}

impl Mode {
    /// `s` under --smoke, `q` under --quick, `full` otherwise.
    pub fn pick(self, s: usize, q: usize, full: usize) -> usize {
        if self.smoke {
            s
        } else if self.quick {
            q
        } else {
            full
        }
    }
}

/// `n` store keys `data/<sha256 hex>`, nested by the store as `data/01/23/0123…`.
pub fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("data/{}", HashAlgorithm::Sha256.hex_digest(&(i as u64).to_le_bytes()))).collect()
}

/// Where the store puts `key` (`data/0123…`) under the namespace root: `01/23/0123…`.
pub fn nested(key: &str) -> String {
    let leaf = key.strip_prefix("data/").unwrap_or(key);
    format!("{}/{}/{leaf}", &leaf[..2], &leaf[2..4])
}

/// Make the nesting directories of `keys` under the namespace directory `data` (which
/// may not exist yet), as Python borgstore's `create` does for every nesting directory:
/// a timed store phase then measures the same work in every column (Python's stores
/// never make a directory; ours would make one per key otherwise).
pub fn make_dirs_for(data: &std::path::Path, keys: &[String]) {
    for k in keys {
        let item = data.join(nested(k));
        std::fs::create_dir_all(item.parent().unwrap()).unwrap();
    }
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// The stores of the one bench daemon: name and fsync mode. `rest` is the only one on
/// the REST listener (with Basic auth); the others are served on the Unix socket only.
/// The store whose caller has a restricted profile (see [`BenchDaemon::start`]).
pub const PROFILED: &str = "profiled";

pub const STORES: [(&str, FsyncMode); 7] = [
    ("small", FsyncMode::Off),
    ("big", FsyncMode::Off),
    ("mem", FsyncMode::Off),
    ("rest", FsyncMode::Off),
    ("off", FsyncMode::Off),
    ("batch", FsyncMode::Batch),
    ("always", FsyncMode::Always),
];

/// Basic auth of the `rest` store.
pub const REST_AUTH: (&str, &str) = ("bench", "bench");

/// The daemon every section uses, its stores in its directory (data/ at 2 nesting levels),
/// REST on `127.0.0.1:rest_port`.
pub struct BenchDaemon {
    pub daemon: Daemon,
    pub rest_port: u16,
}

impl BenchDaemon {
    pub fn start() -> BenchDaemon {
        let dir = tempfile::tempdir().unwrap();
        let rest_port = borgstore_tests::rest::free_port();
        let mut args = vec!["--rest".to_string(), format!("127.0.0.1:{rest_port}")];
        for (name, fsync) in STORES {
            args.push("--store".to_string());
            args.push(format!("{name}=file://{}/{name}", dir.path().display()));
            args.push("--fsync".to_string());
            args.push(format!("{name}={fsync}"));
            args.push("--levels".to_string());
            args.push(format!("{name}:data/=2"));
            args.push("--levels".to_string());
            args.push(format!("{name}:=0"));
            if name == "rest" {
                args.push("--rest-auth".to_string());
                args.push(format!("rest={}:{}", REST_AUTH.0, REST_AUTH.1));
            } else {
                args.push("--serve-on".to_string());
                args.push(format!("{name}=socket"));
            }
        }
        // A store whose only caller (the bench, the daemon's own uid) has a profile the
        // store actor checks: letters without W, so every store of a new item also asks
        // whether it exists (Python's 'w' rule), as a no-delete backup client's do.
        let config = dir.path().join("bench.toml");
        let uid = nix::unistd::getuid().as_raw();
        let toml = format!(
            "[stores.{PROFILED}]\nurl = \"file://{}/{PROFILED}\"\nfsync = \"off\"\nserve_on = [\"socket\"]\n\
             [stores.{PROFILED}.namespaces.\"data/\"]\nlevels = [2]\n[stores.{PROFILED}.namespaces.\"\"]\nlevels = [0]\n\
             [[stores.{PROFILED}.rules]]\nuid = {uid}\npermissions = \"lrwD\"\n",
            dir.path().display()
        );
        std::fs::write(&config, toml).unwrap();
        args.push("--config".to_string());
        args.push(config.display().to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = Daemon::start_in(dir, &refs, &[]);
        borgstore_tests::rest::wait_port(rest_port, "borgstored REST", &daemon.log);
        BenchDaemon { daemon, rest_port }
    }

    /// The directory of a store on disk.
    pub fn store_dir(&self, name: &str) -> std::path::PathBuf {
        self.daemon.path(name)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.child.id()
    }

    /// A client that created `store`, and `n` more clients of it.
    pub async fn clients(&self, store: &str, n: usize) -> (Client, Vec<Client>) {
        let options = || ClientOptions::new(store).socket(&self.daemon.socket);
        let first = Client::connect(options()).await.unwrap();
        first.create().await.unwrap();
        let mut more = Vec::new();
        for _ in 0..n {
            more.push(Client::connect(options()).await.unwrap());
        }
        (first, more)
    }
}

/// Every figure a target needs, by name (e.g. `engine/4k/load`), as sections measure it.
#[derive(Default)]
pub struct Results(BTreeMap<String, f64>);

impl Results {
    pub fn set(&mut self, key: impl Into<String>, v: f64) {
        self.0.insert(key.into(), v);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied().filter(|v| v.is_finite())
    }

    /// Record every rate as `prefix/op`.
    pub fn set_rates(&mut self, prefix: &str, rates: &Rates) {
        for (op, v) in rates {
            self.set(format!("{prefix}/{op}"), *v);
        }
    }
}
