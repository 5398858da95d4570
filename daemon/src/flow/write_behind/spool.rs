//! The durable local spool of one write-behind namespace: what was acknowledged and is
//! not on the primary yet.
//!
//! On disk, one directory (mode 0700) with one file per acknowledged value:
//!
//! - `<seq>.wb`, `seq` 16 lowercase hex digits, increasing with every store: the entry.
//!   Its layout is a head (`MAGIC`, the name's length as u32 LE, the value's length as
//!   u64 LE, the nested name), the value, and a trailer: the BLAKE3 digest of head and
//!   value (32 bytes). An entry is written as `<seq>.wb.tmp`, fsynced, renamed and its
//!   directory fsynced before the store is acknowledged.
//! - `*.tmp`: a write that did not finish (a crash); removed on replay.
//! - `corrupt/`: entries that failed their checks, kept aside for a human.
//!
//! Replay (on open): every `*.wb` is checked (head, length, digest, name in the
//! namespace); for each name the highest `seq` wins and older entries of that name are
//! removed; the survivors are queued for upload in `seq` order.
//!
//! In memory, [`Spool`] keeps the latest entry per name (what loads, infos and lists
//! see), the uploads in flight (at most one per name, so an older value never lands
//! after a newer one), the queue of names to upload, and the bytes held, against the
//! bound writers wait on.

use borgstore_ipc::{Error, ErrorKind, ItemInfo, Result};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::watch;

/// First bytes of every entry file (format version 1).
pub const MAGIC: &[u8; 8] = b"BSWBv1\n\0";
/// Length of the digest after the value.
pub const TRAILER: u64 = 32;
/// Longest name an entry may carry (longer is corruption).
const MAX_NAME: usize = 4096;
/// Entry file suffix.
const SUFFIX: &str = ".wb";
/// Temporary file suffix.
const TMP: &str = ".tmp";

/// Bytes before the value in the entry of `name`.
pub fn head_len(name: &str) -> u64 {
    (MAGIC.len() + 4 + 8 + name.len()) as u64
}

fn head(name: &str, len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(head_len(name) as usize);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(name.len() as u32).to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(name.as_bytes());
    h
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    // Never the path: clients may see this message.
    Error::new(ErrorKind::Backend, format!("write-behind spool: {what}: {}", e.kind()))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Where the bytes `offset`/`size` of a value of length `len` are, as loads address them.
pub fn range(len: u64, offset: i64, size: Option<u64>) -> (u64, u64) {
    let start = if offset < 0 { len.saturating_sub(offset.unsigned_abs()) } else { (offset as u64).min(len) };
    let end = match size {
        Some(s) => start.saturating_add(s).min(len),
        None => len,
    };
    (start, end - start)
}

/// An entry file being written.
pub struct Writer {
    file: std::fs::File,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    hasher: blake3::Hasher,
    expected: u64,
    written: u64,
}

impl Writer {
    /// Start the entry `seq` for `name` holding `len` bytes (blocking).
    pub fn create(dir: &Path, seq: u64, name: &str, len: u64) -> Result<Writer> {
        let path = dir.join(format!("{seq:016x}{SUFFIX}"));
        let tmp = dir.join(format!("{seq:016x}{SUFFIX}{TMP}"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(&tmp)
            .map_err(|e| io_error("create entry", e))?;
        let h = head(name, len);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&h);
        file.write_all(&h).map_err(|e| io_error("write entry", e))?;
        Ok(Writer { file, tmp, path, dir: dir.to_path_buf(), hasher, expected: len, written: 0 })
    }

    /// Append a piece of the value (blocking).
    pub fn write(&mut self, piece: &[u8]) -> Result<()> {
        self.written += piece.len() as u64;
        if self.written > self.expected {
            return Err(Error::invalid("the value is longer than announced"));
        }
        self.hasher.update(piece);
        self.file.write_all(piece).map_err(|e| io_error("write entry", e))
    }

    /// Trailer, fsync, rename, fsync of the directory: the entry is durable (blocking).
    pub fn commit(mut self) -> Result<()> {
        if self.written != self.expected {
            return Err(Error::invalid("the value is shorter than announced"));
        }
        let digest = self.hasher.finalize();
        self.file.write_all(digest.as_bytes()).map_err(|e| io_error("write entry", e))?;
        self.file.sync_all().map_err(|e| io_error("fsync entry", e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| io_error("rename entry", e))?;
        fsync_dir(&self.dir).map_err(|e| io_error("fsync spool directory", e))?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// Check an entry file completely; its name and value length, or why it is corrupt
/// (blocking).
pub fn verify(path: &Path) -> std::result::Result<(String, u64), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let file_len = f.metadata().map_err(|e| format!("cannot stat: {e}"))?.len();
    let mut fixed = [0u8; 20];
    f.read_exact(&mut fixed).map_err(|_| "shorter than its head".to_string())?;
    if &fixed[..8] != MAGIC {
        return Err("not a write-behind entry (bad magic)".into());
    }
    let name_len = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]) as usize;
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&fixed[12..20]);
    let value_len = u64::from_le_bytes(len8);
    if name_len == 0 || name_len > MAX_NAME {
        return Err(format!("implausible name length {name_len}"));
    }
    let mut name = vec![0u8; name_len];
    f.read_exact(&mut name).map_err(|_| "shorter than its head".to_string())?;
    let name = String::from_utf8(name).map_err(|_| "name is not UTF-8".to_string())?;
    crate::names::validate_name(&name).map_err(|e| format!("invalid name: {}", e.message))?;
    let head = head_len(&name);
    if head.checked_add(value_len).and_then(|v| v.checked_add(TRAILER)) != Some(file_len) {
        return Err(format!("length {file_len} does not match its head (value of {value_len} bytes)"));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(&fixed);
    hasher.update(name.as_bytes());
    let mut left = value_len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).map_err(|e| format!("read: {e}"))?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 32];
    f.read_exact(&mut trailer).map_err(|e| format!("read: {e}"))?;
    if hasher.finalize().as_bytes() != &trailer {
        return Err("digest mismatch".into());
    }
    Ok((name, value_len))
}

/// The whole value of an entry, checked against its digest (blocking; for uploads).
pub fn read_checked(path: &Path, name: &str) -> std::result::Result<Bytes, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let head = head_len(name) as usize;
    if data.len() < head + TRAILER as usize || data[..8] != MAGIC[..] || &data[20..head] != name.as_bytes() {
        return Err("head does not match".into());
    }
    let end = data.len() - TRAILER as usize;
    if blake3::hash(&data[..end]).as_bytes() != &data[end..] {
        return Err("digest mismatch".into());
    }
    Ok(Bytes::from(data).slice(head..end))
}

/// `len` bytes at `offset` of the value of an entry (blocking). NotFound when the entry
/// is gone (uploaded meanwhile).
pub fn read_range(path: &Path, name: &str, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(head_len(name) + offset))?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    f.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// The latest acknowledged value of a name.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Its sequence number (file name).
    pub seq: u64,
    /// Value bytes.
    pub size: u64,
    /// When it was acknowledged, UNIX seconds.
    pub mtime: f64,
    /// The lowest `seq` whose value this one stands for (a replaced entry that never
    /// went up): a `sync` begun after that waits for this one.
    since: u64,
    /// In the upload queue.
    queued: bool,
}

/// An upload in flight.
#[derive(Debug, Clone, Copy)]
struct Flight {
    seq: u64,
    size: u64,
    since: u64,
}

/// One upload job, as a worker takes it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The nested name.
    pub name: String,
    /// The entry's sequence number.
    pub seq: u64,
    /// Its file.
    pub path: PathBuf,
    generation: u64,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    flights: HashMap<String, Flight>,
    ready: VecDeque<String>,
    /// Value bytes of the entry files on disk.
    bytes: u64,
    /// Value bytes of writes under way.
    reserved: u64,
    next_seq: u64,
    open: bool,
    /// Bumped by destroy and create: jobs of an older generation are dropped.
    generation: u64,
    uploads: u64,
}

/// Counters of a spool, for stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Names with a value not on the primary yet.
    pub pending_items: u64,
    /// Value bytes held in the spool.
    pub pending_bytes: u64,
    /// Uploads finished since the daemon started.
    pub uploads: u64,
}

/// The spool of one namespace.
pub struct Spool {
    /// The namespace's prefix (`data/`; `""` for the root namespace).
    pub prefix: String,
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Spool {
    /// The spool in `dir` (created on open) for the names of namespace `prefix`.
    pub fn new(prefix: &str, dir: PathBuf, max_bytes: u64) -> Spool {
        Spool {
            prefix: prefix.to_string(),
            dir,
            max_bytes: max_bytes.max(1),
            state: Mutex::default(),
            changed: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wait until `ready` holds (checked now and after every change).
    async fn wait_until(&self, mut ready: impl FnMut(&State) -> bool) {
        let mut rx = self.changed.subscribe();
        loop {
            if ready(&self.lock()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Is the spool open (replayed, uploads running)?
    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// The counters.
    pub fn stats(&self) -> SpoolStats {
        let st = self.lock();
        SpoolStats { pending_items: st.entries.len() as u64, pending_bytes: st.bytes, uploads: st.uploads }
    }

    // ----- lifecycle -----

    /// Create the directory (0700) and load what is on disk: the replay (see the module
    /// doc). Blocking file system work runs off the executor.
    pub async fn open(&self) -> Result<()> {
        let dir = self.dir.clone();
        let prefix = self.prefix.clone();
        let (found, seen) = tokio::task::spawn_blocking(move || scan(&dir, &prefix))
            .await
            .map_err(|e| Error::new(ErrorKind::Backend, format!("write-behind replay: {e}")))??;
        let mut st = self.lock();
        let generation = st.generation;
        *st = State { generation, open: true, ..State::default() };
        // After every sequence number seen, also of corrupt and unfinished entries.
        let mut next = seen;
        for (name, (seq, size, mtime)) in found {
            next = next.max(seq + 1);
            st.bytes += size;
            st.entries.insert(name, Entry { seq, size, mtime, since: seq, queued: true });
        }
        let mut order: Vec<(u64, String)> = st.entries.iter().map(|(n, e)| (e.seq, n.clone())).collect();
        order.sort();
        st.ready = order.into_iter().map(|(_, n)| n).collect();
        st.next_seq = next;
        if !st.entries.is_empty() {
            tracing::info!(
                namespace = %self.prefix,
                items = st.entries.len(),
                bytes = st.bytes,
                "write-behind: replaying the spool, uploads queued"
            );
        }
        drop(st);
        self.notify();
        Ok(())
    }

    /// Stop (uploads stop taking jobs; what is on disk stays for the next open).
    pub fn close(&self) {
        let mut st = self.lock();
        st.open = false;
        st.flights.clear();
        st.ready.clear();
        drop(st);
        self.notify();
    }

    /// Forget and remove every entry (destroy, create). Jobs in flight are dropped.
    pub async fn clear(&self) -> Result<()> {
        {
            let mut st = self.lock();
            st.generation += 1;
            st.entries.clear();
            st.flights.clear();
            st.ready.clear();
            st.bytes = 0;
        }
        self.notify();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match std::fs::read_dir(&dir) {
                Ok(rd) => {
                    for e in rd.flatten() {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        if n.ends_with(SUFFIX) || n.ends_with(TMP) {
                            std::fs::remove_file(e.path())?;
                        }
                    }
                    fsync_dir(&dir)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Backend, format!("write-behind spool: {e}")))?
        .map_err(|e| io_error("clear", e))
    }

    // ----- writes -----

    /// Wait for room for `len` more bytes (a value larger than the bound is taken when
    /// nothing else is held) and take a sequence number for it.
    pub async fn reserve(&self, len: u64) -> Result<u64> {
        let mut seq = None;
        let max = self.max_bytes;
        let mut rx = self.changed.subscribe();
        loop {
            {
                let mut st = self.lock();
                if !st.open {
                    return Err(Error::new(ErrorKind::BackendMustBeOpen, "the store is not open"));
                }
                let held = st.bytes + st.reserved;
                if held == 0 || held.saturating_add(len) <= max {
                    st.reserved += len;
                    seq = Some(st.next_seq);
                    st.next_seq += 1;
                }
            }
            if let Some(s) = seq {
                return Ok(s);
            }
            if rx.changed().await.is_err() {
                return Err(Error::new(ErrorKind::Backend, "write-behind spool stopped"));
            }
        }
    }

    /// The directory of entry files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A reserved write failed: give its room back.
    pub fn unreserve(&self, len: u64) {
        self.lock().reserved -= len;
        self.notify();
    }

    /// A reserved write is durable as entry `seq`: it becomes the name's latest value
    /// and is queued. Returns the file of an older entry to remove, if any.
    pub fn acknowledge(&self, name: &str, seq: u64, len: u64) -> Option<PathBuf> {
        let mtime =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let mut st = self.lock();
        st.reserved -= len;
        st.bytes += len;
        let in_flight = st.flights.get(name).map(|f| f.seq);
        let mut entry = Entry { seq, size: len, mtime, since: seq, queued: false };
        let mut remove = None;
        if let Some(old) = st.entries.get(name).copied() {
            if in_flight != Some(old.seq) {
                // Never went up: this one stands for it; its file goes.
                entry.since = old.since;
                entry.queued = old.queued;
                st.bytes -= old.size;
                remove = Some(self.path_of(old.seq));
            }
        }
        if !entry.queued && in_flight.is_none() {
            entry.queued = true;
            st.ready.push_back(name.to_string());
        }
        st.entries.insert(name.to_string(), entry);
        drop(st);
        self.notify();
        remove
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:016x}{SUFFIX}"))
    }

    // ----- reads -----

    /// The latest entry of `name` and its file, when it is spooled.
    pub fn lookup(&self, name: &str) -> Option<(Entry, PathBuf)> {
        let e = self.lock().entries.get(name).copied()?;
        Some((e, self.path_of(e.seq)))
    }

    /// Do spooled names live below directory `dir`?
    pub fn has_below(&self, dir: &str) -> bool {
        let p = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let st = self.lock();
        st.entries.range(p.clone()..).next().is_some_and(|(n, _)| n.starts_with(&p))
    }

    /// What a listing of directory `dir` gets from the spool: items directly in it and
    /// the directories below it that hold spooled items.
    pub fn children(&self, dir: &str) -> Vec<ItemInfo> {
        let p = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let st = self.lock();
        let mut out: Vec<ItemInfo> = Vec::new();
        for (name, e) in st.entries.range(p.clone()..) {
            let Some(rest) = name.strip_prefix(&p) else { break };
            match rest.split_once('/') {
                Some((sub, _)) => {
                    if out.last().is_none_or(|l| l.name != sub) {
                        out.push(ItemInfo {
                            name: sub.to_string(),
                            exists: true,
                            size: 0,
                            directory: true,
                            atime: 0.0,
                            mtime: 0.0,
                        });
                    }
                }
                None => out.push(ItemInfo {
                    name: rest.to_string(),
                    exists: true,
                    size: e.size,
                    directory: false,
                    atime: e.mtime,
                    mtime: e.mtime,
                }),
            }
        }
        out
    }

    // ----- waits -----

    /// Wait until `name` has nothing spooled and nothing in flight.
    pub async fn wait_name(&self, name: &str) {
        self.wait_until(|st| !st.open || (!st.entries.contains_key(name) && !st.flights.contains_key(name))).await;
    }

    /// Wait until nothing below `dir` is spooled or in flight.
    pub async fn wait_below(&self, dir: &str) {
        let p = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        self.wait_until(|st| {
            !st.open
                || (st.entries.range(p.clone()..).next().is_none_or(|(n, _)| !n.starts_with(&p))
                    && !st.flights.keys().any(|n| n.starts_with(&p)))
        })
        .await;
    }

    /// The barrier: wait until every value acknowledged before this call is uploaded.
    /// BackendMustBeOpen when the spool is closed before that.
    pub async fn sync(&self) -> Result<()> {
        let before = self.lock().next_seq;
        let mut closed = false;
        self.wait_until(|st| {
            closed = !st.open;
            closed || (st.entries.values().all(|e| e.since >= before) && st.flights.values().all(|f| f.since >= before))
        })
        .await;
        if closed {
            return Err(Error::new(ErrorKind::BackendMustBeOpen, "the store was closed before its uploads finished"));
        }
        Ok(())
    }

    // ----- uploads -----

    /// The next upload job: waits while none is ready; None once the spool is closed.
    pub async fn next_job(&self) -> Option<Job> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let mut st = self.lock();
                if !st.open {
                    return None;
                }
                while let Some(name) = st.ready.pop_front() {
                    let Some(e) = st.entries.get_mut(&name) else { continue };
                    e.queued = false;
                    let e = *e;
                    if st.flights.contains_key(&name) {
                        continue;
                    }
                    st.flights.insert(name.clone(), Flight { seq: e.seq, size: e.size, since: e.since });
                    return Some(Job { path: self.path_of(e.seq), name, seq: e.seq, generation: st.generation });
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Is `job` still wanted (not dropped by destroy, create or close)?
    pub fn wanted(&self, job: &Job) -> bool {
        let st = self.lock();
        st.open && st.generation == job.generation && st.flights.get(&job.name).is_some_and(|f| f.seq == job.seq)
    }

    /// `job` is on the primary: its entry (unless a newer one replaced it meanwhile) is
    /// no longer served from the spool, its file is removed durably, then the name is
    /// free for deletes and moves and a newer entry is queued.
    pub async fn uploaded(&self, job: &Job) {
        let size = {
            let mut st = self.lock();
            if st.generation != job.generation {
                return;
            }
            st.uploads += 1;
            if st.entries.get(&job.name).is_some_and(|e| e.seq == job.seq) {
                st.entries.remove(&job.name);
            }
            st.flights.get(&job.name).filter(|f| f.seq == job.seq).map(|f| f.size).unwrap_or(0)
        };
        self.notify();
        let (path, dir) = (job.path.clone(), self.dir.clone());
        let removed = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            // Durable before a delete of the name may go to the primary: a replay must
            // not bring the value back after it.
            fsync_dir(&dir)
        })
        .await;
        if !matches!(removed, Ok(Ok(()))) {
            tracing::error!(namespace = %self.prefix, "write-behind: could not remove an uploaded spool entry");
        }
        self.end_flight(job, size);
    }

    /// `job`'s entry failed its checks: set it aside, drop it from the spool.
    pub async fn set_aside(&self, job: &Job, why: &str) {
        tracing::error!(
            namespace = %self.prefix,
            entry = format!("{:016x}", job.seq),
            "write-behind: a spool entry is corrupt ({why}); it is kept in the spool's corrupt/ directory and NOT uploaded"
        );
        let size = {
            let mut st = self.lock();
            if st.entries.get(&job.name).is_some_and(|e| e.seq == job.seq) {
                st.entries.remove(&job.name);
            }
            st.flights.get(&job.name).filter(|f| f.seq == job.seq).map(|f| f.size).unwrap_or(0)
        };
        let (path, dir) = (job.path.clone(), self.dir.clone());
        let _ = tokio::task::spawn_blocking(move || move_aside(&dir, &path)).await;
        self.end_flight(job, size);
    }

    fn end_flight(&self, job: &Job, size: u64) {
        let mut st = self.lock();
        if st.generation == job.generation && st.flights.get(&job.name).is_some_and(|f| f.seq == job.seq) {
            st.flights.remove(&job.name);
            st.bytes = st.bytes.saturating_sub(size);
            if let Some(e) = st.entries.get_mut(&job.name) {
                if !e.queued {
                    e.queued = true;
                    st.ready.push_back(job.name.clone());
                }
            }
        }
        drop(st);
        self.notify();
    }
}

fn move_aside(dir: &Path, path: &Path) {
    let aside = dir.join("corrupt");
    let _ = std::fs::create_dir_all(&aside);
    if let Some(file) = path.file_name() {
        let mut target = aside.join(file);
        if target.exists() {
            // An older corrupt entry of the same number: keep both.
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            target = aside.join(format!("{}.{nanos}", file.to_string_lossy()));
        }
        let _ = std::fs::rename(path, target);
    }
    let _ = fsync_dir(dir);
}

/// Replay scan (blocking): create the directory, remove temp files, check entries, keep
/// the newest per name. Name -> (seq, size, mtime), and 1 + the highest sequence number
/// of any file seen.
type Found = BTreeMap<String, (u64, u64, f64)>;
fn scan(dir: &Path, prefix: &str) -> Result<(Found, u64)> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("create spool directory", e))?;
    let mut found: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
    let mut stale = Vec::new();
    let mut seen = 0u64;
    for e in std::fs::read_dir(dir).map_err(|e| io_error("read spool directory", e))?.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if let Some(s) = fname.get(..16).and_then(|h| u64::from_str_radix(h, 16).ok()) {
            seen = seen.max(s.saturating_add(1));
        }
        if fname.ends_with(TMP) {
            tracing::info!("write-behind: removing an unfinished spool write ({fname})");
            stale.push(path);
            continue;
        }
        let Some(hexseq) = fname.strip_suffix(SUFFIX) else { continue };
        let seq = match u64::from_str_radix(hexseq, 16) {
            Ok(s) if hexseq.len() == 16 => s,
            _ => {
                tracing::error!("write-behind: unexpected file {fname:?} in the spool, moved to corrupt/");
                move_aside(dir, &path);
                continue;
            }
        };
        match verify(&path) {
            Ok((name, size)) if name.starts_with(prefix) => {
                let mtime = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                match found.get(&name) {
                    Some((old, _, _)) if *old > seq => stale.push(path),
                    Some((old, _, _)) => {
                        stale.push(dir.join(format!("{old:016x}{SUFFIX}")));
                        found.insert(name, (seq, size, mtime));
                    }
                    None => {
                        found.insert(name, (seq, size, mtime));
                    }
                }
            }
            Ok(_) => {
                tracing::error!(
                    "write-behind: spool entry {fname} names an item outside namespace {prefix:?}; moved to corrupt/"
                );
                move_aside(dir, &path);
            }
            Err(why) => {
                tracing::error!(
                    "write-behind: spool entry {fname} is corrupt ({why}); moved to corrupt/, NOT uploaded"
                );
                move_aside(dir, &path);
            }
        }
    }
    for p in &stale {
        let _ = std::fs::remove_file(p);
    }
    if !stale.is_empty() {
        fsync_dir(dir).map_err(|e| io_error("fsync spool directory", e))?;
    }
    Ok((found, seen))
}
