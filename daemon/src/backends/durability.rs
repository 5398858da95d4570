//! What "stored" promises: the `fsync` setting of a store.
//!
//! - `off`: acknowledged once the operating system has the bytes (a process crash loses
//!   nothing acknowledged; a power loss may).
//! - `always`: every write is flushed on its own before it is acknowledged: the file's
//!   data before the rename that publishes it, then its directory (and any directory the
//!   write created) after the rename; deletes and moves flush their directories.
//! - `batch` (default): the same promise as `always`, with group commit: concurrent
//!   writes share flushes, so many writers pay for few. Each write is acknowledged only
//!   after a flush that began after its data (and again after its rename) was written.
//!
//! In every mode a value becomes visible only complete (temp file, then rename), so a
//! crash never leaves a torn item. How each backend keeps the promise:
//! - posixfs: `always` with fdatasync/fsync per file and directory; `batch` with
//!   `syncfs` passes over the store's file system shared by all writes in flight (see
//!   `posixfs::sync`).
//! - sftp: `always` and `batch` send `fsync@openssh.com` for the file before the rename
//!   when the server offers it (OpenSSH does); directories cannot be flushed over sftp.
//! - s3/b2: a PUT is durable when the service answers 200; nothing to add.
//! - rclone and REST client: durable as the remote side makes them (our REST server
//!   applies its own `--fsync`).

use borgstore_ipc::{Error, Result};

/// The durability of acknowledged writes (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FsyncMode {
    /// Acknowledge once the operating system has the bytes; nothing is flushed.
    Off,
    /// Flush each write (file, then directories) before acknowledging it.
    Always,
    /// The promise of `Always`, with flushes shared by concurrent writes.
    #[default]
    Batch,
}

impl FsyncMode {
    /// The setting as written: `off`, `always` or `batch`.
    pub fn name(self) -> &'static str {
        match self {
            FsyncMode::Off => "off",
            FsyncMode::Always => "always",
            FsyncMode::Batch => "batch",
        }
    }

    /// Does an acknowledged write have to be on stable storage?
    pub fn durable(self) -> bool {
        self != FsyncMode::Off
    }
}

impl std::str::FromStr for FsyncMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<FsyncMode> {
        match s {
            "off" => Ok(FsyncMode::Off),
            "always" => Ok(FsyncMode::Always),
            "batch" => Ok(FsyncMode::Batch),
            _ => Err(Error::invalid(format!("fsync {s:?}: use off, always or batch"))),
        }
    }
}

impl std::fmt::Display for FsyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
