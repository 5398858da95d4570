//! Backends: where a store's bytes live.
//!
//! Every backend implements [`Backend`], the flat, backend-level API of Python
//! borgstore: names arrive already nested (`data/01/23/0123..`), one directory level is
//! listed at a time, and soft deletion is just a `move`. The engine in
//! [`crate::store`] adds namespaces, nesting, soft delete and stats on top.
//!
//! - [`posixfs`]: `file:///abs/path`, a directory tree byte-compatible with Python borgstore.
//! - `sftp` (feature `sftp`): `sftp://user@host:port/path` over russh + russh-sftp.
//! - `s3` (feature `s3`): `s3:` and `b2:` URLs over aws-sdk-s3.
//! - `rclone` (feature `rclone`): `rclone:remote:path`, driving `rclone rcd` over its rc API.
//! - `rest_client` (feature `rest-client`): `http(s)://` and `rest://`, the REST protocol v1.
//! - [`url`]: turns a store URL into a backend.
//! - [`body`]: a value that arrives in pieces (a streamed REST upload).
//! - [`value`]: a loaded value that leaves in pieces (a large posixfs value, sent from
//!   its open file).
//! - [`durability`]: the `fsync` setting, what each mode promises and how backends keep it.
//! - [`parts`]: the part settings of large values (multipart uploads and ranged loads of
//!   the S3 backends).
//! - `retry` (with any remote backend): the one retry policy of the remote backends.
//!
//! A backend is shared (`Arc<dyn Backend>`) and called concurrently; it keeps its own
//! state behind interior mutability. Backends never block an async executor thread:
//! blocking I/O goes to `tokio::task::spawn_blocking`.

pub mod body;
pub mod durability;
pub mod open_state;
pub mod parts;
pub mod posixfs;
#[cfg(feature = "rclone")]
pub mod rclone;
#[cfg(feature = "rest-client")]
pub mod rest_client;
#[cfg(any(feature = "sftp", feature = "s3", feature = "rclone", feature = "rest-client"))]
pub mod retry;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "sftp")]
pub mod sftp;
pub mod url;
pub mod value;

use crate::hashing::HashAlgorithm;
use crate::names::nesting::nest;
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source};
use bytes::Bytes;

/// How defrag names its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefragTarget {
    /// Store the result under this (nested) name.
    Name(String),
    /// Name the result after the hex digest of its content, in `namespace` (may be
    /// empty) at `levels` nesting levels.
    Hashed {
        /// The digest whose hex form is the name.
        algorithm: HashAlgorithm,
        /// The namespace to store it in; empty for the store root.
        namespace: String,
        /// Nesting levels of the name below `namespace` (0: none).
        levels: u32,
    },
}

/// The backend-level store API (DESIGN.md section 3, REST-API.md routes).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Initialise the storage. Refuses an existing non-empty store.
    async fn create(&self) -> Result<()>;
    /// Remove the storage and all its contents.
    async fn destroy(&self) -> Result<()>;
    /// Start using the storage; every other call below needs an open backend.
    async fn open(&self) -> Result<()>;
    /// Stop using the storage (persists quota where tracked).
    async fn close(&self) -> Result<()>;
    /// Create directory `name` (and missing parents).
    async fn mkdir(&self, name: &str) -> Result<()>;
    /// Remove the empty directory `name`.
    async fn rmdir(&self, name: &str) -> Result<()>;
    /// Metadata of `name`; a missing name gives `exists: false`, not an error.
    async fn info(&self, name: &str) -> Result<ItemInfo>;
    /// Bytes of `name` from `offset` (negative: from the end) for `size` bytes (None: to the end).
    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes>;
    /// Like [`Backend::load`], for a door that sends the value on: a backend that can
    /// answer with an open file ([`value::Value::File`]) saves holding the whole value.
    async fn load_value(&self, name: &str, offset: i64, size: Option<u64>) -> Result<value::Value> {
        self.load(name, offset, size).await.map(value::Value::Bytes)
    }
    /// Store `value` as `name`, atomically: readers see the old or the new value.
    async fn store(&self, name: &str, value: Bytes) -> Result<()>;
    /// Delete `name`.
    async fn delete(&self, name: &str) -> Result<()>;

    /// Store a value that may still be arriving (a REST upload). Default: take it
    /// whole, then [`Backend::store`]. A backend that writes pieces as they come says
    /// so in [`Backend::streams_uploads`]; it must refuse (permissions, quota) before
    /// reading the first piece, and store nothing when the stream ends in an error.
    async fn store_body(&self, name: &str, body: body::Body) -> Result<()> {
        let value = body.collect().await?;
        self.store(name, value).await
    }

    /// Does [`Backend::store_body`] write values larger than [`body::STREAM_ABOVE`] as
    /// they arrive, without holding them in memory?
    fn streams_uploads(&self) -> bool {
        false
    }

    /// Can [`Backend::store_body`] refuse a value for reasons of the item or the store's
    /// state (permission letters that depend on whether it exists, a quota)? When not,
    /// the front end may read a small body before handing it over.
    fn admits_conditionally(&self) -> bool {
        false
    }
    /// Rename `current` to `new`, replacing `new`.
    async fn move_(&self, current: &str, new: &str) -> Result<()>;
    /// One directory level, sorted by name, without temp files or invalid names.
    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>>;

    /// Create all directories the nesting levels need in advance (worth it where mkdir
    /// on demand is expensive).
    fn precreate_dirs(&self) -> bool {
        false
    }

    /// Hex digest of the whole content of `name`. Default: load and hash.
    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        let data = self.load(name, 0, None).await?;
        Ok(algorithm.hex_digest(&data))
    }

    /// The bytes of all `sources`, concatenated in order. A short read is a ReadRangeError.
    async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        let total: u64 = sources.iter().map(|s| s.size).sum();
        let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0).min(1 << 30));
        for s in sources {
            if s.size == 0 {
                continue;
            }
            let chunk = self.load(&s.name, s.offset, Some(s.size)).await?;
            check_range(s, chunk.len())?;
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    /// Build a new item from byte ranges of existing items; returns its name.
    async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        let data = self.gather(sources).await?;
        let name = defrag_target_name(target, &data)?;
        self.store(&name, data).await?;
        Ok(name)
    }

    /// Quota limit and usage; [`Quota::OFF`] where not tracked.
    async fn quota(&self) -> Result<Quota> {
        Ok(Quota::OFF)
    }

    /// Wait until every write acknowledged before this call is on the primary (a
    /// write-behind layer's barrier, see `crate::flow::write_behind`). Default: every
    /// acknowledged write already is.
    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Counters of a layer for the store's stats (name, value), e.g. the write-behind
    /// spool's `write_behind_pending_items`. Default: none.
    fn gauges(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// The name a defrag result gets.
pub fn defrag_target_name(target: &DefragTarget, data: &[u8]) -> Result<String> {
    Ok(match target {
        DefragTarget::Name(n) => n.clone(),
        DefragTarget::Hashed { algorithm, namespace, levels } => {
            let digest = algorithm.hex_digest(data);
            let ns = namespace.trim_end_matches('/');
            let name = if ns.is_empty() { digest } else { format!("{ns}/{digest}") };
            nest(&name, *levels, None)?
        }
    })
}

/// The HTTP `Range` header asking for `size` bytes at `offset` (None: the whole value),
/// for backends that load over HTTP. A tail (negative offset) is asked for to its end;
/// [`cut_tail`] then applies the size. `size` must not be 0 (nothing to ask for).
pub fn http_range(offset: i64, size: Option<u64>) -> Option<String> {
    match (offset, size) {
        (0, None) => None,
        (o, None) if o > 0 => Some(format!("bytes={o}-")),
        (o, Some(s)) if o >= 0 => Some(format!("bytes={o}-{}", (o as u64).saturating_add(s.saturating_sub(1)))),
        (o, _) => Some(format!("bytes=-{}", o.unsigned_abs())),
    }
}

/// Apply the size of a tail load that [`http_range`] asked for to its end.
pub fn cut_tail(data: &mut Bytes, offset: i64, size: Option<u64>) {
    if let (true, Some(s)) = (offset < 0, size) {
        data.truncate(usize::try_from(s).unwrap_or(usize::MAX));
    }
}

/// A short read of a gather/defrag source is a ReadRangeError.
pub fn check_range(source: &Source, got: usize) -> Result<()> {
    if got as u64 != source.size {
        return Err(Error::new(
            ErrorKind::ReadRangeError,
            format!(
                "Read range error from {} (requested {} bytes at offset {}, got {got})",
                crate::names::quoted(&source.name),
                source.size,
                source.offset
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_ranges_never_overflow() {
        assert_eq!(http_range(0, None), None);
        assert_eq!(http_range(5, None).as_deref(), Some("bytes=5-"));
        assert_eq!(http_range(5, Some(3)).as_deref(), Some("bytes=5-7"));
        assert_eq!(http_range(-4, Some(2)).as_deref(), Some("bytes=-4"));
        assert_eq!(
            http_range(i64::MAX, Some(u64::MAX)).as_deref(),
            Some(format!("bytes={}-{}", i64::MAX, u64::MAX).as_str())
        );
        assert_eq!(http_range(i64::MIN, None).as_deref(), Some(format!("bytes=-{}", i64::MIN.unsigned_abs()).as_str()));
        let mut d = Bytes::from_static(b"abcd");
        cut_tail(&mut d, -4, Some(2));
        assert_eq!(d, "ab");
    }
}
