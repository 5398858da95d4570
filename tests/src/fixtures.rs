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

/// posixfs with options (permissions, quota, fsync).
pub fn posixfs_with(options: PosixFsOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("store");
    let backend = PosixFs::new(root.clone(), options).expect("absolute path");
    Fixture::new(Arc::new(backend), Some(root), dir)
}
