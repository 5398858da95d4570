//! Delete quarantine: a delete by a principal without `D` becomes a soft delete (the
//! `.del` rename borgstore already defines), written down in the store's ledger, and
//! items quarantined longer than the store's window are purged for good.
//!
//! The ledger is a JSON-lines file in the daemon's state directory, one line per
//! quarantined item: `{"t": unix seconds, "name": "data/01/23/0123.del"}` (backend-level
//! names). Only items in the ledger are ever purged: borg's own soft deletes by a
//! principal holding `D`, and anything deleted outside the daemon, stay until somebody
//! deletes them. A line lost in a crash (appends are not fsynced one by one) only means
//! that item is never purged automatically, the safe way round. An item restored
//! (undeleted) meanwhile is simply not there any more when its time comes.
//!
//! Quarantine never overwrites: when `name.del` already exists (an earlier version of
//! the item is in quarantine), the delete goes through only if the live item has the
//! same content (then nothing is lost by deleting it); otherwise it is refused, so a
//! hostile client cannot push the quarantined version out by storing and deleting again.
//!
//! Time comes from [`now`], which tests may shift (see [`CLOCK_ENV`]), so the expiry is
//! tested without sleeping for days.

use crate::hashing::HashAlgorithm;
use crate::names::DEL_SUFFIX;
use crate::store::Store;
use borgstore_ipc::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A testing hook: the path of a file holding a number of seconds added to the clock
/// of quarantine and purge (`1209600` = two weeks later). Unset in production.
pub const CLOCK_ENV: &str = "BORGSTORED_TEST_CLOCK_FILE";

/// The time quarantine and purge go by (see [`CLOCK_ENV`]).
pub fn now() -> SystemTime {
    let offset = std::env::var_os(CLOCK_ENV)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| t.trim().trim_start_matches('+').parse::<u64>().ok())
        .unwrap_or(0);
    SystemTime::now() + Duration::from_secs(offset)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Serialize, Deserialize)]
struct Line {
    t: u64,
    name: String,
}

/// What a purge did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Items deleted for good.
    pub purged: u64,
    /// Items still inside their window.
    pub kept: u64,
    /// Ledger entries whose item was gone (restored or deleted meanwhile).
    pub gone: u64,
    /// Items whose delete failed (kept in the ledger, tried again next time).
    pub failed: u64,
}

/// One store's quarantine: its window and its ledger.
pub struct Quarantine {
    /// How long a quarantined item is kept.
    pub days: u32,
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for Quarantine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Quarantine({} days)", self.days)
    }
}

impl Quarantine {
    /// The quarantine of a store whose ledger is `path` (created on first use).
    pub fn new(days: u32, path: PathBuf) -> Self {
        Quarantine { days, path, file: Mutex::new(None) }
    }

    /// The ledger file.
    pub fn ledger(&self) -> &Path {
        &self.path
    }

    fn append(&self, name: &str, t: SystemTime) -> Result<()> {
        let mut line = serde_json::to_vec(&Line { t: unix(t), name: name.to_string() })
            .map_err(|e| Error::backend(format!("quarantine ledger: {e}")))?;
        line.push(b'\n');
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(open_append(&self.path).map_err(|e| ledger_error("open", e))?);
        }
        if let Some(f) = guard.as_mut() {
            // One write per line: a crash never leaves half a line behind a whole one.
            f.write_all(&line).map_err(|e| ledger_error("write", e))?;
        }
        Ok(())
    }

    /// Quarantine the live engine item `name` (its `.del` twin takes its place); with
    /// `deleted`, the soft-deleted item stays in quarantine (written down if it was not).
    pub async fn engine(&self, store: &Store, name: &str, deleted: bool) -> Result<()> {
        if deleted {
            let held = store.find(name, true).await?;
            return self.keep(store, &held).await;
        }
        let live = store.find(name, false).await?;
        let target = format!("{live}{DEL_SUFFIX}");
        if !self.make_room(store, &live, &target).await? {
            store.move_(name, crate::store::MoveAction::Delete).await?;
        }
        self.append(&target, now())
    }

    /// Quarantine the backend-level item `name` (REST); a `.del` item stays in
    /// quarantine (written down if it was not).
    pub async fn nested(&self, store: &Store, name: &str) -> Result<()> {
        crate::names::validate_name(name)?;
        if name.ends_with(DEL_SUFFIX) {
            return self.keep(store, name).await;
        }
        let target = format!("{name}{DEL_SUFFIX}");
        if !self.make_room(store, name, &target).await? {
            store.nested().move_(name, &target).await?;
        }
        self.append(&target, now())
    }

    /// A delete of the soft-deleted `held` by a quarantining principal: it stays; the
    /// ledger gets it when it does not have it (then its window starts now).
    async fn keep(&self, store: &Store, held: &str) -> Result<()> {
        if !store.backend().info(held).await?.exists {
            return Err(Error::not_found(held));
        }
        let known = read_lines(&self.path).map_err(|e| ledger_error("read", e))?.iter().any(|l| l.name == held);
        if !known {
            self.append(held, now())?;
        }
        Ok(())
    }

    /// When `target` exists already: delete the live item if it holds the same bytes
    /// (true), else refuse. False: `target` is free.
    async fn make_room(&self, store: &Store, live: &str, target: &str) -> Result<bool> {
        let b = store.backend();
        let old = b.info(target).await?;
        if !old.exists {
            return Ok(false);
        }
        let new = b.info(live).await?;
        if !new.exists {
            return Err(Error::not_found(live));
        }
        let same = new.size == old.size && {
            let n = store.nested();
            n.hash(live, HashAlgorithm::Sha256).await? == n.hash(target, HashAlgorithm::Sha256).await?
        };
        if !same {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "cannot delete {}: an earlier deleted version of it is in quarantine (ask an administrator)",
                    crate::names::shown(live)
                ),
            ));
        }
        store.nested().delete(live).await?;
        Ok(true)
    }

    /// Delete for good every ledger item quarantined more than the window before `at`.
    pub async fn purge(&self, store: &Store, at: SystemTime) -> Result<Purged> {
        let window = u64::from(self.days) * 86_400;
        let cutoff = unix(at).saturating_sub(window);
        let mut latest: BTreeMap<String, u64> = BTreeMap::new();
        for line in read_lines(&self.path).map_err(|e| ledger_error("read", e))? {
            let slot = latest.entry(line.name).or_insert(line.t);
            *slot = (*slot).max(line.t);
        }
        let mut done = Purged::default();
        let mut keep = BTreeMap::new();
        for (name, t) in latest {
            if t > cutoff {
                done.kept += 1;
                keep.insert(name, t);
                continue;
            }
            match store.nested().delete(&name).await {
                Ok(()) => done.purged += 1,
                Err(e) if e.kind == ErrorKind::ObjectNotFound => done.gone += 1,
                Err(e) => {
                    tracing::warn!(item = %crate::names::shown(&name), "purging a quarantined item failed: {}", e.message);
                    done.failed += 1;
                    keep.insert(name, t);
                }
            }
        }
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *guard = None;
        rewrite(&self.path, &keep).map_err(|e| ledger_error("rewrite", e))?;
        Ok(done)
    }
}

fn ledger_error(what: &str, e: std::io::Error) -> Error {
    // The path stays in our log; the client learns only that the ledger failed.
    tracing::error!("quarantine ledger: {what} failed: {e}");
    Error::backend(format!("quarantine ledger: {what} failed"))
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)
}

/// The ledger's lines; a torn or foreign line is skipped with a warning.
fn read_lines(path: &Path) -> std::io::Result<Vec<Line>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Line>(&line) {
            Ok(l) => out.push(l),
            Err(_) => tracing::warn!("quarantine ledger: line {} is not an entry; skipped", i + 1),
        }
    }
    Ok(out)
}

/// Replace the ledger with `entries`, atomically.
fn rewrite(path: &Path, entries: &BTreeMap<String, u64>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".ledger").tempfile_in(dir)?;
    for (name, t) in entries {
        let line = serde_json::to_string(&Line { t: *t, name: name.clone() }).map_err(std::io::Error::other)?;
        writeln!(tmp, "{line}")?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_entry_of_a_name_counts_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q/s.jsonl");
        let q = Quarantine::new(1, path.clone());
        q.append("a.del", UNIX_EPOCH + Duration::from_secs(100)).unwrap();
        q.append("a.del", UNIX_EPOCH + Duration::from_secs(200)).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"t\": 5, \"na").unwrap();
        let lines = read_lines(&path).unwrap();
        assert_eq!(lines.len(), 2);
        let mut keep = BTreeMap::new();
        keep.insert("b.del".to_string(), 7u64);
        rewrite(&path, &keep).unwrap();
        let lines = read_lines(&path).unwrap();
        assert_eq!((lines.len(), lines[0].name.as_str(), lines[0].t), (1, "b.del", 7));
    }
}
