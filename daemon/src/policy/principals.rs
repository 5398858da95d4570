//! Counters per principal, next to the per-store ones: calls, bytes in and out, and
//! refusals, keyed by the profile's name. Profiles come from the configuration, so the
//! number of keys (and of metric labels) is bounded by it, whatever clients do.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The counters of one principal.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PrincipalStats {
    /// Commands run (refused ones included).
    pub calls: u64,
    /// Value bytes received (stores).
    pub bytes_in: u64,
    /// Value bytes sent (loads, gathers).
    pub bytes_out: u64,
    /// Commands refused by the profile (permission letters, quota share).
    pub refusals: u64,
}

/// Per-principal counters of one store.
#[derive(Debug, Default)]
pub struct Principals {
    map: Mutex<BTreeMap<String, PrincipalStats>>,
}

impl Principals {
    /// Count one command of `principal`.
    pub fn count(&self, principal: &str, bytes_in: u64, bytes_out: u64, refused: bool) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = match map.get_mut(principal) {
            Some(s) => s,
            None => map.entry(principal.to_string()).or_default(),
        };
        s.calls += 1;
        s.bytes_in = s.bytes_in.saturating_add(bytes_in);
        s.bytes_out = s.bytes_out.saturating_add(bytes_out);
        s.refusals += u64::from(refused);
    }

    /// Every principal's counters, by name.
    pub fn snapshot(&self) -> BTreeMap<String, PrincipalStats> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
