//! Flushing the store to stable storage: per-file fsync for `fsync = "always"`, group
//! commit for `fsync = "batch"`.
//!
//! Group commit: a writer that needs its changes on disk calls [`GroupCommit::flush`].
//! It gets a ticket for the next flush pass that *starts after* the call; if no pass is
//! running, it starts one, otherwise it waits for the running pass to end and the next
//! one to cover it. A pass is one `syncfs` of the file system holding the store, which
//! writes every dirty page and inode there and commits the journal once, so all writers
//! whose tickets it covers are acknowledged together. Under load passes run back to
//! back and each covers everything that arrived while the previous one ran; a single
//! writer pays one pass, about what `always` costs. Passes run on a task of their own,
//! so a waiter that goes away never leaves a pass half done.
//!
//! `syncfs` flushes the whole file system, also other programs' dirty data on it; on a
//! file system shared with heavy unrelated writers, `always` can be the cheaper mode.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// fsync a directory (after an entry in it was created, renamed or removed).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Group commit over one file system (see the module docs).
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    /// An open directory of the file system to flush.
    dir: File,
    state: Mutex<State>,
    /// The last finished pass.
    done: watch::Sender<Finished>,
    passes: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Number of the last pass started (passes count from 1).
    started: u64,
    running: bool,
}

#[derive(Clone, Default)]
struct Finished {
    pass: u64,
    error: Option<Arc<io::Error>>,
}

impl GroupCommit {
    /// Group commit for the file system that holds `dir`.
    pub fn new(dir: &Path) -> io::Result<GroupCommit> {
        let dir = File::open(dir)?;
        Ok(GroupCommit {
            inner: Arc::new(Inner {
                dir,
                state: Mutex::default(),
                done: watch::Sender::new(Finished::default()),
                passes: AtomicU64::new(0),
            }),
        })
    }

    /// Passes run so far.
    pub fn passes(&self) -> u64 {
        self.inner.passes.load(Ordering::Relaxed)
    }

    /// Return once everything written before this call is on stable storage.
    pub async fn flush(&self) -> io::Result<()> {
        let mut done = self.inner.done.subscribe();
        let ticket = self.inner.lock().started + 1;
        loop {
            {
                let finished = done.borrow_and_update();
                if finished.pass >= ticket {
                    return match &finished.error {
                        None => Ok(()),
                        Some(e) => Err(io::Error::new(e.kind(), format!("flushing to disk failed: {e}"))),
                    };
                }
            }
            self.start_pass_if_idle();
            if done.changed().await.is_err() {
                return Err(io::Error::other("the flusher went away"));
            }
        }
    }

    /// Start a pass unless one is running; the running one's end wakes the waiters, and
    /// the first of them still uncovered starts the next.
    fn start_pass_if_idle(&self) {
        let pass = {
            let mut s = self.inner.lock();
            if s.running {
                return;
            }
            s.running = true;
            s.started += 1;
            s.started
        };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let flusher = inner.clone();
            let result = tokio::task::spawn_blocking(move || {
                nix::unistd::syncfs(flusher.dir.as_raw_fd()).map_err(io::Error::from)
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("flush task failed: {e}"))));
            inner.passes.fetch_add(1, Ordering::Relaxed);
            inner.lock().running = false;
            inner.done.send_replace(Finished { pass, error: result.err().map(Arc::new) });
        });
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_share_passes_and_each_waits_for_one_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let gc = GroupCommit::new(dir.path()).unwrap();
        gc.flush().await.unwrap();
        assert_eq!(gc.passes(), 1, "a lone writer pays one pass");
        let before = gc.passes();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let gc = gc.clone();
            tasks.push(tokio::spawn(async move {
                let start = gc.inner.lock().started;
                gc.flush().await.unwrap();
                // The pass that covered us started after we asked.
                assert!(gc.inner.done.borrow().pass > start);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let used = gc.passes() - before;
        assert!((1..64).contains(&used), "64 concurrent flushes took {used} passes");
    }
}
