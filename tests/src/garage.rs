//! A real distributed object store for tests: a 3-node Garage cluster (2.x) on loopback
//! with replication factor 3 (issue 16).
//!
//! - The binary is `$GARAGE_BINARY`, else `garage` in `~/.cargo/bin`; `tests/run`
//!   builds it once with `cargo install garage --locked` (LMDB only, about 6 minutes on 2 cores)
//!   and a later run finds it there. A missing binary fails with that instruction.
//! - [`Garage::start`] writes one config per node (own metadata and data directories,
//!   RPC, S3 and admin ports, a shared RPC secret), starts the three servers, connects
//!   them, assigns each a role in one zone and applies the layout, then imports a fixed
//!   access key and creates the bucket [`BUCKET`] with that key allowed to read, write
//!   and own it. All of it goes through the `garage` CLI, as an operator would script it.
//! - [`Garage::url`] gives `s3:KEY:SECRET@http://127.0.0.1:PORT/BUCKET/PATH` for any
//!   node's S3 endpoint; [`Garage::kill`] and [`Garage::restart`] stop and start one node.
//! - Dropping a [`Garage`] kills all nodes.

use crate::fixtures::Fixture;
use crate::rest::{free_port, wait_port};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The bucket every test store lives in.
pub const BUCKET: &str = "borgstore-tests";
/// The access key imported into the cluster (Garage key ids are `GK` + 24 hex digits).
pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
/// Its secret (64 hex digits).
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The region the cluster answers to (the S3 backend's default).
pub const REGION: &str = "us-east-1";
const RPC_SECRET: &str = "4425f5c26c5e11581d3223904324dcb5b5d5dfb14e5e7f35e38c595424f5f1e6";

/// The `garage` executable; panics with how to get it.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GARAGE_BINARY") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let exe = home.join(".cargo/bin/garage");
    assert!(
        exe.exists(),
        "garage not found at {}: run tests/run (it builds it once with `cargo install garage --locked`), or set GARAGE_BINARY",
        exe.display()
    );
    exe
}

struct Node {
    child: Option<Child>,
    config: PathBuf,
    s3_port: u16,
    rpc_port: u16,
    log: PathBuf,
}

/// A running 3-node cluster.
pub struct Garage {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// Start three nodes, form the cluster and create the bucket and key.
    pub fn start() -> Garage {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for i in 0..3 {
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root).expect("node dir");
            let (rpc_port, s3_port, admin_port) = (free_port(), free_port(), free_port());
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{r}/meta\"\ndata_dir = \"{r}/data\"\ndb_engine = \"lmdb\"\ncompression_level = \"none\"\n\
                     replication_factor = 3\nrpc_bind_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc_port}\"\nrpc_secret = \"{RPC_SECRET}\"\n\
                     [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\n",
                    r = root.display()
                ),
            )
            .expect("garage.toml");
            let log = root.join("garage.log");
            let mut node = Node { child: None, config, s3_port, rpc_port, log };
            node.spawn();
            nodes.push(node);
        }
        let g = Garage { nodes, _dir: dir };
        for n in &g.nodes {
            wait_port(n.rpc_port, "garage RPC", &n.log);
        }
        let ids: Vec<String> = (0..3).map(|i| g.node_id(i)).collect();
        for id in &ids[1..] {
            g.cli(0, &["node", "connect", id]);
        }
        for id in &ids {
            let short = id.split('@').next().unwrap_or(id);
            g.cli(0, &["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        }
        g.cli(0, &["layout", "apply", "--version", "1"]);
        for n in &g.nodes {
            wait_port(n.s3_port, "garage S3", &n.log);
        }
        g.cli_retrying(0, &["key", "import", "--yes", "-n", "borgstore-tests", ACCESS_KEY, SECRET_KEY]);
        g.cli_retrying(0, &["bucket", "create", BUCKET]);
        g.cli_retrying(0, &["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", ACCESS_KEY]);
        g
    }

    /// `<id>@<addr>` of node `i`.
    fn node_id(&self, i: usize) -> String {
        let out = self.cli(i, &["node", "id", "-q"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Run `garage -c CONFIG ARGS` against node `i`; panics with its output on failure.
    fn cli(&self, i: usize, args: &[&str]) -> Output {
        let out = Command::new(binary()).arg("-c").arg(&self.nodes[i].config).args(args).output().expect("run garage");
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// [`Garage::cli`], retried for a while: right after a layout change the cluster
    /// may not have a quorum for writes yet.
    fn cli_retrying(&self, i: usize, args: &[&str]) -> Output {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out =
                Command::new(binary()).arg("-c").arg(&self.nodes[i].config).args(args).output().expect("run garage");
            if out.status.success() || Instant::now() > deadline {
                assert!(
                    out.status.success(),
                    "garage {args:?} failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                return out;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A store URL at `path` in the bucket, through node `node`'s S3 endpoint.
    pub fn url(&self, node: usize, path: &str) -> String {
        format!("s3:{ACCESS_KEY}:{SECRET_KEY}@http://127.0.0.1:{}/{BUCKET}/{path}", self.nodes[node].s3_port)
    }

    /// `http://127.0.0.1:PORT` of node `node`'s S3 API.
    pub fn endpoint(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[node].s3_port)
    }

    /// Kill node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start node `i` again with its data, and wait until it has rejoined the cluster
    /// (it answers a read that needs a quorum).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
        wait_port(self.nodes[i].s3_port, "garage S3", &self.nodes[i].log);
        self.cli_retrying(i, &["bucket", "info", BUCKET]);
    }

    /// Start a full sync of the metadata tables on every node (`garage repair tables`):
    /// after a node missed deletes while it was down, listings may show the deleted
    /// objects until its tables are synced.
    pub fn repair_tables(&self) {
        self.cli_retrying(0, &["repair", "--all-nodes", "--yes", "tables"]);
    }

    /// The log of node `i`.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }
}

impl Node {
    fn spawn(&mut self) {
        let logfile = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("log file");
        let child = Command::new(binary())
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("start garage server");
        self.child = Some(child);
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The cluster shared by the tests of this binary that run at the same time; started on
/// first use, stopped when the last holder drops it.
pub fn shared() -> Arc<Garage> {
    static SHARED: Mutex<Weak<Garage>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(g) = slot.upgrade() {
        return g;
    }
    let g = Arc::new(Garage::start());
    *slot = Arc::downgrade(&g);
    g
}

/// A fresh, not yet created store on the shared cluster (through node 0), by `s3:` URL.
pub async fn fixture() -> Fixture {
    let garage = tokio::task::spawn_blocking(shared).await.expect("start garage");
    let url = garage.url(0, &crate::moto::unique_path());
    let backend =
        borgstore_daemon::backends::url::backend_from_url(&url, Default::default()).expect("s3 backend from URL");
    Fixture::new(backend, None, garage)
}
