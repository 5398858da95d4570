//! Test-only: records audit entries into one log as fast as it can, until killed, for
//! `tests/tests/audit_log.rs` (kill -9 in the middle of the stream).
//!
//! `audit_writer PATH RUN [MAX_BYTES]`: opens the audit log at PATH (which repairs a torn
//! tail), records 100 entries, flushes, prints `ready`, then records forever. Entry `i`
//! of run RUN has principal `run RUN`, size `i`, and names long enough that one batch
//! spans many pages (so a kill can land inside a write).

use borgstore_daemon::audit::{AuditLog, AuditOptions, AuditRecord};
use std::io::Write;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(run)) = (args.next(), args.next()) else {
        eprintln!("usage: audit_writer PATH RUN [MAX_BYTES]");
        std::process::exit(2);
    };
    let max_bytes = args.next().map_or(64 << 20, |m| m.parse().expect("MAX_BYTES is a number"));
    let options =
        AuditOptions { max_bytes, keep: 10_000, flush_interval: Duration::from_millis(5), ..Default::default() };
    let log = AuditLog::open(path.as_ref(), options).expect("open the audit log");
    let principal = format!("run {run}");
    let record = |i: u64| {
        let names = [format!("data/{i:064x}"), format!("index/{}", "é".repeat(80)), "x\"y\nz".to_string()];
        log.record(AuditRecord::new("main", principal.clone(), "socket", "store").with_names(names).with_size(i));
    };
    for i in 0..100 {
        record(i);
    }
    log.flush().expect("first flush");
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    for i in 100.. {
        record(i);
    }
}
