//! Many daemons, one store (issue 16, point 3): two `borgstored` ("host A" and "host B")
//! serve the same prefix of one bucket of a 3-node Garage cluster, each through another
//! Garage node and each with its own writethrough cache of borg's `packs/`.
//!
//! borg 2 backs up through A's REST front end while one Garage node (neither A's nor B's)
//! is killed: the backup completes on the two that are left. B lists, extracts (byte for
//! byte) and checks `--verify-data` what A wrote, which also fills B's cache. Then A
//! prunes and compacts: packs go from the bucket while B still holds copies, and B never
//! serves them (404 through B, while the copy sits in B's cache directory), and borg's
//! check through B still passes.

use borgstore_tests::borg::{borg22, random_file, Borg};
use borgstore_tests::daemon::{binary, Daemon};
use borgstore_tests::garage::Garage;
use borgstore_tests::rest::{free_port, request, wait_port};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const USER: (&str, &str) = ("backup", "backup-pw");

/// One "host": a daemon with REST on `port`, serving `url` as store `site`, with its
/// cache of `packs/` in `root/cache`.
struct Host {
    daemon: Daemon,
    port: u16,
    cache: PathBuf,
}

impl Host {
    fn start(root: &Path, url: &str) -> Host {
        std::fs::create_dir_all(root).unwrap();
        let port = free_port();
        let cache = root.join("cache");
        let config = root.join("borgstored.toml");
        std::fs::write(
            &config,
            format!(
                r#"
rest = "127.0.0.1:{port}"
state_dir = "{root}/state"
[stores.site]
url = "{url}"
create = true
shared = true
cache_url = "file://{cache}"
rest_username = "{user}"
rest_password = "{pw}"
[stores.site.namespaces."packs/"]
levels = [1]
cache = "writethrough"
"#,
                root = root.display(),
                cache = cache.display(),
                user = USER.0,
                pw = USER.1,
            ),
        )
        .unwrap();
        let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
        wait_port(port, "borgstored REST", &daemon.log);
        Host { daemon, port, cache }
    }

    fn repo(&self) -> String {
        format!("http://{}:{}@127.0.0.1:{}/site/", USER.0, USER.1, self.port)
    }

    /// A stats counter of the store, through the CLI on the daemon's socket.
    fn stat(&self, key: &str) -> u64 {
        let out = Command::new(binary("borgstore"))
            .arg("--socket")
            .arg(&self.daemon.socket)
            .args(["--store", "site", "stats", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "stats: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[key].as_u64().unwrap_or(0)
    }

    /// The packs this host holds in its cache (nested names).
    fn cached_packs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for dir in std::fs::read_dir(self.cache.join("packs")).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                let level = dir.file_name().to_string_lossy().to_string();
                out.insert(format!("packs/{level}/{}", f.file_name().to_string_lossy()));
            }
        }
        out
    }
}

/// The packs in the bucket (nested names), seen directly through Garage node `node`.
async fn packs_in_bucket(garage: &Garage, node: usize, path: &str) -> BTreeSet<String> {
    use borgstore_daemon::backends::url::backend_from_url;
    let be = backend_from_url(&garage.url(node, path), Default::default()).unwrap();
    be.open().await.unwrap();
    let mut out = BTreeSet::new();
    for dir in be.list("packs").await.unwrap().into_iter().filter(|i| i.directory) {
        for item in be.list(&format!("packs/{}", dir.name)).await.unwrap() {
            if !item.directory {
                out.insert(format!("packs/{}/{}", dir.name, item.name));
            }
        }
    }
    be.close().await.unwrap();
    out
}

/// Wait (up to a minute) until every object listed in `dir` through node `node` exists.
async fn listing_matches_objects(garage: &Garage, node: usize, path: &str, dir: &str) {
    use borgstore_daemon::backends::url::backend_from_url;
    let be = backend_from_url(&garage.url(node, path), Default::default()).unwrap();
    be.open().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut phantoms = Vec::new();
        for i in be.list(dir).await.unwrap_or_default() {
            let name = format!("{dir}/{}", i.name);
            if !be.info(&name).await.unwrap().exists {
                phantoms.push(name);
            }
        }
        if phantoms.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "Garage still lists deleted objects after a repair: {phantoms:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borg_backs_up_through_one_host_and_restores_through_another() {
    let mut garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let path = borgstore_tests::moto::unique_path();
    let root = tempfile::tempdir().unwrap();
    let a = Host::start(&root.path().join("a"), &garage.url(0, &path));
    let b = Host::start(&root.path().join("b"), &garage.url(1, &path));

    let borg = Borg::new(borg22());
    let src = borg.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        random_file(&src.join(format!("kept-{i}")), 300_000);
    }
    for i in 0..40 {
        random_file(&src.join(format!("gone-{i}")), 250_000);
    }
    let first: Vec<(String, Vec<u8>)> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().to_string(), std::fs::read(e.path()).unwrap()))
        .collect();
    borg.run(&a.repo(), &["repo-create", "-e", "aes256-ocb"]).ok();

    // The first backup through A; once it has stored a good part, Garage node 2 (which
    // neither host talks to) is killed. Two of three replicas are a quorum: it completes.
    let stored_before = a.stat("backend_store_calls");
    let repo_a = a.repo();
    let backup = std::thread::spawn(move || {
        let out = borg.run(&repo_a, &["create", "one", "src"]);
        (borg, out)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while a.stat("backend_store_calls") < stored_before + 40 && !backup.is_finished() {
        assert!(Instant::now() < deadline, "the backup stored nothing in 2 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!backup.is_finished(), "the backup ended before a node could be killed mid-way: make it bigger");
    garage.kill(2);
    let (borg, out) = backup.join().unwrap();
    out.ok();

    // Host B sees what A wrote: the archive, its files, every byte, and a full check.
    let archives = borg.run(&b.repo(), &["repo-list", "--format", "{archive}{NL}"]).ok();
    assert_eq!(archives.stdout.trim(), "one");
    let listed = borg.run(&b.repo(), &["list", "one", "--format", "{path}{NL}"]).ok();
    assert_eq!(listed.stdout.lines().filter(|l| l.starts_with("src/")).count(), first.len());
    let dest = borg.work().join("restored");
    std::fs::create_dir_all(&dest).unwrap();
    borg.run_in(&dest, &b.repo(), &["extract", "one"]).ok();
    for (name, data) in &first {
        assert!(std::fs::read(dest.join("src").join(name)).unwrap() == *data, "{name} differs when restored through B");
    }
    borg.run(&b.repo(), &["check", "--verify-data"]).ok();
    // Node 2 comes back. It missed the deletes of borg's locks while it was down, and
    // Garage's listings may show such objects again until its tables are synced (borg
    // then fails on the phantom lock it cannot load): the operator's repair after an
    // outage, as README says.
    garage.restart(2);
    garage.repair_tables();
    listing_matches_objects(&garage, 1, &path, "locks").await;

    // B read every pack, so its cache holds them all.
    let in_bucket = packs_in_bucket(&garage, 2, &path).await;
    assert!(in_bucket.len() >= 20, "{} packs", in_bucket.len());
    let cached_by_b = b.cached_packs();
    assert!(
        in_bucket.is_subset(&cached_by_b),
        "B did not cache every pack it verified: {} in the bucket, {} cached, e.g. {:?} / {:?}, stats {}",
        in_bucket.len(),
        cached_by_b.len(),
        in_bucket.iter().next(),
        cached_by_b.iter().next(),
        b.stat("cache_hits")
    );

    // A second archive without the "gone" files, through B; A prunes the first and compacts.
    for i in 0..40 {
        std::fs::remove_file(src.join(format!("gone-{i}"))).unwrap();
    }
    borg.run(&b.repo(), &["create", "two", "src"]).ok();
    borg.run(&a.repo(), &["prune", "--keep", "1"]).ok();
    borg.run(&a.repo(), &["compact"]).ok();
    let after = packs_in_bucket(&garage, 0, &path).await;
    let gone: Vec<&String> = in_bucket.difference(&after).collect();
    assert!(gone.len() >= 20, "compact removed only {} packs", gone.len());

    // B still holds copies of the packs A deleted, and serves none of them.
    let still_cached: Vec<&&String> = gone.iter().filter(|p| b.cached_packs().contains(**p)).collect();
    assert!(!still_cached.is_empty(), "B dropped its copies by itself: the test would prove nothing");
    for p in &still_cached {
        let r = request(b.port, "GET", &format!("/site/{p}"), Some(USER), &[], b"");
        assert_eq!(r.status, 404, "B served {p}, which A deleted: {:?}", r.text());
        assert!(!b.cached_packs().contains(**p), "B kept the stale copy of {p}");
    }
    assert!(b.stat("cache_stale") >= still_cached.len() as u64);

    // And borg through B agrees with the bucket.
    let archives = borg.run(&b.repo(), &["repo-list", "--format", "{archive}{NL}"]).ok();
    assert_eq!(archives.stdout.trim(), "two");
    borg.run(&b.repo(), &["check", "--verify-data"]).ok();
    let dest = borg.work().join("restored-two");
    std::fs::create_dir_all(&dest).unwrap();
    borg.run_in(&dest, &a.repo(), &["extract", "two"]).ok();
    for (name, data) in first.iter().filter(|(n, _)| n.starts_with("kept-")) {
        assert!(std::fs::read(dest.join("src").join(name)).unwrap() == *data, "{name} differs when restored through A");
    }
}
