//! Durability of acknowledged writes (issue 10, DESIGN.md section 4 "Durability"), proven
//! against the real `borgstored` binary:
//!
//! - **kill -9 loop**: 20+ cycles of 8 concurrent writers (unique names and overwritten
//!   names, 32 B .. 2 MiB self-verifying values) and a SIGKILL at a random moment. After
//!   every restart each acknowledged write is there byte for byte, no item present (also
//!   unacknowledged ones) is torn, an overwritten name holds a version that was written
//!   and never one older than the last acknowledged (or seen), and nothing seen vanishes.
//! - **flushes before the reply**, under `strace` with a delay injected into every
//!   `fsync`, `fdatasync` and `syncfs`: `off` never flushes; `always` flushes the temp
//!   file before its rename and the directories (also new ones) after it, and deletes and
//!   moves flush their directories, all before the reply; `batch` renames only after a
//!   `syncfs` pass that began after the data was written and replies only after a pass
//!   that began after the rename, and 16 concurrent stores share few passes.
//! - **stale temp files** of killed writes are swept when a store is opened; fresh ones
//!   (possibly live writes) and items stay.
//! - **sftp**: with `fsync` on, the OpenSSH server fsyncs each temp file before the
//!   rename (`fsync@openssh.com`); with `off` it does not.
//!
//! The checks are checked too: values detect truncation, flipped and zeroed bytes; the
//! trace checks refuse a rename before the data pass and a reply before the rename pass
//! (on made-up traces and on the real trace of an `fsync = off` daemon).
//!
//! Also here, found by the kill -9 loop: listing a namespace of 42..48 (and ~700..780)
//! 64-hex-digit names fails on the client's frame decoder
//! (`listing_a_namespace_of_long_names_works_whatever_its_size`).
//!
//! A missing `strace` is a panic that says what to install, never a skip.

use borgstore_client::{Client, ErrorKind, MoveAction};
use borgstore_tests::daemon::{binary, Daemon};
use borgstore_tests::sshd::Sshd;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Self-verifying values
// ---------------------------------------------------------------------------------------

const MAGIC: &[u8; 4] = b"BsDv";
/// magic(4) len(4) writer(4) id(4) version(4) digest(12): the digest is sha256 of the
/// first 20 header bytes and the body, so any torn, truncated or mixed value fails.
const HEADER: usize = 32;
/// Ids at or above this are the names a writer overwrites again and again.
const SLOT_BASE: u32 = 1_000_000;

fn seed(writer: u32, id: u32, version: u32) -> u64 {
    let d = Sha256::digest(format!("seed/{writer}/{id}/{version}"));
    u64::from_le_bytes(d[..8].try_into().unwrap())
}

/// The key of (writer, id): 64 hex digits, so `data/` nests it two levels deep.
fn key_of(writer: u32, id: u32) -> String {
    hex::encode(Sha256::digest(format!("key/{writer}/{id}")))
}

/// Sizes from 32 bytes (header only) to 2 MiB, most of them small.
fn value_len(writer: u32, id: u32, version: u32) -> usize {
    let mut rng = StdRng::seed_from_u64(seed(writer, id, version));
    let p: f64 = rng.gen();
    let body = if p < 0.40 {
        rng.gen_range(0..=64)
    } else if p < 0.75 {
        rng.gen_range(65..64 << 10)
    } else if p < 0.95 {
        rng.gen_range(64 << 10..512 << 10)
    } else {
        rng.gen_range(512 << 10..=(2 << 20) - HEADER)
    };
    HEADER + body
}

fn make_value(writer: u32, id: u32, version: u32) -> Vec<u8> {
    let len = value_len(writer, id, version);
    let mut v = vec![0u8; len];
    v[..4].copy_from_slice(MAGIC);
    v[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    v[8..12].copy_from_slice(&writer.to_le_bytes());
    v[12..16].copy_from_slice(&id.to_le_bytes());
    v[16..20].copy_from_slice(&version.to_le_bytes());
    StdRng::seed_from_u64(seed(writer, id, version) ^ 0x5a5a_5a5a).fill_bytes(&mut v[HEADER..]);
    let digest = header_digest(&v);
    v[20..32].copy_from_slice(&digest);
    v
}

fn header_digest(v: &[u8]) -> [u8; 12] {
    let mut h = Sha256::new();
    h.update(&v[..20]);
    h.update(&v[HEADER..]);
    h.finalize()[..12].try_into().unwrap()
}

/// Check a value found under `key`: intact, and exactly one of the values we generate.
/// Returns (writer, id, version).
fn check_value(key: &str, v: &[u8]) -> Result<(u32, u32, u32), String> {
    if v.len() < HEADER {
        return Err(format!("{key}: torn: {} bytes, shorter than the header", v.len()));
    }
    if &v[..4] != MAGIC {
        return Err(format!("{key}: torn: bad magic {:02x?} ({} bytes)", &v[..4], v.len()));
    }
    let field = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().unwrap());
    let (len, writer, id, version) = (field(4) as usize, field(8), field(12), field(16));
    if len != v.len() {
        return Err(format!("{key}: torn: header says {len} bytes, the item has {}", v.len()));
    }
    if header_digest(v) != v[20..32] {
        return Err(format!("{key}: torn: digest mismatch ({len} bytes, writer {writer} id {id} v{version})"));
    }
    if key_of(writer, id) != key {
        return Err(format!("{key}: holds the value of another name (writer {writer} id {id})"));
    }
    if make_value(writer, id, version) != v {
        return Err(format!("{key}: not the value written as writer {writer} id {id} v{version}"));
    }
    Ok((writer, id, version))
}

#[test]
fn values_verify_themselves() {
    for (w, id, ver) in [(0, 0, 0), (3, 17, 0), (7, SLOT_BASE + 2, 9)] {
        let v = make_value(w, id, ver);
        let key = key_of(w, id);
        assert_eq!(check_value(&key, &v), Ok((w, id, ver)));
        assert!(check_value(&key, &v[..v.len() - 1]).is_err(), "truncated");
        let mut flipped = v.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(check_value(&key, &flipped).is_err(), "a flipped byte");
        let mut zeroed = v.clone();
        zeroed[HEADER..].fill(0);
        if v.len() > HEADER {
            assert!(check_value(&key, &zeroed).is_err(), "zeroed body");
        }
        assert!(check_value(&key_of(w, id + 1), &v).is_err(), "under another name");
    }
    let sizes: Vec<usize> = (0..400).map(|i| value_len(1, i, 0)).collect();
    assert!(sizes.iter().any(|&s| s < 100) && sizes.iter().any(|&s| s > 1 << 20), "sizes vary: {sizes:?}");
    assert!(sizes.iter().all(|&s| (HEADER..=2 << 20).contains(&s)));
}

// ---------------------------------------------------------------------------------------
// kill -9 loop
// ---------------------------------------------------------------------------------------

const CYCLES: usize = 20;
const WRITERS: u32 = 8;
/// Writers 0..UNIQUE_WRITERS write new names; the others overwrite SLOTS names each.
const UNIQUE_WRITERS: u32 = 6;
const SLOTS: u32 = 3;

/// What the test knows about one name.
#[derive(Debug, Clone)]
struct Track {
    writer: u32,
    id: u32,
    /// Highest version sent (whether acknowledged or not).
    sent: u32,
    /// Highest version acknowledged.
    acked: Option<u32>,
    /// Lowest version the name may hold from now on: the last acknowledged or seen one.
    floor: Option<u32>,
    /// Cycle of the last send.
    cycle: usize,
}

#[derive(Default)]
struct Model {
    items: HashMap<String, Track>,
    /// Next new id per writer.
    next_id: HashMap<u32, u32>,
    acked_total: u64,
    sent_total: u64,
    errors: Vec<String>,
}

impl Model {
    /// Choose what `writer` stores next and note it as sent. Returns (key, id, version).
    fn next(&mut self, writer: u32, rng: &mut StdRng, cycle: usize) -> (String, u32, u32) {
        let (id, version) = if writer < UNIQUE_WRITERS {
            let n = self.next_id.entry(writer).or_insert(0);
            *n += 1;
            (*n - 1, 0)
        } else {
            let id = SLOT_BASE + rng.gen_range(0..SLOTS);
            let version = self.items.get(&key_of(writer, id)).map_or(0, |t| t.sent + 1);
            (id, version)
        };
        let key = key_of(writer, id);
        let t = self.items.entry(key.clone()).or_insert(Track {
            writer,
            id,
            sent: version,
            acked: None,
            floor: None,
            cycle,
        });
        t.sent = version;
        t.cycle = cycle;
        self.sent_total += 1;
        (key, id, version)
    }

    fn acked(&mut self, key: &str, version: u32) {
        let t = self.items.get_mut(key).expect("tracked");
        t.acked = Some(t.acked.map_or(version, |a| a.max(version)));
        t.floor = Some(t.floor.map_or(version, |f| f.max(version)));
        self.acked_total += 1;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Store until the daemon goes away; every store answered Ok is recorded as acknowledged.
async fn writer_task(client: Client, writer: u32, model: Arc<Mutex<Model>>, cycle: usize, acks: Arc<AtomicU64>) {
    let mut rng = StdRng::seed_from_u64(seed(writer, cycle as u32, 0xffff));
    loop {
        let (key, id, version) = lock(&model).next(writer, &mut rng, cycle);
        let value = make_value(writer, id, version);
        match client.store(&format!("data/{key}"), value).await {
            Ok(()) => {
                lock(&model).acked(&key, version);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                // The daemon was killed: this store is simply not acknowledged. Any other
                // error is a product bug, reported at the end.
                if e.kind != ErrorKind::ConnectionLost {
                    lock(&model).errors.push(format!("cycle {cycle} writer {writer}: {e} ({:?})", e.kind));
                }
                return;
            }
        }
    }
}

struct CycleReport {
    present: usize,
    loaded: usize,
    unacked_present: usize,
}

/// The items in the store's tree, by key: every file under `data/` that is not a temp
/// file, each at the place its key nests to. Returns key -> size.
fn items_on_disk(root: &Path, cycle: usize) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for path in files_under(&root.join("data")) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".tmp") {
            continue;
        }
        assert_eq!(path, item_path(root, &name), "cycle {cycle}: a stray file in the store");
        out.insert(name, fs::metadata(&path).unwrap().len());
    }
    out
}

/// After a restart: everything acknowledged is there, nothing present is torn, versions
/// never go back. Which items exist comes from the store's tree (every name we ever sent
/// is known, so an unknown one is an error too); values are loaded through the daemon,
/// byte for byte: the names written in `cycle`, every overwritten name and a sample of
/// older ones (all of them with `full`); the sizes of the others are checked.
async fn verify_store(
    c: &Client,
    root: &Path,
    model: &Mutex<Model>,
    cycle: usize,
    full: bool,
    rng: &mut StdRng,
) -> CycleReport {
    let present = items_on_disk(root, cycle);
    // A snapshot: the writers are gone, nothing else changes the model meanwhile.
    let items = lock(model).items.clone();
    let mut report = CycleReport { present: present.len(), loaded: 0, unacked_present: 0 };
    let mut seen = HashMap::new();
    for (key, &size) in &present {
        let t = items
            .get(key)
            .unwrap_or_else(|| panic!("cycle {cycle}: the store holds {key:?} ({size} bytes), which no writer sent"));
        let overwritten = t.id >= SLOT_BASE;
        let load = full || overwritten || t.cycle == cycle || rng.gen_ratio(1, 20);
        let version = if load {
            let v = c.load(&format!("data/{key}"), 0, None, false).await.unwrap_or_else(|e| {
                panic!("cycle {cycle}: loading item {key} failed: {e}");
            });
            report.loaded += 1;
            let (_, _, version) = check_value(key, &v).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            version
        } else {
            // Unique names have one version only; its size is known.
            let want = value_len(t.writer, t.id, 0) as u64;
            assert_eq!(size, want, "cycle {cycle}: {key}: {size} bytes instead of {want}: torn?");
            0
        };
        assert!(version <= t.sent, "cycle {cycle}: {key} holds v{version}, but only up to v{} was sent", t.sent);
        if let Some(floor) = t.floor {
            assert!(
                version >= floor,
                "cycle {cycle}: {key} went back to v{version}; v{floor} was acknowledged (or already seen) before \
                 (last acknowledged: {:?})",
                t.acked
            );
        }
        if !matches!(t.acked, Some(a) if a >= version) {
            report.unacked_present += 1;
        }
        seen.insert(key.clone(), version);
    }
    for (key, t) in &items {
        if let Some(floor) = t.floor {
            assert!(
                seen.contains_key(key),
                "cycle {cycle}: {key} (writer {} id {}) is gone, but v{floor} was acknowledged or seen (last \
                 acknowledged: {:?})",
                t.writer,
                t.id,
                t.acked
            );
            if t.acked.is_some() && (full || t.cycle == cycle) {
                // Also through the daemon (cheap: metadata only).
                let info = c.info(&format!("data/{key}"), false).await.expect("info");
                assert!(info.exists, "cycle {cycle}: the daemon does not see acknowledged {key}");
            }
        }
    }
    // What was seen once must stay (a process crash loses nothing the kernel has).
    let mut model = lock(model);
    for (key, version) in seen {
        let t = model.items.get_mut(&key).unwrap();
        t.floor = Some(t.floor.map_or(version, |f| f.max(version)));
    }
    report
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())).flatten() {
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(e.path());
            } else if kind.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loop_keeps_every_acknowledged_write_and_never_shows_a_torn_item() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = format!("s=file://{}", root.display());
    // Default fsync (batch): what users get.
    let args = ["--store", store.as_str(), "--levels", "s:data/=2"];
    let mut d = Daemon::start_in(dir, &args, &[]);
    d.client("s").await.create().await.expect("create");

    let model = Arc::new(Mutex::new(Model::default()));
    let mut rng = StdRng::seed_from_u64(0x6b696c6c);
    let mut lines = Vec::new();
    for cycle in 0..CYCLES {
        if cycle > 0 {
            d.restart(&args);
        }
        let mut clients = Vec::new();
        for _ in 0..WRITERS {
            clients.push(d.client("s").await);
        }
        let acks = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(w, c)| tokio::spawn(writer_task(c, w as u32, model.clone(), cycle, acks.clone())))
            .collect();
        // Even cycles: a random moment after the writers start (may hit before the first
        // flush pass); odd cycles: a random moment after the first acknowledgement (the
        // writers are in full flow).
        let wait = Duration::from_millis(rng.gen_range(50..=400));
        let anchor = if cycle % 2 == 1 {
            let deadline = Instant::now() + Duration::from_secs(60);
            while acks.load(Ordering::SeqCst) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "cycle {cycle}: no store acknowledged within 60 s; log:\n{}",
                    d.log_text()
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            "first ack"
        } else {
            "start"
        };
        tokio::time::sleep(wait).await;
        d.child.kill().expect("SIGKILL borgstored");
        d.child.wait().expect("reap borgstored");
        let killed_after = started.elapsed();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a writer did not notice the daemon's death within 60 s")
                .expect("writer task");
        }
        let acked_this_cycle = acks.load(Ordering::SeqCst);

        // Restart on the same store and check it.
        d.restart(&args);
        let c = d.client("s").await;
        let report = verify_store(&c, &root, &model, cycle, false, &mut rng).await;
        drop(c);
        lines.push(format!(
            "cycle {cycle:2}: killed {:4} ms after the {anchor} ({} ms), {acked_this_cycle:3} acked; store holds \
             {}, {} loaded, {} hold a value never acknowledged",
            killed_after.as_millis(),
            wait.as_millis(),
            report.present,
            report.loaded,
            report.unacked_present
        ));
        // The next cycle restarts it again.
        d.child.kill().expect("SIGKILL borgstored");
        d.child.wait().expect("reap borgstored");
    }

    // Last: a clean start, every item loaded in full, and every file on disk checked.
    d.restart(&args);
    let c = d.client("s").await;
    let report = verify_store(&c, &root, &model, CYCLES, true, &mut rng).await;
    let mut temps = 0;
    for path in files_under(&root.join("data")) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".tmp") {
            temps += 1;
            continue;
        }
        let v = fs::read(&path).unwrap();
        check_value(&name, &v).unwrap_or_else(|e| panic!("on disk {}: {e}", path.display()));
    }
    let log = d.log_text();
    assert!(!log.contains("panicked"), "the daemon panicked; log:\n{log}");
    let m = lock(&model);
    for l in &lines {
        println!("{l}");
    }
    let slots: Vec<String> = m
        .items
        .values()
        .filter(|t| t.id >= SLOT_BASE)
        .map(|t| format!("w{}/{}: v{} sent, v{} acked", t.writer, t.id - SLOT_BASE, t.sent, t.acked.unwrap_or(0)))
        .collect();
    println!("overwritten names: {}", slots.join("; "));
    println!(
        "{CYCLES} cycles: {} stores sent, {} acknowledged, {} items at the end ({} loaded in full), {} temp files of \
         killed writes left on disk (younger than the sweep age)",
        m.sent_total, m.acked_total, report.present, report.loaded, temps
    );
    assert!(m.errors.is_empty(), "stores failed with errors other than the lost connection:\n{}", m.errors.join("\n"));
    assert!(m.acked_total >= CYCLES as u64, "only {} stores were acknowledged in {CYCLES} cycles", m.acked_total);
}

// ---------------------------------------------------------------------------------------
// strace: flushes before the reply
// ---------------------------------------------------------------------------------------

/// The delay injected into every fsync, fdatasync and syncfs of the traced daemon.
const DELAY: Duration = Duration::from_millis(400);
/// Slack for comparing our clock readings with strace's (same clock, different readers).
const EPSILON: f64 = 0.010;

fn require_strace() {
    let ok = Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "strace is missing: the durability tests count flushes with it: apt-get install strace (tests/run does)"
    );
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// One system call from the strace log.
#[derive(Debug, Clone)]
struct Call {
    name: String,
    /// Entry time (seconds since the epoch).
    entry: f64,
    /// Exit time as strace saw it; an injected delay comes on top of this.
    exit: f64,
    /// Arguments and result.
    text: String,
}

impl Call {
    fn is_sync(&self) -> bool {
        matches!(self.name.as_str(), "fsync" | "fdatasync" | "syncfs")
    }

    /// When the call returned to the daemon (after the injected delay).
    fn returned(&self) -> f64 {
        if self.text.contains("(DELAYED)") {
            self.exit + DELAY.as_secs_f64()
        } else {
            self.exit
        }
    }

    /// The path strace -y shows for the first (fd) argument: `fsync(5</a/b>)`.
    fn fd_path(&self) -> Option<&str> {
        let rest = self.text.trim_start_matches(|c: char| c.is_ascii_digit());
        let rest = rest.strip_prefix('<')?;
        rest.find('>').map(|end| &rest[..end])
    }

    /// The quoted path arguments (`renameat(AT_FDCWD</x>, "/old", AT_FDCWD</x>, "/new")`).
    fn quoted(&self) -> Vec<&str> {
        self.text.split('"').skip(1).step_by(2).collect()
    }
}

/// Parse `strace -f -y -ttt -T` output, joining `<unfinished ...>` and `resumed` halves.
fn parse_trace(text: &str) -> Vec<Call> {
    let mut pending: HashMap<String, (String, f64, String)> = HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        // "PID TIME CALL...": strace pads the pid column.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else { continue };
        let Some((ts, rest)) = rest.trim_start().split_once(' ') else { continue };
        let Ok(ts) = ts.parse::<f64>() else { continue };
        let duration = |s: &str| -> f64 {
            s.rsplit_once('<').and_then(|(_, d)| d.trim_end_matches('>').parse::<f64>().ok()).unwrap_or(0.0)
        };
        if let Some(args) = rest.strip_suffix(" <unfinished ...>") {
            let Some((name, args)) = args.split_once('(') else { continue };
            pending.insert(pid.to_string(), (name.to_string(), ts, args.to_string()));
        } else if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, tail)) = resumed.split_once(" resumed>") else { continue };
            let Some((pname, entry, args)) = pending.remove(pid) else { continue };
            assert_eq!(pname, name, "strace log: resumed a different call: {line}");
            out.push(Call { name: pname, entry, exit: entry + duration(tail), text: format!("{args}{tail}") });
        } else if let Some((name, args)) = rest.split_once('(') {
            if name.starts_with(['-', '+']) || name.contains(' ') {
                continue;
            }
            out.push(Call { name: name.to_string(), entry: ts, exit: ts + duration(args), text: args.to_string() });
        }
    }
    out.sort_by(|a, b| a.entry.total_cmp(&b.entry));
    out
}

const TRACED: &str = "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,\
                      write,writev,pwrite64";

/// `borgstored` running under strace with a delay injected into every flush.
struct Traced {
    strace: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
    trace: PathBuf,
    log: PathBuf,
}

impl Traced {
    fn start(dir: tempfile::TempDir, args: &[&str]) -> Traced {
        require_strace();
        let socket = dir.path().join("borgstored.sock");
        let trace = dir.path().join("strace.log");
        let log = dir.path().join("borgstored.log");
        let logfile = fs::File::create(&log).unwrap();
        let strace = Command::new("strace")
            .args(["-f", "-qq", "-y", "-ttt", "-T", "--seccomp-bpf", "-o"])
            .arg(&trace)
            .args(["-e", TRACED, "-e"])
            .arg(format!("inject=fsync,fdatasync,syncfs:delay_exit={}", DELAY.as_micros()))
            .arg(binary("borgstored"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("start strace (apt-get install strace)");
        let mut t = Traced { strace, _dir: dir, socket, trace, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&t.socket).is_err() {
            if t.strace.try_wait().unwrap().is_some() || Instant::now() > deadline {
                panic!("borgstored under strace did not start; log:\n{}", t.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn client(&self) -> Client {
        let options = borgstore_client::ClientOptions::new("s").socket(&self.socket);
        Client::connect(options).await.expect("connect to the traced borgstored")
    }

    /// The daemon: strace's child.
    fn daemon_pid(&self) -> Option<Pid> {
        let strace = self.strace.id();
        let children = fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok().map(Pid::from_raw)
    }

    /// SIGTERM the daemon, wait for strace to end, and return the calls it saw.
    fn stop(&mut self) -> Vec<Call> {
        let pid = self.daemon_pid().expect("the traced daemon's pid");
        kill(pid, Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.strace.try_wait().unwrap() {
                assert!(status.success(), "borgstored under strace exited with {status}; log:\n{}", self.log_text());
                break;
            }
            assert!(Instant::now() < deadline, "borgstored did not exit after SIGTERM; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        parse_trace(&fs::read_to_string(&self.trace).expect("strace log"))
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(pid) = self.daemon_pid() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

/// A temp dir with an (empty, existing) store directory `s`, so the daemon opens it at
/// start and creating it costs no flush.
fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    fs::create_dir(&root).unwrap();
    (dir, root)
}

/// The path of item `data/KEY` in a store nested `data/=2`.
fn item_path(root: &Path, key: &str) -> PathBuf {
    root.join("data").join(&key[..2]).join(&key[2..4]).join(key)
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// An acknowledged operation: when it was sent and when the reply came (our clock).
#[derive(Debug, Clone, Copy)]
struct Acked {
    sent: f64,
    acked: f64,
}

impl Acked {
    fn took(&self) -> Duration {
        Duration::from_secs_f64(self.acked - self.sent)
    }
}

async fn timed<F: std::future::Future<Output = borgstore_client::Result<()>>>(what: &str, f: F) -> Acked {
    let sent = now();
    f.await.unwrap_or_else(|e| panic!("{what}: {e}"));
    Acked { sent, acked: now() }
}

fn at_least(op: &Acked, delays: u32, what: &str) {
    assert!(
        op.took() >= DELAY * delays,
        "{what} was acknowledged after {:?}, before {delays} injected flush delay(s) of {DELAY:?} could pass",
        op.took()
    );
}

/// The rename that published `item` (from a `*.tmp` beside it) within `op`.
fn publishing_rename<'a>(calls: &'a [Call], item: &Path, op: &Acked, what: &str) -> (&'a Call, String) {
    let item = path_str(item);
    let found = calls.iter().find(|c| {
        c.name.starts_with("rename")
            && c.entry >= op.sent - EPSILON
            && c.entry <= op.acked + EPSILON
            && c.quoted().last() == Some(&item.as_str())
    });
    let r = found.unwrap_or_else(|| panic!("{what}: no rename to {item} in the trace"));
    let tmp = r.quoted()[0].to_string();
    assert!(tmp.ends_with(".tmp") && Path::new(&tmp).parent() == Path::new(&item).parent(), "{what}: {r:?}");
    (r, tmp)
}

/// When the last write of data to `path` ended.
fn last_write(calls: &[Call], path: &str, what: &str) -> f64 {
    calls
        .iter()
        .filter(|c| c.name.contains("write") && c.fd_path() == Some(path))
        .map(|c| c.exit)
        .reduce(f64::max)
        .unwrap_or_else(|| panic!("{what}: no write to {path} in the trace"))
}

/// A flush (`names`) of `path` that began after `after` and returned by `by`.
fn flush_between<'a>(calls: &'a [Call], names: &[&str], path: &str, after: f64, by: f64) -> Option<&'a Call> {
    calls.iter().find(|c| {
        names.contains(&c.name.as_str()) && c.fd_path() == Some(path) && c.entry >= after && c.returned() <= by
    })
}

fn syncs_in<'a>(calls: &'a [Call], op: &Acked) -> Vec<&'a Call> {
    calls.iter().filter(|c| c.is_sync() && c.entry >= op.sent && c.entry <= op.acked).collect()
}

fn show(calls: &[&Call]) -> String {
    calls.iter().map(|c| format!("  {:.6} {}({}\n", c.entry, c.name, c.text)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_off_makes_no_flush_calls() {
    let (dir, root) = store_dir();
    let store = format!("s=file://{}", root.display());
    let mut t = Traced::start(dir, &["--store", &store, "--levels", "s:data/=2", "--fsync", "s=off"]);
    let c = t.client().await;
    let keys: Vec<String> = (0..8).map(|i| key_of(90, i)).collect();
    let mut ops = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        ops.push(timed("store with fsync=off", c.store(&format!("data/{key}"), make_value(90, i as u32, 0))).await);
    }
    c.delete(&format!("data/{}", keys[0]), false).await.expect("delete");
    c.move_(&format!("data/{}", keys[1]), MoveAction::Delete).await.expect("soft delete");
    let renamed = key_of(91, 0);
    c.move_(&format!("data/{}", keys[2]), MoveAction::Rename { new_name: format!("data/{renamed}"), deleted: false })
        .await
        .expect("move");
    assert_eq!(c.load(&format!("data/{renamed}"), 0, None, false).await.unwrap(), make_value(90, 2, 0));
    drop(c);
    let calls = t.stop();
    let renames = calls.iter().filter(|c| c.name.starts_with("rename")).count();
    assert!(renames >= keys.len() + 2, "the trace misses the daemon's renames ({renames}): strace did not follow it");
    let syncs: Vec<&Call> = calls.iter().filter(|c| c.is_sync()).collect();
    assert!(syncs.is_empty(), "fsync = off, yet the daemon flushed:\n{}", show(&syncs));
    // Negative control on a real trace: the checks the batch test relies on refuse these
    // unflushed stores.
    for (key, op) in keys.iter().zip(&ops).skip(3) {
        let item = item_path(&root, key);
        let refused = std::panic::catch_unwind(|| assert_batch_store(&calls, &path_str(&root), &item, op, "off"));
        assert!(refused.is_err(), "the batch checks accepted an unflushed store of {key}");
    }
    println!("fsync=off: {} stores, a delete and two moves: {renames} renames, 0 flushes", keys.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_always_flushes_file_and_directories_before_each_reply() {
    let (dir, root) = store_dir();
    let store = format!("s=file://{}", root.display());
    let mut t = Traced::start(dir, &["--store", &store, "--levels", "s:data/=2", "--fsync", "s=always"]);
    let c = t.client().await;
    // Two items in one (new) directory, then one whose directory already exists.
    let first = key_of(80, 0);
    let second = format!("{}{}", &first[..4], &key_of(80, 1)[4..]);
    let value = |i: u32| make_value(80, i, 0);
    let s1 = timed("store 1", c.store(&format!("data/{first}"), value(0))).await;
    let s2 = timed("store 2", c.store(&format!("data/{second}"), value(1))).await;
    let del = timed("delete", c.delete(&format!("data/{first}"), false)).await;
    let soft = timed("soft delete", c.move_(&format!("data/{second}"), MoveAction::Delete)).await;
    // A move into a directory that does not exist yet.
    let moved = key_of(81, 0);
    let mv = timed(
        "move",
        c.move_(&format!("data/{second}"), MoveAction::Rename { new_name: format!("data/{moved}"), deleted: true }),
    )
    .await;
    drop(c);
    let calls = t.stop();

    for (op, key, what) in [(&s1, &first, "store 1 (new directories)"), (&s2, &second, "store 2")] {
        at_least(op, 2, what);
        let item = item_path(&root, key);
        let dir = path_str(item.parent().unwrap());
        let (rename, tmp) = publishing_rename(&calls, &item, op, what);
        let written = last_write(&calls, &tmp, what);
        assert!(
            flush_between(&calls, &["fdatasync", "fsync"], &tmp, written, rename.entry).is_some(),
            "{what}: the temp file {tmp} was not flushed between its last write and its rename; syncs:\n{}",
            show(&syncs_in(&calls, op))
        );
        assert!(
            flush_between(&calls, &["fsync"], &dir, rename.exit, op.acked + EPSILON).is_some(),
            "{what}: the directory {dir} was not flushed between the rename and the reply; syncs:\n{}",
            show(&syncs_in(&calls, op))
        );
        assert!(syncs_in(&calls, op).len() >= 2, "{what}: fewer than 2 flushes:\n{}", show(&syncs_in(&calls, op)));
    }
    // Store 1 made data/, data/xx/ and data/xx/yy/: each is an entry of its parent, flushed
    // before the reply.
    let mkdirs: Vec<&Call> =
        calls.iter().filter(|c| c.name.starts_with("mkdir") && c.entry >= s1.sent && c.entry <= s1.acked).collect();
    assert!(!mkdirs.is_empty(), "store 1 into an empty store made no directories? {mkdirs:?}");
    for m in &mkdirs {
        let made = m.quoted()[0].to_string();
        let parent = path_str(Path::new(&made).parent().unwrap());
        assert!(
            flush_between(&calls, &["fsync"], &parent, m.exit, s1.acked + EPSILON).is_some(),
            "store 1 made {made} but did not flush {parent} before the reply; syncs:\n{}",
            show(&syncs_in(&calls, &s1))
        );
    }

    // Delete: unlink, then the directory flushed before the reply.
    at_least(&del, 1, "delete");
    let gone = path_str(&item_path(&root, &first));
    let unlink = calls
        .iter()
        .find(|c| c.name.starts_with("unlink") && c.quoted().first() == Some(&gone.as_str()))
        .unwrap_or_else(|| panic!("delete: no unlink of {gone}"));
    let dir = path_str(Path::new(&gone).parent().unwrap());
    assert!(
        flush_between(&calls, &["fsync"], &dir, unlink.exit, del.acked + EPSILON).is_some(),
        "delete: {dir} not flushed between the unlink and the reply:\n{}",
        show(&syncs_in(&calls, &del))
    );

    // Soft delete: a rename in place, the directory flushed before the reply.
    at_least(&soft, 1, "soft delete");
    let soft_item = item_path(&root, &format!("{second}.del"));
    let soft_rename = calls
        .iter()
        .find(|c| c.name.starts_with("rename") && c.quoted().last() == Some(&path_str(&soft_item).as_str()))
        .unwrap_or_else(|| panic!("soft delete: no rename to {}", soft_item.display()));
    assert!(
        flush_between(&calls, &["fsync"], &dir, soft_rename.exit, soft.acked + EPSILON).is_some(),
        "soft delete: {dir} not flushed between the rename and the reply:\n{}",
        show(&syncs_in(&calls, &soft))
    );

    // Move across directories: both directories (and the new ones' parents) flushed.
    at_least(&mv, 2, "move across directories");
    let to = item_path(&root, &format!("{moved}.del"));
    let mv_rename = calls
        .iter()
        .find(|c| c.name.starts_with("rename") && c.quoted().last() == Some(&path_str(&to).as_str()))
        .unwrap_or_else(|| panic!("move: no rename to {}", to.display()));
    for d in [path_str(to.parent().unwrap()), dir.clone()] {
        assert!(
            flush_between(&calls, &["fsync"], &d, mv_rename.exit, mv.acked + EPSILON).is_some(),
            "move: {d} not flushed between the rename and the reply:\n{}",
            show(&syncs_in(&calls, &mv))
        );
    }
    for m in calls.iter().filter(|c| c.name.starts_with("mkdir") && c.entry >= mv.sent && c.entry <= mv.acked) {
        let parent = path_str(Path::new(m.quoted()[0]).parent().unwrap());
        assert!(
            flush_between(&calls, &["fsync"], &parent, m.exit, mv.acked + EPSILON).is_some(),
            "move made {} but did not flush {parent} before the reply",
            m.quoted()[0]
        );
    }
    assert!(calls.iter().all(|c| c.name != "syncfs"), "always flushes files and directories, not the file system");
    println!(
        "fsync=always: store into new dirs {:?} ({} flushes), store {:?} ({} flushes), delete {:?}, soft delete {:?}, \
         move {:?} ({} flushes); injected delay {DELAY:?}",
        s1.took(),
        syncs_in(&calls, &s1).len(),
        s2.took(),
        syncs_in(&calls, &s2).len(),
        del.took(),
        soft.took(),
        mv.took(),
        syncs_in(&calls, &mv).len()
    );
}

/// Batch mode: the rename of `item` came after a syncfs pass that began after its data was
/// written, and the reply after a pass that began after the rename.
fn assert_batch_store(calls: &[Call], root: &str, item: &Path, op: &Acked, what: &str) {
    let (rename, tmp) = publishing_rename(calls, item, op, what);
    let written = last_write(calls, &tmp, what);
    let data_pass = flush_between(calls, &["syncfs"], root, written, rename.entry);
    assert!(
        data_pass.is_some(),
        "{what}: renamed at {:.6} without a syncfs pass that began after its data was written ({written:.6}); \
         passes:\n{}",
        rename.entry,
        show(&calls.iter().filter(|c| c.name == "syncfs").collect::<Vec<_>>())
    );
    let rename_pass = flush_between(calls, &["syncfs"], root, rename.exit, op.acked + EPSILON);
    assert!(
        rename_pass.is_some(),
        "{what}: acknowledged at {:.6} without a syncfs pass that began after its rename ({:.6}); passes:\n{}",
        op.acked,
        rename.exit,
        show(&calls.iter().filter(|c| c.name == "syncfs").collect::<Vec<_>>())
    );
}

/// The trace checks themselves: they accept the order the product must keep and refuse
/// a rename before the data pass and a reply before the rename pass.
#[test]
fn trace_checks_tell_flushed_from_unflushed_writes() {
    let trace = |first_pass: &str| {
        format!(
            "100  1000.000000 write(5</r/data/aa/bb/tmpX.tmp>, \"BsDv\"..., 10) = 10 <0.000010>\n\
             101  {first_pass} syncfs(3</r>) = 0 (DELAYED) <0.000100>\n\
             100  1000.402000 renameat(AT_FDCWD</w>, \"/r/data/aa/bb/tmpX.tmp\", AT_FDCWD</w>, \
             \"/r/data/aa/bb/aabbcc\") = 0 <0.000010>\n\
             101  1000.403000 syncfs(3</r> <unfinished ...>\n\
             102   1000.403100 write(9<socket:[1]>, \"x\", 1) = 1 <0.000001>\n\
             101  1000.404000 <... syncfs resumed>) = 0 (DELAYED) <0.001000>\n"
        )
    };
    let item = Path::new("/r/data/aa/bb/aabbcc");
    let good = parse_trace(&trace("1000.001000"));
    assert_eq!(
        good.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["write", "syncfs", "renameat", "syncfs", "write"]
    );
    assert_eq!(good[1].fd_path(), Some("/r"));
    assert!((good[3].returned() - 1000.804).abs() < 1e-6, "resumed + injected delay");
    assert_batch_store(&good, "/r", item, &Acked { sent: 999.9, acked: 1000.81 }, "in order");
    let refused = |calls: Vec<Call>, acked: f64| {
        std::panic::catch_unwind(move || {
            assert_batch_store(&calls, "/r", item, &Acked { sent: 999.9, acked }, "out of order")
        })
        .is_err()
    };
    assert!(refused(good.clone(), 1000.6), "a reply before the rename pass returned");
    assert!(refused(parse_trace(&trace("999.999000")), 1000.81), "a data pass that began before the write");
    assert!(refused(parse_trace(&trace("1000.100000")), 1000.81), "a rename before the data pass returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fsync_batch_group_commit_flushes_before_each_reply_and_shares_passes() {
    let (dir, root) = store_dir();
    let store = format!("s=file://{}", root.display());
    // No --fsync: batch is the default.
    let mut t = Traced::start(dir, &["--store", &store, "--levels", "s:data/=2"]);
    // The socket accepts before the stores are logged: wait for the line.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !t.log_text().contains("fsync = batch") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t.log_text().contains("fsync = batch"), "batch is the default; log:\n{}", t.log_text());
    let c = t.client().await;

    // One store alone: a data pass and a rename pass.
    let single = key_of(70, 0);
    let one = timed("single store", c.store(&format!("data/{single}"), make_value(70, 0, 0))).await;

    // 16 connections, one store each, all at once.
    const N: u32 = 16;
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(t.client().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(N as usize));
    let phase_start = now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let i = i as u32 + 1;
                barrier.wait().await;
                let key = key_of(70, i);
                let op = timed("concurrent store", client.store(&format!("data/{key}"), make_value(70, i, 0))).await;
                (key, op)
            })
        })
        .collect();
    let mut concurrent = Vec::new();
    for task in tasks {
        concurrent.push(tokio::time::timeout(Duration::from_secs(120), task).await.expect("16 stores hang").unwrap());
    }
    let phase_end = now();

    let del = timed("delete", c.delete(&format!("data/{single}"), false)).await;
    let moved = key_of(71, 0);
    let mv = timed(
        "move",
        c.move_(
            &format!("data/{}", concurrent[0].0),
            MoveAction::Rename { new_name: format!("data/{moved}"), deleted: false },
        ),
    )
    .await;
    drop(c);
    let calls = t.stop();
    let root_s = path_str(&root);

    at_least(&one, 2, "a single batch store (data pass + rename pass)");
    assert_batch_store(&calls, &root_s, &item_path(&root, &single), &one, "single store");

    for (key, op) in &concurrent {
        at_least(op, 2, "each of 16 concurrent batch stores (data pass + rename pass)");
        assert_batch_store(&calls, &root_s, &item_path(&root, key), op, "concurrent store");
    }
    let passes: Vec<&Call> = calls
        .iter()
        .filter(|c| c.name == "syncfs" && c.entry >= phase_start - EPSILON && c.entry <= phase_end + EPSILON)
        .collect();
    assert!(
        passes.len() <= 12,
        "16 concurrent stores took {} syncfs passes: group commit should share them (one each would be 32)",
        passes.len()
    );
    assert!(passes.iter().all(|p| p.fd_path() == Some(root_s.as_str())), "passes flush the store's file system");

    // Delete and move: one pass after the change, before the reply.
    at_least(&del, 1, "delete");
    let gone = path_str(&item_path(&root, &single));
    let unlink = calls
        .iter()
        .find(|c| c.name.starts_with("unlink") && c.quoted().first() == Some(&gone.as_str()))
        .unwrap_or_else(|| panic!("delete: no unlink of {gone}"));
    assert!(
        flush_between(&calls, &["syncfs"], &root_s, unlink.exit, del.acked + EPSILON).is_some(),
        "delete acknowledged without a syncfs pass after the unlink"
    );
    at_least(&mv, 1, "move");
    let to = path_str(&item_path(&root, &moved));
    let mv_rename = calls
        .iter()
        .find(|c| c.name.starts_with("rename") && c.quoted().last() == Some(&to.as_str()))
        .unwrap_or_else(|| panic!("move: no rename to {to}"));
    assert!(
        flush_between(&calls, &["syncfs"], &root_s, mv_rename.exit, mv.acked + EPSILON).is_some(),
        "move acknowledged without a syncfs pass after the rename"
    );
    let slowest = concurrent.iter().map(|(_, op)| op.took()).max().unwrap();
    let fastest = concurrent.iter().map(|(_, op)| op.took()).min().unwrap();
    println!(
        "fsync=batch: single store {:?} ({} passes); 16 concurrent stores on 16 connections: {} syncfs passes, \
         acknowledged after {fastest:?} .. {slowest:?}; delete {:?}, move {:?}; injected delay {DELAY:?}",
        one.took(),
        syncs_in(&calls, &one).len(),
        passes.len(),
        del.took(),
        mv.took()
    );
}

// ---------------------------------------------------------------------------------------
// Stale temp files
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn stale_temp_files_are_swept_at_open_and_fresh_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let age = |p: &Path| {
        fs::File::options().write(true).open(p).unwrap().set_modified(hour_ago).unwrap();
    };
    let put = |rel: &str, bytes: &[u8], old: bool| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        if old {
            age(&p);
        }
        p
    };
    // Items, some of them old: they stay.
    let mut items = Vec::new();
    for i in 0..4u32 {
        let key = key_of(60, i);
        let value = make_value(60, i, 0);
        put(&format!("data/{}/{}/{key}", &key[..2], &key[2..4]), &value, i % 2 == 0);
        items.push((key, value));
    }
    put("config/settings", b"cfg", true);
    let k = &items[0].0;
    let nest = format!("data/{}/{}", &k[..2], &k[2..4]);
    let old = [
        put(&format!("{nest}/tmpAbC123.tmp"), b"half a value", true),
        put("data/tmpXyZ789.tmp", b"", true),
        put("tmpRoot01.tmp", b"x", true),
    ];
    let fresh = [put(&format!("{nest}/tmpFresh1.tmp"), b"a live write", false), put("data/tmpFresh2.tmp", b"y", false)];
    // Old, but not temp files of ours: a directory named *.tmp and a file with another suffix.
    fs::create_dir_all(root.join("data/olddir.tmp")).unwrap();
    let not_tmp = put("data/notes.tmp.keep", b"keep", true);

    let store = format!("s=file://{}", root.display());
    let d = Daemon::start_in(dir, &["--store", &store, "--levels", "s:data/=2"], &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while old.iter().any(|p| p.exists()) {
        assert!(Instant::now() < deadline, "stale temp files still there after 60 s; log:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in fresh.iter().chain([&not_tmp]) {
        assert!(p.exists(), "{} must stay", p.display());
    }
    assert!(root.join("data/olddir.tmp").is_dir(), "a directory is never swept");
    assert!(root.join("config/settings").exists());
    let c = d.client("s").await;
    for (key, value) in &items {
        assert_eq!(&c.load(&format!("data/{key}"), 0, None, false).await.unwrap(), value, "item {key} must stay");
    }
    // The log line may come a moment after the last removal.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log_text().contains("removed 3 stale temp file(s)") {
        assert!(Instant::now() < deadline, "the log does not say how many were removed:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// sftp: fsync@openssh.com before the rename
// ---------------------------------------------------------------------------------------

/// strace following sshd (the listener and every session it forks).
struct SshdTrace {
    strace: Child,
    trace: PathBuf,
}

impl SshdTrace {
    fn attach(sshd: &Sshd) -> SshdTrace {
        require_strace();
        let pid_file = sshd.dir().join("sshd.pid");
        let pid = fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let pid = pid.trim().to_string();
        let trace = sshd.dir().join("sshd.strace");
        let mut strace = Command::new("strace")
            .args(["-f", "-y", "-ttt", "-T", "-o"])
            .arg(&trace)
            .args(["-e", "trace=fsync,fdatasync,rename,renameat,renameat2,write,pwrite64", "-p", &pid])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strace (apt-get install strace)");
        // strace says "Process N attached" on stderr once it traces the listener.
        let stderr = strace.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("attached") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20)).expect("strace did not attach to sshd within 20 s");
        SshdTrace { strace, trace }
    }

    /// Detach (strace writes out everything on SIGTERM) and return the calls it saw.
    fn finish(&mut self) -> Vec<Call> {
        let _ = kill(Pid::from_raw(self.strace.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.strace.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "strace did not detach from sshd within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        parse_trace(&fs::read_to_string(&self.trace).unwrap_or_default())
    }
}

impl Drop for SshdTrace {
    fn drop(&mut self) {
        let _ = self.strace.kill();
        let _ = self.strace.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_fsync_on_flushes_each_temp_file_on_the_server_before_the_rename_and_off_does_not() {
    let sshd = tokio::task::spawn_blocking(Sshd::start).await.unwrap();
    let mut trace = SshdTrace::attach(&sshd);
    let env_owned = sshd.env();
    let env: Vec<(&str, &str)> = env_owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut stores = BTreeMap::new();
    for mode in ["always", "batch", "off"] {
        let url = sshd.abs_url();
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start_in(
            dir,
            &["--store", &format!("s={url}"), "--levels", "s:data/=2", "--fsync", &format!("s={mode}")],
            &env,
        );
        let c = d.client("s").await;
        c.create().await.unwrap_or_else(|e| panic!("create sftp store ({mode}): {e}"));
        let mut keys = Vec::new();
        for i in 0..3u32 {
            let key = key_of(50, i);
            let value = make_value(50, i, 0);
            c.store(&format!("data/{key}"), value.clone()).await.unwrap_or_else(|e| panic!("sftp store ({mode}): {e}"));
            assert_eq!(c.load(&format!("data/{key}"), 0, None, false).await.unwrap(), value);
            keys.push(key);
        }
        drop(c);
        drop(d);
        stores.insert(mode, (sshd.local_path(&url), keys));
    }
    let calls = trace.finish();
    let mut counts = Vec::new();
    for (mode, (root, keys)) in &stores {
        let root_s = path_str(root);
        let fsyncs: Vec<&Call> = calls
            .iter()
            .filter(|c| c.is_sync() && c.fd_path().is_some_and(|p| p.starts_with(&format!("{root_s}/"))))
            .collect();
        for key in keys {
            let item = path_str(&item_path(root, key));
            let rename = calls
                .iter()
                .find(|c| c.name.starts_with("rename") && c.quoted().last() == Some(&item.as_str()))
                .unwrap_or_else(|| {
                    panic!("sftp {mode}: the server did not rename anything to {item} (is strace following sshd?)")
                });
            let tmp = rename.quoted()[0].to_string();
            assert!(tmp.ends_with(".tmp"), "sftp {mode}: renamed from {tmp}");
            let flushed =
                calls.iter().any(|c| c.name == "fsync" && c.fd_path() == Some(tmp.as_str()) && c.exit <= rename.entry);
            if *mode == "off" {
                assert!(!flushed, "sftp fsync=off: the server flushed {tmp}");
            } else {
                let written = last_write(&calls, &tmp, "sftp");
                assert!(
                    calls.iter().any(|c| c.name == "fsync"
                        && c.fd_path() == Some(tmp.as_str())
                        && c.entry >= written
                        && c.exit <= rename.entry),
                    "sftp fsync={mode}: the server did not fsync {tmp} after its data and before renaming it to \
                     {item}; fsyncs under the store:\n{}",
                    show(&fsyncs)
                );
            }
        }
        if *mode == "off" {
            assert!(fsyncs.is_empty(), "sftp fsync=off: the server flushed files of the store:\n{}", show(&fsyncs));
        }
        counts.push(format!("{mode}: {} server fsyncs for {} stores", fsyncs.len(), keys.len()));
    }
    println!("sftp: {}", counts.join("; "));
}
