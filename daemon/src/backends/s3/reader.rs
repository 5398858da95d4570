//! Reads: `HeadObject` (`info`, and whether an item exists), `GetObject` of a whole object
//! or a byte range (`load`), and streamed hashing (`hash`), where the object is hashed as
//! it arrives and never held in memory.
//!
//! Kept together because they share [`S3Core::fetch`]: the SDK retries a request that
//! fails, but a body that breaks off after the answer started is fetched again here,
//! under the common policy of `backends::retry`.

use super::core::{leaf, mtime, to_u64, S3Core};
use crate::backends::retry::{Failure, Retry};
use crate::hashing::HashAlgorithm;
use crate::names::shown;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStreamError;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Result};
use bytes::Bytes;

/// With a negative offset and a size, fetch the whole tail when it is at most this many
/// bytes longer than wanted (saves a HEAD), as Python does.
const TAIL_SLACK: u64 = 1024;

/// The part of a whole object `data` that `load(offset, size)` wants.
fn local_range(data: Bytes, offset: i64, size: Option<u64>) -> Bytes {
    let len = data.len() as u64;
    let start = if offset >= 0 { (offset as u64).min(len) } else { len.saturating_sub(offset.unsigned_abs()) };
    let want = size.unwrap_or(u64::MAX).min(len - start);
    data.slice(start as usize..(start + want) as usize)
}

impl S3Core {
    /// HEAD of `name`'s object; `None` when there is none.
    pub async fn head(&self, op: &str, name: &str) -> Result<Option<HeadObjectOutput>> {
        let res = self
            .client()
            .await?
            .head_object()
            .bucket(self.bucket())
            .key(self.key(name))
            .customize()
            .config_override(self.budget(0))
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(out)),
            Err(e) if super::core::status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(op, name, e)),
        }
    }

    /// Metadata of `name`: its object, else a directory when any key lies below it.
    pub async fn info(&self, name: &str) -> Result<ItemInfo> {
        if !name.is_empty() {
            if let Some(head) = self.head("info", name).await? {
                return Ok(ItemInfo {
                    name: leaf(name).to_string(),
                    exists: true,
                    size: to_u64(head.content_length()),
                    directory: false,
                    atime: 0.0,
                    mtime: mtime(head.last_modified()),
                });
            }
        }
        if self.first_keys("info", name, &self.dir_prefix(name), 1).await?.is_empty() {
            Ok(ItemInfo::missing(leaf(name)))
        } else {
            Ok(ItemInfo { directory: true, exists: true, ..ItemInfo::missing(leaf(name)) })
        }
    }

    /// Bytes of `name` from `offset` (negative: from the end) for `size` bytes.
    pub async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        let tail = offset.unsigned_abs();
        let (range, expected, keep) = match (offset, size) {
            (_, Some(0)) => {
                // Nothing to read (an empty Range is invalid), but a missing item is still an error.
                return match self.head("load", name).await? {
                    Some(_) => Ok(Bytes::new()),
                    None => Err(Error::not_found(name)),
                };
            }
            (0, None) => (None, 0, None),
            (o, None) if o > 0 => (Some(format!("bytes={o}-")), 0, None),
            (_, None) => (Some(format!("bytes=-{tail}")), tail, None),
            (o, Some(s)) if o >= 0 => {
                let last = (o as u64).saturating_add(s - 1);
                (Some(format!("bytes={o}-{last}")), s, None)
            }
            (_, Some(s)) if tail.saturating_sub(s) <= TAIL_SLACK => (Some(format!("bytes=-{tail}")), tail, Some(s)),
            (_, Some(s)) => {
                let Some(head) = self.head("load", name).await? else {
                    return Err(Error::not_found(name));
                };
                let total = to_u64(head.content_length());
                let start = total.saturating_sub(tail);
                let want = s.min(total - start);
                if want == 0 {
                    return Ok(Bytes::new());
                }
                (Some(format!("bytes={start}-{}", start + want - 1)), want, None)
            }
        };
        let asked = range.is_some();
        let (ranged, sink) = self.fetch("load", name, range, expected, Want::Bytes).await?;
        let data = sink.into_bytes();
        if asked && !ranged {
            // The server ignored the Range header and sent the whole object.
            return Ok(local_range(data, offset, size));
        }
        Ok(match keep {
            Some(s) if (data.len() as u64) > s => data.slice(..s as usize),
            _ => data,
        })
    }

    /// Hex digest of the whole object of `name`, hashed as it arrives.
    pub async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        match self.fetch("hash", name, None, 0, Want::Hash(algorithm)).await?.1 {
            Sink::Hash(hasher) => Ok(hasher.finalize_hex()),
            Sink::Chunks(_) => Err(Error::backend("S3 hash: internal error")),
        }
    }

    /// GET `name` (or the byte range `range` of it) into a new sink of kind `want`, which
    /// it returns. The SDK retries a request that fails; a body that breaks off after the
    /// answer started is fetched again here, up to `max_attempts` times with the SDK's
    /// backoff (without jitter). Also returns whether the server honoured the range (sent
    /// a `Content-Range`) rather than the whole object; a range starting at or after the
    /// end leaves the sink empty.
    async fn fetch(
        &self,
        op: &str,
        name: &str,
        range: Option<String>,
        expected: u64,
        want: Want,
    ) -> Result<(bool, Sink)> {
        let o = &self.options;
        let attempts = o.max_attempts.max(1);
        let policy = Retry::Doubling { first: o.initial_backoff, max: o.max_backoff, retries: attempts - 1 };
        let what = format!("S3 {op} {}", shown(name));
        let range = range.as_deref();
        match policy.run(&what, |_| self.fetch_once(op, name, range, expected, want.sink())).await {
            Ok(fetched) => Ok(fetched),
            Err(Failure { error, retriable: true }) => {
                Err(Error::new(error.kind, format!("{} (after {attempts} attempts)", error.message)))
            }
            Err(failure) => Err(failure.error),
        }
    }

    /// One attempt of [`S3Core::fetch`]: a failed request is final (the SDK retried it), a
    /// body that breaks off or takes too long is worth another attempt.
    async fn fetch_once(
        &self,
        op: &str,
        name: &str,
        range: Option<&str>,
        expected: u64,
        mut sink: Sink,
    ) -> Result<(bool, Sink), Failure> {
        let res = self
            .client()
            .await
            .map_err(Failure::fatal)?
            .get_object()
            .bucket(self.bucket())
            .key(self.key(name))
            .set_range(range.map(str::to_owned))
            .customize()
            .config_override(self.budget(expected))
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) if super::core::status(&e) == Some(416) => return Ok((true, sink)),
            Err(e) => return Err(Failure::fatal(self.error(op, name, e))),
        };
        let ranged = out.content_range().is_some();
        let len = to_u64(out.content_length());
        let budget = self.options.attempt_timeout(len);
        let mut body = out.body;
        let read = async {
            while let Some(chunk) = body.try_next().await? {
                sink.push(chunk);
            }
            Ok::<(), ByteStreamError>(())
        };
        let failure = match tokio::time::timeout(budget, read).await {
            Ok(Ok(())) => return Ok((ranged, sink)),
            Ok(Err(e)) => format!("reading the object failed: {}", super::core::chain(&e)),
            Err(_) => format!("reading {len} bytes took longer than {budget:?}"),
        };
        Err(Failure::transient(Error::new(ErrorKind::ConnectionLost, format!("S3 {op} {}: {failure}", shown(name)))))
    }
}

/// What [`S3Core::fetch`] makes of a body: its bytes, or its digest.
#[derive(Debug, Clone, Copy)]
enum Want {
    Bytes,
    Hash(HashAlgorithm),
}

impl Want {
    /// An empty sink (each attempt starts over).
    fn sink(self) -> Sink {
        match self {
            Want::Bytes => Sink::Chunks(Vec::new()),
            Want::Hash(algorithm) => Sink::Hash(algorithm.hasher()),
        }
    }
}

/// Where [`S3Core::fetch`] puts a body.
enum Sink {
    Chunks(Vec<Bytes>),
    Hash(crate::hashing::Hasher),
}

impl Sink {
    fn push(&mut self, chunk: Bytes) {
        match self {
            Sink::Chunks(chunks) => chunks.push(chunk),
            Sink::Hash(hasher) => hasher.update(&chunk),
        }
    }

    /// All chunks as one buffer (no copy for a single chunk).
    fn into_bytes(self) -> Bytes {
        match self {
            Sink::Chunks(mut chunks) if chunks.len() == 1 => chunks.pop().unwrap_or_default(),
            Sink::Chunks(chunks) => {
                let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
                for c in &chunks {
                    out.extend_from_slice(c);
                }
                Bytes::from(out)
            }
            Sink::Hash(..) => Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ranges_like_posixfs() {
        let d = Bytes::from_static(b"0123456789");
        let cases: [(i64, Option<u64>, &[u8]); 9] = [
            (0, None, b"0123456789"),
            (0, Some(3), b"012"),
            (4, Some(2), b"45"),
            (8, Some(10), b"89"),
            (10, None, b""),
            (99, Some(1), b""),
            (-3, None, b"789"),
            (-4, Some(2), b"67"),
            (i64::MIN, Some(u64::MAX), b"0123456789"),
        ];
        for (offset, size, want) in cases {
            assert_eq!(&local_range(d.clone(), offset, size)[..], want, "{offset} {size:?}");
        }
    }
}
