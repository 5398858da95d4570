//! `file:///abs/path`: items as files in a directory tree, byte-compatible with Python
//! borgstore's posixfs backend (same tree, `.del` suffix, `quota.hid`, `.tmp` uploads).
//!
//! - Store writes a uniquely named `*.tmp` file in the target directory and renames it
//!   into place, so readers see the old or the new value, never a part (optional fsync
//!   of file and directory).
//! - [`permissions`]: the `l r w W D` letters; [`quota`]: usage tracking in `quota.hid`.
//! - Every file system call runs in `spawn_blocking`, never on an executor thread.
//! - Error messages name the item, never the absolute path of the store.

pub mod permissions;
pub mod quota;

use super::{check_range, defrag_target_name, Backend, DefragTarget};
use crate::hashing::HashAlgorithm;
use crate::names::{shown, validate_item_name, validate_name};
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source};
use bytes::Bytes;
pub use permissions::Permissions;
use quota::QuotaState;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::UNIX_EPOCH;

/// Options of a posixfs backend.
#[derive(Debug, Clone, Default)]
pub struct PosixFsOptions {
    /// Permission letters per name; empty allows everything.
    pub permissions: Permissions,
    /// Quota limit in bytes; `None` turns quota tracking off.
    pub quota: Option<u64>,
    /// fsync each stored file and its directory before the store returns.
    pub fsync: bool,
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
}

impl PosixFs {
    /// A backend rooted at the absolute path `root` (not touched until used).
    pub fn new(root: impl Into<PathBuf>, options: PosixFsOptions) -> Result<Self> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(Error::invalid("posixfs needs an absolute path"));
        }
        Ok(PosixFs {
            inner: Arc::new(Inner { root, options, opened: AtomicBool::new(false), quota: Mutex::new(None) }),
        })
    }

    /// The root directory (for the daemon's own use; never sent to clients).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::backend(format!("posixfs worker failed: {e}")))?
    }
}

/// Describe an I/O error without any path in it.
fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    }
}

/// Map an I/O error on `name` to a store error: not found keeps its kind, everything
/// else is a Backend error naming the operation and the item only.
fn io_error(op: &str, name: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Error::not_found(name),
        _ => Error::backend(format!("{op} {} failed: {}", shown(name), describe(&e))),
    }
}

fn timestamp(t: io::Result<std::time::SystemTime>) -> f64 {
    t.ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn item_info(leaf: &str, md: &fs::Metadata) -> ItemInfo {
    ItemInfo {
        name: leaf.to_string(),
        exists: true,
        size: md.len(),
        directory: md.is_dir(),
        atime: timestamp(md.accessed()),
        mtime: timestamp(md.modified()),
    }
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

    fn create(&self) -> Result<()> {
        self.must_not_be_open()?;
        self.check("", "wW")?;
        fs::create_dir_all(&self.root).map_err(|e| io_error("creating", "", e))?;
        let mut entries = fs::read_dir(&self.root).map_err(|e| io_error("listing", "", e))?;
        if entries.next().is_some() {
            return Err(Error::new(ErrorKind::BackendAlreadyExists, "the store directory is not empty"));
        }
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        self.must_not_be_open()?;
        self.check("", "D")?;
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::new(ErrorKind::BackendDoesNotExist, "the store directory does not exist"))
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
        Ok(())
    }

    fn open(&self) -> Result<()> {
        self.must_not_be_open()?;
        if !self.root.is_dir() {
            return Err(Error::new(ErrorKind::BackendDoesNotExist, "the store directory does not exist"));
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
        let path = self.item_path(name)?;
        self.check(name, "w")?;
        fs::create_dir_all(path).map_err(|e| io_error("mkdir", name, e))
    }

    fn rmdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        let path = self.item_path(name)?;
        self.check(name, "wD")?;
        fs::remove_dir(path).map_err(|e| io_error("rmdir", name, e))
    }

    fn info(&self, name: &str) -> Result<ItemInfo> {
        self.must_be_open()?;
        let path = self.any_path(name)?;
        self.check(name, "lr")?;
        match fs::metadata(path) {
            Ok(md) => Ok(item_info(leaf(name), &md)),
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                Ok(ItemInfo::missing(leaf(name)))
            }
            Err(e) => Err(io_error("info", name, e)),
        }
    }

    fn read_range(&self, name: &str, path: &Path, offset: i64, size: Option<u64>) -> Result<Vec<u8>> {
        let mut f = File::open(path).map_err(|e| io_error("load", name, e))?;
        let len = f.metadata().map_err(|e| io_error("load", name, e))?.len();
        let start = if offset >= 0 { offset as u64 } else { len.saturating_sub(offset.unsigned_abs()) };
        let want = size.unwrap_or(u64::MAX).min(len.saturating_sub(start));
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        if want > 0 {
            f.seek(SeekFrom::Start(start)).map_err(|e| io_error("load", name, e))?;
            f.take(want).read_to_end(&mut buf).map_err(|e| io_error("load", name, e))?;
        }
        Ok(buf)
    }

    fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        self.must_be_open()?;
        let path = self.item_path(name)?;
        self.check(name, "r")?;
        self.read_range(name, &path, offset, size).map(Bytes::from)
    }

    /// Write `value` to a new temp file in `dir` (creating `dir` when missing).
    fn write_temp(&self, name: &str, dir: &Path, value: &[u8]) -> Result<tempfile::NamedTempFile> {
        let make = || tempfile::Builder::new().prefix("tmp").suffix(".tmp").tempfile_in(dir);
        let mut tmp = match make() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(|e| io_error("mkdir for", name, e))?;
                make().map_err(|e| io_error("store", name, e))?
            }
            Err(e) => return Err(io_error("store", name, e)),
        };
        // On any error below the NamedTempFile is dropped, which removes the partial file.
        tmp.write_all(value).map_err(|e| io_error("store", name, e))?;
        if self.options.fsync {
            tmp.as_file().sync_all().map_err(|e| io_error("fsync", name, e))?;
        }
        Ok(tmp)
    }

    fn store(&self, name: &str, value: &[u8]) -> Result<()> {
        self.must_be_open()?;
        let path = self.item_path(name)?;
        let old = fs::metadata(&path).ok();
        if old.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(Error::invalid(format!("{} is a directory", shown(name))));
        }
        self.check(name, if old.is_some() { "W" } else { "wW" })?;
        let mut q = self.quota_lock();
        let delta = value.len() as i64 - old.as_ref().map_or(0, |m| m.len() as i64);
        if let Some(state) = q.as_ref() {
            if state.would_exceed(delta) {
                return Err(Error::new(
                    ErrorKind::QuotaExceeded,
                    format!("quota exceeded: {} > {}", state.usage + delta, state.limit),
                ));
            }
        }
        let dir = path.parent().unwrap_or(&self.root);
        let tmp = self.write_temp(name, dir, value)?;
        tmp.persist(&path).map_err(|e| io_error("store", name, e.error))?;
        if self.options.fsync {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.quota_update(&mut q, delta)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        let path = self.item_path(name)?;
        self.check(name, "D")?;
        let mut q = self.quota_lock();
        let size = if q.is_some() { fs::metadata(&path).map_err(|e| io_error("delete", name, e))?.len() } else { 0 };
        fs::remove_file(&path).map_err(|e| io_error("delete", name, e))?;
        self.quota_update(&mut q, -(size as i64))
    }

    fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.must_be_open()?;
        let from = self.item_path(current)?;
        let to = self.item_path(new)?;
        self.check(current, "D")?;
        let replaced = fs::metadata(&to).ok();
        self.check(new, if replaced.is_some() { "W" } else { "wW" })?;
        let mut q = self.quota_lock();
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent).map_err(|e| io_error("mkdir for", new, e))?;
                }
                fs::rename(&from, &to).map_err(|e| io_error("move", current, e))?;
            }
            Err(e) => return Err(io_error("move", current, e)),
        }
        // A replaced destination frees its bytes.
        let freed = replaced.filter(|m| m.is_file()).map_or(0, |m| m.len() as i64);
        self.quota_update(&mut q, -freed)
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
                Ok(md) => out.push(item_info(&leaf, &md)),
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
        let mut f = File::open(path).map_err(|e| io_error("hash", name, e))?;
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
        self.run(move |i| i.mkdir(&name)).await
    }
    async fn rmdir(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.run(move |i| i.rmdir(&name)).await
    }
    async fn info(&self, name: &str) -> Result<ItemInfo> {
        let name = name.to_owned();
        self.run(move |i| i.info(&name)).await
    }
    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        let name = name.to_owned();
        self.run(move |i| i.load(&name, offset, size)).await
    }
    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        let name = name.to_owned();
        self.run(move |i| i.store(&name, &value)).await
    }
    async fn delete(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.run(move |i| i.delete(&name)).await
    }
    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        let (current, new) = (current.to_owned(), new.to_owned());
        self.run(move |i| i.move_(&current, &new)).await
    }
    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        let name = name.to_owned();
        self.run(move |i| i.list(&name)).await
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
        self.run(|i| i.quota()).await
    }
}
