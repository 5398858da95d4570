//! Backend factories for the conformance suite and other tests.
//!
//! A [`Fixture`] is a backend whose store does not exist yet, plus whatever keeps its
//! environment alive (a temp directory, later a server process); dropping it cleans up.

use borgstore_daemon::backends::posixfs::{PosixFs, PosixFsOptions};
use borgstore_daemon::Backend;
use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

/// A fresh backend and the guard that keeps its environment alive.
pub struct Fixture {
    pub backend: Arc<dyn Backend>,
    /// The local root directory where the backend has one (posixfs), for checks
    /// that look behind the backend's back.
    pub root: Option<PathBuf>,
    _guard: Box<dyn Any + Send>,
}

impl Fixture {
    pub fn new(backend: Arc<dyn Backend>, root: Option<PathBuf>, guard: impl Any + Send) -> Self {
        Fixture { backend, root, _guard: Box::new(guard) }
    }
}

/// posixfs in a new temp directory (the store root `store/` does not exist yet).
pub async fn posixfs() -> Fixture {
    posixfs_with(PosixFsOptions::default())
}

/// posixfs as the daemon runs it: no file call on the calling thread except those the
/// kernel's caches answer (`off_thread`).
pub async fn posixfs_off_thread() -> Fixture {
    posixfs_with(PosixFsOptions { off_thread: true, ..Default::default() })
}

/// posixfs with options (permissions, quota, fsync).
pub fn posixfs_with(options: PosixFsOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let backend = PosixFs::new(root.clone(), options).expect("absolute path");
    Fixture::new(Arc::new(backend), Some(root), dir)
}

/// The REST client backend against a fresh `borgstore-server-rest` of `which`
/// (ours or Python's) with Basic auth; the server's store does not exist yet.
pub fn rest_client(which: crate::rest::Impl) -> Fixture {
    let server = crate::rest::RestServer::start(which, &["--username", "conf", "--password", "ormance"]);
    let url = server.url(Some(("conf", "ormance")));
    let backend = borgstore_daemon::backends::url::backend_from_url(&url, Default::default()).expect("REST URL");
    let root = server.store_path();
    Fixture::new(backend, Some(root), server)
}

/// REST client -> our `borgstore-server-rest`.
pub async fn rest_ours() -> Fixture {
    rest_client(crate::rest::Impl::Ours)
}

/// REST client -> Python's `borgstore-server-rest` (0.7.0).
pub async fn rest_python() -> Fixture {
    rest_client(crate::rest::Impl::Python)
}

/// REST client over `rest://` stdio: our `borgstore-server-rest --stdio`, started from a
/// PATH where it comes first, on a fresh local path.
pub async fn rest_stdio() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::os::unix::fs::symlink(crate::daemon::binary("borgstore-server-rest"), bin.join("borgstore-server-rest"))
        .expect("symlink");
    let root = dir.path().join("store");
    let target = borgstore_daemon::backends::rest_client::url::Target::Stdio {
        command: vec![
            bin.join("borgstore-server-rest").display().to_string(),
            "--stdio".into(),
            "--backend".into(),
            format!("FILE:{}", root.display()),
        ],
    };
    let backend = borgstore_daemon::backends::rest_client::RestClient::new(target).expect("stdio client");
    Fixture::new(Arc::new(backend), Some(root), dir)
}

/// The rclone backend on rclone's local backend (`rclone::local:/tmp/...`, an on-the-fly
/// remote, so no rclone config is needed), driving Debian's `rclone rcd`.
pub async fn rclone() -> Fixture {
    assert!(
        std::process::Command::new(borgstore_daemon::backends::rclone::binary()).arg("version").output().is_ok(),
        "rclone is not installed: apt-get install rclone (tests/run installs it)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let url = format!("rclone::local:{}", root.display());
    let backend = borgstore_daemon::backends::url::backend_from_url(&url, Default::default()).expect("rclone URL");
    Fixture::new(backend, Some(root), dir)
}
