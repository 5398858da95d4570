//! Removing the temp files of writes that never finished.
//!
//! A store writes `*.tmp` next to the item and renames it into place; a process killed
//! in between (ours or Python's) leaves the temp file behind, invisible to `list` but
//! taking space forever. Opening a store sweeps them away in the background: only
//! regular files whose name ends in `.tmp` and that nobody has written to for
//! [`STALE_AFTER`]. A live write touches its temp file at least every
//! [`crate::limits::BODY_IDLE`] or is aborted, so it is never that old. Symlinks are
//! never followed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A temp file untouched this long belongs to a write that died.
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// Remove stale temp files under `root`; returns how many went.
pub fn sweep(root: &Path, stale_after: Duration) -> usize {
    let cutoff = SystemTime::now().checked_sub(stale_after).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                dirs.push(entry.path());
                continue;
            }
            if !kind.is_file() || !entry.file_name().as_encoded_bytes().ends_with(b".tmp") {
                continue;
            }
            let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < cutoff);
            if old && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Sweep `root` on a thread of its own, logging what was removed.
pub fn sweep_in_background(root: PathBuf) {
    let spawned = std::thread::Builder::new().name("posixfs-sweep".into()).spawn(move || {
        let n = sweep(&root, STALE_AFTER);
        if n > 0 {
            tracing::info!("removed {n} stale temp file(s) of unfinished writes");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the temp file sweep: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_temp_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("data/01/23")).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        let set_old = |p: &Path| fs::File::options().write(true).open(p).unwrap().set_modified(old).unwrap();
        for (name, age_old) in [
            ("data/01/23/tmpabc.tmp", true),
            ("data/01/tmpdef.tmp", false),
            ("data/01/23/0123aa", true),
            ("quota.hid", true),
        ] {
            fs::write(root.join(name), b"x").unwrap();
            if age_old {
                set_old(&root.join(name));
            }
        }
        // A directory named like a temp file and a symlink to an old temp file elsewhere.
        fs::create_dir_all(root.join("data/dir.tmp")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("x.tmp"), b"x").unwrap();
        set_old(&outside.path().join("x.tmp"));
        std::os::unix::fs::symlink(outside.path().join("x.tmp"), root.join("data/link.tmp")).unwrap();

        assert_eq!(sweep(root, STALE_AFTER), 1);
        assert!(!root.join("data/01/23/tmpabc.tmp").exists());
        for kept in ["data/01/tmpdef.tmp", "data/01/23/0123aa", "quota.hid", "data/dir.tmp", "data/link.tmp"] {
            assert!(root.join(kept).symlink_metadata().is_ok(), "{kept} must stay");
        }
        assert!(outside.path().join("x.tmp").exists(), "symlinks are not followed");
    }
}
