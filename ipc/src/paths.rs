//! Where the daemon's socket is by default, so that the daemon and every client agree
//! without configuration.

use std::path::{Path, PathBuf};

/// The environment variable clients read to find a daemon elsewhere.
pub const SOCKET_ENV: &str = "BORGSTORE_SOCKET";

/// `$XDG_RUNTIME_DIR/borgstore/borgstored.sock`; `/run/borgstore/borgstored.sock` for
/// root; `/tmp/borgstore-UID/borgstored.sock` when there is no runtime directory.
pub fn default_socket_for(uid: u32, xdg_runtime_dir: Option<&Path>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from("/run/borgstore/borgstored.sock");
    }
    match xdg_runtime_dir.filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.join("borgstore/borgstored.sock"),
        None => PathBuf::from(format!("/tmp/borgstore-{uid}/borgstored.sock")),
    }
}
