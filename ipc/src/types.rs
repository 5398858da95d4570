//! Plain data types of the store API that cross every wire: item metadata, quota,
//! byte-range sources for gather/defrag.

use serde::{Deserialize, Serialize};

/// Metadata of one item or directory.
///
/// `atime`/`mtime` are UNIX timestamps in seconds, 0 when the backend does not know them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemInfo {
    /// Leaf name (no namespace, no nesting directories) as in Python borgstore.
    pub name: String,
    /// False for a name that is not stored; the other fields are then zero.
    pub exists: bool,
    /// Length in bytes (for a directory, whatever the backend reports, often 0).
    pub size: u64,
    /// True for a directory (a namespace or nesting level), false for an item.
    pub directory: bool,
    /// Last access, UNIX seconds; 0 when unknown.
    pub atime: f64,
    /// Last modification, UNIX seconds; 0 when unknown.
    pub mtime: f64,
}

impl ItemInfo {
    /// The answer for a name that does not exist.
    pub fn missing(name: impl Into<String>) -> Self {
        ItemInfo { name: name.into(), exists: false, size: 0, directory: false, atime: 0.0, mtime: 0.0 }
    }
}

/// Quota limit and usage in bytes; `-1` when not set / not tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Most bytes the store may hold; `-1` when there is no quota.
    pub limit: i64,
    /// Bytes counted against the limit now; `-1` when not tracked.
    pub usage: i64,
}

impl Quota {
    /// No quota set and no usage tracked (both `-1`).
    pub const OFF: Quota = Quota { limit: -1, usage: -1 };
}

/// One byte range of an item, for gather and defrag: `offset` may be negative (counted
/// from the end of the item); `size` is the exact number of bytes wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Item name: at the store API without the namespace (no `/`, the namespace is given
    /// separately); at a backend, the nested name.
    pub name: String,
    /// Start in bytes; negative counts back from the end of the item.
    pub offset: i64,
    /// Bytes wanted; fewer available is a [`ReadRangeError`](crate::error::ErrorKind::ReadRangeError).
    pub size: u64,
}

impl Source {
    /// The range of `size` bytes of `name` starting at `offset`.
    pub fn new(name: impl Into<String>, offset: i64, size: u64) -> Self {
        Source { name: name.into(), offset, size }
    }
}

/// One statistics value: counters are integers, times/throughputs floats, flags bools.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum StatValue {
    /// A counter: calls, bytes, hits.
    Int(i64),
    /// A time in seconds or a throughput.
    Float(f64),
    /// A flag, such as `cache_disabled`.
    Bool(bool),
}

impl StatValue {
    /// The value as a float (bools as 0/1), for ratios and display.
    pub fn as_f64(self) -> f64 {
        match self {
            StatValue::Int(i) => i as f64,
            StatValue::Float(f) => f,
            StatValue::Bool(b) => b as u8 as f64,
        }
    }
}

/// Store statistics keyed by the Python borgstore names (`load_calls`, `load_time`, ...).
pub type Stats = std::collections::BTreeMap<String, StatValue>;
