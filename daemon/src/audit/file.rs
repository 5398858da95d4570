//! The audit file itself: opening it (parent directory, `O_APPEND|O_CREAT`, mode 0640),
//! cutting a torn last line a crash left behind, appending whole lines with one write
//! that either lands whole or is undone, and rotation by size.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes read at a time while looking back for the last newline.
const SCAN: u64 = 64 << 10;

/// The open log file and its length as this writer made it.
pub(super) struct LogFile {
    path: PathBuf,
    /// `None` between a rotation's renames and the reopen (a failed reopen is retried).
    file: Option<File>,
    len: u64,
}

/// `path.n`, the `n`th rotated file.
pub(super) fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent(path))?.sync_all()
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).append(true).create(true).mode(0o640).open(path)
}

/// Cut `file` back to just after its last `\n` (to empty if it has none). Returns the
/// number of bytes cut.
pub(super) fn repair_tail(file: &File) -> io::Result<u64> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; SCAN as usize];
    while end > 0 {
        let start = end.saturating_sub(SCAN);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
        file.sync_data()?;
    }
    Ok(len - end)
}

impl LogFile {
    /// Open `path` for appending (creating it and its parent directory), cutting a torn
    /// last line first.
    pub(super) fn open(path: &Path) -> io::Result<LogFile> {
        std::fs::create_dir_all(parent(path))?;
        let file = open_append(path)?;
        let cut = repair_tail(&file)?;
        if cut > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = cut,
                "audit log: cut a torn last line left by a crash ({cut} bytes after the last newline)"
            );
        }
        sync_dir(path)?;
        let len = file.metadata()?.len();
        Ok(LogFile { path: path.to_path_buf(), file: Some(file), len })
    }

    /// The log's path (the current file; rotated ones are `path.N`).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length (what this writer wrote to it included).
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Reopen after a rotation whose reopen failed (a no-op while the file is open).
    pub(super) fn ensure_open(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let file = open_append(&self.path)?;
            self.len = file.metadata()?.len();
            sync_dir(&self.path)?;
            self.file = Some(file);
        }
        Ok(())
    }

    fn file(&mut self) -> io::Result<&File> {
        self.ensure_open()?;
        self.file.as_ref().ok_or_else(|| io::Error::other("audit log: file not open"))
    }

    /// Append `bytes` (whole lines) with one `write(2)`. If the write is refused or
    /// short (disk full), the file is cut back to its length before it, so no partial
    /// line stays, and the error is returned.
    pub(super) fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.ensure_open()?;
        let before = self.len;
        let Some(mut file) = self.file.as_ref() else { return Err(io::Error::other("audit log: file not open")) };
        let result = loop {
            match file.write(bytes) {
                Ok(n) if n == bytes.len() => break Ok(()),
                // Short: whatever stopped it (usually ENOSPC) shows on the rest.
                Ok(n) => {
                    break Err(match file.write(&bytes[n..]) {
                        Err(e) => e,
                        Ok(_) => io::Error::new(io::ErrorKind::WriteZero, "audit log: short write"),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.len = before + bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Undo a partial append; cutting frees space, so it works on a full disk.
                if !file.metadata().is_ok_and(|m| m.len() == before) {
                    if let Err(cut) = file.set_len(before) {
                        tracing::error!(path = %self.path.display(), error = %cut, "audit log: cannot cut a partial write back");
                    }
                }
                Err(e)
            }
        }
    }

    /// `fdatasync` the file.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        self.file()?.sync_data()
    }

    /// Rotate: sync the file, rename `path.(keep-1)` to `path.keep`, ..., `path` to
    /// `path.1` (or remove it when `keep` is 0), open a fresh `path`, sync the directory.
    /// A failure part way is safe to retry: names already moved are simply missing.
    pub(super) fn rotate(&mut self, keep: usize) -> io::Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        let missing_ok = |r: io::Result<()>| match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        if keep == 0 {
            missing_ok(std::fs::remove_file(&self.path))?;
        } else {
            for n in (1..keep).rev() {
                missing_ok(std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)))?;
            }
            missing_ok(std::fs::rename(&self.path, rotated(&self.path, 1)))?;
        }
        self.file = None;
        self.len = 0;
        self.ensure_open()?;
        Ok(())
    }
}
