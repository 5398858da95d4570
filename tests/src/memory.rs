//! The memory of a server process as the kernel counts it, for tests that prove memory
//! stays bounded whatever clients send: resident set size now (`VmRSS`) and its peak
//! (`VmHWM`) from `/proc/PID/status`.
//!
//! A test takes a [`Baseline`] once the server is up and warm, lets clients do their
//! worst, then asks [`Baseline::growth`]: the peak resident size since the baseline
//! minus the resident size at the baseline. The peak is reset at the baseline (writing
//! `5` to `/proc/PID/clear_refs`) where the kernel allows it; where it does not, the
//! peak since the process started is used, which can only overstate the growth.

/// One reading of `/proc/PID/status`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Resident set size now.
    pub rss: u64,
    /// Peak resident set size (since start, or since the last reset).
    pub hwm: u64,
}

/// `VmRSS` and `VmHWM` of process `pid`. Panics when the process is gone.
pub fn read(pid: u32) -> Reading {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let field = |name: &str| -> u64 {
        let line =
            text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{path} has no {name} line:\n{text}"));
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("unreadable {name} line in {path}: {line:?}"));
        kib * 1024
    };
    Reading { rss: field("VmRSS:"), hwm: field("VmHWM:") }
}

/// Reset the peak resident size of `pid` to its current size. False when the kernel
/// refused (then `VmHWM` keeps counting from the process start).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// The resident size of a process at one moment, to measure growth from.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub pid: u32,
    /// Resident size at the baseline, bytes.
    pub rss: u64,
    /// Whether the peak was reset at the baseline.
    pub peak_reset: bool,
}

impl Baseline {
    /// Reset the peak (where allowed) and remember the resident size now.
    pub fn take(pid: u32) -> Baseline {
        let peak_reset = reset_peak(pid);
        Baseline { pid, rss: read(pid).rss, peak_reset }
    }

    /// Peak resident size since the baseline minus the resident size at the baseline,
    /// in bytes (0 when it shrank).
    pub fn growth(&self) -> u64 {
        read(self.pid).hwm.saturating_sub(self.rss)
    }

    /// Like [`Baseline::growth`], and panics with `what` and the numbers when the growth
    /// is `limit` bytes or more. Returns the growth.
    pub fn assert_below(&self, limit: u64, what: &str) -> u64 {
        let now = read(self.pid);
        let growth = now.hwm.saturating_sub(self.rss);
        eprintln!(
            "memory: {what}: RSS before {} MiB, peak after {} MiB, RSS after {} MiB, growth {:.1} MiB (limit {} MiB{})",
            self.rss >> 20,
            now.hwm >> 20,
            now.rss >> 20,
            growth as f64 / (1 << 20) as f64,
            limit >> 20,
            if self.peak_reset { "" } else { "; peak counted since process start" }
        );
        assert!(
            growth < limit,
            "{what}: the server's peak RSS grew by {} MiB (before {} MiB, peak {} MiB), limit {} MiB",
            growth >> 20,
            self.rss >> 20,
            now.hwm >> 20,
            limit >> 20
        );
        growth
    }
}

/// Megabytes as bytes.
pub const MIB: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_sees_it_grow() {
        let me = std::process::id();
        let base = Baseline::take(me);
        assert!(base.rss > 0);
        // Touch 32 MiB: the peak must show it.
        let big = vec![1u8; 32 << 20];
        std::hint::black_box(&big);
        let r = read(me);
        assert!(r.hwm >= r.rss && r.rss > 0, "{r:?}");
        assert!(base.growth() >= 30 << 20, "32 MiB touched, growth {}", base.growth());
    }
}
