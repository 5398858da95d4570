//! Operation statistics with the key names of Python borgstore.
//!
//! Counters are kept as integers (times in nanoseconds) and converted to the Python
//! shape on output: `<op>_calls`, `<op>_time` (s), `<op>_volume` (bytes),
//! `<op>_throughput` (bytes/s), `backend_<op>_calls/_volume`, `cache_*`.

use borgstore_ipc::{StatValue, Stats};
use std::collections::BTreeMap;
use std::time::Duration;

/// Operations that always appear with `_calls` and `_time`.
const OPS: [&str; 8] = ["info", "load", "store", "delete", "move", "list", "gather", "hash"];
/// Operations that also report `_volume` and `_throughput`.
const VOLUME_OPS: [&str; 3] = ["load", "store", "gather"];
/// Counters that always appear, even when zero.
const ALWAYS: [&str; 17] = [
    "backend_load_calls",
    "backend_gather_calls",
    "backend_store_calls",
    "backend_delete_calls",
    "backend_load_volume",
    "backend_gather_volume",
    "backend_store_volume",
    "cache_hits",
    "cache_misses",
    "cache_errors",
    "cache_load_calls",
    "cache_store_calls",
    "cache_delete_calls",
    "cache_load_volume",
    "cache_store_volume",
    "coalesced_load_calls",
    "coalesced_info_calls",
];

/// The counters of one store, shared by the engine and the layers below it
/// ([`crate::flow`]).
pub type SharedStats = std::sync::Arc<std::sync::Mutex<StatsCounters>>;

/// Lock shared counters (a panic while they were held leaves them usable).
pub fn lock(stats: &SharedStats) -> std::sync::MutexGuard<'_, StatsCounters> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

/// Raw counters of one store.
#[derive(Debug, Default, Clone)]
pub struct StatsCounters {
    counters: BTreeMap<String, u64>,
}

impl StatsCounters {
    /// Add `amount` to counter `key`, saturating (a new key starts at 0).
    pub fn add(&mut self, key: &str, amount: u64) {
        match self.counters.get_mut(key) {
            Some(v) => *v = v.saturating_add(amount),
            None => {
                self.counters.insert(key.to_string(), amount);
            }
        }
    }

    /// The raw value of counter `key` (times in nanoseconds); 0 when never counted.
    pub fn get(&self, key: &str) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    /// Count one finished API call of `op` that took `elapsed`.
    pub fn call(&mut self, op: &str, elapsed: Duration) {
        self.add(&format!("{op}_calls"), 1);
        self.add(&format!("{op}_time"), elapsed.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// The Python-shaped statistics.
    pub fn snapshot(&self, cache_disabled: bool) -> Stats {
        let mut st = Stats::new();
        for (k, v) in &self.counters {
            if !k.ends_with("_time") {
                st.insert(k.clone(), StatValue::Int(*v as i64));
            }
        }
        let secs = |op: &str| self.get(&format!("{op}_time")) as f64 / 1e9;
        let mut ops: Vec<String> = OPS.iter().map(|s| s.to_string()).collect();
        ops.extend(self.counters.keys().filter_map(|k| k.strip_suffix("_time").map(str::to_string)));
        for op in ops {
            st.insert(format!("{op}_calls"), StatValue::Int(self.get(&format!("{op}_calls")) as i64));
            st.insert(format!("{op}_time"), StatValue::Float(secs(&op)));
        }
        for op in VOLUME_OPS {
            let volume = self.get(&format!("{op}_volume"));
            let t = secs(op);
            st.insert(format!("{op}_volume"), StatValue::Int(volume as i64));
            st.insert(format!("{op}_throughput"), StatValue::Float(if t > 0.0 { volume as f64 / t } else { 0.0 }));
        }
        for k in ALWAYS {
            st.insert(k.to_string(), StatValue::Int(self.get(k) as i64));
        }
        let (hits, misses) = (self.get("cache_hits"), self.get("cache_misses"));
        let ratio = if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 };
        st.insert("cache_hit_ratio".into(), StatValue::Float(ratio));
        st.insert("cache_disabled".into(), StatValue::Bool(cache_disabled));
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_keys() {
        let mut c = StatsCounters::default();
        c.call("load", Duration::from_secs(2));
        c.add("load_volume", 100);
        let st = c.snapshot(false);
        assert_eq!(st["load_calls"], StatValue::Int(1));
        assert_eq!(st["load_time"], StatValue::Float(2.0));
        assert_eq!(st["load_throughput"], StatValue::Float(50.0));
        assert_eq!(st["store_calls"], StatValue::Int(0));
        assert_eq!(st["cache_hit_ratio"], StatValue::Float(0.0));
        assert!(st.contains_key("backend_store_volume"));
    }
}
