//! Latency and bandwidth emulation for the primary backend (DESIGN.md section 3).
//!
//! `BORGSTORE_LATENCY` (microseconds) and `BORGSTORE_BANDWIDTH` (bit/s) make a fast
//! local store behave like a slow remote one, to test and benchmark what a cache or a
//! pipelined client buys. Only primary backend calls are slowed, never cache calls.
//! The wait is asynchronous: it never blocks an executor thread.

use borgstore_ipc::{Error, Result};
use std::time::Duration;

/// Emulated latency per backend call and bandwidth per byte moved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Emulator {
    /// Least time a backend call takes; zero = no added latency.
    pub latency: Duration,
    /// Bytes per second; 0 = unlimited.
    pub bandwidth: f64,
}

impl Emulator {
    /// No emulation.
    pub const OFF: Emulator = Emulator { latency: Duration::ZERO, bandwidth: 0.0 };

    /// Read `BORGSTORE_LATENCY` and `BORGSTORE_BANDWIDTH`; unset means off.
    pub fn from_env() -> Result<Self> {
        Self::from_values(
            std::env::var("BORGSTORE_LATENCY").ok().as_deref(),
            std::env::var("BORGSTORE_BANDWIDTH").ok().as_deref(),
        )
    }

    /// Parse the two settings as the environment gives them.
    pub fn from_values(latency_us: Option<&str>, bandwidth_bits: Option<&str>) -> Result<Self> {
        let parse = |what: &str, v: Option<&str>| -> Result<f64> {
            match v.map(str::trim).filter(|v| !v.is_empty()) {
                None => Ok(0.0),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| Error::invalid(format!("{what} must be a non-negative number, got {v:?}"))),
            }
        };
        let latency = parse("BORGSTORE_LATENCY", latency_us)?;
        let bandwidth = parse("BORGSTORE_BANDWIDTH", bandwidth_bits)? / 8.0;
        Ok(Emulator { latency: Duration::from_secs_f64(latency / 1e6), bandwidth })
    }

    /// True when neither latency nor bandwidth is emulated, so calls are never delayed.
    pub fn is_off(&self) -> bool {
        self.latency.is_zero() && self.bandwidth == 0.0
    }

    /// How long a call that moved `volume` bytes should take in total.
    pub fn target(&self, volume: u64) -> Duration {
        let transfer = if self.bandwidth > 0.0 { volume as f64 / self.bandwidth } else { 0.0 };
        self.latency + Duration::from_secs_f64(transfer)
    }

    /// Sleep for what is left of the emulated time after a call that took `spent`.
    pub async fn delay(&self, spent: Duration, volume: u64) {
        if self.is_off() {
            return;
        }
        let remaining = self.target(volume).saturating_sub(spent);
        if !remaining.is_zero() {
            tokio::time::sleep(remaining).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let e = Emulator::from_values(Some("10000"), Some("8000000")).unwrap();
        assert_eq!(e.latency, Duration::from_millis(10));
        assert_eq!(e.target(1_000_000), Duration::from_millis(1010));
        assert!(Emulator::from_values(Some("fast"), None).is_err());
        assert!(Emulator::from_values(Some("-1"), None).is_err());
        assert!(Emulator::from_values(None, Some("")).unwrap().is_off());
    }
}
