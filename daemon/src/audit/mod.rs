//! The per-store audit log: who changed what, when, through which door, and how it
//! ended. One file per store, JSON Lines (one [`AuditLine`] object per line, the shape
//! defined once in `borgstore_ipc::audit` and read back by `borgstore audit`).
//!
//! The store actor calls [`AuditLog::record`] after every mutating command. Recording
//! must never slow the store down in the common case, and must never lose a record or
//! tear a line, so:
//!
//! - [`AuditLog::record`] hands the record to one writer thread (a std thread, not a
//!   task: it blocks on the disk) through a bounded channel ([`AuditOptions::queue`]).
//!   When the channel has room (the common case) it returns at once, so it can be
//!   called on a tokio or actix thread. When the writer falls that far behind (a stalled
//!   or full disk), `record` blocks until there is room: back-pressure on the daemon
//!   rather than dropped records or memory without bound.
//! - The writer commits in groups (`writer.rs`): it takes what is queued (up to
//!   [`AuditOptions::batch`] records), serializes the complete lines and appends them
//!   with one `write(2)` on an `O_APPEND` file, then `fdatasync`s at most every
//!   [`AuditOptions::flush_interval`] (sooner for a full batch or a [`AuditLog::flush`]).
//!   A record is durable once a flush that follows it returns `Ok`.
//! - A crash can still leave a partial last line (power loss, or a kill in the middle of
//!   a write that spans pages): [`AuditLog::open`] cuts the file back to just after its
//!   last newline before appending (`file.rs`), and says how many bytes it cut.
//! - Rotation by size (`file.rs`): before a write that would take the file past
//!   [`AuditOptions::max_bytes`], `log` becomes `log.1`, `log.1` becomes `log.2`, ...
//!   up to [`AuditOptions::keep`] files; a rotation happens between writes of whole
//!   lines, so no line is ever split across two files. The daemon owns the file and its
//!   rotation: do not rotate or truncate it from outside while the daemon runs, and
//!   give each store its own file (one writer per file).
//! - A failing write (disk full, I/O error) leaves no partial line behind (the file is
//!   cut back to where the write started), is logged with `tracing` at most once a
//!   minute, and is retried every second with the same records, in order; new records
//!   keep queueing behind them until the channel is full, then `record` blocks. When the
//!   disk has room again everything queued is written and an `info` says so. Only
//!   [`AuditLog::close`] (or drop) gives up: it makes one last attempt and reports the
//!   records it could not write, as an error and in the log.
//!
//! What is never logged: values and passwords. [`AuditRecord`] has no field that could
//! hold either (names, a size and an error kind with a short message only), and error
//! messages are cut to [`MAX_MESSAGE`] bytes.

mod file;
mod writer;

use borgstore_ipc::audit::{AuditLine, RESULT_ERROR, RESULT_OK};
use borgstore_ipc::{Error, ErrorKind};
use chrono::{DateTime, SecondsFormat};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use writer::Msg;

/// Error messages in the log are cut to this many bytes (at a character boundary).
pub const MAX_MESSAGE: usize = 200;

/// One mutating command as the audit log keeps it. No value, no password: there is no
/// field for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When the command finished.
    pub time: SystemTime,
    /// The store's name in the configuration.
    pub store: String,
    /// Who asked, as the door identified them (`uid 1001`, a REST user name, ...).
    pub principal: String,
    /// The door: `socket`, `rest`, ...
    pub door: String,
    /// The operation: `store`, `delete`, `move`, `create`, `destroy`, ...
    pub op: &'static str,
    /// The item names touched (empty for store-wide operations).
    pub names: Vec<String>,
    /// Bytes written, for operations that write a value.
    pub size: Option<u64>,
    /// How it ended: the error's kind and message on failure.
    pub result: Result<(), (ErrorKind, String)>,
}

impl AuditRecord {
    /// A successful `op` by `principal` through `door` on `store`, now, with no names
    /// and no size yet (see the `with_` methods).
    pub fn new(
        store: impl Into<String>,
        principal: impl Into<String>,
        door: impl Into<String>,
        op: &'static str,
    ) -> Self {
        AuditRecord {
            time: SystemTime::now(),
            store: store.into(),
            principal: principal.into(),
            door: door.into(),
            op,
            names: Vec::new(),
            size: None,
            result: Ok(()),
        }
    }

    /// With the item names the command touched.
    pub fn with_names(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.names = names.into_iter().map(Into::into).collect();
        self
    }

    /// With the size of the value written.
    pub fn with_size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// With the outcome of the command (its output is not looked at).
    pub fn with_outcome<T>(mut self, outcome: &Result<T, Error>) -> Self {
        self.result = match outcome {
            Ok(_) => Ok(()),
            Err(e) => Err((e.kind, e.message.clone())),
        };
        self
    }

    /// The line as it is written (time in RFC 3339 UTC with milliseconds, the message
    /// cut to [`MAX_MESSAGE`]).
    pub fn into_line(self) -> AuditLine {
        let (result, error, message) = match self.result {
            Ok(()) => (RESULT_OK, None, None),
            Err((kind, message)) => (RESULT_ERROR, Some(kind.as_str().to_string()), Some(cut(message, MAX_MESSAGE))),
        };
        AuditLine {
            time: rfc3339_millis(self.time),
            store: self.store,
            principal: self.principal,
            door: self.door,
            op: self.op.to_string(),
            names: self.names,
            size: self.size,
            result: result.to_string(),
            error,
            message,
        }
    }
}

/// `2026-11-30T12:34:56.789Z`; a time chrono cannot represent (hundreds of millennia
/// away) becomes the epoch rather than a panic.
pub fn rfc3339_millis(time: SystemTime) -> String {
    let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).ok(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).ok().map(|s| -s);
            match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs.and_then(|s| s.checked_sub(1)), 1_000_000_000 - n),
            }
        }
    };
    let dt = secs.and_then(|s| DateTime::from_timestamp(s, nanos)).unwrap_or(DateTime::UNIX_EPOCH);
    dt.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `s` cut to at most `max` bytes at a character boundary, `...` marking a cut.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max.saturating_sub(3);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// How an [`AuditLog`] writes its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// Rotate before a write would take the file past this many bytes (64 MiB). A single
    /// line longer than this still goes whole into a fresh file.
    pub max_bytes: u64,
    /// Rotated files kept: `path.1` (newest) to `path.N` (5). 0 keeps none.
    pub keep: usize,
    /// `fdatasync` at most this often while records arrive (1 s): what a power loss may
    /// cost. [`AuditLog::flush`] syncs at once.
    pub flush_interval: Duration,
    /// Records written by one `write(2)` at most (1024); a full batch is synced at once.
    pub batch: usize,
    /// Records waiting for the writer at most (16384); beyond it `record` blocks.
    pub queue: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions { max_bytes: 64 << 20, keep: 5, flush_interval: Duration::from_secs(1), batch: 1024, queue: 16384 }
    }
}

/// A store's audit log: a handle to its writer thread. Share it (`Arc`) between the
/// actors of a store; dropping the last handle flushes and joins the writer.
pub struct AuditLog {
    path: PathBuf,
    tx: Option<SyncSender<Msg>>,
    writer: Option<JoinHandle<io::Result<()>>>,
    closing: Arc<AtomicBool>,
    /// When `record` last warned that it waits for the writer (at most once a minute).
    last_full_warning: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The writer thread is gone (it panicked, or the log is closed).
fn writer_gone() -> io::Error {
    io::Error::other("the audit log writer thread is gone")
}

impl AuditLog {
    /// Open (create) the log at `path` and start its writer: the parent directory is
    /// created when missing, the file is opened `O_APPEND|O_CREAT` with mode 0640, and a
    /// torn last line left by a crash is cut off first (with a warning). Errors: the
    /// file cannot be created, opened or repaired; options with `batch`, `queue` or
    /// `max_bytes` of 0.
    pub fn open(path: &Path, options: AuditOptions) -> io::Result<AuditLog> {
        if options.batch == 0 || options.queue == 0 || options.max_bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "audit log: batch, queue and max_bytes must be > 0",
            ));
        }
        let file = file::LogFile::open(path)?;
        let (tx, rx) = mpsc::sync_channel(options.queue);
        let closing = Arc::new(AtomicBool::new(false));
        let writer = writer::Writer::new(rx, file, options, closing.clone());
        let writer = std::thread::Builder::new().name("audit-writer".into()).spawn(move || writer.run())?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            tx: Some(tx),
            writer: Some(writer),
            closing,
            last_full_warning: Mutex::new(None),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queue `rec` for the writer. Returns at once while the queue has room; when it is
    /// full (the disk stalls or is full), waits for room: records are never dropped.
    /// Fails silently only if the writer thread is gone, which is logged as an error.
    pub fn record(&self, rec: AuditRecord) {
        let Some(tx) = &self.tx else { return };
        let msg = match tx.try_send(Msg::Record(rec)) {
            Ok(()) => return,
            Err(TrySendError::Full(msg)) => msg,
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(path = %self.path.display(), "audit log: the writer thread is gone; a record is lost");
                return;
            }
        };
        self.warn_full();
        if tx.send(msg).is_err() {
            tracing::error!(path = %self.path.display(), "audit log: the writer thread is gone; a record is lost");
        }
    }

    fn warn_full(&self) {
        let mut last = self.last_full_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::warn!(
                path = %self.path.display(),
                "audit log: the queue is full (the disk is slow or failing); commands wait for the writer"
            );
        }
    }

    /// Wait until every record recorded before this call is written and synced. An
    /// error says that writing or syncing failed this time; the records are kept and
    /// retried, a later flush may succeed.
    pub fn flush(&self) -> io::Result<()> {
        let tx = self.tx.as_ref().ok_or_else(writer_gone)?;
        let (ack, done) = mpsc::sync_channel(1);
        tx.send(Msg::Flush(ack)).map_err(|_| writer_gone())?;
        done.recv().map_err(|_| writer_gone())?
    }

    /// Write and sync everything recorded, then stop the writer. On a write error it
    /// makes one last attempt, then gives up: the error says how many records were not
    /// written (they are named in the daemon log as a count, never silently).
    pub fn close(mut self) -> io::Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> io::Result<()> {
        self.closing.store(true, Ordering::SeqCst);
        drop(self.tx.take());
        let Some(writer) = self.writer.take() else { return Ok(()) };
        writer.thread().unpark();
        writer.join().map_err(|_| io::Error::other("the audit log writer thread panicked"))?
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(path = %self.path.display(), error = %e, "audit log: closing failed");
        }
    }
}

#[cfg(test)]
mod tests;
