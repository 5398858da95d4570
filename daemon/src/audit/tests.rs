use super::file::{repair_tail, rotated};
use super::*;
use std::time::Duration;

fn rec(n: u64) -> AuditRecord {
    AuditRecord::new("main", "uid 1001", "socket", "store").with_names([format!("data/{n:08}")]).with_size(n)
}

/// Every line of `path` parsed; panics (the test fails) on a line that is not one.
fn lines(path: &Path) -> Vec<AuditLine> {
    let text = std::fs::read(path).unwrap();
    assert!(text.is_empty() || text.ends_with(b"\n"), "{} ends in a partial line", path.display());
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).expect("valid JSON");
            AuditLine::parse(l).unwrap_or_else(|| panic!("not an audit line: {}", String::from_utf8_lossy(l)))
        })
        .collect()
}

fn seq(l: &AuditLine) -> u64 {
    l.size.expect("size carries the sequence number")
}

fn quick() -> AuditOptions {
    AuditOptions { flush_interval: Duration::from_secs(3600), ..AuditOptions::default() }
}

#[test]
fn lines_are_json_objects_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, quick()).unwrap();
    let mut ok = rec(7);
    ok.time = UNIX_EPOCH + Duration::from_millis(1_796_042_096_789);
    log.record(ok);
    let denied =
        AuditRecord::new("main", "alice", "rest", "delete")
            .with_names(["data/0123"])
            .with_outcome(&Err::<(), _>(Error::new(ErrorKind::PermissionDenied, "delete not granted")));
    log.record(denied);
    log.record(AuditRecord::new("main", "uid 0", "socket", "destroy"));
    log.flush().unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"time":"2026-11-30T12:34:56.789Z","store":"main","principal":"uid 1001","door":"socket","op":"store","names":["data/00000007"],"size":7,"result":"ok"}"#
    );
    let l = lines(&path);
    assert_eq!(l.len(), 3);
    assert_eq!(l[1].result, "error");
    assert_eq!(l[1].error.as_deref(), Some("PermissionDenied"));
    assert_eq!(l[1].message.as_deref(), Some("delete not granted"));
    assert_eq!((l[1].principal.as_str(), l[1].door.as_str(), l[1].op.as_str()), ("alice", "rest", "delete"));
    assert!(l[0].is_ok() && l[2].is_ok());
    assert!(l[2].names.is_empty() && l[2].size.is_none());
    // Now-ish, in the documented format.
    let t = &l[2].time;
    assert_eq!((t.len(), &t[4..5], &t[10..11], &t[19..20], &t[23..]), (24, "-", "T", ".", "Z"), "{t}");
    assert!(t.as_str() > "2025", "{t}");
    log.close().unwrap();
}

#[test]
fn names_with_quotes_newlines_and_non_ascii_stay_on_one_line_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, quick()).unwrap();
    let names =
        ["a\"quoted\"", "line\nbreak\r\n", "ünïcødé/日本語", "tab\t back\\slash \u{1} \u{7f}", "{\"op\":\"x\"}"];
    log.record(AuditRecord::new("st\"ore\n", "evil\nprincipal", "socket", "store").with_names(names));
    log.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "one record, one line: {text:?}");
    let l = lines(&path);
    assert_eq!(l[0].names, names);
    assert_eq!(l[0].store, "st\"ore\n");
    assert_eq!(l[0].principal, "evil\nprincipal");
}

#[test]
fn error_messages_are_cut_at_a_character_boundary() {
    let long = "é".repeat(500);
    let line = AuditRecord::new("s", "p", "d", "store")
        .with_outcome(&Err::<(), _>(Error::new(ErrorKind::Backend, long)))
        .into_line();
    let m = line.message.unwrap();
    assert!(m.len() <= MAX_MESSAGE && m.ends_with("..."), "{} bytes", m.len());
    assert_eq!(line.error.as_deref(), Some("Backend"));
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds_and_never_panic() {
    assert_eq!(rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(1_789_999_999)), "1970-01-01T00:00:01.789Z");
    assert_eq!(rfc3339_millis(UNIX_EPOCH - Duration::from_millis(1)), "1969-12-31T23:59:59.999Z");
    // Out of chrono's range: the epoch, not a panic.
    if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(u64::MAX / 4)) {
        assert_eq!(rfc3339_millis(far), "1970-01-01T00:00:00.000Z");
    }
}

#[test]
fn flush_returns_once_the_records_are_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/audit.log"); // parents are created
    let log = AuditLog::open(&path, AuditOptions { batch: 10, ..quick() }).unwrap();
    for round in 0..5u64 {
        for n in 0..37 {
            log.record(rec(round * 37 + n));
        }
        log.flush().unwrap();
        let l = lines(&path);
        assert_eq!(l.len() as u64, (round + 1) * 37, "after flush {round}");
        assert!(l.iter().enumerate().all(|(i, l)| seq(l) == i as u64), "in order");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777 & !0o022, 0o640 & !0o022, "created 0640 (less the umask): {mode:o}");
    drop(log);
}

#[test]
fn drop_writes_everything_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, quick()).unwrap();
    for n in 0..1000 {
        log.record(rec(n));
    }
    drop(log);
    assert_eq!(lines(&path).len(), 1000);
}

#[test]
fn records_from_many_threads_through_a_tiny_queue_are_all_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = Arc::new(AuditLog::open(&path, AuditOptions { queue: 1, batch: 3, ..quick() }).unwrap());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for n in 0..500 {
                    log.record(rec(t * 1_000_000 + n));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(log).unwrap().close().unwrap();
    let l = lines(&path);
    assert_eq!(l.len(), 2000);
    for t in 0..4u64 {
        let mine: Vec<u64> = l.iter().map(seq).filter(|s| s / 1_000_000 == t).collect();
        assert_eq!(mine, (0..500).map(|n| t * 1_000_000 + n).collect::<Vec<_>>(), "thread {t} in order");
    }
}

#[test]
fn rotation_keeps_n_files_under_the_limit_and_never_splits_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let options = AuditOptions { max_bytes: 1000, keep: 3, batch: 7, ..quick() };
    let log = AuditLog::open(&path, options).unwrap();
    for n in 0..300 {
        log.record(rec(n));
    }
    log.close().unwrap();

    assert!(!rotated(&path, 4).exists(), "only 3 rotated files are kept");
    let mut all = Vec::new();
    for p in [rotated(&path, 3), rotated(&path, 2), rotated(&path, 1), path.clone()] {
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= 1000, "{} is {size} bytes", p.display());
        let l = lines(&p);
        assert!(!l.is_empty(), "{} is empty", p.display());
        all.extend(l.iter().map(seq));
    }
    let first = all[0];
    assert!(first > 0, "the oldest records went with the oldest file");
    assert_eq!(all, (first..300).collect::<Vec<_>>(), "contiguous across the files, newest last");
}

#[test]
fn a_line_longer_than_max_bytes_goes_whole_into_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, AuditOptions { max_bytes: 300, keep: 2, ..quick() }).unwrap();
    log.record(rec(1));
    log.record(rec(2).with_names(vec!["x".repeat(1000)]));
    log.record(rec(3));
    log.close().unwrap();
    assert_eq!(lines(&rotated(&path, 2)).iter().map(seq).collect::<Vec<_>>(), [1]);
    assert_eq!(lines(&rotated(&path, 1)).iter().map(seq).collect::<Vec<_>>(), [2]);
    assert_eq!(lines(&path).iter().map(seq).collect::<Vec<_>>(), [3]);
}

#[test]
fn keep_zero_keeps_no_rotated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, AuditOptions { max_bytes: 500, keep: 0, batch: 1, ..quick() }).unwrap();
    for n in 0..50 {
        log.record(rec(n));
    }
    log.close().unwrap();
    assert!(!rotated(&path, 1).exists());
    let l = lines(&path);
    assert_eq!(l.last().map(seq), Some(49));
    assert!(std::fs::metadata(&path).unwrap().len() <= 500);
}

#[test]
fn open_cuts_a_torn_last_line_and_appends_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, quick()).unwrap();
    log.record(rec(0));
    log.record(rec(1));
    log.close().unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut torn = good.clone();
    torn.extend_from_slice(br#"{"time":"2026-11-30T12:34:5"#);
    std::fs::write(&path, &torn).unwrap();

    let log = AuditLog::open(&path, quick()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), good, "cut back to the last newline");
    log.record(rec(2));
    log.close().unwrap();
    assert_eq!(lines(&path).iter().map(seq).collect::<Vec<_>>(), [0, 1, 2]);
}

#[test]
fn repair_looks_back_past_a_long_tail_and_empties_a_file_without_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    // A line, then 200 KiB of garbage (NULs, as a power loss can leave) without a newline.
    let mut content = b"{\"a\":1}\n".to_vec();
    content.extend_from_slice(&vec![0u8; 200 << 10]);
    std::fs::write(&path, &content).unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    assert_eq!(repair_tail(&f).unwrap(), 200 << 10);
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
    assert_eq!(repair_tail(&f).unwrap(), 0, "a sound file is left alone");

    std::fs::write(&path, vec![b'x'; 70_000]).unwrap();
    assert_eq!(repair_tail(&f).unwrap(), 70_000);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    assert_eq!(repair_tail(&f).unwrap(), 0, "an empty file is left alone");
}

#[test]
fn bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for o in [
        AuditOptions { batch: 0, ..quick() },
        AuditOptions { queue: 0, ..quick() },
        AuditOptions { max_bytes: 0, ..quick() },
    ] {
        let e = AuditLog::open(&dir.path().join("a"), o).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn an_unopenable_path_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    assert!(AuditLog::open(&file.join("audit.log"), quick()).is_err(), "parent is a file");
    assert!(AuditLog::open(dir.path(), quick()).is_err(), "a directory");
}
