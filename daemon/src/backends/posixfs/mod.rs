//! `file:///abs/path`: items as files in a directory tree, byte-compatible with Python
//! borgstore's posixfs backend (same tree, `.del` suffix, `quota.hid`, `.tmp` uploads).
//!
//! - Store writes a uniquely named `*.tmp` file in the target directory and renames it
//!   into place, so readers see the old or the new value, never a part. Values larger
//!   than [`crate::backends::body::STREAM_ABOVE`] that arrive as a stream (REST uploads)
//!   go to the temp file piece by piece, after permissions and quota have accepted the
//!   announced length and before a byte of the value is read.
//! - Durability follows the store's [`FsyncMode`]: `always` flushes each file before the
//!   rename and its directory after; `batch` shares `syncfs` passes between concurrent
//!   writes ([`sync`]); deletes, moves and new directories are flushed too. Nothing is
//!   acknowledged before its flush.
//! - The quota lock is held only around the final check, rename and count of a store,
//!   never while its bytes are written.
//! - [`cached`]: info and load from the kernel's caches only, for the daemon's store
//!   thread; [`permissions`]: the `l r w W D` letters; [`quota`]: usage tracking in
//!   `quota.hid`; [`sweep`]: stale temp files of killed writes are removed at open.
//! - Where a call runs: in-process, calls that take microseconds run on the calling
//!   thread: info, list (one directory level), delete, move, mkdir, rmdir, quota, and
//!   loads and stores of values up to [`INLINE_MAX`] bytes, unless `fsync = "always"`
//!   makes them wait for a flush. A hop to the blocking pool and back costs more than
//!   such a call (two thread wake-ups, ~10-20 µs on a VM, against ~5 µs for a stat or a
//!   small read from the page cache). Everything that may take long (large values,
//!   per-file flushes, hash, gather, create, destroy, open) runs in
//!   `spawn_blocking`. The daemon runs every call there
//!   ([`PosixFsOptions::off_thread`]): its store thread never blocks on file I/O;
//!   only an info and a load may skip the hop, when the kernel's caches answer them
//!   without waiting ([`cached`]). A large load then answers with the open file, which
//!   the door sends a piece at a time ([`crate::backends::value`]).
//! - Error messages name the item, never the absolute path of the store.

pub mod cached;
pub mod permissions;
pub mod quota;
pub mod sweep;
pub mod sync;

use super::body::{Body, BodyStream, STREAM_ABOVE};
use super::durability::FsyncMode;
use super::value::{FileRange, Value};
use super::{check_range, defrag_target_name, Backend, DefragTarget};
use crate::hashing::HashAlgorithm;
use crate::names::{shown, validate_item_name, validate_name};
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source};
use bytes::{Bytes, BytesMut};
use cached::{Cached, Stat};
pub use permissions::Permissions;
use quota::QuotaState;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::UNIX_EPOCH;
use sync::GroupCommit;

/// Options of a posixfs backend.
#[derive(Debug, Clone, Default)]
pub struct PosixFsOptions {
    /// Permission letters per name; empty allows everything.
    pub permissions: Permissions,
    /// Quota limit in bytes; `None` turns quota tracking off.
    pub quota: Option<u64>,
    /// Durability of acknowledged writes.
    pub fsync: FsyncMode,
    /// Run every file system call on the blocking pool, none on the calling thread.
    /// The daemon sets this: its store thread serves every store and every IPC
    /// connection, and must never block on file I/O (DESIGN.md section 4). In-process
    /// users leave it off and get the µs-scale calls without a thread hop.
    pub off_thread: bool,
}

/// A store in a local directory.
#[derive(Clone)]
pub struct PosixFs {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    options: PosixFsOptions,
    opened: AtomicBool,
    quota: Mutex<Option<QuotaState>>,
    /// Group commit of `batch` mode, made at open.
    commit: Mutex<Option<GroupCommit>>,
    /// Calls sent to the blocking pool so far (see [`PosixFs::pool_calls`]).
    pool_calls: AtomicU64,
}

/// Bytes of a streamed value gathered before they are written in one go.
const WRITE_BATCH: usize = 1 << 20;

/// Largest value read or written on the calling thread (see the module doc).
pub const INLINE_MAX: u64 = 256 << 10;

/// A store in progress: the value goes to a temp file beside the item and is renamed
/// over it at commit. Dropped unfinished, the temp file is removed.
struct Upload {
    name: String,
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
    /// Directories this write created, outermost first.
    created: Vec<PathBuf>,
    len: u64,
    written: u64,
}

impl Upload {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.tmp.write_all(data).map_err(|e| io_error("store", &self.name, e))?;
        self.written += data.len() as u64;
        Ok(())
    }
}

impl PosixFs {
    /// A backend rooted at the absolute path `root` (not touched until used).
    pub fn new(root: impl Into<PathBuf>, options: PosixFsOptions) -> Result<Self> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(Error::invalid("posixfs needs an absolute path"));
        }
        Ok(PosixFs {
            inner: Arc::new(Inner {
                root,
                options,
                opened: AtomicBool::new(false),
                quota: Mutex::new(None),
                commit: Mutex::new(None),
                pool_calls: AtomicU64::new(0),
            }),
        })
    }

    /// The root directory (for the daemon's own use; never sent to clients).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// How many calls this backend has sent to the blocking pool: tests and the bench
    /// see with it which calls were answered without the hop.
    pub fn pool_calls(&self) -> u64 {
        self.inner.pool_calls.load(Ordering::Relaxed)
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        self.inner.pool_calls.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::backend(format!("posixfs worker failed: {e}")))?
    }

    /// Run `f` here when `inline`, else on the blocking pool (see the module doc).
    async fn run_maybe_inline<T, F>(&self, inline: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        if inline && !self.inner.options.off_thread {
            f(&self.inner)
        } else {
            self.run(f).await
        }
    }

    /// Whether metadata calls (which flush directories under `fsync = "always"`) run inline.
    fn metadata_inline(&self) -> bool {
        self.inner.options.fsync != FsyncMode::Always
    }

    /// Whether a call that takes one stat or so runs inline.
    fn quick_inline(&self) -> bool {
        !self.inner.options.off_thread
    }

    /// Whether a store of `len` bytes runs inline.
    fn store_inline(&self, len: u64) -> bool {
        len <= INLINE_MAX && self.inner.options.fsync != FsyncMode::Always
    }

    /// In `batch` mode, wait for a group flush that covers everything written so far.
    async fn group_flush(&self) -> Result<()> {
        if self.inner.options.fsync != FsyncMode::Batch {
            return Ok(());
        }
        let commit = self.inner.commit.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match commit {
            Some(c) => c.flush().await.map_err(|e| Error::backend(describe(&e))),
            None => Err(Error::must_be_open()),
        }
    }

    /// Finish a store whose bytes are all in `up`'s temp file: flushes and the rename
    /// (here when `inline`).
    async fn finish(&self, up: Upload, inline: bool) -> Result<()> {
        if self.inner.options.fsync == FsyncMode::Batch {
            // The data must be on disk before the rename publishes it, and the rename
            // before the write is acknowledged.
            self.group_flush().await?;
            self.run_maybe_inline(inline, move |i| i.commit(up)).await?;
            self.group_flush().await
        } else {
            self.run_maybe_inline(inline, move |i| i.commit(up)).await
        }
    }

    /// Accept or refuse storing `len` bytes as `name` before any of them is read.
    async fn admit(&self, name: &str, len: u64) -> Result<()> {
        if self.inner.admit_without_io(name, len)? {
            return Ok(());
        }
        let name = name.to_owned();
        self.run_maybe_inline(self.quick_inline(), move |i| {
            let path = i.item_path(&name)?;
            i.precheck(&name, &path, len).map(|_| ())
        })
        .await
    }

    /// Store a value that arrives piece by piece, writing it as it comes.
    async fn store_stream(&self, name: &str, mut body: BodyStream) -> Result<()> {
        let (owned, len) = (name.to_owned(), body.len());
        let mut up = self.run(move |i| i.begin(&owned, len)).await?;
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut gathered = 0;
        loop {
            let end = match body.next().await {
                Some(Ok(piece)) => {
                    gathered += piece.len();
                    pieces.push(piece);
                    false
                }
                Some(Err(e)) => {
                    // Removing the unfinished temp file is file system work too.
                    let _ = tokio::task::spawn_blocking(move || drop(up)).await;
                    return Err(e);
                }
                None => true,
            };
            if end || gathered >= WRITE_BATCH {
                let batch = std::mem::take(&mut pieces);
                gathered = 0;
                up = self
                    .run(move |_| {
                        for piece in &batch {
                            up.write(piece)?;
                        }
                        Ok(up)
                    })
                    .await?;
            }
            if end {
                break;
            }
        }
        self.finish(up, false).await
    }
}

/// Create `dir` and its missing parents; returns the directories made, outermost first.
/// Something other than a directory in the way is an error.
fn make_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    if dir.exists() && !dir.is_dir() {
        return Err(io::ErrorKind::AlreadyExists.into());
    }
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    missing.reverse();
    for m in &missing {
        match fs::create_dir(m) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

/// Make the entries of newly made directories durable (each one lives in its parent).
fn sync_created(created: &[PathBuf]) -> io::Result<()> {
    for dir in created {
        if let Some(parent) = dir.parent() {
            sync::sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Describe an I/O error without any path in it.
pub(crate) fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    }
}

/// Map an I/O error on `name` to a store error: not found keeps its kind, everything
/// else is a Backend error naming the operation and the item only.
fn io_error(op: &str, name: &str, e: io::Error) -> Error {
    match e.kind() {
        // A file where a directory should be (or the reverse) is not "missing": as in
        // Python, it is an error of the store.
        io::ErrorKind::NotFound => Error::not_found(name),
        _ => Error::backend(format!("{op} {} failed: {}", shown(name), describe(&e))),
    }
}

/// Like [`io_error`], for operations on an item itself (load, hash, delete): a name below
/// a file does not exist either (as Python's load, hash and delete say).
fn gone_error(op: &str, name: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotADirectory => Error::not_found(name),
        _ => io_error(op, name, e),
    }
}

fn timestamp(t: io::Result<std::time::SystemTime>) -> f64 {
    t.ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn item_info(leaf: &str, st: Stat) -> ItemInfo {
    ItemInfo {
        name: leaf.to_string(),
        exists: true,
        size: st.size,
        directory: st.directory,
        atime: timestamp(st.accessed),
        mtime: timestamp(st.modified),
    }
}

/// The first byte and the byte count of `size` bytes (None: to the end) from `offset`
/// (negative: from the end) of a file of `len` bytes.
fn range_in(len: u64, offset: i64, size: Option<u64>) -> (u64, u64) {
    let start = if offset >= 0 { offset as u64 } else { len.saturating_sub(offset.unsigned_abs()) };
    (start, size.unwrap_or(u64::MAX).min(len.saturating_sub(start)))
}

fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

impl Inner {
    fn must_be_open(&self) -> Result<()> {
        if self.opened.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(Error::must_be_open())
        }
    }

    fn must_not_be_open(&self) -> Result<()> {
        if self.opened.load(Ordering::SeqCst) {
            Err(Error::must_not_be_open())
        } else {
            Ok(())
        }
    }

    fn check(&self, name: &str, required: &str) -> Result<()> {
        self.options.permissions.check(name, required)
    }

    /// Validate an item name and join it to the root.
    fn item_path(&self, name: &str) -> Result<PathBuf> {
        validate_item_name(name)?;
        Ok(self.root.join(name))
    }

    fn any_path(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        Ok(if name.is_empty() { self.root.clone() } else { self.root.join(name) })
    }

    fn quota_lock(&self) -> MutexGuard<'_, Option<QuotaState>> {
        // A panic while holding the lock leaves a still-consistent counter behind.
        self.quota.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn quota_update(&self, q: &mut Option<QuotaState>, delta: i64) -> Result<()> {
        if let Some(state) = q.as_mut() {
            state
                .update(&self.root, delta, false)
                .map_err(|e| Error::backend(format!("updating quota usage failed: {}", describe(&e))))?;
        }
        Ok(())
    }

    /// In `always` mode, flush the directory holding `path` (after an entry changed there).
    fn sync_parent(&self, name: &str, path: &Path) -> Result<()> {
        if self.options.fsync == FsyncMode::Always {
            let dir = path.parent().unwrap_or(&self.root);
            sync::sync_dir(dir).map_err(|e| io_error("fsync for", name, e))?;
        }
        Ok(())
    }

    /// In `always` mode, flush the entries of directories a write made.
    fn sync_made(&self, name: &str, created: &[PathBuf]) -> Result<()> {
        if self.options.fsync == FsyncMode::Always {
            sync_created(created).map_err(|e| io_error("fsync for", name, e))?;
        }
        Ok(())
    }

    fn create(&self) -> Result<()> {
        self.must_not_be_open()?;
        self.check("", "wW")?;
        let made = make_dirs(&self.root).map_err(|e| io_error("creating", "", e))?;
        if self.options.fsync.durable() {
            sync_created(&made).map_err(|e| io_error("fsync for", "", e))?;
        }
        // An existing empty directory is fine (a hoster may have made it). So is one that
        // holds nothing but the usage file an open wrote: a daemon that serves a store
        // opens it before a client creates it.
        let entries = fs::read_dir(&self.root).map_err(|e| io_error("listing", "", e))?;
        let mut only_usage = true;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", "", e))?;
            if entry.file_name() != quota::QUOTA_FILE || !entry.file_type().is_ok_and(|t| t.is_file()) {
                only_usage = false;
                break;
            }
        }
        if !only_usage {
            return Err(Error::new(
                ErrorKind::BackendAlreadyExists,
                "posixfs storage base path is not empty: [STORAGE_BASE]",
            ));
        }
        quota::remove(&self.root).map_err(|e| io_error("creating", "", e))?;
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        self.must_not_be_open()?;
        self.check("", "D")?;
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::BackendDoesNotExist,
                    "posixfs storage base path does not exist: [STORAGE_BASE]",
                ))
            }
            Err(e) => return Err(io_error("listing", "", e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_error("listing", "", e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let res = match entry.file_type() {
                Ok(ft) if ft.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            res.map_err(|e| io_error("removing", &name, e))?;
        }
        // The root itself may be owned by someone else (e.g. a hoster's mount point);
        // create accepts an existing empty directory, so leaving it is fine.
        let _ = fs::remove_dir(&self.root);
        if self.options.fsync.durable() {
            if let Some(parent) = self.root.parent() {
                let _ = sync::sync_dir(parent);
            }
        }
        Ok(())
    }

    fn open(&self) -> Result<()> {
        self.must_not_be_open()?;
        if !self.root.is_dir() {
            return Err(Error::new(
                ErrorKind::BackendDoesNotExist,
                "posixfs storage base path does not exist or is not a directory: [STORAGE_BASE]",
            ));
        }
        let mut q = self.quota_lock();
        match self.options.quota {
            Some(limit) => {
                let mut state = QuotaState::new(limit);
                state
                    .persist(&self.root, 0)
                    .map_err(|e| Error::backend(format!("reading quota usage failed: {}", describe(&e))))?;
                *q = Some(state);
            }
            None => {
                quota::remove(&self.root)
                    .map_err(|e| Error::backend(format!("removing stale quota file failed: {}", describe(&e))))?;
                *q = None;
            }
        }
        if self.options.fsync == FsyncMode::Batch {
            let commit = GroupCommit::new(&self.root)
                .map_err(|e| Error::backend(format!("opening the store for flushing failed: {}", describe(&e))))?;
            *self.commit.lock().unwrap_or_else(|p| p.into_inner()) = Some(commit);
        }
        sweep::sweep_in_background(self.root.clone());
        self.opened.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.must_be_open()?;
        let mut q = self.quota_lock();
        if let Some(state) = q.as_mut() {
            state
                .update(&self.root, 0, true)
                .map_err(|e| Error::backend(format!("persisting quota usage failed: {}", describe(&e))))?;
        }
        self.opened.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn mkdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        // The empty name is the store root (a root namespace's level directory).
        let path = self.any_path(name)?;
        self.check(name, "w")?;
        let made = make_dirs(&path).map_err(|e| io_error("mkdir", name, e))?;
        self.sync_made(name, &made)
    }

    fn rmdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        let path = self.any_path(name)?;
        self.check(name, "wD")?;
        fs::remove_dir(&path).map_err(|e| io_error("rmdir", name, e))?;
        self.sync_parent(name, &path)
    }

    fn info(&self, name: &str) -> Result<ItemInfo> {
        let path = self.info_path(name)?;
        Self::info_of(name, fs::metadata(path).map(|md| Stat::from(&md)))
    }

    /// [`Inner::info`] from the caches (see [`cached`]); `None`: the pool must ask.
    fn info_cached(&self, name: &str) -> Result<Option<ItemInfo>> {
        let path = self.info_path(name)?;
        match cached::stat(&path) {
            Cached::Hit(st) => Self::info_of(name, st).map(Some),
            Cached::Miss => Ok(None),
        }
    }

    /// Checks of an info: the path to look at.
    fn info_path(&self, name: &str) -> Result<PathBuf> {
        self.must_be_open()?;
        let path = self.any_path(name)?;
        self.check(name, "lr")?;
        Ok(path)
    }

    /// The answer of an info from what the file system said.
    fn info_of(name: &str, st: io::Result<Stat>) -> Result<ItemInfo> {
        match st {
            Ok(st) => Ok(item_info(leaf(name), st)),
            // A name below a file does not exist either (every backend says so).
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                Ok(ItemInfo::missing(leaf(name)))
            }
            Err(e) => Err(io_error("info", name, e)),
        }
    }

    /// Open `path` for reading `size` bytes (None: to the end) from `offset` (negative:
    /// from the end): the file, the first byte and how many bytes there are to read.
    fn open_range(&self, name: &str, path: &Path, offset: i64, size: Option<u64>) -> Result<(File, u64, u64)> {
        let f = File::open(path).map_err(|e| gone_error("load", name, e))?;
        let len = f.metadata().map_err(|e| io_error("load", name, e))?.len();
        let (start, want) = range_in(len, offset, size);
        Ok((f, start, want))
    }

    /// Read `want` bytes from `start` of an opened file.
    fn read_from(name: &str, f: &File, start: u64, want: u64) -> Result<Bytes> {
        let want = usize::try_from(want).map_err(|_| Error::invalid("value too large for memory"))?;
        let mut buf = BytesMut::with_capacity(want);
        cached::fill(f, start, &mut buf, want).map_err(|e| io_error("load", name, e))?;
        Ok(buf.freeze())
    }

    fn read_range(&self, name: &str, path: &Path, offset: i64, size: Option<u64>) -> Result<Bytes> {
        let (f, start, want) = self.open_range(name, path, offset, size)?;
        Self::read_from(name, &f, start, want)
    }

    /// Checks and opening of a load: the file, the first byte, the bytes to read.
    fn open_load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<(File, u64, u64)> {
        let path = self.load_path(name)?;
        self.open_range(name, &path, offset, size)
    }

    /// [`Inner::open_load`] from the caches (see [`cached`]); `None`: the pool must open.
    fn open_load_cached(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Option<(File, u64, u64)>> {
        let path = self.load_path(name)?;
        match cached::open(&path) {
            Cached::Hit(Ok((f, len))) => {
                let (start, want) = range_in(len, offset, size);
                Ok(Some((f, start, want)))
            }
            Cached::Hit(Err(e)) => Err(gone_error("load", name, e)),
            Cached::Miss => Ok(None),
        }
    }

    /// Checks of a load: the path to open.
    fn load_path(&self, name: &str) -> Result<PathBuf> {
        self.must_be_open()?;
        let path = self.item_path(name)?;
        self.check(name, "r")?;
        Ok(path)
    }

    /// The quick part of [`Inner::precheck`]: true when permissions and quota accept
    /// `len` bytes for `name` whatever is on disk now, an error when they refuse it
    /// whatever is there; false when only the item's current size can tell.
    fn admit_without_io(&self, name: &str, len: u64) -> Result<bool> {
        self.must_be_open()?;
        validate_item_name(name)?;
        // Without W the answer (and Python's message: 'W' or 'wW') depends on whether the
        // item exists: only a look at it can tell.
        let mut certain = self.check(name, "W").is_ok();
        if let Some(state) = self.quota_lock().as_ref() {
            if state.would_exceed(len as i64) {
                // An overwrite gives the old size back first.
                certain = false;
            }
        }
        Ok(certain)
    }

    /// May `len` bytes be stored as `name` now (permission letters, quota, not a
    /// directory)? Returns the size of the item it would replace.
    fn precheck(&self, name: &str, path: &Path, len: u64) -> Result<Option<u64>> {
        let old = fs::metadata(path).ok();
        if old.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(Error::backend(format!("store {} failed: it is a directory", shown(name))));
        }
        self.check(name, if old.is_some() { "W" } else { "wW" })?;
        let old_len = old.map(|m| m.len());
        self.check_quota(len as i64 - old_len.unwrap_or(0) as i64, self.quota_lock().as_ref())?;
        Ok(old_len)
    }

    fn check_quota(&self, delta: i64, state: Option<&QuotaState>) -> Result<()> {
        match state {
            Some(state) if state.would_exceed(delta) => Err(Error::new(
                ErrorKind::QuotaExceeded,
                format!("Quota exceeded: {} > {}", state.usage + delta, state.limit),
            )),
            _ => Ok(()),
        }
    }

    /// Start storing `len` bytes as `name`: checks, then a temp file beside the item.
    fn begin(&self, name: &str, len: u64) -> Result<Upload> {
        self.must_be_open()?;
        let path = self.item_path(name)?;
        self.precheck(name, &path, len)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let make = || tempfile::Builder::new().prefix("tmp").suffix(".tmp").tempfile_in(&dir);
        let mut created = Vec::new();
        let tmp = match make() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                created = make_dirs(&dir).map_err(|e| io_error("mkdir for", name, e))?;
                make().map_err(|e| io_error("store", name, e))?
            }
            Err(e) => return Err(io_error("store", name, e)),
        };
        Ok(Upload { name: name.to_string(), path, tmp, created, len, written: 0 })
    }

    /// Publish a fully written upload: (always: flush its data,) check quota and
    /// permissions against what is there now, rename, count, (always: flush the
    /// directories). Batch mode flushes around this call instead.
    fn commit(&self, mut up: Upload) -> Result<()> {
        let name = up.name.clone();
        let name = name.as_str();
        if up.written != up.len {
            return Err(Error::backend(format!("internal: {} of {} bytes written", up.written, up.len)));
        }
        if self.options.fsync == FsyncMode::Always {
            up.tmp.as_file().sync_data().map_err(|e| io_error("fsync", name, e))?;
        }
        let publish = |up: Upload| up.tmp.persist(&up.path).map_err(|e| io_error("store", name, e.error));
        let path = up.path.clone();
        let created = std::mem::take(&mut up.created);
        if self.options.permissions.is_unrestricted() && self.options.quota.is_none() {
            // Nothing to decide from the item's current state: no lock, no stat.
            publish(up)?;
        } else {
            // The lock covers the final check, the rename and the count, so concurrent
            // stores of different items cannot together overshoot the quota.
            let mut q = self.quota_lock();
            let old = fs::metadata(&path).ok().filter(|m| m.is_file());
            self.check(name, if old.is_some() { "W" } else { "wW" })?;
            let delta = up.len as i64 - old.map_or(0, |m| m.len() as i64);
            self.check_quota(delta, q.as_ref())?;
            publish(up)?;
            self.quota_update(&mut q, delta)?;
        }
        self.sync_made(name, &created)?;
        self.sync_parent(name, &path)
    }

    fn store(&self, name: &str, value: &[u8]) -> Result<()> {
        let mut up = self.begin(name, value.len() as u64)?;
        up.write(value)?;
        self.commit(up)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        let path = self.item_path(name)?;
        self.check(name, "D")?;
        let mut q = self.quota_lock();
        let size = if q.is_some() { fs::metadata(&path).map_err(|e| gone_error("delete", name, e))?.len() } else { 0 };
        fs::remove_file(&path).map_err(|e| gone_error("delete", name, e))?;
        self.quota_update(&mut q, -(size as i64))?;
        drop(q);
        self.sync_parent(name, &path)
    }

    fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.must_be_open()?;
        let from = self.item_path(current)?;
        let to = self.item_path(new)?;
        self.check(current, "D")?;
        let replaced = fs::metadata(&to).ok();
        self.check(new, if replaced.is_some() { "W" } else { "wW" })?;
        if from == to {
            // Onto itself: nothing moves, nothing is freed (it used to count as freed).
            return match replaced {
                Some(_) => Ok(()),
                None => Err(Error::not_found(current)),
            };
        }
        let mut q = self.quota_lock();
        let mut made = Vec::new();
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && from.exists() => {
                if let Some(parent) = to.parent() {
                    made = make_dirs(parent).map_err(|e| io_error("mkdir for", new, e))?;
                }
                fs::rename(&from, &to).map_err(|e| io_error("move", current, e))?;
            }
            Err(e) => return Err(io_error("move", current, e)),
        }
        // A replaced destination frees its bytes.
        let freed = replaced.filter(|m| m.is_file()).map_or(0, |m| m.len() as i64);
        self.quota_update(&mut q, -freed)?;
        drop(q);
        self.sync_made(new, &made)?;
        self.sync_parent(new, &to)?;
        if from.parent() != to.parent() {
            self.sync_parent(current, &from)?;
        }
        Ok(())
    }

    fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        self.must_be_open()?;
        let path = self.any_path(name)?;
        self.check(name, "l")?;
        let entries = fs::read_dir(&path).map_err(|e| io_error("list", name, e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", name, e))?;
            let Some(leaf) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Not ours (or an upload in progress, or hidden): skip, as Python does.
            if leaf.contains('/') || validate_item_name(&leaf).is_err() {
                continue;
            }
            match fs::metadata(entry.path()) {
                Ok(md) => out.push(item_info(&leaf, Stat::from(&md))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("list", name, e)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        self.must_be_open()?;
        let path = self.item_path(name)?;
        self.check(name, "r")?;
        let mut f = File::open(path).map_err(|e| gone_error("hash", name, e))?;
        let mut h = algorithm.hasher();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| io_error("hash", name, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize_hex())
    }

    fn gather(&self, sources: &[Source]) -> Result<Vec<u8>> {
        self.must_be_open()?;
        for s in sources {
            validate_item_name(&s.name)?;
            self.check(&s.name, "r")?;
        }
        let mut out = Vec::new();
        for s in sources {
            if s.size == 0 {
                continue;
            }
            let chunk = self.read_range(&s.name, &self.root.join(&s.name), s.offset, Some(s.size))?;
            check_range(s, chunk.len())?;
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    fn quota(&self) -> Result<Quota> {
        self.must_be_open()?;
        Ok(match self.quota_lock().as_ref() {
            Some(s) => Quota { limit: s.limit as i64, usage: s.usage },
            None => Quota::OFF,
        })
    }
}

#[async_trait]
impl Backend for PosixFs {
    async fn create(&self) -> Result<()> {
        self.run(|i| i.create()).await
    }
    async fn destroy(&self) -> Result<()> {
        self.run(|i| i.destroy()).await
    }
    async fn open(&self) -> Result<()> {
        self.run(|i| i.open()).await
    }
    async fn close(&self) -> Result<()> {
        self.run(|i| i.close()).await
    }
    async fn mkdir(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.run_maybe_inline(self.metadata_inline(), move |i| i.mkdir(&name)).await?;
        self.group_flush().await
    }
    async fn rmdir(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.run_maybe_inline(self.metadata_inline(), move |i| i.rmdir(&name)).await?;
        self.group_flush().await
    }
    async fn info(&self, name: &str) -> Result<ItemInfo> {
        if self.inner.options.off_thread {
            if let Some(info) = self.inner.info_cached(name)? {
                return Ok(info);
            }
        }
        let name = name.to_owned();
        self.run_maybe_inline(self.quick_inline(), move |i| i.info(&name)).await
    }
    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        if self.inner.options.off_thread {
            return self.load_value(name, offset, size).await?.into_bytes().await;
        }
        // Opened here; read here when small, on the blocking pool when large.
        let (file, start, want) = self.inner.open_load(name, offset, size)?;
        if want <= INLINE_MAX {
            return Inner::read_from(name, &file, start, want);
        }
        let name = name.to_owned();
        self.run(move |_| Inner::read_from(&name, &file, start, want)).await
    }
    async fn load_value(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Value> {
        if !self.inner.options.off_thread {
            return self.load(name, offset, size).await.map(Value::Bytes);
        }
        // Opened from the caches here when they know the way, else on the pool, where a
        // small value is read in the same trip (Ok: read; Err: opened, for the door).
        let (file, start, want) = match self.inner.open_load_cached(name, offset, size)? {
            Some(opened) => opened,
            None => {
                let owned = name.to_owned();
                let opened = self
                    .run(move |i| {
                        let (file, start, want) = i.open_load(&owned, offset, size)?;
                        if want <= INLINE_MAX {
                            Inner::read_from(&owned, &file, start, want).map(Ok)
                        } else {
                            Ok(Err((file, start, want)))
                        }
                    })
                    .await?;
                match opened {
                    Ok(value) => return Ok(Value::Bytes(value)),
                    Err(opened) => opened,
                }
            }
        };
        let file = if want > INLINE_MAX {
            // Large: the door sends it from the file, a piece at a time (whole, read on
            // the pool, when too many values are open as files already).
            match FileRange::new(file, name, start, want) {
                Ok(range) => return Ok(Value::File(range)),
                Err(file) => file,
            }
        } else {
            let mut value = BytesMut::with_capacity(want as usize);
            if let Cached::Hit(()) = cached::fill_cached(&file, start, &mut value, want as usize) {
                return Ok(Value::Bytes(value.freeze()));
            }
            file
        };
        let name = name.to_owned();
        self.run(move |_| Inner::read_from(&name, &file, start, want)).await.map(Value::Bytes)
    }
    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        let name = name.to_owned();
        let inline = self.store_inline(value.len() as u64);
        if self.inner.options.fsync == FsyncMode::Batch {
            let up = self
                .run_maybe_inline(inline, move |i| {
                    let mut up = i.begin(&name, value.len() as u64)?;
                    up.write(&value)?;
                    Ok(up)
                })
                .await?;
            self.finish(up, inline).await
        } else {
            self.run_maybe_inline(inline, move |i| i.store(&name, &value)).await
        }
    }
    async fn store_body(&self, name: &str, body: Body) -> Result<()> {
        match body {
            Body::Full(value) => self.store(name, value).await,
            Body::Stream(s) if s.len() > STREAM_ABOVE => self.store_stream(name, s).await,
            Body::Stream(s) => {
                // Small: decide, then take it whole (one trip to the file system).
                self.admit(name, s.len()).await?;
                self.store(name, s.collect().await?).await
            }
        }
    }
    fn streams_uploads(&self) -> bool {
        true
    }
    fn admits_conditionally(&self) -> bool {
        !self.inner.options.permissions.is_unrestricted() || self.inner.options.quota.is_some()
    }
    async fn delete(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.run_maybe_inline(self.metadata_inline(), move |i| i.delete(&name)).await?;
        self.group_flush().await
    }
    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        let (current, new) = (current.to_owned(), new.to_owned());
        self.run_maybe_inline(self.metadata_inline(), move |i| i.move_(&current, &new)).await?;
        self.group_flush().await
    }
    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        // One directory level (the engine walks nesting directories one call each, a
        // few entries apiece): in-process this is a readdir and a stat per entry, as
        // Python does it.
        let name = name.to_owned();
        self.run_maybe_inline(self.quick_inline(), move |i| i.list(&name)).await
    }
    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        let name = name.to_owned();
        self.run(move |i| i.hash(&name, algorithm)).await
    }
    async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        let sources = sources.to_vec();
        self.run(move |i| i.gather(&sources)).await.map(Bytes::from)
    }
    async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        // Check the target's permission before reading anything (sources are checked by gather).
        let probe = match target {
            DefragTarget::Name(n) => n.clone(),
            DefragTarget::Hashed { namespace, .. } => {
                let ns = namespace.trim_end_matches('/');
                if ns.is_empty() {
                    "01234567".to_string()
                } else {
                    format!("{ns}/01234567")
                }
            }
        };
        self.inner.check(&probe, "W")?;
        let data = self.gather(sources).await?;
        let name = defrag_target_name(target, &data)?;
        self.store(&name, data).await?;
        Ok(name)
    }
    async fn quota(&self) -> Result<Quota> {
        // Its lock may be held by a store that is writing the usage file.
        self.run_maybe_inline(self.quick_inline(), |i| i.quota()).await
    }
}
