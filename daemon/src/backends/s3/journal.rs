//! The journal of our multipart uploads in flight: one small JSON file per upload in a
//! local directory of the store's own (the daemon gives each store
//! `state_dir/s3-uploads/<store>/`).
//!
//! Why: an upload cut off by a crash (SIGKILL, power loss) stays on the server, unseen by
//! listings, until someone aborts it, and costs storage meanwhile. Only we know which
//! uploads are ours: several daemons may share a bucket and prefix, so aborting every
//! upload under the prefix would kill another host's live upload. So an upload is
//! written down right after `CreateMultipartUpload` answers and crossed out once it is
//! completed or aborted; at `open`, whatever is still written down was cut off and is
//! aborted (see `orphans`).
//!
//! Several processes may share a journal directory (every `borgstore-server-rest` serves
//! its store as `rest`, and a `rest://` store runs several of them at once): an entry
//! also names the process that runs the upload (pid, its start time, the boot), and an
//! upload whose process still runs is never aborted as a leftover; entries for another
//! endpoint, bucket or prefix are left to whoever opens that store.
//!
//! The files: `<digest of the upload id>.upload`, holding endpoint, bucket, key, upload id,
//! start time and owner; written to a `.tmp` file and renamed, so a file is whole or absent. A `.tmp`
//! file (a write cut off by a crash) is removed; anything else that is not a readable
//! entry is left alone with a warning. No fsync: the journal has to survive the daemon,
//! not the machine; an entry lost with a power cut leaves its upload to the age-based
//! sweep. Journal I/O never fails a store: an entry that cannot be written is a warning.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// File name ending of an entry.
const ENTRY: &str = "upload";

/// One upload in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The custom endpoint it goes to (None: the SDK's own).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket it goes to.
    pub bucket: String,
    /// Its object key (with the store's prefix).
    pub key: String,
    /// Its upload id.
    pub upload_id: String,
    /// When it was started, in seconds since the epoch (for the log).
    pub started: u64,
    /// The process that runs it (None: unknown, taken as gone).
    #[serde(default)]
    pub owner: Option<Owner>,
}

/// A process, told apart from a later one with the same pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its pid.
    pub pid: u32,
    /// Its start time, in clock ticks after boot (`/proc/PID/stat`, field 22).
    pub start: u64,
    /// The boot it ran in (`/proc/sys/kernel/random/boot_id`).
    pub boot: String,
}

impl Owner {
    /// This process (None where `/proc` does not tell).
    pub async fn me() -> Option<Owner> {
        static ME: tokio::sync::OnceCell<Option<Owner>> = tokio::sync::OnceCell::const_new();
        ME.get_or_init(|| Owner::of(std::process::id())).await.clone()
    }

    /// The process `pid` as it is now (None: not running, or `/proc` does not tell).
    async fn of(pid: u32) -> Option<Owner> {
        let stat = tokio::fs::read_to_string(format!("/proc/{pid}/stat")).await.ok()?;
        let boot = tokio::fs::read_to_string("/proc/sys/kernel/random/boot_id").await.ok()?;
        Some(Owner { pid, start: start_time(&stat)?, boot: boot.trim().to_string() })
    }

    /// Whether this process still runs (same boot, same pid, same start time).
    pub async fn running(&self) -> bool {
        Owner::of(self.pid).await.as_ref() == Some(self)
    }
}

/// Field 22 (start time) of a `/proc/PID/stat` line; the command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself.
fn start_time(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// A journal directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal in `dir` (created on the first entry).
    pub fn new(dir: PathBuf) -> Self {
        Journal { dir }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of the upload `upload_id` (ids are long and may hold any character, so
    /// the name is a digest of it).
    fn file(&self, upload_id: &str) -> PathBuf {
        let digest = hex::encode(&Sha256::digest(upload_id.as_bytes())[..16]);
        self.dir.join(format!("{digest}.{ENTRY}"))
    }

    /// Write `entry` down.
    pub async fn add(&self, entry: &Entry) -> std::io::Result<()> {
        let text = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder.create(&self.dir).await?;
        let file = self.file(&entry.upload_id);
        let tmp = file.with_extension(format!("{ENTRY}.tmp"));
        tokio::fs::write(&tmp, text).await?;
        tokio::fs::rename(&tmp, &file).await
    }

    /// Cross the upload `upload_id` out (done when it is not written down).
    pub async fn remove(&self, upload_id: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.file(upload_id)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Cross out the entry in the file `path` (from [`Journal::entries`]).
    pub async fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every entry written down, with its file (none when the directory does not exist).
    /// Files that are not entries are skipped with a warning; leftover `.tmp` files are
    /// removed.
    pub async fn entries(&self) -> Vec<(PathBuf, Entry)> {
        let mut out = Vec::new();
        let mut dir = match tokio::fs::read_dir(&self.dir).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
            Err(e) => {
                tracing::warn!("S3 upload journal {}: cannot read it: {e}", self.dir.display());
                return out;
            }
        };
        loop {
            let item = match dir.next_entry().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("S3 upload journal {}: listing stopped: {e}", self.dir.display());
                    break;
                }
            };
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write cut off by a crash: its upload, if it was started, is left to the
                // age-based sweep.
                if let Err(e) = tokio::fs::remove_file(&path).await {
                    tracing::warn!("S3 upload journal: cannot remove {}: {e}", path.display());
                }
                continue;
            }
            let parsed = if name.ends_with(&format!(".{ENTRY}")) {
                match tokio::fs::read(&path).await {
                    Ok(bytes) => serde_json::from_slice::<Entry>(&bytes).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            } else {
                Err("not a journal entry".to_string())
            };
            match parsed {
                Ok(entry) => out.push((path, entry)),
                Err(why) => tracing::warn!("S3 upload journal: skipping {}: {why}", path.display()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            endpoint: Some("http://127.0.0.1:9000".into()),
            bucket: "b".into(),
            key: "p/data/x".into(),
            upload_id: id.into(),
            started: 1,
            owner: None,
        }
    }

    #[tokio::test]
    async fn owners_are_told_apart_from_later_processes() {
        let me = Owner::me().await.expect("Linux has /proc");
        assert_eq!(me.pid, std::process::id());
        assert!(me.running().await);
        assert!(!Owner { start: me.start + 1, ..me.clone() }.running().await, "a pid reused later");
        assert!(!Owner { boot: "another boot".into(), ..me.clone() }.running().await);
        assert!(!Owner { pid: u32::MAX, ..me.clone() }.running().await, "no such process");
        assert_eq!(start_time("1 (a) b) c) S 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 4242 9"), Some(4242));
        assert_eq!(start_time("garbage"), None);
        assert_eq!(start_time("1 (x) S 2"), None);
        // An entry written before owners were recorded, or by hand, still reads.
        let old: Entry = serde_json::from_str(r#"{"bucket":"b","key":"k","upload_id":"u","started":0}"#).unwrap();
        assert_eq!((old.owner, old.endpoint), (None, None));
    }

    #[tokio::test]
    async fn entries_round_trip_and_garbage_is_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::new(tmp.path().join("s3-uploads").join("main"));
        assert_eq!(j.entries().await, [], "no directory yet: no entries");
        j.remove("never-added").await.unwrap();
        j.add(&entry("id/with+odd chars")).await.unwrap();
        j.add(&entry("second")).await.unwrap();
        let mode = std::fs::metadata(j.dir()).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.unwrap() & 0o777, 0o700);
        // Garbage of every kind: skipped (and left), a cut-off write removed.
        std::fs::write(j.dir().join("broken.upload"), b"{\"bucket\": ").unwrap();
        std::fs::write(j.dir().join("binary.upload"), [0xff, 0xfe, 0]).unwrap();
        std::fs::write(j.dir().join("notes.txt"), b"hello").unwrap();
        std::fs::create_dir(j.dir().join("sub.upload")).unwrap();
        std::fs::write(j.dir().join("cut.upload.tmp"), b"{").unwrap();
        let mut got: Vec<Entry> = j.entries().await.into_iter().map(|(_, e)| e).collect();
        got.sort_by(|a, b| a.upload_id.cmp(&b.upload_id));
        assert_eq!(got, [entry("id/with+odd chars"), entry("second")]);
        assert!(!j.dir().join("cut.upload.tmp").exists());
        assert!(j.dir().join("broken.upload").exists() && j.dir().join("notes.txt").exists());
        j.remove("second").await.unwrap();
        j.remove("second").await.unwrap();
        let left = j.entries().await;
        assert_eq!(left.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(), [entry("id/with+odd chars")]);
        // An entry is crossed out by its file too, whatever its name.
        std::fs::rename(&left[0].0, j.dir().join("renamed.upload")).unwrap();
        let renamed = j.entries().await;
        assert_eq!(renamed.len(), 1);
        j.remove_file(&renamed[0].0).await.unwrap();
        assert_eq!(j.entries().await, []);
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let j = Journal::new(file.join("below"));
        assert!(j.add(&entry("x")).await.is_err());
        assert_eq!(j.entries().await, []);
    }
}
