//! The sftp backend against a real OpenSSH sshd (issue 5), beyond the conformance suite:
//!
//! - interop: a store our engine writes over sftp (namespace `data/` at level 2, soft
//!   and hard deletes) is read identically by Python borgstore 0.7.0 (paramiko) on the
//!   same `sftp://` URL, and the reverse; undeletes by one side show on the other; both
//!   leave the same files behind.
//! - faults: sshd killed mid-run and restarted, sshd gone for good, sshd frozen: every
//!   operation finishes within a bounded time, succeeds after reconnecting or fails with
//!   ConnectionLost, and no partial value ever becomes visible.
//! - host keys and authentication: mismatching, unknown, hashed and revoked known_hosts
//!   entries; rejected, encrypted and missing keys, `~/.ssh/id_ed25519`, a real ssh-agent;
//!   and the environment variables `from_url` reads (in a child process).
//! - pooling: concurrent operations spread over up to `connections` SSH connections
//!   (opened on demand, counted at the server), one when `connections = 1`; a pooled
//!   connection killed under load is replaced on its own, operations still succeed and
//!   the cut-off stores' temp files are removed.
//! - scale: listing 10,000 items, storing/loading/hashing a 256 MiB value (timings are
//!   printed; run with `--nocapture` to see them).

use borgstore_daemon::backends::sftp::{Sftp, SftpOptions};
use borgstore_daemon::backends::url::{backend_from_url, BackendOptions};
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::store::config::namespaces;
use borgstore_daemon::store::{Emulator, Store};
use borgstore_daemon::Backend;
use borgstore_ipc::ErrorKind;
use borgstore_tests::python::{python, workspace};
use borgstore_tests::scenario::{self, key, names, tree};
use borgstore_tests::sshd::Sshd;
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run `f(i)` for `i in 0..n` with at most `width` running at once; panics on errors.
async fn for_each_concurrent<F, Fut>(n: usize, width: usize, f: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        if set.len() >= width {
            set.join_next().await.unwrap().unwrap();
        }
        set.spawn(f(i));
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

async fn start_sshd() -> Arc<Sshd> {
    Arc::new(tokio::task::spawn_blocking(Sshd::start).await.unwrap())
}

// ---------------------------------------------------------------- interop with Python

fn engine(sshd: &Sshd, url: &str) -> Store {
    Store::with_emulator(sshd.backend(url), scenario::namespaces(), Emulator::OFF)
}

/// Run `tests/python/sftp_interop.py ARGS` with Python borgstore 0.7.0 against `sshd`.
async fn py(sshd: &Sshd, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new(python(borgstore_tests::python::Version::V070));
    cmd.arg(workspace().join("tests/python/sftp_interop.py")).args(args);
    for (k, v) in sshd.env() {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run python")).await.unwrap();
    assert!(
        out.status.success(),
        "sftp_interop.py {args:?} failed:\n{}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn py_dump(sshd: &Sshd, url: &str) -> Value {
    serde_json::from_str(&py(sshd, &["dump", url]).await).unwrap()
}

async fn rust_write(sshd: &Sshd, url: &str) {
    scenario::write(&engine(sshd, url)).await;
}

/// What sftp_interop.py `dump` prints, seen through our engine.
async fn rust_dump(sshd: &Sshd, url: &str) -> Value {
    Value::Object(scenario::dump(&engine(sshd, url), false).await)
}

async fn rust_undelete(sshd: &Sshd, url: &str, name: &str) {
    scenario::undelete(&engine(sshd, url), name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_rust_read_each_others_stores() {
    let t0 = Instant::now();
    let sshd = start_sshd().await;

    // Ours writes (relative URL), both read the same.
    let ours_url = sshd.url();
    rust_write(&sshd, &ours_url).await;
    let ours = rust_dump(&sshd, &ours_url).await;
    scenario::check(&ours);
    assert_eq!(py_dump(&sshd, &ours_url).await, ours, "Python sees a store we wrote over sftp differently");

    // Python writes (absolute URL), both read the same, and the same as ours.
    let theirs_url = sshd.abs_url();
    assert!(theirs_url.contains("//") && theirs_url.split("//").nth(2).is_some(), "{theirs_url}");
    py(&sshd, &["write", &theirs_url]).await;
    let theirs = py_dump(&sshd, &theirs_url).await;
    assert_eq!(theirs, ours, "the same scenario gives the same store");
    assert_eq!(rust_dump(&sshd, &theirs_url).await, theirs, "we see a Python-written store differently");

    // Same files in the same places with the same bytes, no temp files left.
    let (a, b) = (sshd.local_path(&ours_url), sshd.local_path(&theirs_url));
    assert_eq!(tree(&a), tree(&b));
    assert!(tree(&a).iter().all(|p| !p.ends_with(".tmp")));
    let k1 = &key(1)[5..];
    assert!(tree(&a).contains(&format!("data/{}/{}/{k1}", &k1[..2], &k1[2..4])), "level 2 nesting");
    for rel in tree(&a) {
        assert_eq!(std::fs::read(a.join(&rel)).unwrap(), std::fs::read(b.join(&rel)).unwrap(), "{rel}");
    }

    // An undelete by one side shows on the other.
    py(&sshd, &["undelete", &ours_url, &key(3)]).await;
    let after = rust_dump(&sshd, &ours_url).await;
    assert!(names(&after, "list").contains(&key(3)) && !names(&after, "deleted").contains(&key(3)));
    rust_undelete(&sshd, &theirs_url, &key(7)).await;
    let after = py_dump(&sshd, &theirs_url).await;
    assert!(names(&after, "list").contains(&key(7)) && !names(&after, "deleted").contains(&key(7)));
    assert_eq!(rust_dump(&sshd, &theirs_url).await, after);
    println!("interop over sftp: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------- host keys, auth, env

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_key_is_refused_clearly() {
    let sshd = start_sshd().await;
    let url = sshd.url();
    sshd.backend(&url).create().await.unwrap();

    // A different ed25519 key recorded for [127.0.0.1]:PORT.
    let other = sshd.dir().join("other_host_key");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let wrong = sshd.dir().join("wrong_known_hosts");
    std::fs::write(&wrong, format!("# a comment\n[127.0.0.1]:{} {other_pub}", sshd.port())).unwrap();
    let mut o = sshd.options();
    o.known_hosts = vec![wrong.clone()];
    let e = sshd.backend_with(&url, o).open().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Backend, "{e}");
    assert!(e.message.contains("HOST KEY MISMATCH"), "{e}");
    assert!(e.message.contains(&format!("[127.0.0.1]:{}", sshd.port())), "{e}");
    assert!(e.message.contains("SHA256:"), "shows the fingerprint: {e}");
    assert!(e.message.contains(&format!("{}:2", wrong.display())), "names the file and line: {e}");
    assert!(e.message.contains("man-in-the-middle"), "{e}");

    // Unknown host: no entry at all (and no file at all).
    for files in [vec![sshd.dir().join("missing_known_hosts")], vec![]] {
        let mut o = sshd.options();
        o.known_hosts = files;
        let e = sshd.backend_with(&url, o).open().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Backend, "{e}");
        assert!(e.message.contains("is not a known host") && e.message.contains("ssh-keyscan -p"), "{e}");
    }

    // The right key on a line for another port does not count.
    let other_port = sshd.dir().join("other_port_known_hosts");
    let right = std::fs::read_to_string(sshd.known_hosts()).unwrap();
    std::fs::write(&other_port, right.replace(&format!(":{} ", sshd.port()), ":1 ")).unwrap();
    let mut o = sshd.options();
    o.known_hosts = vec![other_port];
    assert!(sshd.backend_with(&url, o).open().await.unwrap_err().message.contains("is not a known host"));

    // Hashed entries (ssh-keygen -H) work, and a revoked key is refused.
    let hashed = sshd.dir().join("hashed_known_hosts");
    std::fs::copy(sshd.known_hosts(), &hashed).unwrap();
    let out = std::process::Command::new("ssh-keygen").arg("-H").arg("-f").arg(&hashed).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&hashed).unwrap().starts_with("|1|"));
    let mut o = sshd.options();
    o.known_hosts = vec![hashed.clone()];
    let be = sshd.backend_with(&url, o.clone());
    be.open().await.unwrap();
    be.close().await.unwrap();
    let host_pub = right.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
    let revoked = sshd.dir().join("revoked");
    std::fs::write(&revoked, format!("@revoked * {host_pub}\n")).unwrap();
    o.known_hosts = vec![hashed, revoked];
    let e = sshd.backend_with(&url, o).open().await.unwrap_err();
    assert!(e.message.contains("@revoked"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_are_clear() {
    let sshd = start_sshd().await;
    let url = sshd.url();
    // A key the server does not know.
    let stranger = sshd.dir().join("stranger");
    let out =
        std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&stranger).output();
    assert!(out.unwrap().status.success());
    let mut o = sshd.options();
    o.identity_files = vec![stranger.clone()];
    let e = sshd.backend_with(&url, o).create().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert!(e.message.contains("authentication") && e.message.contains(&stranger.display().to_string()), "{e}");
    // An encrypted key is reported, not prompted for; a missing one too.
    let locked = sshd.dir().join("locked");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
        .arg(&locked)
        .output();
    assert!(out.unwrap().status.success());
    let mut o = sshd.options();
    o.identity_files = vec![locked, sshd.dir().join("nonexistent")];
    let e = sshd.backend_with(&url, o).create().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert!(e.message.contains("encrypted") && e.message.contains("does not exist"), "{e}");
    // The second of several keys is the right one: still fine.
    let mut o = sshd.options();
    o.identity_files = vec![stranger, sshd.client_key()];
    sshd.backend_with(&url, o).create().await.unwrap();
    // The default ~/.ssh/id_ed25519 of a home directory is found.
    let home = sshd.dir().join("userhome");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::copy(sshd.client_key(), home.join(".ssh/id_ed25519")).unwrap();
    let mut o = sshd.options();
    o.identity_files.clear();
    o.home = Some(home);
    o.default_identities = true;
    let be = sshd.backend_with(&url, o);
    be.open().await.unwrap();
    be.close().await.unwrap();
}

/// Keys held by a real ssh-agent (only there: no key file is configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_from_ssh_agent() {
    let sshd = start_sshd().await;
    let sock = sshd.dir().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (apt-get install openssh-client)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A key the server does not accept first, then the right one: both offered in turn.
    let stranger = sshd.dir().join("agent_stranger");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(out.status.success());
    for key in [stranger, sshd.client_key()] {
        let out = std::process::Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &sock).output().unwrap();
        assert!(out.status.success(), "ssh-add: {}", String::from_utf8_lossy(&out.stderr));
    }
    let url = sshd.url();
    let mut o = sshd.options();
    o.identity_files.clear();
    o.agent_socket = Some(sock.clone());
    let be = sshd.backend_with(&url, o.clone());
    be.create().await.unwrap();
    be.open().await.unwrap();
    be.store("k", Bytes::from_static(b"agent")).await.unwrap();
    be.close().await.unwrap();
    // A dead agent socket is reported, not a hang.
    let _ = agent.kill();
    let _ = agent.wait();
    let e = sshd.backend_with(&url, o).open().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
    assert!(e.message.contains("ssh-agent"), "{e}");
}

/// `from_url` (what the daemon uses) takes key, known_hosts and timeouts from the
/// environment. The environment is set for a child process (this test binary, running
/// just this test), never changed in this multi-threaded one.
#[test]
fn from_url_reads_the_environment() {
    if let Ok(url) = std::env::var("BORGSTORE_TEST_SFTP_URL") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        return rt.block_on(async {
            let be = backend_from_url(&url, BackendOptions::default()).unwrap();
            be.create().await.unwrap();
            be.open().await.unwrap();
            be.store("config/x", Bytes::from_static(b"via env")).await.unwrap();
            assert_eq!(&be.load("config/x", 0, None).await.unwrap()[..], b"via env");
            be.close().await.unwrap();
            // And through our engine.
            let s = Store::with_emulator(be, namespaces(&[("", &[0])]).unwrap(), Emulator::OFF);
            s.open().await.unwrap();
            assert_eq!(s.list("config", false).unwrap().collect().await.unwrap().len(), 1);
            s.close().await.unwrap();
            println!("CHILD DONE");
        });
    }
    let sshd = Sshd::start();
    let url = sshd.url();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "from_url_reads_the_environment", "--nocapture", "--test-threads=1"]);
    for (k, v) in sshd.env() {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.env("BORGSTORE_TEST_SFTP_URL", &url).env("BORGSTORE_SFTP_RECONNECT_WAIT", "0.2");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD DONE"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(sshd.local_path(&url).join("config/x")).unwrap(), b"via env");
    // A bad value is refused with a clear error, not ignored.
    cmd.env("BORGSTORE_SFTP_TIMEOUT", "soon");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("BORGSTORE_SFTP_TIMEOUT"), "{stderr}");
}

// ---------------------------------------------------------------- faults

/// A value whose bytes are all the same: a partial or mixed value is easy to spot.
fn uniform(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8 + 1; 512 * 1024 + i * 1000])
}

fn check_uniform(v: &[u8], what: &str) {
    assert!(!v.is_empty(), "{what}: empty value");
    let i = (v[0] - 1) as usize;
    assert!(v.iter().all(|&b| b == v[0]), "{what}: mixed bytes: a partial value is visible");
    let extra = v.len().checked_sub(512 * 1024).unwrap_or_else(|| panic!("{what}: a short (partial) value"));
    assert!(extra / 1000 * 1000 == extra && extra / 1000 % 251 == i, "{what}: size");
}

fn fault_options(sshd: &Sshd) -> SftpOptions {
    let mut o = sshd.options();
    o.connect_timeout = Duration::from_secs(3);
    o.request_timeout = Duration::from_secs(3);
    o.reconnect_tries = 5;
    o.reconnect_wait = Duration::from_millis(300);
    o
}

/// The longest any single operation may take with `o`: one request timeout, then every
/// reconnect attempt's wait and connect timeout, one more request timeout, and slack.
fn bound(o: &SftpOptions) -> Duration {
    o.request_timeout * 2
        + (o.reconnect_wait + o.connect_timeout + o.request_timeout) * o.reconnect_tries
        + Duration::from_secs(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_killed_mid_run_and_restarted() {
    let sshd = start_sshd().await;
    let url = sshd.url();
    let o = fault_options(&sshd);
    let limit = bound(&o);
    let be = sshd.backend_with(&url, o);
    be.create().await.unwrap();
    be.open().await.unwrap();
    for i in 0..8 {
        be.store(&format!("f/item{i}"), uniform(i)).await.unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (be, stop) = (be.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut slowest) = (0usize, Vec::new(), Duration::ZERO);
            let mut i = 8;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                let name = format!("f/item{}", i % 8);
                let r = if i % 3 == 0 {
                    be.load(&name, 0, None).await.map(|v| check_uniform(&v, "load during faults"))
                } else {
                    be.store(&name, uniform(i)).await
                };
                slowest = slowest.max(t.elapsed());
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        assert!(matches!(e.kind, ErrorKind::ConnectionLost | ErrorKind::Backend), "{e}");
                        failed.push(e.to_string());
                    }
                }
                i += 1;
            }
            (ok, failed, slowest)
        })
    };
    // The outages are further apart than one operation's reconnect budget (tries x wait),
    // so each is bridged; a retry budget spanning two outages may run out, by design.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(if round == 0 { 400 } else { 2000 })).await;
        let killed_at = Instant::now();
        let s = sshd.clone();
        tokio::task::spawn_blocking(move || s.kill()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let s = sshd.clone();
        tokio::task::spawn_blocking(move || s.start_again()).await.unwrap();
        println!("fault round {round}: sshd down for {:.2} s", killed_at.elapsed().as_secs_f64());
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed, slowest) = tokio::time::timeout(limit * 2, worker).await.expect("the worker hangs").unwrap();
    println!(
        "kill/restart: {ok} ops ok, {} failed, slowest op {:.2} s (bound {limit:?})",
        failed.len(),
        slowest.as_secs_f64()
    );
    assert!(slowest < limit, "an operation took {slowest:?}");
    assert!(ok > 10, "work went on after the restarts");
    // Short outages are bridged by reconnecting: nothing failed.
    assert!(failed.is_empty(), "{failed:?}");
    // What is visible is whole, through the backend and on disk; no temp file is listed.
    let items = be.list("f").await.unwrap();
    assert_eq!(
        items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        (0..8).map(|i| format!("item{i}")).collect::<Vec<_>>()
    );
    for i in 0..8 {
        check_uniform(&be.load(&format!("f/item{i}"), 0, None).await.unwrap(), "after the faults");
    }
    let dir = sshd.local_path(&url).join("f");
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if !p.to_string_lossy().ends_with(".tmp") {
            check_uniform(&std::fs::read(&p).unwrap(), "on disk");
        }
    }
    println!("temp files of cut-off stores left on the server (invisible to list): {leftovers}");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_store_cut_off_is_never_visible_half_written() {
    let sshd = start_sshd().await;
    let url = sshd.url();
    let mut o = fault_options(&sshd);
    o.reconnect_tries = 0; // no retry: the cut-off store must fail, not be redone
    let limit = bound(&o);
    let be = sshd.backend_with(&url, o);
    be.create().await.unwrap();
    be.open().await.unwrap();
    be.store("big/x", Bytes::from(vec![1u8; 1024])).await.unwrap();
    let big = Bytes::from(vec![2u8; 256 * 1024 * 1024]);
    let writer = {
        let be = be.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            (be.store("big/x", big).await, t.elapsed())
        })
    };
    // Kill the server once part of the upload is on its disk.
    let dir = sshd.local_path(&url).join("big");
    let partial = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            for e in std::fs::read_dir(&dir).unwrap().flatten() {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                if e.file_name().to_string_lossy().ends_with(".tmp") && size >= 4 * 1024 * 1024 {
                    return e.path();
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("no partial upload seen");
    })
    .await
    .unwrap();
    let s = sshd.clone();
    tokio::task::spawn_blocking(move || s.kill()).await.unwrap();
    let (result, took) = tokio::time::timeout(limit, writer).await.expect("store hangs").unwrap();
    println!("256 MiB store cut off mid-upload: {result:?} after {:.2} s", took.as_secs_f64());
    let e = result.expect_err("the store was cut off, there is no reconnect");
    assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
    // On disk the old value is still in place.
    let on_disk = std::fs::read(sshd.local_path(&url).join("big/x")).unwrap();
    assert_eq!(on_disk, vec![1u8; 1024], "the item keeps its old value");
    let partial_size = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(partial_size < 256 * 1024 * 1024, "the upload was really cut off ({partial_size} bytes)");
    let s = sshd.clone();
    tokio::task::spawn_blocking(move || s.start_again()).await.unwrap();
    // The next operation connects anew.
    assert_eq!(be.load("big/x", 0, None).await.unwrap(), Bytes::from(vec![1u8; 1024]));
    let names: Vec<String> = be.list("big").await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["x"], "no temp file is listed");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_gone_fails_fast_then_recovers() {
    let sshd = start_sshd().await;
    let url = sshd.url();
    let o = fault_options(&sshd);
    let be = sshd.backend_with(&url, o.clone());
    be.create().await.unwrap();
    be.open().await.unwrap();
    be.store("a", Bytes::from_static(b"1")).await.unwrap();
    let s = sshd.clone();
    tokio::task::spawn_blocking(move || s.kill()).await.unwrap();
    let t = Instant::now();
    let e = be.load("a", 0, None).await.unwrap_err();
    let took = t.elapsed();
    println!("server gone: {e} after {:.2} s", took.as_secs_f64());
    assert_eq!(e.kind, ErrorKind::ConnectionLost);
    assert!(e.message.contains("could not be re-established"), "{e}");
    // Refused connections are noticed at once: the waits between attempts dominate.
    assert!(took < o.reconnect_wait * o.reconnect_tries + Duration::from_secs(5), "took {took:?}");
    // Not open: a clear error, also quickly.
    let t = Instant::now();
    let fresh = sshd.backend_with(&url, o.clone());
    assert_eq!(fresh.open().await.unwrap_err().kind, ErrorKind::ConnectionLost);
    assert!(t.elapsed() < Duration::from_secs(5));
    let s = sshd.clone();
    tokio::task::spawn_blocking(move || s.start_again()).await.unwrap();
    assert_eq!(&be.load("a", 0, None).await.unwrap()[..], b"1", "reconnects on the next operation");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_sshd_times_out_instead_of_hanging() {
    let sshd = start_sshd().await;
    let url = sshd.url();
    let mut o = sshd.options();
    o.connect_timeout = Duration::from_secs(2);
    o.request_timeout = Duration::from_secs(2);
    o.reconnect_tries = 1;
    o.reconnect_wait = Duration::from_millis(200);
    let be = sshd.backend_with(&url, o.clone());
    be.create().await.unwrap();
    be.open().await.unwrap();
    be.store("a", Bytes::from_static(b"1")).await.unwrap();
    sshd.pause();
    let t = Instant::now();
    let e = be.info("a").await.unwrap_err();
    let took = t.elapsed();
    println!("frozen server: {e} after {:.2} s", took.as_secs_f64());
    assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
    // One request timeout, then one reconnect attempt that times out connecting.
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "took {took:?}");
    // A frozen server at open time: the connect timeout.
    let t = Instant::now();
    assert_eq!(sshd.backend_with(&url, o).open().await.unwrap_err().kind, ErrorKind::ConnectionLost);
    assert!(t.elapsed() < Duration::from_secs(5), "open took {:?}", t.elapsed());
    sshd.resume();
    assert!(be.info("a").await.unwrap().exists, "works again once the server answers");
    be.close().await.unwrap();
}

// ---------------------------------------------------------------- pooling

/// A backend on `sshd` holding up to `connections` connections (fault-test timeouts).
async fn pooled(sshd: &Sshd, connections: usize) -> (Sftp, String) {
    let mut o = fault_options(sshd);
    o.connections = connections;
    let url = sshd.url();
    let be = Sftp::with_options(&url, o).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    (be, url)
}

/// Established connections to `sshd` once they settle at `want` (a closed connection's
/// socket may take a moment to leave ESTABLISHED); what they are after 10 s otherwise.
async fn established(sshd: &Sshd, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = sshd.established();
        if n == want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of item `i` in round `round`: its own bytes and size.
fn pool_value(round: usize, i: usize, size: usize) -> Bytes {
    Bytes::from(vec![(round * 16 + i) as u8; size + i])
}

/// 16 concurrent stores (values of about `size` bytes), then 16 concurrent loads, infos
/// and hashes, all checked. Started together on one task: all 16 are in flight before
/// any can finish.
async fn sixteen_at_once(be: &Sftp, round: usize, size: usize) {
    let name = |i: usize| format!("p/item{i:02}");
    let stores = (0..16).map(|i| {
        let (be, name) = (be.clone(), name(i));
        async move { be.store(&name, pool_value(round, i, size)).await }
    });
    for (i, r) in futures::future::join_all(stores).await.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("round {round}: store {i}: {e}"));
    }
    let loads = (0..16).map(|i| {
        let (be, name) = (be.clone(), name(i));
        async move { be.load(&name, 0, None).await }
    });
    for (i, r) in futures::future::join_all(loads).await.into_iter().enumerate() {
        assert!(r.unwrap() == pool_value(round, i, size), "round {round}: load {i} gives another value");
    }
    let infos = (0..16).map(|i| {
        let (be, name) = (be.clone(), name(i));
        async move { be.info(&name).await }
    });
    for (i, r) in futures::future::join_all(infos).await.into_iter().enumerate() {
        assert_eq!(r.unwrap().size, (size + i) as u64, "round {round}: info {i}");
    }
    let hashes = (0..16).map(|i| {
        let (be, name) = (be.clone(), name(i));
        async move { be.hash(&name, HashAlgorithm::Sha256).await }
    });
    for (i, r) in futures::future::join_all(hashes).await.into_iter().enumerate() {
        let want = hex::encode(Sha256::digest(pool_value(round, i, size)));
        assert_eq!(r.unwrap(), want, "round {round}: hash {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_operations_spread_over_pooled_connections() {
    let sshd = start_sshd().await;

    // connections = 1: today's behaviour, everything over the one connection of open.
    let (be, _) = pooled(&sshd, 1).await;
    let logins = sshd.logins();
    assert_eq!((be.connected(), established(&sshd, 1).await), (1, 1));
    sixteen_at_once(&be, 0, 64 * 1024).await;
    assert_eq!(be.connected(), 1);
    assert_eq!(established(&sshd, 1).await, 1, "connections = 1 uses one SSH connection");
    assert_eq!(sshd.logins(), logins, "and never opens another");
    be.close().await.unwrap();

    // connections = 4: open makes one; one operation at a time keeps using it.
    let (be, _) = pooled(&sshd, 4).await;
    let logins = sshd.logins();
    assert_eq!((be.connected(), established(&sshd, 1).await), (1, 1), "the others open on demand");
    for i in 0..4 {
        be.store(&format!("one/{i}"), Bytes::from_static(b"x")).await.unwrap();
    }
    assert_eq!((be.connected(), sshd.logins()), (1, logins), "one at a time needs one connection");
    // 16 at once: spread over all four, each opened once.
    sixteen_at_once(&be, 1, 64 * 1024).await;
    let up = established(&sshd, 4).await;
    println!("connections = 4, 16 concurrent operations: {up} SSH connections");
    assert_eq!(be.connected(), 4);
    assert_eq!(up, 4, "16 concurrent operations use all 4 connections");
    assert_eq!(sshd.logins(), logins + 3, "three more logins, no more");
    assert_eq!(sshd.sessions().len(), 4, "four server sessions");
    // Again: the same four connections carry it.
    sixteen_at_once(&be, 2, 64 * 1024).await;
    assert_eq!((established(&sshd, 4).await, sshd.logins()), (4, logins + 3));
    be.close().await.unwrap();
    assert_eq!(established(&sshd, 0).await, 0, "close ends every connection");
    assert_eq!(be.connected(), 0);

    // More than 64, or none, is refused clearly.
    for n in [0, 65] {
        let mut o = sshd.options();
        o.connections = n;
        let e = Sftp::with_options(&sshd.url(), o).err().expect("refused");
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("connections must be between 1 and 64"), "{e}");
    }
    let e = backend_from_url(&sshd.url(), BackendOptions { connections: 100, ..Default::default() }).err().unwrap();
    assert!(e.message.contains("connections must be between 1 and 64"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_that_dies_is_replaced_on_its_own() {
    let sshd = start_sshd().await;
    let (be, url) = pooled(&sshd, 4).await;
    sixteen_at_once(&be, 0, 64 * 1024).await;
    assert_eq!(be.connected(), 4);
    let sessions = sshd.sessions();
    assert_eq!(sessions.len(), 4, "{sessions:?}");
    let logins = sshd.logins();

    // 16 stores of 2 MiB at once; one connection's server process dies under them.
    const BIG: usize = 2 * 1024 * 1024;
    let writers = {
        let be = be.clone();
        tokio::spawn(async move {
            let stores = (0..16).map(|i| {
                let be = be.clone();
                async move { be.store(&format!("p/item{i:02}"), pool_value(1, i, BIG)).await }
            });
            futures::future::join_all(stores).await
        })
    };
    let dir = sshd.local_path(&url).join("p");
    let uploading = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let tmps = std::fs::read_dir(&dir)
                .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).count())
                .unwrap_or(0);
            if tmps >= 4 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    })
    .await
    .unwrap();
    sshd.kill_session(sessions[1]);
    let results = tokio::time::timeout(bound(&fault_options(&sshd)) * 2, writers).await.expect("stores hang").unwrap();
    println!("killed one of 4 connections {} uploads", if uploading { "during" } else { "after" });
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("store {i} after one connection died: {e}"));
    }
    // Whether or not an operation was on it when it died: the next ones replace it.
    sixteen_at_once(&be, 2, 64 * 1024).await;
    sixteen_at_once(&be, 3, 64 * 1024).await;
    assert_eq!(sshd.logins(), logins + 1, "only the lost connection was replaced, once");
    assert_eq!((be.connected(), established(&sshd, 4).await), (4, 4));
    let now = sshd.sessions();
    assert_eq!(now.iter().filter(|p| sessions.contains(p)).count(), 3, "the other three stayed: {now:?}");
    // The temp files of the cut-off stores are removed once a connection works again.
    let dir = sshd.local_path(&url).join("p");
    let tmps = || {
        std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while tmps() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tmps(), 0, "temp files of cut-off stores are left on the server");
    let items = be.list("p").await.unwrap();
    assert_eq!(items.len(), 16);
    be.close().await.unwrap();
}

/// A server that refuses further connections (here: the key is no longer authorized
/// for new logins; hosters limit connections per account): the operations go on over the
/// connection it gave, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_further_connection_leaves_the_ones_there_are() {
    let sshd = start_sshd().await;
    let (be, _) = pooled(&sshd, 4).await;
    std::fs::write(sshd.dir().join("authorized_keys"), "").unwrap();
    sixteen_at_once(&be, 0, 64 * 1024).await;
    sixteen_at_once(&be, 1, 64 * 1024).await;
    assert_eq!((be.connected(), established(&sshd, 1).await), (1, 1));
    let refused = sshd.log().lines().filter(|l| l.contains("Connection closed by authenticating user")).count();
    println!("further connections refused: {refused}");
    assert!((1..=3).contains(&refused), "each further connection was tried once, not per operation: {refused}");
    be.close().await.unwrap();
}

// ---------------------------------------------------------------- scale

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ten_thousand_items() {
    const N: usize = 10_000;
    let sshd = start_sshd().await;
    let url = sshd.url();
    let be = sshd.backend(&url);
    be.create().await.unwrap();
    be.open().await.unwrap();
    let t = Instant::now();
    let b2 = be.clone();
    for_each_concurrent(N, 64, move |i| {
        let be = b2.clone();
        async move { be.store(&format!("many/{i:05}"), Bytes::from(i.to_string())).await.unwrap() }
    })
    .await;
    let stored = t.elapsed();
    let t = Instant::now();
    let items = be.list("many").await.unwrap();
    let listed = t.elapsed();
    println!(
        "10,000 items: stored in {:.2} s ({:.0} stores/s, 64 concurrent), listed in {:.3} s",
        stored.as_secs_f64(),
        N as f64 / stored.as_secs_f64(),
        listed.as_secs_f64()
    );
    assert_eq!(items.len(), N);
    assert!(items.windows(2).all(|w| w[0].name < w[1].name), "sorted");
    assert_eq!(items[1234].name, "01234");
    assert_eq!(items[1234].size, 4);
    assert!(items.iter().all(|i| i.exists && !i.directory));
    assert!(listed < Duration::from_secs(20), "listing took {listed:?}");
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_of_256_mib() {
    const SIZE: usize = 256 * 1024 * 1024;
    let sshd = start_sshd().await;
    let url = sshd.url();
    let be = sshd.backend(&url);
    be.create().await.unwrap();
    be.open().await.unwrap();
    // Pseudo-random content (xorshift), so nothing compresses or repeats.
    let value = tokio::task::spawn_blocking(|| {
        let mut v = vec![0u8; SIZE];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for chunk in v.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        Bytes::from(v)
    })
    .await
    .unwrap();
    let v2 = value.clone();
    let digest = tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&v2))).await.unwrap();
    let mib = SIZE as f64 / (1024.0 * 1024.0);
    let t = Instant::now();
    be.store("big/value", value.clone()).await.unwrap();
    let stored = t.elapsed();
    assert_eq!(be.info("big/value").await.unwrap().size, SIZE as u64);
    let t = Instant::now();
    let back = be.load("big/value", 0, None).await.unwrap();
    let loaded = t.elapsed();
    assert_eq!(back.len(), SIZE);
    let back_digest = tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&back))).await.unwrap();
    assert_eq!(back_digest, digest, "256 MiB round trip");
    let t = Instant::now();
    assert_eq!(be.hash("big/value", HashAlgorithm::Sha256).await.unwrap(), digest);
    let hashed = t.elapsed();
    let tail = be.load("big/value", -4096, None).await.unwrap();
    assert!(tail[..] == value[SIZE - 4096..]);
    println!(
        "256 MiB: store {:.2} s ({:.0} MiB/s), load {:.2} s ({:.0} MiB/s), hash (streamed) {:.2} s ({:.0} MiB/s)",
        stored.as_secs_f64(),
        mib / stored.as_secs_f64(),
        loaded.as_secs_f64(),
        mib / loaded.as_secs_f64(),
        hashed.as_secs_f64(),
        mib / hashed.as_secs_f64()
    );
    be.delete("big/value").await.unwrap();
    be.close().await.unwrap();
}
