//! The audit log under the failures it is built for, and its CLI:
//!
//! - a writer killed with SIGKILL in the middle of a stream, again and again on the same
//!   file (each restart repairs the tail): every line stays a complete record, each run's
//!   records are in order with no gap, runs follow each other;
//! - a full disk (a 1 MiB tmpfs): no panic, no partial line, the records wait (a flush
//!   says it failed, `record` waits when the queue is full) and all land once space is
//!   freed;
//! - `borgstore audit FILE --lines 3` shows the last three records, `--json` them as
//!   written, `--follow` what is appended, also across a rotation.

use borgstore_client::audit::{AuditLine, MALFORMED};
use borgstore_daemon::audit::{AuditLog, AuditOptions, AuditRecord};
use borgstore_tests::daemon::binary;
use borgstore_tests::disk::SmallDisk;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `path.n`, as the log names its rotated files.
fn rotated(path: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.{n}", path.display()))
}

/// The log's rotated files, oldest (highest N) first. A kill between a rotation's
/// renames may leave a gap in the numbers; the order is still right.
fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.", path.file_name().unwrap().to_str().unwrap());
    let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((name.strip_prefix(&prefix)?.parse().ok()?, e.path()))
        })
        .collect();
    numbered.sort();
    numbered.into_iter().rev().map(|(_, p)| p).collect()
}

/// Every line of the log and its rotated files, oldest first; fails on any line that is
/// not a complete record.
fn all_lines(path: &Path) -> Vec<AuditLine> {
    let mut files = rotated_files(path);
    files.push(path.to_path_buf());
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read(&f).unwrap();
        assert!(text.is_empty() || text.ends_with(b"\n"), "{} ends in a partial line", f.display());
        for (i, l) in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let a = AuditLine::parse(l).unwrap_or_else(|| {
                panic!("{} line {}: not a complete record: {}", f.display(), i + 1, String::from_utf8_lossy(l))
            });
            out.push(a);
        }
    }
    out
}

/// A child process killed when the test ends, also when it fails.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read `child`'s first stdout line within a generous time.
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the writer said nothing within 60 s")
}

#[test]
fn sigkill_mid_stream_never_leaves_a_torn_or_unordered_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/audit.log");
    const RUNS: u64 = 6;
    let mut torn_tails = 0;
    for run in 0..RUNS {
        // Run 3 onwards rotate every 4 MiB, so kills also land around rotations.
        let max_bytes = if run >= 3 { 4 << 20 } else { 64 << 20 };
        let mut child = Killed(
            Command::new(env!("CARGO_BIN_EXE_audit_writer"))
                .arg(&path)
                .arg(run.to_string())
                .arg(max_bytes.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let child = &mut child.0;
        assert_eq!(first_line(child), "ready\n", "run {run}");
        // Let it stream for a while (a different while each run), then SIGKILL.
        std::thread::sleep(Duration::from_millis(100 + 70 * run));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "run {run} was killed");
        if !std::fs::read(&path).unwrap().ends_with(b"\n") {
            torn_tails += 1; // the next open (or the check below) repairs it
        }
    }
    // A last open repairs what the last kill left, exactly as a restarting daemon does.
    AuditLog::open(&path, AuditOptions::default()).unwrap().close().unwrap();
    eprintln!("{torn_tails} of {RUNS} kills left a torn tail");

    let lines = all_lines(&path);
    let mut expected_run = 0;
    let mut next = 0;
    for (i, l) in lines.iter().enumerate() {
        let run: u64 = l.principal.strip_prefix("run ").and_then(|r| r.parse().ok()).expect("principal run N");
        if run != expected_run {
            assert_eq!(run, expected_run + 1, "line {i}: runs follow each other");
            assert!(next >= 100, "run {expected_run} kept its 100 flushed records, got {next}");
            expected_run = run;
            next = 0;
        }
        assert_eq!(l.size, Some(next), "line {i}: run {run} in order, nothing missing");
        assert_eq!(l.names.len(), 3);
        assert_eq!(l.names[2], "x\"y\nz");
        next += 1;
    }
    assert_eq!(expected_run, RUNS - 1, "every run wrote");
    assert!(next >= 100, "the last run kept its 100 flushed records, got {next}");
    assert!(!rotated_files(&path).is_empty(), "the later runs rotated");
}

fn rec(n: u64) -> AuditRecord {
    AuditRecord::new("main", "uid 1001", "socket", "store").with_names([format!("data/{n:08}")]).with_size(n)
}

/// Fill the file system under `dir` until it refuses another byte.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc_enospc()), "filling fails with ENOSPC: {e}");
                break;
            }
        }
    }
    filler
}

/// The number of records in the log, which must start with `before` and hold only
/// whole records numbered from 0 without a gap.
fn whole_records(path: &Path, before: &[u8]) -> u64 {
    assert!(std::fs::read(path).unwrap().starts_with(before), "the records written before are intact");
    let seqs: Vec<u64> = all_lines(path).iter().map(|l| l.size.unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "in order, no gap");
    seqs.len() as u64
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

#[test]
fn a_full_disk_delays_records_without_tearing_or_losing_them() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(dir.path(), "1m");
    let path = disk.mnt.join("audit.log");
    let options =
        AuditOptions { batch: 128, queue: 64, flush_interval: Duration::from_millis(10), ..Default::default() };
    let log = std::sync::Arc::new(AuditLog::open(&path, options).unwrap());
    for n in 0..10 {
        log.record(rec(n));
    }
    log.flush().unwrap();
    let before = std::fs::read(&path).unwrap();
    assert_eq!(all_lines(&path).len(), 10);

    // Full: the last page of the log has room for part of the next batch only.
    let filler = fill(&disk.mnt);
    for n in 10..50 {
        log.record(rec(n));
    }
    let e = log.flush().expect_err("a flush on a full disk says so");
    assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
    // Only whole lines: the old ones and perhaps a first few new ones that fit the room
    // left in the file's last page, never part of a line.
    let written = whole_records(&path, &before);
    assert!(written < 50, "the disk is full, yet {written} records are in the file");

    // More than the queue holds: the recording thread waits (back-pressure) rather than
    // dropping records or growing memory.
    let (done_tx, done) = mpsc::channel();
    let recorder = {
        let log = log.clone();
        std::thread::spawn(move || {
            for n in 50..400 {
                log.record(rec(n));
            }
            done_tx.send(()).unwrap();
        })
    };
    assert!(done.recv_timeout(Duration::from_millis(1500)).is_err(), "record waits while the disk is full");
    assert_eq!(whole_records(&path, &before), written, "still only the same whole lines");

    std::fs::remove_file(&filler).unwrap();
    done.recv_timeout(Duration::from_secs(30)).expect("the recorder goes on once space is freed");
    recorder.join().unwrap();
    log.flush().expect("flush works again");
    let seqs: Vec<u64> = all_lines(&path).iter().map(|l| l.size.unwrap()).collect();
    assert_eq!(seqs, (0..400).collect::<Vec<_>>(), "every record, in order");
    std::sync::Arc::try_unwrap(log).unwrap().close().unwrap();
    drop(disk);
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(binary("borgstore")).args(args).output().unwrap()
}

#[test]
fn cli_shows_the_last_lines_as_columns_or_json_and_marks_malformed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, AuditOptions::default()).unwrap();
    for n in 0..10 {
        log.record(rec(n));
    }
    log.record(rec(10).with_outcome(&Err::<(), _>(borgstore_client::Error::new(
        borgstore_client::ErrorKind::PermissionDenied,
        "store not granted",
    ))));
    log.close().unwrap();
    let p = path.to_str().unwrap();

    let out = cli(&["audit", p, "--lines", "3"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let shown: Vec<&str> = text.lines().collect();
    assert_eq!(shown.len(), 3, "{text}");
    for (line, n) in shown.iter().zip(8..) {
        assert!(
            line.contains(&format!("data/{n:08}")) && line.contains("uid 1001") && line.contains("socket"),
            "{line}"
        );
    }
    assert!(shown[0].ends_with("  8  ok"), "{}", shown[0]);
    assert!(shown[2].ends_with("error PermissionDenied: store not granted"), "{}", shown[2]);
    assert_eq!(shown[0].find("data/"), shown[2].find("data/"), "aligned:\n{text}");

    let out = cli(&["audit", p, "-n", "2", "--json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<AuditLine> = text.lines().map(|l| AuditLine::parse(l.as_bytes()).expect("JSON")).collect();
    assert_eq!(lines.iter().map(|l| l.size).collect::<Vec<_>>(), [Some(9), Some(10)]);

    // A garbage line and a torn tail: shown with the marker, no panic.
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(b"not json \xff\n{\"time\":\"2026").unwrap();
    let out = cli(&["audit", p, "--lines", "3"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let shown: Vec<&str> = text.lines().collect();
    assert_eq!(shown.len(), 4, "3 lines and the torn tail:\n{text}");
    assert!(shown[2].starts_with(MALFORMED) && shown[2].contains("not json"), "{text}");
    assert!(shown[3].starts_with(MALFORMED) && shown[3].contains("2026"), "{text}");
    let out = cli(&["audit", p, "--lines", "3", "--json"]);
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(stdout.lines().all(|l| AuditLine::parse(l.as_bytes()).is_some()), "stdout stays JSON Lines: {stdout}");
    assert!(stderr.contains(MALFORMED) && stderr.contains("not json"), "{stderr}");

    // Missing and unreadable files: a clear error and the CLI's exit codes.
    let out = cli(&["audit", dir.path().join("nope.log").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.log") && err.contains("No such file"), "{err}");
    let out = cli(&["audit", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a directory: {out:?}");
}

#[test]
fn cli_follow_prints_appended_records_and_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, AuditOptions::default()).unwrap();
    for n in 0..5 {
        log.record(rec(n));
    }
    log.close().unwrap();

    let mut child = Killed(
        Command::new(binary("borgstore"))
            .args(["audit", path.to_str().unwrap(), "--lines", "2", "--follow", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let next = || {
        let l = lines.recv_timeout(Duration::from_secs(30)).expect("a line within 30 s");
        AuditLine::parse(l.as_bytes()).unwrap_or_else(|| panic!("not a record: {l}")).size.unwrap()
    };
    assert_eq!((next(), next()), (3, 4), "the last two first");

    // Appended: a rotation is due before the second record (the file is over 1 KiB).
    let options = AuditOptions { max_bytes: std::fs::metadata(&path).unwrap().len() + 200, ..Default::default() };
    let log = AuditLog::open(&path, options).unwrap();
    log.record(rec(5));
    log.flush().unwrap();
    assert_eq!(next(), 5);
    log.record(rec(6));
    log.record(rec(7));
    log.flush().unwrap();
    assert!(rotated(&path, 1).exists(), "the log rotated");
    assert_eq!((next(), next()), (6, 7), "read on in the new file");
    log.close().unwrap();
    drop(child);
}
