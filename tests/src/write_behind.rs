//! A write-behind setup for tests: a remote primary (our `borgstore-server-rest` serving
//! a `file://` store on loopback) that the test can stop, restart, or restart read-only,
//! and a `borgstored` whose store `wb` writes its `data/` namespace behind to a spool, over
//! that primary. A second store `plain` (a `file://` store with the same namespaces) is
//! the reference a write-behind store must look like.

use crate::daemon::Daemon;
use crate::rest::{wait_port, Impl, RestServer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Uploads retry at least this often in tests (ms), so a primary that comes back is
/// used soon.
pub const RETRY_MAX_MS: &str = "200";

/// The primary, the daemon, and where everything lives.
pub struct WriteBehindSetup {
    /// The running primary (None while stopped).
    pub primary: Option<RestServer>,
    /// The primary's directory while it is stopped.
    parked: Option<tempfile::TempDir>,
    /// The primary's port (the same across restarts).
    pub port: u16,
    /// The daemon (replaced by [`WriteBehindSetup::restart_daemon`]).
    pub daemon: Daemon,
    /// Config, spool and the plain store live here.
    pub home: tempfile::TempDir,
    /// The daemon's REST port, when it has one.
    pub rest_port: Option<u16>,
}

impl WriteBehindSetup {
    /// Start both; the `wb` store's spool is bounded by `max_bytes` (None: the default);
    /// `rest` also opens the daemon's REST door (stores public there).
    pub fn start(max_bytes: Option<u64>, rest: bool) -> WriteBehindSetup {
        Self::start_in(tempfile::tempdir().expect("temp dir"), max_bytes, rest)
    }

    /// Like [`WriteBehindSetup::start`] with the spool on a tmpfs of `size` (e.g. `1m`),
    /// for full-disk tests; the disk is unmounted when the returned guard drops.
    pub fn start_on_small_spool(size: &str, max_bytes: Option<u64>) -> (WriteBehindSetup, crate::disk::SmallDisk) {
        let home = tempfile::tempdir().expect("temp dir");
        let disk = crate::disk::SmallDisk::mount_at(&home.path().join("spool"), size);
        (Self::start_in(home, max_bytes, false), disk)
    }

    fn start_in(home: tempfile::TempDir, max_bytes: Option<u64>, rest: bool) -> WriteBehindSetup {
        let primary = RestServer::start(Impl::Ours, &[]);
        let port = primary.port;
        let rest_port = rest.then(crate::rest::free_port);
        let max = max_bytes.map(|m| format!("write_behind_max_bytes = {m}\n")).unwrap_or_default();
        let rest_line = rest_port.map(|p| format!("rest = \"127.0.0.1:{p}\"\n")).unwrap_or_default();
        let public = if rest { "public_on = [\"rest\"]\n" } else { "" };
        let config = format!(
            "{rest_line}\
             [stores.wb]\nurl = \"http://127.0.0.1:{port}/\"\n{public}\
             [stores.wb.namespaces.\"\"]\nlevels = [0]\n\
             [stores.wb.namespaces.\"data/\"]\nlevels = [2]\nwrite_behind = \"{spool}\"\n{max}\
             [stores.plain]\nurl = \"file://{plain}\"\ncreate = true\n{public}\
             [stores.plain.namespaces.\"\"]\nlevels = [0]\n\
             [stores.plain.namespaces.\"data/\"]\nlevels = [2]\n",
            spool = home.path().join("spool").display(),
            plain = home.path().join("plain").display(),
        );
        std::fs::write(home.path().join("borgstored.toml"), config).expect("write config");
        let daemon = Self::spawn_daemon(home.path(), rest_port);
        WriteBehindSetup { primary: Some(primary), parked: None, port, daemon, home, rest_port }
    }

    fn spawn_daemon(home: &Path, rest_port: Option<u16>) -> Daemon {
        let config = home.join("borgstored.toml");
        let d = Daemon::start_in(
            tempfile::tempdir().expect("temp dir"),
            &["--config", config.to_str().expect("utf-8 path")],
            &[("BORGSTORE_WRITE_BEHIND_RETRY_MAX_MS", RETRY_MAX_MS)],
        );
        if let Some(p) = rest_port {
            wait_port(p, "borgstored REST", &d.log);
        }
        d
    }

    /// Kill the daemon with SIGKILL (no shutdown at all).
    pub fn kill_daemon(&mut self) {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
    }

    /// Start a new daemon on the same configuration and spool.
    pub fn restart_daemon(&mut self) {
        self.daemon = Self::spawn_daemon(self.home.path(), self.rest_port);
    }

    /// Stop the primary (its data stays).
    pub fn stop_primary(&mut self) {
        if let Some(p) = self.primary.take() {
            self.parked = Some(p.stop());
        }
    }

    /// Start the primary again on its port and data; `args` e.g.
    /// `["--permissions", "borgbackup-read-only"]` for a primary that refuses writes.
    pub fn start_primary(&mut self, args: &[&str]) {
        self.stop_primary();
        let dir = self.parked.take().expect("a stopped primary");
        let backend = format!("file://{}", dir.path().join("store").display());
        self.primary = Some(RestServer::start_on(Impl::Ours, dir, &backend, self.port, args));
    }

    /// The primary's store directory (valid while it runs).
    pub fn primary_store(&self) -> PathBuf {
        self.primary.as_ref().expect("primary running").store_path()
    }

    /// Every file below the primary's `data/` (nested name -> content), read directly.
    pub fn primary_data(&self) -> BTreeMap<String, Vec<u8>> {
        files(&self.primary_store(), "data")
    }

    /// The spool directory.
    pub fn spool(&self) -> PathBuf {
        self.home.path().join("spool")
    }

    /// Entry and temp files in the spool (not the corrupt/ directory).
    pub fn spool_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.spool())
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.retain(|n| n != "corrupt");
        v.sort();
        v
    }
}

/// Files below `root/rel`, by path relative to `root`.
pub fn files(root: &Path, rel: &str) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).expect("below root").display().to_string();
                    out.insert(rel, std::fs::read(&p).unwrap_or_default());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &root.join(rel), &mut out);
    out
}
