//! A loaded value on its way to a client: its bytes, or a range of an open local file
//! that the door sends piece by piece.
//!
//! A large value loaded whole sits in the daemon's memory at its full size (16 clients
//! loading 8 MiB: 128 MiB), is copied from the page cache into it, and only then starts
//! towards the client. [`Value::File`] lets posixfs answer a large load with the file
//! it opened instead: the IPC writer and the REST body read it [`PIECE`] bytes at a
//! time and send each piece while the next is read, so memory per load is one piece,
//! and each copy works on a piece that is still in the CPU's cache.
//!
//! The open file is the value as it was when the load ran: posixfs never writes into an
//! item's file, a store renames a new file over it and a delete unlinks it, so a file
//! opened once keeps its bytes (an outside program that truncates it gets a short read,
//! reported as an error; the door then drops the connection, since the length was sent).
//!
//! Pieces come from the page cache on the calling thread when they are all there
//! ([`crate::backends::posixfs::cached::fill_cached`]), else from the blocking pool: the
//! threads that serve many connections never wait for a disk. After the first piece,
//! each is read on the pool while the one before it is sent (a piece ahead), so 16
//! clients loading large values keep both cores busy instead of one thread doing every
//! copy. Pieces are read into the room earlier ones used, once the door has let them
//! go: no allocation and no zeroing per piece.

use crate::backends::posixfs::cached::{self, Cached};
use crate::names::shown;
use borgstore_ipc::{Error, Result};
use bytes::{Bytes, BytesMut};
use std::fs::File;
use std::io;
use std::sync::Arc;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::task::JoinHandle;

/// Bytes of a [`FileRange`] read and sent at a time.
pub const PIECE: usize = 256 << 10;

/// Values the daemon holds open as files at once. Each is an open file descriptor until
/// its client has taken the last piece, and a client may pipeline many loads without
/// reading: past this many, a large value is read into memory as before (bounded by the
/// memory it costs, not by descriptors).
pub const OPEN_MAX: usize = 512;

static OPEN: Semaphore = Semaphore::const_new(OPEN_MAX);

/// A loaded value.
pub enum Value {
    /// In memory.
    Bytes(Bytes),
    /// A range of an open file (large values of posixfs in the daemon).
    File(FileRange),
}

impl Value {
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Value::Bytes(b) => b.len() as u64,
            Value::File(f) => f.left,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole value in memory (a file range is read on the blocking pool).
    pub async fn into_bytes(self) -> Result<Bytes> {
        match self {
            Value::Bytes(b) => Ok(b),
            Value::File(f) => {
                let want = usize::try_from(f.left).map_err(|_| Error::invalid("value too large for memory"))?;
                let whole = f.finish_read(f.read_on_pool(BytesMut::with_capacity(want), f.next, want)).await?;
                if whole.len() < want {
                    return Err(f.shortened());
                }
                Ok(whole.freeze())
            }
        }
    }
}

/// `left` bytes from `next` of an open file, read a piece at a time.
pub struct FileRange {
    file: Arc<File>,
    /// The item, for error messages (never the path).
    name: String,
    /// Offset of the next piece to hand out.
    next: u64,
    left: u64,
    /// The piece after the one handed out last, being read on the blocking pool while
    /// that one is sent.
    ahead: Option<JoinHandle<io::Result<BytesMut>>>,
    /// The buffers of the last pieces handed out; one is read into again once the door
    /// has let go of its piece.
    spares: Vec<BytesMut>,
    /// Its place among the [`OPEN_MAX`] open values.
    _open: SemaphorePermit<'static>,
}

impl FileRange {
    /// `len` bytes from `start` of `file`, which holds the value of item `name`; the
    /// file back when [`OPEN_MAX`] values are open already (read it into memory then).
    pub fn new(file: File, name: &str, start: u64, len: u64) -> std::result::Result<Self, File> {
        let Ok(open) = OPEN.try_acquire() else {
            return Err(file);
        };
        Ok(FileRange {
            file: Arc::new(file),
            name: name.to_string(),
            next: start,
            left: len,
            ahead: None,
            spares: Vec::new(),
            _open: open,
        })
    }

    /// Values open as files right now (for tests and metrics).
    pub fn open_now() -> usize {
        OPEN_MAX - OPEN.available_permits()
    }

    /// Bytes not yet handed out.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The next piece (up to [`PIECE`] bytes), or None once all is read. A file that
    /// ends before the range does is an error.
    ///
    /// The first piece comes from the page cache on the calling thread when it is all
    /// there; every later one was read on the blocking pool while the one before it was
    /// sent, so the thread that sends (one for every connection) only copies each byte
    /// once, into the socket.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>> {
        if self.left == 0 {
            return Ok(None);
        }
        let want = self.piece_len();
        let mut buf = match self.ahead.take() {
            Some(reading) => self.finish_read(reading).await?,
            None => {
                let mut buf = self.room(want);
                if let Cached::Miss = cached::fill_cached(&self.file, self.next, &mut buf, want) {
                    buf = self.finish_read(self.read_on_pool(buf, self.next, want)).await?;
                }
                buf
            }
        };
        if buf.len() < want {
            return Err(self.shortened());
        }
        self.next += want as u64;
        self.left -= want as u64;
        let piece = buf.split().freeze();
        // Two spares: this piece's (still out) and the one before (back by now).
        self.spares.insert(0, buf);
        self.spares.truncate(2);
        if self.left > 0 {
            let after = self.piece_len();
            let room = self.room(after);
            self.ahead = Some(self.read_on_pool(room, self.next, after));
        }
        Ok(Some(piece))
    }

    /// Bytes of the next piece.
    fn piece_len(&self) -> usize {
        PIECE.min(usize::try_from(self.left).unwrap_or(PIECE))
    }

    /// An empty buffer with room for `want` bytes: a spare whose piece the door has let
    /// go of, else a new one.
    fn room(&mut self, want: usize) -> BytesMut {
        match self.spares.iter_mut().position(|b| b.try_reclaim(want)) {
            Some(i) => self.spares.remove(i),
            None => BytesMut::with_capacity(want),
        }
    }

    /// Start filling `buf` up to `want` bytes from `at` on the blocking pool.
    fn read_on_pool(&self, mut buf: BytesMut, at: u64, want: usize) -> JoinHandle<io::Result<BytesMut>> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || cached::fill(&file, at, &mut buf, want).map(|()| buf))
    }

    /// The buffer a pool read filled (fewer bytes where the file ends).
    async fn finish_read(&self, reading: JoinHandle<io::Result<BytesMut>>) -> Result<BytesMut> {
        let read = reading.await.map_err(|e| Error::backend(format!("posixfs worker failed: {e}")))?;
        read.map_err(|e| Error::backend(format!("load {} failed: {}", shown(&self.name), super::posixfs::describe(&e))))
    }

    /// Its pieces as a stream (an HTTP body); the stream ends with the first error.
    pub fn into_pieces(self) -> impl futures::Stream<Item = Result<Bytes>> + 'static {
        futures::stream::try_unfold(self, |mut range| async move {
            Ok(range.next_piece().await?.map(|piece| (piece, range)))
        })
    }

    /// The error of a read that got fewer bytes than the range holds: the file was cut
    /// short behind the daemon's back.
    fn shortened(&self) -> Error {
        Error::backend(format!("load {} failed: the file became shorter while it was read", shown(&self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests share the process-wide count of open values: one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn past_the_open_limit_the_file_comes_back() {
        let _serial = SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, b"value").unwrap();
        let open = || FileRange::new(File::open(&path).unwrap(), "v", 0, 5);
        let mut held: Vec<FileRange> =
            (0..OPEN_MAX).map(|_| open().unwrap_or_else(|_| panic!("refused early"))).collect();
        assert_eq!(FileRange::open_now(), OPEN_MAX);
        assert!(open().is_err(), "one more than OPEN_MAX");
        held.pop();
        assert!(open().is_ok(), "room again once one is done");
        drop(held);
        assert_eq!(FileRange::open_now(), 0);
    }

    fn range(bytes: &[u8], start: u64, len: u64) -> (tempfile::TempDir, FileRange) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v");
        std::fs::write(&path, bytes).unwrap();
        let range = FileRange::new(File::open(&path).unwrap(), "data/v", start, len);
        (dir, range.unwrap_or_else(|_| panic!("{OPEN_MAX} values open")))
    }

    #[tokio::test]
    async fn pieces_add_up_to_the_range() {
        let _serial = SERIAL.lock().await;
        let value: Vec<u8> = (0..(PIECE * 2 + 1000)).map(|i| (i % 253) as u8).collect();
        let (_d, mut r) = range(&value, 10, value.len() as u64 - 20);
        let mut got = Vec::new();
        let mut pieces = 0;
        while let Some(p) = r.next_piece().await.unwrap() {
            assert!(p.len() <= PIECE);
            got.extend_from_slice(&p);
            pieces += 1;
        }
        assert_eq!(pieces, 3);
        assert_eq!(got, &value[10..value.len() - 10]);
        assert_eq!(r.left(), 0);
    }

    #[tokio::test]
    async fn a_whole_value_in_memory() {
        let _serial = SERIAL.lock().await;
        let value = vec![3u8; PIECE * 3];
        let (_d, r) = range(&value, 0, value.len() as u64);
        assert_eq!(&Value::File(r).into_bytes().await.unwrap()[..], &value[..]);
    }

    #[tokio::test]
    async fn a_file_cut_short_is_an_error_that_names_the_item_only() {
        let _serial = SERIAL.lock().await;
        let value = vec![3u8; PIECE * 2];
        let (dir, mut r) = range(&value, 0, value.len() as u64);
        // Another program truncates the file behind the daemon's back.
        std::fs::OpenOptions::new().write(true).open(dir.path().join("v")).unwrap().set_len(100).unwrap();
        let e = r.next_piece().await.unwrap_err();
        assert!(e.message.contains("data/v") && e.message.contains("shorter"), "{}", e.message);
        assert!(!e.message.contains(&dir.path().display().to_string()));
        let (dir2, r2) = range(&value, 0, value.len() as u64);
        std::fs::OpenOptions::new().write(true).open(dir2.path().join("v")).unwrap().set_len(100).unwrap();
        assert!(Value::File(r2).into_bytes().await.is_err());
    }
}
