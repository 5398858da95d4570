//! File calls that answer only from the kernel's caches, so that a thread which must
//! never wait for a disk can still make them.
//!
//! The daemon's store thread serves every `file:` store and every IPC connection, so it
//! must not block on file I/O (DESIGN.md section 4), and until now every file call went
//! to the blocking pool. For the commonest calls, an `info` or a small `load` of an item
//! that was just written or read, that hop (two thread wake-ups) costs more than the
//! call. Linux can say "answer from memory or not at all", the way io_uring tries a call
//! before it hands it to a worker:
//!
//! - `openat2` with `RESOLVE_CACHED` walks the path only through cached directory
//!   entries and fails with `EAGAIN` where it would have to look on disk (Linux 5.12);
//! - `statx` of the opened file with `AT_STATX_DONT_SYNC` reads the in-memory inode and
//!   never asks a network file system to revalidate it;
//! - `preadv2` with `RWF_NOWAIT` copies what is in the page cache and fails with
//!   `EAGAIN` where it would wait for a read from disk (Linux 4.14).
//!
//! Each function answers [`Cached::Hit`] with the call's result, or [`Cached::Miss`]
//! when the kernel would have had to wait, or cannot do the call at all (an older
//! kernel, a seccomp filter, a file system without `RWF_NOWAIT`); the caller then makes
//! the ordinary call on the blocking pool, which also produces the error message. Only a
//! definite answer from the cache is a hit: the item, or "no such item" from a cached
//! negative entry. Nothing here writes.

use bytes::BytesMut;
use std::fs::File;
use std::io;
use std::path::Path;
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An answer from the caches, or none.
#[derive(Debug)]
pub enum Cached<T> {
    /// The kernel answered without waiting.
    Hit(T),
    /// It would have waited, or cannot answer this way: make the ordinary call.
    Miss,
}

/// What [`stat`] knows of an item (the fields an `ItemInfo` needs).
#[derive(Debug)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Whether it is a directory.
    pub directory: bool,
    /// Last access.
    pub accessed: io::Result<SystemTime>,
    /// Last change of the contents.
    pub modified: io::Result<SystemTime>,
}

impl<T> Cached<T> {
    /// The answer made into another, or still none.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Cached<U> {
        match self {
            Cached::Hit(v) => Cached::Hit(f(v)),
            Cached::Miss => Cached::Miss,
        }
    }
}

impl From<&std::fs::Metadata> for Stat {
    fn from(md: &std::fs::Metadata) -> Self {
        Stat { size: md.len(), directory: md.is_dir(), accessed: md.accessed(), modified: md.modified() }
    }
}

/// Set once the kernel has refused `openat2` itself: no point asking again.
#[cfg(target_os = "linux")]
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Open `path` (following symlinks, as `open` does) if every step of the way is cached.
#[cfg(target_os = "linux")]
fn open_cached(path: &Path, flags: rustix::fs::OFlags) -> Cached<io::Result<File>> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags, CWD};
    use rustix::io::Errno;
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Cached::Miss;
    }
    match openat2(CWD, path, flags | OFlags::CLOEXEC, Mode::empty(), ResolveFlags::CACHED) {
        Ok(fd) => Cached::Hit(Ok(File::from(fd))),
        // A cached negative entry, or a file where a directory was asked for: definite.
        Err(e @ (Errno::NOENT | Errno::NOTDIR)) => Cached::Hit(Err(e.into())),
        Err(Errno::NOSYS | Errno::INVAL | Errno::PERM) => {
            // No openat2, no RESOLVE_CACHED (before 5.12), or a filter forbids it.
            UNSUPPORTED.store(true, Ordering::Relaxed);
            Cached::Miss
        }
        // EAGAIN: a step is not cached. Anything else: the ordinary call says it.
        Err(_) => Cached::Miss,
    }
}

/// Size, kind and times of an opened file, from the in-memory inode.
#[cfg(target_os = "linux")]
fn stat_of(file: &File) -> Cached<Stat> {
    use rustix::fs::{statx, AtFlags, FileType, StatxFlags, StatxTimestamp};
    fn time(t: StatxTimestamp) -> io::Result<SystemTime> {
        let since = Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec);
        let at = if t.tv_sec >= 0 { UNIX_EPOCH.checked_add(since) } else { UNIX_EPOCH.checked_sub(since) };
        at.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "time out of range"))
    }
    let mask = StatxFlags::TYPE | StatxFlags::SIZE | StatxFlags::ATIME | StatxFlags::MTIME;
    match statx(file, "", AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC, mask) {
        Ok(st) => Cached::Hit(Stat {
            size: st.stx_size,
            directory: FileType::from_raw_mode(st.stx_mode.into()) == FileType::Directory,
            accessed: time(st.stx_atime),
            modified: time(st.stx_mtime),
        }),
        Err(_) => Cached::Miss,
    }
}

/// Open `path` (for reading, or only as a handle) and stat it, if the caches allow.
fn open_and_stat(path: &Path, for_reading: bool) -> Cached<io::Result<(File, Stat)>> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::OFlags;
        match open_cached(path, if for_reading { OFlags::RDONLY } else { OFlags::PATH }) {
            Cached::Hit(Ok(file)) => stat_of(&file).map(|st| Ok((file, st))),
            Cached::Hit(Err(e)) => Cached::Hit(Err(e)),
            Cached::Miss => Cached::Miss,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, for_reading);
        Cached::Miss
    }
}

/// What `std::fs::metadata(path)` would say, if the caches can say it.
pub fn stat(path: &Path) -> Cached<io::Result<Stat>> {
    open_and_stat(path, false).map(|r| r.map(|(_, st)| st))
}

/// Open `path` for reading and learn its size, if the caches allow.
pub fn open(path: &Path) -> Cached<io::Result<(File, u64)>> {
    open_and_stat(path, true).map(|r| r.map(|(file, st)| (file, st.size)))
}

/// Read into `buf`'s spare room, at most `want - buf.len()` bytes from `at`; how many.
/// With `nowait`, only from the page cache (`RWF_NOWAIT`: EAGAIN where a byte would
/// wait for the disk). Bytes go straight into the buffer's free capacity: no zeroing of
/// a buffer the read overwrites anyway, which cost as much as the copy.
fn pread_spare(file: &File, at: u64, buf: &mut BytesMut, want: usize, nowait: bool) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(want.saturating_sub(buf.len()));
    let room = want.saturating_sub(buf.len()).min(buf.capacity() - buf.len());
    let spare = buf.spare_capacity_mut();
    let at = libc::off_t::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let n = {
        let iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: room };
        let flags = if nowait { libc::RWF_NOWAIT } else { 0 };
        // SAFETY: the iovec covers `room` bytes of `buf`'s spare capacity, which `buf`
        // owns and nothing else touches during the call; the kernel writes at most that.
        unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at, flags) }
    };
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let n = {
        if nowait {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // SAFETY: as above, `room` bytes of spare capacity owned by `buf`.
        unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), room, at) }
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: the kernel initialized the first `n` bytes of the spare capacity (n <= room).
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Append bytes of `file` from `start + buf.len()` to `buf` until it holds `want` bytes
/// or the file ends, waiting for the disk where needed (for the blocking pool).
pub fn fill(file: &File, start: u64, buf: &mut BytesMut, want: usize) -> io::Result<()> {
    while buf.len() < want {
        match pread_spare(file, start + buf.len() as u64, buf, want, false) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`fill`] from the page cache only: a hit once `buf` holds `want` bytes or the file
/// ended; a miss where the rest would wait for the disk (or the file system cannot say
/// so); what was read stays in `buf` and [`fill`] on the pool goes on from there.
pub fn fill_cached(file: &File, start: u64, buf: &mut BytesMut, want: usize) -> Cached<()> {
    while buf.len() < want {
        match pread_spare(file, start + buf.len() as u64, buf, want, true) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EAGAIN: some of it is on disk only. EOPNOTSUPP: not on this file system.
            Err(_) => return Cached::Miss,
        }
    }
    Cached::Hit(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn hit<T>(c: Cached<T>) -> T {
        match c {
            Cached::Hit(v) => v,
            Cached::Miss => panic!("expected an answer from the caches"),
        }
    }

    #[test]
    fn stat_says_what_std_says() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        for path in [file.as_path(), dir.path()] {
            let std_md = std::fs::metadata(path).unwrap();
            let ours = hit(stat(path)).unwrap();
            assert_eq!(ours.size, std_md.len());
            assert_eq!(ours.directory, std_md.is_dir());
            assert_eq!(ours.accessed.unwrap(), std_md.accessed().unwrap());
            assert_eq!(ours.modified.unwrap(), std_md.modified().unwrap());
        }
    }

    #[test]
    fn missing_names_are_definite_answers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        // Looked up once, so the kernel holds a negative entry for it.
        assert!(std::fs::metadata(dir.path().join("nope")).is_err());
        let e = hit(stat(&dir.path().join("nope"))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // Below a file: the kernel may answer or leave it to the ordinary call, but
        // never with something else.
        match open(&dir.path().join("f/below")) {
            Cached::Hit(r) => assert_eq!(r.unwrap_err().kind(), io::ErrorKind::NotADirectory),
            Cached::Miss => {}
        }
    }

    #[test]
    fn reads_what_was_written_and_stops_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let value: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &value).unwrap();
        let (file, size) = hit(open(&path)).unwrap();
        assert_eq!(size, value.len() as u64);
        let read = |start, want| {
            let mut buf = BytesMut::new();
            hit(fill_cached(&file, start, &mut buf, want));
            buf
        };
        assert_eq!(read(0, value.len()), value);
        assert_eq!(read(9_000, 5_000), &value[9_000..]);
        assert_eq!(read(20_000, 10), &b""[..]);
        // Appended behind what the buffer holds, from where that ends.
        let mut buf = BytesMut::from(&value[..100]);
        hit(fill_cached(&file, 0, &mut buf, 300));
        assert_eq!(buf, &value[..300]);
        let mut buf = BytesMut::from(&value[..100]);
        fill(&file, 0, &mut buf, 20_000).unwrap();
        assert_eq!(buf, value);
    }

    #[test]
    fn a_value_that_left_the_page_cache_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        let f = File::open(&path).unwrap();
        f.sync_all().unwrap();
        // SAFETY: a plain advice call on an open descriptor.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        let (file, _) = hit(open(&path)).unwrap();
        let mut buf = BytesMut::new();
        assert!(matches!(fill_cached(&file, 0, &mut buf, 1 << 20), Cached::Miss), "RWF_NOWAIT read from disk");
        fill(&file, 0, &mut buf, 1 << 20).unwrap();
        assert_eq!(buf, vec![7u8; 1 << 20]);
    }
}
