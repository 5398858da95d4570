//! Reads: `HeadObject` (`info`, and whether an item exists), `GetObject` of byte ranges
//! (`load`), and streamed hashing (`hash`), where the object is hashed as it arrives and
//! never held in memory.
//!
//! A load asks for at most `part_size` bytes first: for a small object (or a short range)
//! that one answer is all, as with a plain GET. Its `Content-Range` tells the object's
//! size; what is left of a larger load is fetched as ranges of `part_size`, up to
//! `part_concurrency` at a time, each with `If-Match` on the ETag of the first answer, so a
//! value is never stitched together from two versions: when the object was replaced
//! meanwhile (412), the load starts over, a few times, then fails as ConnectionLost. A tail
//! (negative offset) starts with its last range instead. A server that ignores `Range`
//! sends the whole object in the first answer, and the load cuts out what was asked.
//!
//! Kept together because they share [`S3Core::fetch`]: the SDK retries a request that
//! fails, but a body that breaks off after the answer started is fetched again here (each
//! range on its own), under the common policy of `backends::retry`.

use super::core::{leaf, mtime, to_u64, S3Core};
use crate::backends::parts::pieces;
use crate::backends::retry::{Failure, Retry};
use crate::hashing::HashAlgorithm;
use crate::names::shown;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStreamError;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Result};
use bytes::Bytes;
use futures::StreamExt;

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
        let (span, keep) = match (offset, size) {
            (_, Some(0)) => {
                // Nothing to read (an empty Range is invalid), but a missing item is still an error.
                return match self.head("load", name).await? {
                    Some(_) => Ok(Bytes::new()),
                    None => Err(Error::not_found(name)),
                };
            }
            (o, None) if o >= 0 => (Span::From { start: o as u64, end: None }, None),
            (_, None) => (Span::Tail(tail), None),
            (o, Some(s)) if o >= 0 => (Span::From { start: o as u64, end: Some((o as u64).saturating_add(s)) }, None),
            (_, Some(s)) if tail.saturating_sub(s) <= TAIL_SLACK => (Span::Tail(tail), Some(s)),
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
                (Span::From { start, end: Some(start + want) }, None)
            }
        };
        let data = match self.load_span(name, span).await? {
            // The server ignored the Range header and sent the whole object.
            Loaded::Whole(data) => return Ok(local_range(data, offset, size)),
            Loaded::Span(data) => data,
        };
        Ok(match keep {
            Some(s) if (data.len() as u64) > s => data.slice(..s as usize),
            _ => data,
        })
    }

    /// The bytes of `span` of `name`'s object, as ranges of `part_size` (see the module
    /// docs): the first range alone, then the rest up to `part_concurrency` at a time, each
    /// only if the object still has the first answer's ETag. An object replaced meanwhile
    /// is read again from the start, a few times.
    async fn load_span(&self, name: &str, span: Span) -> Result<Loaded> {
        let part = self.parts.part_size.max(1);
        for _ in 0..REREADS {
            let (sink, content_range, etag) =
                match self.fetch("load", name, Some(span.first(part)), part, Want::Bytes, None).await? {
                    Fetched::Unsatisfiable => return Ok(Loaded::Span(Bytes::new())),
                    // Only a conditional request can be told the object changed.
                    Fetched::Changed => continue,
                    Fetched::Body { sink, content_range: None, .. } => return Ok(Loaded::Whole(sink.into_bytes())),
                    Fetched::Body { sink, content_range: Some(cr), etag } => (sink, cr, etag),
                };
            let Some((a, b, total)) = parse_content_range(&content_range) else {
                return Err(Error::backend(format!(
                    "S3 load {}: the server answered a range with Content-Range {content_range:?}",
                    shown(name)
                )));
            };
            let (from, to) = span.resolve(total);
            let where_asked = match span {
                Span::From { .. } => a == from,
                Span::Tail(_) => b == total,
            };
            if !where_asked {
                return Err(Error::backend(format!(
                    "S3 load {}: the server answered another range than asked ({content_range})",
                    shown(name)
                )));
            }
            // What is left of the span besides the first range: after it, or (a tail) before it.
            let (rest, first_is_last) = match span {
                Span::From { .. } => ((b, to), false),
                Span::Tail(_) => ((from, a), true),
            };
            if rest.0 >= rest.1 {
                return Ok(Loaded::Span(sink.into_bytes()));
            }
            let Some(etag) = etag else {
                // Without an ETag we could not tell two versions apart: the span in one answer.
                let whole = format!("bytes={from}-{}", to - 1);
                return match self.fetch("load", name, Some(whole), to - from, Want::Bytes, None).await? {
                    Fetched::Body { sink, content_range: Some(_), .. } => Ok(Loaded::Span(sink.into_bytes())),
                    Fetched::Body { sink, content_range: None, .. } => Ok(Loaded::Whole(sink.into_bytes())),
                    Fetched::Unsatisfiable | Fetched::Changed => Ok(Loaded::Span(Bytes::new())),
                };
            };
            let Some(mut chunks) = self.fetch_ranges(name, rest, part, &etag).await? else {
                tracing::debug!("S3 load {}: the object was replaced while it was read, reading again", shown(name));
                continue;
            };
            if first_is_last {
                chunks.extend(sink.into_chunks());
            } else {
                let mut first = sink.into_chunks();
                first.append(&mut chunks);
                chunks = first;
            }
            let got: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            if got != to - from {
                return Err(Error::new(
                    ErrorKind::ConnectionLost,
                    format!("S3 load {}: got {got} bytes of {}", shown(name), to - from),
                ));
            }
            return Ok(Loaded::Span(concat(chunks)));
        }
        Err(Error::new(
            ErrorKind::ConnectionLost,
            format!("S3 load {}: the object was replaced while it was read, {REREADS} times in a row", shown(name)),
        ))
    }

    /// The byte range `start..end` of `name`'s object as long as its ETag is `etag`, in
    /// ranges of `part` bytes, `part_concurrency` at a time; None when it changed.
    async fn fetch_ranges(
        &self,
        name: &str,
        (start, end): (u64, u64),
        part: u64,
        etag: &str,
    ) -> Result<Option<Vec<Bytes>>> {
        let mut ranges = futures::stream::iter(pieces(start, end, part))
            .map(|(a, b)| async move {
                let range = format!("bytes={a}-{}", b - 1);
                match self.fetch("load", name, Some(range), b - a, Want::Bytes, Some(etag)).await? {
                    Fetched::Changed => Ok(None),
                    Fetched::Body { sink, content_range: Some(_), .. } => {
                        let chunks = sink.into_chunks();
                        let got: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                        if got != b - a {
                            return Err(Error::new(
                                ErrorKind::ConnectionLost,
                                format!("S3 load {}: got {got} bytes of the range {a}-{}", shown(name), b - 1),
                            ));
                        }
                        Ok(Some(chunks))
                    }
                    Fetched::Body { content_range: None, .. } | Fetched::Unsatisfiable => Err(Error::backend(format!(
                        "S3 load {}: the server did not answer the range {a}-{} it answered before",
                        shown(name),
                        b - 1
                    ))),
                }
            })
            .buffered(self.parts.part_concurrency.max(1));
        let mut out = Vec::new();
        while let Some(range) = ranges.next().await {
            match range? {
                Some(chunks) => out.extend(chunks),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Hex digest of the whole object of `name`, hashed as it arrives.
    pub async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        match self.fetch("hash", name, None, 0, Want::Hash(algorithm), None).await? {
            Fetched::Body { sink: Sink::Hash(hasher), .. } => Ok(hasher.finalize_hex()),
            Fetched::Unsatisfiable => Ok(algorithm.hasher().finalize_hex()),
            _ => Err(Error::backend("S3 hash: internal error")),
        }
    }

    /// GET `name` (or the byte range `range` of it, if its ETag is `if_match`) into a new
    /// sink of kind `want`. The SDK retries a request that fails; a body that breaks off
    /// after the answer started is fetched again here, up to `max_attempts` times with the
    /// SDK's backoff (without jitter).
    async fn fetch(
        &self,
        op: &str,
        name: &str,
        range: Option<String>,
        expected: u64,
        want: Want,
        if_match: Option<&str>,
    ) -> Result<Fetched> {
        let o = &self.options;
        let attempts = o.max_attempts.max(1);
        let policy = Retry::Doubling { first: o.initial_backoff, max: o.max_backoff, retries: attempts - 1 };
        let what = format!("S3 {op} {}", shown(name));
        let range = range.as_deref();
        match policy.run(&what, |_| self.fetch_once(op, name, range, expected, want.sink(), if_match)).await {
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
        if_match: Option<&str>,
    ) -> Result<Fetched, Failure> {
        let res = self
            .client()
            .await
            .map_err(Failure::fatal)?
            .get_object()
            .bucket(self.bucket())
            .key(self.key(name))
            .set_range(range.map(str::to_owned))
            .set_if_match(if_match.map(str::to_owned))
            .customize()
            .config_override(self.budget(expected))
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) if super::core::status(&e) == Some(416) => return Ok(Fetched::Unsatisfiable),
            Err(e) if super::core::status(&e) == Some(412) && if_match.is_some() => return Ok(Fetched::Changed),
            Err(e) => return Err(Failure::fatal(self.error(op, name, e))),
        };
        let content_range = out.content_range().map(str::to_owned);
        let etag = out.e_tag().map(str::to_owned);
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
            Ok(Ok(())) => return Ok(Fetched::Body { sink, content_range, etag }),
            Ok(Err(e)) => format!("reading the object failed: {}", super::core::chain(&e)),
            Err(_) => format!("reading {len} bytes took longer than {budget:?}"),
        };
        Err(Failure::transient(Error::new(ErrorKind::ConnectionLost, format!("S3 {op} {}: {failure}", shown(name)))))
    }
}

/// Reads of an object that was replaced while it was read in ranges, before giving up.
const REREADS: usize = 3;

/// Which bytes a load wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// From `start` to `end` (None: to the end of the object), end clamped to it.
    From { start: u64, end: Option<u64> },
    /// The last so many bytes (all of a shorter object).
    Tail(u64),
}

impl Span {
    /// The Range header of the first request, of at most `part` bytes: the span's first
    /// range, or for a tail its last (which also tells where the object ends).
    fn first(self, part: u64) -> String {
        match self {
            Span::From { start, end } => {
                let last = start.saturating_add(part.max(1)) - 1;
                format!("bytes={start}-{}", end.map_or(last, |e| last.min(e.saturating_sub(1))))
            }
            Span::Tail(len) => format!("bytes=-{}", len.min(part).max(1)),
        }
    }

    /// The span in an object of `total` bytes: `(from, to)`, `from <= to <= total`.
    fn resolve(self, total: u64) -> (u64, u64) {
        match self {
            Span::From { start, end } => {
                let to = end.unwrap_or(total).min(total);
                (start.min(to), to)
            }
            Span::Tail(len) => (total.saturating_sub(len), total),
        }
    }
}

/// `bytes A-B/TOTAL` as `(A, B + 1, TOTAL)`; None for anything else (an unknown total).
fn parse_content_range(header: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = header.trim().strip_prefix("bytes")?.trim_start().split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total): (u64, u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?, total.trim().parse().ok()?);
    (a <= b && b < total).then_some((a, b + 1, total))
}

/// What [`S3Core::load_span`] got.
enum Loaded {
    /// The bytes asked for.
    Span(Bytes),
    /// The whole object, from a server that ignores Range.
    Whole(Bytes),
}

/// What one GET of [`S3Core::fetch`] brought.
enum Fetched {
    /// An answer: its body in the sink; `Content-Range` when the server answered a range
    /// (not the whole object), and the object's ETag.
    Body { sink: Sink, content_range: Option<String>, etag: Option<String> },
    /// The range starts at or after the end (416; also an empty object).
    Unsatisfiable,
    /// The object no longer has the ETag asked for (412).
    Changed,
}

/// All chunks as one buffer (no copy for a single chunk).
fn concat(mut chunks: Vec<Bytes>) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in &chunks {
        out.extend_from_slice(c);
    }
    Bytes::from(out)
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
        concat(self.into_chunks())
    }

    /// The chunks as they came (none for a hash).
    fn into_chunks(self) -> Vec<Bytes> {
        match self {
            Sink::Chunks(chunks) => chunks,
            Sink::Hash(..) => Vec::new(),
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

    #[test]
    fn content_ranges_parse_or_are_refused() {
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 10, 10)));
        assert_eq!(parse_content_range(" bytes 5-5/6 "), Some((5, 6, 6)));
        for bad in ["bytes */10", "bytes 0-9/*", "bytes 5-4/10", "bytes 0-10/10", "items 0-1/2", "", "bytes 0-/5"] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn spans_start_with_at_most_one_part() {
        let from = |start, end| Span::From { start, end };
        assert_eq!(from(0, None).first(8), "bytes=0-7");
        assert_eq!(from(5, Some(7)).first(8), "bytes=5-6", "a short span asks for itself");
        assert_eq!(from(5, Some(100)).first(8), "bytes=5-12");
        assert_eq!(from(u64::MAX - 1, None).first(8), format!("bytes={}-{}", u64::MAX - 1, u64::MAX - 1));
        assert_eq!(Span::Tail(3).first(8), "bytes=-3");
        assert_eq!(Span::Tail(30).first(8), "bytes=-8", "a long tail asks for its last part first");
        assert_eq!(from(5, None).resolve(100), (5, 100));
        assert_eq!(from(5, Some(50)).resolve(20), (5, 20));
        assert_eq!(from(50, None).resolve(20), (20, 20));
        assert_eq!(Span::Tail(30).resolve(100), (70, 100));
        assert_eq!(Span::Tail(300).resolve(100), (0, 100));
    }
}
