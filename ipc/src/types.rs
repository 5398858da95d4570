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
    pub exists: bool,
    pub size: u64,
    pub directory: bool,
    pub atime: f64,
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
    pub limit: i64,
    pub usage: i64,
}

impl Quota {
    pub const OFF: Quota = Quota { limit: -1, usage: -1 };
}

/// One byte range of an item, for gather and defrag: `offset` may be negative (counted
/// from the end of the item); `size` is the exact number of bytes wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    pub offset: i64,
    pub size: u64,
}

impl Source {
    pub fn new(name: impl Into<String>, offset: i64, size: u64) -> Self {
        Source { name: name.into(), offset, size }
    }
}

/// One statistics value: counters are integers, times/throughputs floats, flags bools.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum StatValue {
    Int(i64),
    Float(f64),
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
