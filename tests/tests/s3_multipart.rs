//! Large values on S3 (issue 16, point 1), against a real S3 server (moto_server on
//! loopback), with a part size of 5 MiB:
//!
//! - Multipart uploads: values just below, at and above the part size and of 3.5 parts
//!   round-trip byte-exactly; whole, ranged and tail loads of a multipart object (fetched
//!   as parallel ranges) are right; a move of an object larger than one copy may be copies
//!   it in parts; a value replaced while it is loaded is never read mixed.
//! - Nothing left behind: an upload whose completion fails, one whose part times out and
//!   one whose call is cancelled are aborted; at open, the leftovers our journal lists are
//!   aborted (not those of another process that still runs, or of another store), another
//!   client's upload is kept unless the age rule finds it abandoned.
//! - A real `borgstored` killed (SIGKILL) in the middle of a 200 MiB upload: the upload
//!   stays on the server, and after the restart it is gone and the value is absent or
//!   whole.
//! - Interop with Python borgstore 0.7.0 (`tests/python/s3_interop.py`): it reads what we
//!   stored in parts, and we read (in ranges) what it and boto3 stored.
//! - On Garage (3 nodes, a real S3 implementation with real upload times): parts, ranges
//!   through another node and copies in parts; with the age rule on, a reopen keeps
//!   another client's young upload and aborts our journaled one.
//!
//! moto keeps its uploads in memory and answers `ListMultipartUploads` with every upload
//! started in 2010, so on moto every upload counts as abandoned; the tests that need the
//! age rule off say so.

use borgstore_daemon::backends::parts::PartOptions;
use borgstore_daemon::backends::s3::{S3Options, S3};
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::Backend;
use borgstore_ipc::ErrorKind;
use borgstore_tests::daemon::Daemon;
use borgstore_tests::moto::{self, Moto, BUCKET};
use borgstore_tests::python::{run_ok, Version};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
const PART: u64 = 5 * MIB;

async fn shared_moto() -> Arc<Moto> {
    tokio::task::spawn_blocking(moto::shared).await.unwrap()
}

/// 5 MiB parts, 4 in flight, no age-based sweep.
fn parts() -> PartOptions {
    PartOptions { part_size: PART, part_concurrency: 4, abandoned_upload_age: None }
}

/// Deterministic bytes, different for each seed.
fn data(len: u64, seed: u64) -> Bytes {
    let mut out = vec![0u8; len as usize];
    let mut x = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0xff51_afd7_ed55_8ccd);
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    Bytes::from(out)
}

/// The store prefix (relative to the bucket) of a moto URL, with its `/`.
fn prefix(url: &str) -> String {
    let path = url.split_once(&format!("/{BUCKET}/")).expect("a moto URL").1;
    format!("{}/", path.trim_end_matches('/'))
}

/// A created and opened store at `url`.
async fn opened(url: &str, options: S3Options, parts: PartOptions, journal: Option<PathBuf>) -> S3 {
    let be = S3::from_url_with_parts(url, options, parts, journal).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    be
}

/// What `load(offset, size)` must give for `data` (the posixfs semantics).
fn want(data: &Bytes, offset: i64, size: Option<u64>) -> Bytes {
    let len = data.len() as u64;
    let start = if offset >= 0 { (offset as u64).min(len) } else { len.saturating_sub(offset.unsigned_abs()) };
    let n = size.unwrap_or(u64::MAX).min(len - start);
    data.slice(start as usize..(start + n) as usize)
}

/// Journal entries (`*.upload` files) in `dir`.
fn journaled(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".upload"))
        .collect();
    names.sort();
    names
}

/// A child process, killed when dropped.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The process `pid` as a journal entry names the owner of an upload.
fn owner(pid: u32) -> serde_json::Value {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().nth(19).unwrap().parse().unwrap();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    serde_json::json!({"pid": pid, "start": start, "boot": boot.trim()})
}

/// Wait (up to 20 s) until `moto` lists uploads under `prefix`; panics when none comes.
async fn wait_for_upload(moto: &Moto, prefix: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let uploads = moto.uploads(prefix);
        if !uploads.is_empty() {
            return uploads;
        }
        assert!(Instant::now() < deadline, "no multipart upload appeared under {prefix}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_around_the_part_size_round_trip_and_load_in_ranges() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    let p = prefix(&url);
    let be = opened(&url, S3Options::default(), parts(), None).await;
    let sizes =
        [("below", PART - 1, 1), ("at", PART, 1), ("above", PART + 1, 2), ("three-and-a-half", PART * 7 / 2, 4)];
    for (i, (name, len, parts)) in sizes.into_iter().enumerate() {
        let value = data(len, i as u64);
        be.store(name, value.clone()).await.unwrap();
        assert!(be.load(name, 0, None).await.unwrap() == value, "{name}: {len} bytes round-trip");
        assert_eq!(be.info(name).await.unwrap().size, len);
        // One PUT up to the part size, a multipart upload above: its ETag counts the parts.
        let etag = moto.etag(&format!("{p}{name}")).unwrap();
        match parts {
            1 => assert!(!etag.contains('-'), "{name}: a single PUT, not {etag}"),
            n => assert!(etag.ends_with(&format!("-{n}")), "{name}: {n} parts, not {etag}"),
        }
    }

    let big = data(PART * 7 / 2, 3);
    let len = big.len() as i64;
    let part = PART as i64;
    let cases: &[(i64, Option<u64>)] = &[
        (0, None),
        (0, Some(1)),
        (1, Some(PART)),
        (part - 3, Some(2 * PART + 7)),
        (part, Some(PART)),
        (part, None),
        (3 * part, None),
        (len - 1, None),
        (len - 10, Some(100)),
        (len, None),
        (len + 5, Some(3)),
        (-1, None),
        (-100, Some(10)),
        (-(part + 1), Some(PART)),
        (-(2 * part + 5), None),
        (-(3 * part), Some(10)),
        (-(3 * part), Some(2 * PART)),
        (-(len + 10), None),
        (i64::MIN, Some(u64::MAX)),
    ];
    for &(offset, size) in cases {
        let got = be.load("three-and-a-half", offset, size).await.unwrap();
        let want = want(&big, offset, size);
        assert!(got == want, "load({offset}, {size:?}): {} bytes, want {}", got.len(), want.len());
    }
    let digest = HashAlgorithm::Sha256.hex_digest(&big);
    assert_eq!(be.hash("three-and-a-half", HashAlgorithm::Sha256).await.unwrap(), digest);
    // A multipart object moves like any other (one CopyObject here: it is under 5 GiB).
    be.move_("three-and-a-half", "moved").await.unwrap();
    assert!(be.load("moved", 0, None).await.unwrap() == big);
    assert!(!be.info("three-and-a-half").await.unwrap().exists);
    assert_eq!(moto.uploads(&p), [], "no upload left behind");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_replaced_while_it_is_loaded_is_never_read_mixed() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    // One range at a time makes a load long enough for replacements to land within it.
    let slow = PartOptions { part_concurrency: 1, ..parts() };
    let be = opened(&url, S3Options::default(), slow, None).await;
    let (a, b) = (data(PART * 7 / 2, 10), data(PART * 7 / 2, 11));
    be.store("item", a.clone()).await.unwrap();
    // Ranges that found the item replaced since the load's first range: moto logs each
    // request with its status, and answers 412 to a failed If-Match.
    let key = format!("{}item", prefix(&url));
    let replaced_under_a_load =
        || moto.log_text().lines().filter(|l| l.contains(key.as_str()) && l.contains(" 412 ")).count();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (be, a, b, stop) = (be.clone(), a.clone(), b.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while n < 40 && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                be.store("item", if n % 2 == 0 { b.clone() } else { a.clone() }).await.unwrap();
                n += 1;
            }
            n
        })
    };
    let (mut loads, mut seen_a, mut seen_b) = (0, 0, 0);
    while !writer.is_finished() || loads == 0 {
        match be.load("item", 0, None).await {
            Ok(got) if got == a => seen_a += 1,
            Ok(got) if got == b => seen_b += 1,
            Ok(got) => panic!("a load saw neither version in full: {} bytes", got.len()),
            // Replaced on every try: a clear error, never mixed bytes.
            Err(e) => assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}"),
        }
        loads += 1;
        if replaced_under_a_load() >= 2 {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let replacements = writer.await.unwrap();
    let changed = replaced_under_a_load();
    eprintln!(
        "{loads} loads during {replacements} replacements: {seen_a} saw the first version, {seen_b} the second; \
         {changed} ranges found the item replaced and their load started over"
    );
    assert!(changed > 0, "no load overlapped a replacement: the test proved nothing");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_the_server_refuses_is_aborted() {
    // This moto wants parts of at least 6 MiB: completing our 5 MiB parts fails.
    let min = (6 * MIB).to_string();
    let moto =
        tokio::task::spawn_blocking(move || Moto::start_with_env(&[("S3_UPLOAD_PART_MIN_SIZE", &min)])).await.unwrap();
    let url = moto.fresh_url();
    let p = prefix(&url);
    let journal = tempfile::tempdir().unwrap();
    let be = opened(&url, S3Options::default(), parts(), Some(journal.path().to_path_buf())).await;
    let old = data(1000, 20);
    be.store("item", old.clone()).await.unwrap();
    let err = be.store("item", data(3 * PART, 21)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Backend, "{err}");
    assert!(err.message.contains("EntityTooSmall") && err.message.contains("item"), "{err}");
    assert!(!err.message.contains(&p), "the store prefix leaked: {err}");
    assert_eq!(moto.uploads(&p), [], "the failed upload was aborted");
    assert_eq!(journaled(journal.path()), Vec::<String>::new(), "and crossed out of the journal");
    assert!(be.load("item", 0, None).await.unwrap() == old, "the old value stays");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_times_out_is_aborted() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let url = moto.fresh_url();
    let p = prefix(&url);
    // Each attempt of a part gets 4 s + its bytes at 16 MiB/s, two attempts; the abort that
    // follows gets two attempts of 4 s. Frozen from T0, the part fails between T0 + 4.4 s
    // and T0 + 8.8 s, and its abort still waits for an answer until at least T0 + 12.6 s:
    // the server thaws at T0 + 10.5 s, in between.
    let options = S3Options {
        max_attempts: 2,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(4),
        min_throughput: 16 * MIB,
        stall_timeout: Duration::from_secs(20),
        ..S3Options::default()
    };
    let journal = tempfile::tempdir().unwrap();
    let one_at_a_time = PartOptions { part_concurrency: 1, ..parts() };
    let be = opened(&url, options, one_at_a_time, Some(journal.path().to_path_buf())).await;
    let upload = {
        let be = be.clone();
        tokio::spawn(async move { be.store("item", data(6 * PART, 30)).await })
    };
    wait_for_upload(&moto, &p).await;
    moto.pause();
    let frozen = Instant::now();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    moto.resume();
    let err =
        tokio::time::timeout(Duration::from_secs(30), upload).await.expect("the store hung").unwrap().unwrap_err();
    eprintln!("the store failed {:?} after the freeze: {err}", frozen.elapsed());
    assert!(matches!(err.kind, ErrorKind::ConnectionLost | ErrorKind::Backend), "{err}");
    // Requests the frozen server had queued may still be worked off now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(moto.uploads(&p), [], "the upload was aborted");
    assert_eq!(journaled(journal.path()), Vec::<String>::new());
    assert!(!be.info("item").await.unwrap().exists, "no object appeared");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_is_aborted() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    let p = prefix(&url);
    let journal = tempfile::tempdir().unwrap();
    let one_at_a_time = PartOptions { part_concurrency: 1, ..parts() };
    let be = opened(&url, S3Options::default(), one_at_a_time, Some(journal.path().to_path_buf())).await;
    let upload = {
        let be = be.clone();
        tokio::spawn(async move { be.store("item", data(8 * PART, 40)).await })
    };
    let listed = wait_for_upload(&moto, &p).await;
    assert_eq!(journaled(journal.path()).len(), 1, "the upload is journaled while it runs");
    upload.abort();
    assert!(upload.await.unwrap_err().is_cancelled());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !moto.uploads(&p).is_empty() || !journaled(journal.path()).is_empty() {
        assert!(Instant::now() < deadline, "the cancelled upload {listed:?} was not aborted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!be.info("item").await.unwrap().exists);
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_aborts_journaled_and_abandoned_uploads_only() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    let p = prefix(&url);
    let other = moto::unique_path() + "/";
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("s3-uploads").join("main");
    let be = opened(&url, S3Options::default(), parts(), Some(journal.clone())).await;
    be.close().await.unwrap();

    // Left behind: another client's upload under the prefix (not journaled), and in the
    // journal, as the backend writes it: ours from a process that is gone (pid 1 with
    // another start time), one without an owner and gone from the server already, one of
    // another process that still runs (a `sleep` stands in for a second daemon sharing the
    // journal), and one of another store's location.
    let ours = moto.start_upload(&format!("{p}data/ours"));
    let theirs = moto.start_upload(&format!("{p}data/theirs"));
    let elsewhere = moto.start_upload(&format!("{other}data/x"));
    let live = moto.start_upload(&format!("{p}data/live"));
    let mut sleeper = Sleeper(std::process::Command::new("sleep").arg("600").spawn().unwrap());
    let entry = |key: &str, id: &str, owner: serde_json::Value| {
        serde_json::json!({"endpoint": moto.endpoint(), "bucket": BUCKET, "key": format!("{p}{key}"),
            "upload_id": id, "started": 1, "owner": owner})
        .to_string()
    };
    let running = owner(sleeper.0.id());
    let gone_owner = serde_json::json!({"pid": 1, "start": u64::MAX, "boot": running["boot"]});
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join("0123.upload"), entry("data/ours", &ours, gone_owner)).unwrap();
    std::fs::write(journal.join("4567.upload"), entry("data/gone", "no-such-upload", serde_json::Value::Null)).unwrap();
    std::fs::write(journal.join("live.upload"), entry("data/live", &live, running)).unwrap();
    let elsewhere_entry = serde_json::json!({"endpoint": moto.endpoint(), "bucket": BUCKET,
        "key": format!("{other}data/x"), "upload_id": elsewhere, "started": 1});
    std::fs::write(journal.join("other.upload"), elsewhere_entry.to_string()).unwrap();
    // Garbage in the journal is skipped, never a panic or a failed open.
    std::fs::write(journal.join("junk.upload"), b"\x00not json").unwrap();
    std::fs::write(journal.join("README"), b"hello").unwrap();

    // Without the age rule only the journaled leftovers go (one gone already counts).
    be.open().await.unwrap();
    let mut left = vec![(format!("{p}data/live"), live.clone()), (format!("{p}data/theirs"), theirs.clone())];
    left.sort();
    assert_eq!(moto.uploads(&p), left);
    assert_eq!(moto.uploads(&other), [(format!("{other}data/x"), elsewhere.clone())]);
    assert_eq!(journaled(&journal), ["junk.upload", "live.upload", "other.upload"], "leftovers crossed out");
    be.close().await.unwrap();

    // With it, an upload older than the age goes too, whoever started it (moto says every
    // upload started in 2010); other stores' uploads stay.
    let aged = PartOptions { abandoned_upload_age: Some(Duration::from_secs(3600)), ..parts() };
    let be = S3::from_url_with_parts(&url, S3Options::default(), aged, Some(journal.clone())).unwrap();
    be.open().await.unwrap();
    assert_eq!(moto.uploads(&p), []);
    // The running process's entry stays (its upload went by age here).
    assert_eq!(journaled(&journal), ["junk.upload", "live.upload", "other.upload"]);
    // Once that process is gone, its entry is a leftover like any other.
    sleeper.0.kill().unwrap();
    sleeper.0.wait().unwrap();
    be.close().await.unwrap();
    be.open().await.unwrap();
    assert_eq!(journaled(&journal), ["junk.upload", "other.upload"]);
    assert_eq!(moto.uploads(&other), [(format!("{other}data/x"), elsewhere)]);
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_larger_than_one_copy_copies_in_parts() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    let p = prefix(&url);
    // S3 copies up to 5 GiB at once; here the limit is 6 MiB, so a 13 MiB object goes in parts.
    let options = S3Options { max_copy_size: 6 * MIB, ..S3Options::default() };
    let be = opened(&url, options, parts(), None).await;
    let (big, small) = (data(13 * MIB, 50), data(6 * MIB, 51));
    be.store("big", big.clone()).await.unwrap();
    be.store("small", small.clone()).await.unwrap();
    be.move_("big", "data/big").await.unwrap();
    be.move_("small", "data/small").await.unwrap();
    assert!(be.load("data/big", 0, None).await.unwrap() == big);
    assert!(be.load("data/small", 0, None).await.unwrap() == small);
    assert!(!be.info("big").await.unwrap().exists && !be.info("small").await.unwrap().exists);
    let etag = moto.etag(&format!("{p}data/big")).unwrap();
    assert!(etag.ends_with("-3"), "copied in 3 parts: {etag}");
    assert!(!moto.etag(&format!("{p}data/small")).unwrap().contains('-'), "one CopyObject");
    assert_eq!(be.move_("big", "x").await.unwrap_err().kind, ErrorKind::ObjectNotFound);
    assert_eq!(moto.uploads(&p), []);
    be.close().await.unwrap();
}

// ----- a real daemon, killed -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_upload_leaves_nothing_after_its_restart() {
    const SIZE: u64 = 200 * MIB;
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let url = moto.fresh_url();
    let p = prefix(&url);
    let root = tempfile::tempdir().unwrap();
    let cfg = root.path().join("borgstored.toml");
    // The age rule is off, so only the journal can clean up (moto would make every upload
    // look abandoned).
    let text = format!(
        "state_dir = \"{state}\"\n[stores.big]\nurl = \"{url}\"\ncreate = true\npart_size = {PART}\n\
         part_concurrency = 4\nabandoned_upload_age = 0\n",
        state = root.path().join("state").display()
    );
    std::fs::write(&cfg, text).unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let mut d = Daemon::start_in(tempfile::tempdir().unwrap(), &args, &[]);
    let value = data(SIZE, 60);

    let store = {
        let client = d.client("big").await;
        client.open().await.unwrap();
        let value = value.to_vec();
        tokio::spawn(async move { client.store("value", value).await })
    };
    let started = wait_for_upload(&moto, &p).await;
    // Let some parts arrive, then kill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = d.child.id();
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    assert!(store.await.unwrap().is_err(), "the store cannot have been acknowledged");
    let journal = root.path().join("state/s3-uploads/big");
    assert_eq!(moto.uploads(&p), started, "the cut-off upload stays on the server until the restart");
    let entries = journaled(&journal);
    assert_eq!(entries.len(), 1, "and in the journal");
    let entry: serde_json::Value = serde_json::from_slice(&std::fs::read(journal.join(&entries[0])).unwrap()).unwrap();
    assert_eq!(entry["upload_id"], started[0].1.as_str(), "{entry}");
    assert_eq!(entry["owner"]["pid"], pid, "written down by the daemon, as its own: {entry}");
    // Another host's upload under the same prefix, live for all we know.
    let theirs = moto.start_upload(&format!("{p}theirs"));

    d.restart(&args);
    let client = d.client("big").await;
    client.open().await.unwrap();
    let info = client.info("value", false).await.unwrap();
    assert_eq!(moto.uploads(&p), [(format!("{p}theirs"), theirs)], "ours aborted, theirs kept");
    assert_eq!(journaled(&journal), Vec::<String>::new());
    if info.exists {
        assert!(client.load("value", 0, None, false).await.unwrap() == value, "a whole value or none");
    }
    eprintln!("after the restart the value {}", if info.exists { "is whole" } else { "is absent" });
    // The store works: a large value goes through.
    client.store("again", data(3 * PART, 61).to_vec()).await.unwrap();
    assert!(client.load("again", 0, None, false).await.unwrap() == data(3 * PART, 61));
    assert_eq!(moto.uploads(&p).len(), 1);
}

// ----- interop with Python borgstore -----

fn py(moto: &Moto, args: &[&str]) -> String {
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_ok(Version::V070, "s3_interop.py", args, &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_what_we_store_in_parts() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    let p = prefix(&url);
    let be = opened(&url, S3Options::default(), parts(), None).await;
    let value = data(12 * MIB, 70);
    be.store("data/big", value.clone()).await.unwrap();
    assert!(moto.etag(&format!("{p}data/big")).unwrap().ends_with("-3"), "stored in 3 parts");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out");
    let file_arg = file.to_str().unwrap();
    let moto2 = moto.clone();
    let (url2, file2) = (url.clone(), file_arg.to_string());
    tokio::task::spawn_blocking(move || py(&moto2, &["get", &url2, "data/big", &file2])).await.unwrap();
    assert!(std::fs::read(&file).unwrap() == value[..], "Python loads it byte-exactly");
    let (moto2, url2, file2) = (moto.clone(), url.clone(), file_arg.to_string());
    let (offset, size) = ((PART - 1).to_string(), (PART + 2).to_string());
    tokio::task::spawn_blocking(move || py(&moto2, &["get", &url2, "data/big", &file2, &offset, &size])).await.unwrap();
    assert!(std::fs::read(&file).unwrap() == value[PART as usize - 1..2 * PART as usize + 1], "and a range of it");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_read_in_ranges_what_python_and_boto3_store() {
    let moto = shared_moto().await;
    let url = moto.fresh_url();
    let p = prefix(&url);
    let be = opened(&url, S3Options::default(), parts(), None).await;
    let dir = tempfile::tempdir().unwrap();
    // Python borgstore sends one PUT; boto3's transfer manager (another S3 client) uploads
    // in parts.
    for (cmd, name, seed, multipart) in [("put", "data/theirs", 80, false), ("put-parts", "data/boto3", 81, true)] {
        let value = data(12 * MIB + 123, seed);
        let file = dir.path().join(name.replace('/', "-"));
        std::fs::write(&file, &value).unwrap();
        let (moto2, url2, file2) = (moto.clone(), url.clone(), file.to_str().unwrap().to_string());
        tokio::task::spawn_blocking(move || py(&moto2, &[cmd, &url2, name, &file2])).await.unwrap();
        let etag = moto.etag(&format!("{p}{name}")).unwrap();
        assert_eq!(etag.contains('-'), multipart, "{cmd}: {etag}");
        assert!(be.load(name, 0, None).await.unwrap() == value, "{cmd}: loaded in ranges, byte-exactly");
        for (offset, size) in [(PART as i64 + 7, Some(2 * PART)), (-(PART as i64 * 2), None), (1, None)] {
            let got = be.load(name, offset, size).await.unwrap();
            assert!(got == want(&value, offset, size), "{cmd}: load({offset}, {size:?})");
        }
    }
    be.close().await.unwrap();
}

// ----- on Garage, a real S3 implementation -----

/// Another S3 client of Garage node 0 (Garage takes only signed requests).
fn garage_client(garage: &borgstore_tests::garage::Garage) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use borgstore_tests::garage::{ACCESS_KEY, REGION, SECRET_KEY};
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(garage.endpoint(0))
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Keys of the uploads in progress under `prefix`, sorted.
async fn garage_uploads(client: &aws_sdk_s3::Client, prefix: &str) -> Vec<String> {
    let page = client.list_multipart_uploads().bucket(BUCKET).prefix(prefix).send().await.unwrap();
    let mut keys: Vec<String> = page.uploads().iter().filter_map(|u| u.key().map(str::to_owned)).collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_garage_parts_ranges_copies_and_young_uploads_of_others() {
    let garage = tokio::task::spawn_blocking(borgstore_tests::garage::shared).await.unwrap();
    let client = garage_client(&garage);
    let path = moto::unique_path();
    let p = format!("{path}/");
    let journal = tempfile::tempdir().unwrap();
    // The age rule on: Garage tells the real start time of uploads.
    let aged = PartOptions { abandoned_upload_age: Some(Duration::from_secs(3600)), ..parts() };
    let options = S3Options { max_copy_size: 6 * MIB, ..S3Options::default() };
    let be = opened(&garage.url(0, &path), options.clone(), aged, Some(journal.path().to_path_buf())).await;
    let big = data(PART * 7 / 2, 90);
    be.store("big", big.clone()).await.unwrap();
    let head = client.head_object().bucket(BUCKET).key(format!("{p}big")).send().await.unwrap();
    assert!(head.e_tag().unwrap().trim_matches('"').ends_with("-4"), "4 parts: {:?}", head.e_tag());
    // Read through another node, in ranges.
    let other = S3::from_url_with_parts(&garage.url(1, &path), options, aged, None).unwrap();
    other.open().await.unwrap();
    for (offset, size) in [(0, None), (PART as i64 - 1, Some(PART + 2)), (-(2 * PART as i64 + 1), None), (-10, Some(5))]
    {
        assert!(other.load("big", offset, size).await.unwrap() == want(&big, offset, size), "load({offset}, {size:?})");
    }
    // A move over the (lowered) copy limit copies in parts on the server.
    be.move_("big", "data/big").await.unwrap();
    assert!(other.load("data/big", 0, None).await.unwrap() == big);
    let head = client.head_object().bucket(BUCKET).key(format!("{p}data/big")).send().await.unwrap();
    assert!(head.e_tag().unwrap().trim_matches('"').contains('-'), "copied in parts: {:?}", head.e_tag());
    assert_eq!(garage_uploads(&client, &p).await, Vec::<String>::new());

    // Left behind: ours (journaled) and another client's, started just now: a reopen
    // aborts ours and keeps theirs, younger than the age.
    let start = |key: String| {
        let client = client.clone();
        async move {
            let out = client.create_multipart_upload().bucket(BUCKET).key(key).send().await.unwrap();
            out.upload_id().unwrap().to_string()
        }
    };
    let ours = start(format!("{p}data/ours")).await;
    let theirs = start(format!("{p}data/theirs")).await;
    let entry = serde_json::json!({"endpoint": garage.endpoint(0), "bucket": BUCKET, "key": format!("{p}data/ours"),
        "upload_id": ours, "started": 1});
    std::fs::write(journal.path().join("ours.upload"), entry.to_string()).unwrap();
    be.close().await.unwrap();
    be.open().await.unwrap();
    assert_eq!(garage_uploads(&client, &p).await, [format!("{p}data/theirs")]);
    assert_eq!(journaled(journal.path()), Vec::<String>::new());
    client
        .abort_multipart_upload()
        .bucket(BUCKET)
        .key(format!("{p}data/theirs"))
        .upload_id(theirs)
        .send()
        .await
        .unwrap();
    be.close().await.unwrap();
    other.close().await.unwrap();
}
