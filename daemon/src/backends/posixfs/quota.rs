//! Quota tracking of the posixfs backend, on-disk compatible with Python borgstore.
//!
//! Usage lives in `quota.hid` at the store root as a plain decimal number. Updates are
//! applied as a delta to the on-disk value under an exclusive `flock` on that file, so
//! several processes (Python or Rust) sharing one store keep a correct total. A missing
//! or unreadable file triggers a rescan of the tree. Writing every change would be
//! slow, so a change is persisted once it reaches [`PERSIST_DELTA`] bytes or
//! [`PERSIST_INTERVAL`] has passed, and always on close.
//!
//! All functions here block; callers run them off the async executor.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// File name of the usage file at the store root.
pub const QUOTA_FILE: &str = "quota.hid";
/// Persist once usage changed by this many bytes since the last persist.
pub const PERSIST_DELTA: i64 = 10_000_000;
/// Persist at least this often while changes happen.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(300);

/// In-memory quota state of one open backend.
#[derive(Debug)]
pub struct QuotaState {
    /// The most bytes the store may use.
    pub limit: u64,
    /// Usage as this process believes it (persisted value + own unpersisted changes).
    pub usage: i64,
    persisted: i64,
    last_persist: Instant,
}

impl QuotaState {
    /// A state with `limit` bytes and usage 0, not yet read from disk.
    pub fn new(limit: u64) -> Self {
        QuotaState { limit, usage: 0, persisted: 0, last_persist: Instant::now() }
    }

    /// Would adding `delta` bytes exceed the limit?
    pub fn would_exceed(&self, delta: i64) -> bool {
        self.usage + delta > self.limit as i64
    }

    /// Account `delta` and persist when due (or when `force`).
    pub fn update(&mut self, root: &Path, delta: i64, force: bool) -> io::Result<()> {
        self.usage += delta;
        let pending = self.usage - self.persisted;
        if force || pending.abs() >= PERSIST_DELTA || self.last_persist.elapsed() >= PERSIST_INTERVAL {
            self.persist(root, pending)?;
        }
        Ok(())
    }

    /// Apply `delta` to the on-disk value under the lock and re-sync with it.
    pub fn persist(&mut self, root: &Path, delta: i64) -> io::Result<()> {
        let value = persist_delta(root, delta)?;
        self.usage = value;
        self.persisted = value;
        self.last_persist = Instant::now();
        Ok(())
    }
}

/// Add `delta` to the usage in `root/quota.hid` under an exclusive lock and return the
/// new value. A missing or invalid file is replaced by the result of a full scan.
pub fn persist_delta(root: &Path, delta: i64) -> io::Result<i64> {
    let path = root.join(QUOTA_FILE);
    loop {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut locked = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        // Another process may have replaced the file while we waited for the lock: then
        // we hold a lock on an unlinked inode and must retry with the current one.
        let current = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mine = locked.metadata()?;
        if mine.ino() != current.ino() || mine.dev() != current.dev() {
            continue;
        }
        let mut text = String::new();
        let on_disk = match locked.read_to_string(&mut text).ok().and_then(|_| text.trim().parse::<i64>().ok()) {
            Some(v) => v + delta,
            None => scan_usage(root, &path)? as i64,
        };
        let value = on_disk.max(0);
        // Replace atomically; the lock stays on the old inode until we drop it, and a
        // waiter notices the replacement by the inode check above.
        let mut tmp = tempfile::Builder::new().prefix("quota").suffix(".tmp").tempfile_in(root)?;
        tmp.write_all(value.to_string().as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        drop(locked);
        return Ok(value);
    }
}

/// Total size of all regular files below `root`, except `skip`.
pub fn scan_usage(root: &Path, skip: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() && entry.path() != skip {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

/// Remove the usage file (a store opened without quota must not keep a stale value).
pub fn remove(root: &Path) -> io::Result<()> {
    match fs::remove_file(root.join(QUOTA_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Read the current on-disk value, if any (for tests and diagnostics).
pub fn read(root: &Path) -> Option<i64> {
    let mut s = String::new();
    File::open(root.join(QUOTA_FILE)).ok()?.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}
