//! The writer thread of one audit log: group commit (take what is queued, write it with
//! one `write(2)`), the sync cadence, rotation between whole lines, and what happens
//! when writing fails (rate-limited errors, the same records retried in order).

use super::file::LogFile;
use super::{AuditOptions, AuditRecord};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After a failed write, the next attempt waits this long (unless a flush asks).
const RETRY: Duration = Duration::from_secs(1);
/// A write that keeps failing is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// The line buffer is given back when a burst left it larger than this.
const KEEP_BUFFER: usize = 1 << 20;

/// What the writer is sent.
pub(super) enum Msg {
    Record(AuditRecord),
    /// Answer once everything sent before is written and synced (or writing failed).
    Flush(SyncSender<io::Result<()>>),
}

/// Writing has been failing since `since`.
struct Failing {
    since: Instant,
    last_logged: Instant,
    /// Failures not logged since `last_logged`.
    unlogged: u64,
}

/// `io::Error` is not `Clone`: the same OS error, else its kind and text.
fn copy(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

pub(super) struct Writer {
    rx: Receiver<Msg>,
    file: LogFile,
    options: AuditOptions,
    /// Set by `close`; wakes a writer parked with a full buffer on a failing disk.
    closing: Arc<AtomicBool>,
    /// Complete serialized lines not written yet, oldest first.
    pending: Vec<u8>,
    /// The end offset in `pending` of each of its lines.
    ends: Vec<usize>,
    /// Flushes waiting for the lines before them.
    acks: Vec<SyncSender<io::Result<()>>>,
    unsynced: bool,
    last_sync: Instant,
    last_attempt: Instant,
    /// The last write or sync error while writing fails.
    error: Option<io::Error>,
    failing: Option<Failing>,
}

impl Writer {
    pub(super) fn new(rx: Receiver<Msg>, file: LogFile, options: AuditOptions, closing: Arc<AtomicBool>) -> Self {
        let now = Instant::now();
        Writer {
            rx,
            file,
            options,
            closing,
            pending: Vec::new(),
            ends: Vec::new(),
            acks: Vec::new(),
            unsynced: false,
            last_sync: now,
            last_attempt: now,
            error: None,
            failing: None,
        }
    }

    /// The thread's body: until the log is closed, gather, write, sync, answer flushes.
    pub(super) fn run(mut self) -> io::Result<()> {
        loop {
            let open = self.gather();
            if !open || self.closing.load(Ordering::SeqCst) {
                return self.finish();
            }
            let retry_due = self.last_attempt.elapsed() >= RETRY;
            if self.failing.is_some() && !retry_due && self.acks.is_empty() {
                continue; // keep collecting (bounded by `batch`) until the retry
            }
            self.commit(false);
        }
    }

    /// Wait for something to do, then take what is queued, up to `batch` records in the
    /// buffer. False once every handle is gone.
    fn gather(&mut self) -> bool {
        let wake = if self.failing.is_some() {
            Some(self.last_attempt + RETRY)
        } else if self.unsynced {
            Some(self.last_sync + self.options.flush_interval)
        } else {
            None
        };
        let until = |t: Instant| t.saturating_duration_since(Instant::now());
        if self.ends.len() >= self.options.batch {
            // Only while writing fails: the buffer is full, take nothing more (the queue
            // then fills and `record` waits) until the retry or `close`.
            if let Some(t) = wake {
                std::thread::park_timeout(until(t));
            }
            return true;
        }
        let first = match wake {
            None => match self.rx.recv() {
                Ok(m) => m,
                Err(_) => return false,
            },
            Some(t) => match self.rx.recv_timeout(until(t)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            },
        };
        self.take(first);
        while self.ends.len() < self.options.batch {
            match self.rx.try_recv() {
                Ok(m) => self.take(m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Record(rec) => {
                let start = self.pending.len();
                match serde_json::to_writer(&mut self.pending, &rec.into_line()) {
                    Ok(()) => {
                        self.pending.push(b'\n');
                        self.ends.push(self.pending.len());
                    }
                    // Strings and numbers always serialize; never leave half a line.
                    Err(e) => {
                        self.pending.truncate(start);
                        tracing::error!(error = %e, "audit log: a record could not be serialized");
                    }
                }
            }
            Msg::Flush(ack) => self.acks.push(ack),
        }
    }

    /// Write what is buffered, sync when due, answer the flushes waiting.
    fn commit(&mut self, last: bool) {
        let lines = self.ends.len();
        let written = self.write_pending();
        let due = last
            || !self.acks.is_empty()
            || lines >= self.options.batch
            || self.last_sync.elapsed() >= self.options.flush_interval;
        let outcome = written.and_then(|()| {
            if self.unsynced && due {
                self.file.sync()?;
                self.unsynced = false;
                self.last_sync = Instant::now();
            }
            Ok(())
        });
        match &outcome {
            Ok(()) => {
                if let Some(f) = self.failing.take() {
                    self.error = None;
                    tracing::info!(
                        path = %self.file_path(),
                        "audit log: writing works again after failing for {:.0?}; nothing was lost",
                        f.since.elapsed()
                    );
                }
            }
            Err(e) => self.failed(e),
        }
        for ack in self.acks.drain(..) {
            let _ = ack.send(outcome.as_ref().map(|_| ()).map_err(copy));
        }
        if self.pending.is_empty() && self.pending.capacity() > KEEP_BUFFER {
            self.pending = Vec::new();
        }
    }

    /// Append the buffered lines: as many whole lines per `write(2)` as fit under
    /// `max_bytes`, rotating first when none fits (a line longer than `max_bytes` goes
    /// alone into a fresh file). Lines leave the buffer only once written.
    fn write_pending(&mut self) -> io::Result<()> {
        self.last_attempt = Instant::now();
        if self.ends.is_empty() {
            return Ok(());
        }
        self.file.ensure_open()?;
        while !self.ends.is_empty() {
            let room = self.options.max_bytes.saturating_sub(self.file.len());
            let fit = self.ends.partition_point(|&end| end as u64 <= room);
            let n = match fit {
                0 if self.file.len() > 0 => {
                    self.file.rotate(self.options.keep)?;
                    continue;
                }
                0 => 1,
                n => n,
            };
            let bytes = self.ends[n - 1];
            self.file.append(&self.pending[..bytes])?;
            self.unsynced = true;
            self.pending.drain(..bytes);
            self.ends.drain(..n);
            for end in &mut self.ends {
                *end -= bytes;
            }
        }
        Ok(())
    }

    fn file_path(&self) -> String {
        self.file.path().display().to_string()
    }

    /// Log a failure, at most once a minute while it lasts.
    fn failed(&mut self, e: &io::Error) {
        let now = Instant::now();
        let waiting = self.ends.len();
        match &mut self.failing {
            None => {
                tracing::error!(
                    path = %self.file_path(),
                    error = %e,
                    waiting,
                    "audit log: writing failed; the records are kept and retried every second"
                );
                self.failing = Some(Failing { since: now, last_logged: now, unlogged: 0 });
            }
            Some(f) => {
                f.unlogged += 1;
                if now.duration_since(f.last_logged) >= LOG_EVERY {
                    let (unlogged, since) = (f.unlogged, f.since);
                    f.last_logged = now;
                    f.unlogged = 0;
                    tracing::error!(
                        path = %self.file_path(),
                        error = %e,
                        waiting,
                        failures = unlogged,
                        "audit log: writing still fails after {:.0?}; the records are kept and retried",
                        since.elapsed()
                    );
                }
            }
        }
        self.error = Some(copy(e));
    }

    /// Closing: take everything still queued, one last attempt to write and sync it,
    /// then report what could not be written.
    fn finish(mut self) -> io::Result<()> {
        while let Ok(m) = self.rx.recv() {
            self.take(m);
        }
        self.commit(true);
        let lost = self.ends.len();
        if lost > 0 {
            let e = self.error.as_ref().map_or_else(|| io::Error::other("unknown"), copy);
            tracing::error!(
                path = %self.file_path(),
                error = %e,
                lost,
                "audit log: closed with {lost} records not written"
            );
            return Err(io::Error::new(e.kind(), format!("audit log: {lost} records could not be written: {e}")));
        }
        match (self.unsynced, self.error.take()) {
            (true, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}
