//! How large values travel in parts: the per-store settings `part_size`,
//! `part_concurrency` and `abandoned_upload_age`, their defaults and limits, and the
//! arithmetic of cutting a value into parts.
//!
//! Only the S3 backends (`s3:`, `b2:`) use them: a value larger than `part_size` is
//! uploaded as a multipart upload and a large load is fetched as byte ranges, up to
//! `part_concurrency` of them at a time. The other backends ignore them. The settings live
//! here, outside the `s3` feature, so a config that names them parses in every build.

use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// Default part size: 8 MiB.
pub const DEFAULT_PART_SIZE: u64 = 8 * MIB;
/// Smallest part size a store may set: S3 refuses smaller parts (but the last).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest part size a store may set: S3's limit for one part (and for one PutObject).
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// Default parts in flight per value.
pub const DEFAULT_PART_CONCURRENCY: usize = 4;
/// Most parts in flight per value a store may set.
pub const MAX_PART_CONCURRENCY: usize = 64;
/// Most parts of one multipart upload (S3's limit); larger values get larger parts.
pub const MAX_PARTS: u64 = 10_000;
/// Default age after which an upload under the store's prefix counts as abandoned: a day.
pub const DEFAULT_ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(86_400);
/// The youngest `abandoned_upload_age` a store may set (a live upload of a large value
/// on a slow link may well take many minutes): an hour.
pub const MIN_ABANDONED_UPLOAD_AGE: Duration = Duration::from_secs(3_600);

/// The part settings of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartOptions {
    /// Values larger than this are uploaded in parts of this size; loads larger than this
    /// are fetched as ranges of this size ([`MIN_PART_SIZE`] to [`MAX_PART_SIZE`]).
    pub part_size: u64,
    /// Parts (or ranges) of one value in flight at once (1 to [`MAX_PART_CONCURRENCY`]).
    pub part_concurrency: usize,
    /// When the store is opened, multipart uploads under its prefix that were started
    /// longer ago than this are aborted (left behind by a host that died for good).
    /// None: never (only the uploads this daemon's own journal lists are aborted).
    pub abandoned_upload_age: Option<Duration>,
}

impl Default for PartOptions {
    fn default() -> Self {
        PartOptions {
            part_size: DEFAULT_PART_SIZE,
            part_concurrency: DEFAULT_PART_CONCURRENCY,
            abandoned_upload_age: Some(DEFAULT_ABANDONED_UPLOAD_AGE),
        }
    }
}

impl PartOptions {
    /// Check the settings. The error is the first wrong one: its key, and what it must be.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.part_size) {
            return Err(("part_size", format!("between {MIN_PART_SIZE} (5 MiB) and {MAX_PART_SIZE} (5 GiB) bytes")));
        }
        if !(1..=MAX_PART_CONCURRENCY).contains(&self.part_concurrency) {
            return Err(("part_concurrency", format!("between 1 and {MAX_PART_CONCURRENCY}")));
        }
        if self.abandoned_upload_age.is_some_and(|a| a < MIN_ABANDONED_UPLOAD_AGE) {
            let min = MIN_ABANDONED_UPLOAD_AGE.as_secs();
            return Err(("abandoned_upload_age", format!("0 (never) or at least {min} seconds")));
        }
        Ok(())
    }

    /// Whether a value of `len` bytes is uploaded in parts (else in one request).
    pub fn in_parts(&self, len: u64) -> bool {
        len > self.part_size
    }

    /// The size of the parts of a value of `len` bytes: `part_size`, or more when that
    /// would make more than [`MAX_PARTS`] parts.
    pub fn part_size_for(&self, len: u64) -> u64 {
        self.part_size.max(1).max(len.div_ceil(MAX_PARTS))
    }
}

/// The byte ranges `[start, end)` that cut `start..end` into pieces of `part` bytes (the
/// last one shorter), in order.
pub fn pieces(start: u64, end: u64, part: u64) -> impl Iterator<Item = (u64, u64)> {
    let part = part.max(1);
    (0..end.saturating_sub(start).div_ceil(part)).map(move |i| {
        let a = start + i * part;
        (a, (a + part).min(end))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let d = PartOptions::default();
        assert_eq!(d.check(), Ok(()));
        assert_eq!((d.part_size, d.part_concurrency), (8 << 20, 4));
        assert_eq!(d.abandoned_upload_age, Some(Duration::from_secs(86_400)));
        for bad in [0, MIN_PART_SIZE - 1, MAX_PART_SIZE + 1] {
            assert_eq!(PartOptions { part_size: bad, ..d }.check().unwrap_err().0, "part_size");
        }
        assert_eq!(PartOptions { part_size: MIN_PART_SIZE, ..d }.check(), Ok(()));
        assert_eq!(PartOptions { part_size: MAX_PART_SIZE, ..d }.check(), Ok(()));
        for bad in [0, 65] {
            assert_eq!(PartOptions { part_concurrency: bad, ..d }.check().unwrap_err().0, "part_concurrency");
        }
        let young = PartOptions { abandoned_upload_age: Some(Duration::from_secs(60)), ..d };
        assert_eq!(young.check().unwrap_err().0, "abandoned_upload_age");
        assert_eq!(PartOptions { abandoned_upload_age: None, ..d }.check(), Ok(()));
    }

    #[test]
    fn parts_grow_to_stay_within_ten_thousand() {
        let o = PartOptions { part_size: MIN_PART_SIZE, ..Default::default() };
        assert!(!o.in_parts(MIN_PART_SIZE));
        assert!(o.in_parts(MIN_PART_SIZE + 1));
        assert_eq!(o.part_size_for(MIN_PART_SIZE * 3), MIN_PART_SIZE);
        assert_eq!(o.part_size_for(MIN_PART_SIZE * MAX_PARTS), MIN_PART_SIZE);
        let big = MIN_PART_SIZE * MAX_PARTS + 1;
        let part = o.part_size_for(big);
        assert!(part > MIN_PART_SIZE && big.div_ceil(part) <= MAX_PARTS, "{part}");
        let huge = 5 * 1024 * 1024 * MIB; // 5 TiB, S3's largest object
        assert!(huge.div_ceil(o.part_size_for(huge)) <= MAX_PARTS);
    }

    #[test]
    fn pieces_cover_the_range_in_order() {
        assert_eq!(pieces(0, 10, 4).collect::<Vec<_>>(), [(0, 4), (4, 8), (8, 10)]);
        assert_eq!(pieces(3, 11, 4).collect::<Vec<_>>(), [(3, 7), (7, 11)]);
        assert_eq!(pieces(5, 5, 4).count(), 0);
        assert_eq!(pieces(6, 5, 4).count(), 0);
        assert_eq!(pieces(0, 3, 0).count(), 3);
    }
}
