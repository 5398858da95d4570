//! The shared cache (issue 6): engine semantics against Python borgstore 0.7.0's rules,
//! eviction within budget while the store is used, failures that degrade to the primary,
//! and through the daemon: what one client read is served to the next from the cache.

use borgstore_client::Client;
use borgstore_daemon::backends::posixfs::{PosixFs, PosixFsOptions};
use borgstore_daemon::store::cache::{Cache, CacheMode, CachePolicy, Clock, SystemClock};
use borgstore_daemon::store::config::namespaces;
use borgstore_daemon::store::{Emulator, MoveAction, Store};
use borgstore_ipc::StatValue;
use borgstore_tests::daemon::Daemon;
use bytes::Bytes;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn n(stats: &borgstore_ipc::Stats, key: &str) -> f64 {
    match stats.get(key) {
        Some(StatValue::Int(i)) => *i as f64,
        Some(StatValue::Float(f)) => *f,
        Some(StatValue::Bool(b)) => f64::from(u8::from(*b)),
        None => panic!("no stat {key}"),
    }
}

async fn store_with(dir: &Path, mode: CacheMode, size: Option<u64>, max_age: Option<f64>) -> Store {
    store_on_clock(dir, mode, size, max_age, Arc::new(SystemClock)).await
}

/// The system's time plus however far the test has moved it on: items age without waiting.
#[derive(Default)]
struct Ahead {
    ms: AtomicU64,
}

impl Ahead {
    fn advance(&self, by: std::time::Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for Ahead {
    fn now(&self) -> f64 {
        SystemClock.now() + self.ms.load(Ordering::SeqCst) as f64 / 1000.0
    }
}

async fn store_on_clock(
    dir: &Path,
    mode: CacheMode,
    size: Option<u64>,
    max_age: Option<f64>,
    clock: Arc<dyn Clock>,
) -> Store {
    let primary = Arc::new(PosixFs::new(dir.join("primary"), PosixFsOptions::default()).unwrap());
    let cache_be = Arc::new(PosixFs::new(dir.join("cache"), PosixFsOptions::default()).unwrap());
    let cache = Cache::new(cache_be, vec![("data/".into(), CachePolicy { mode, max_age, size })]).with_clock(clock);
    let ns = namespaces(&[("data/", &[2]), ("", &[0])]).unwrap();
    let s = Store::build(primary, ns, Emulator::OFF, Some(cache));
    s.create().await.unwrap();
    s.open().await.unwrap();
    s
}

fn key(i: u32) -> String {
    format!("data/{i:08x}{}", &KEY[8..])
}

fn nested(k: &str) -> String {
    let leaf = &k[5..];
    format!("data/{}/{}/{leaf}", &leaf[..2], &leaf[2..4])
}

#[tokio::test]
async fn writethrough_serves_ranges_from_the_cache_and_fills_it_on_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with(dir.path(), CacheMode::Writethrough, None, None).await;
    let k = key(1);
    s.store(&k, Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("cache").join(nested(&k))).unwrap(), b"0123456789", "written through");
    assert_eq!(s.load(&k, 2, Some(3), false).await.unwrap(), "234");
    assert_eq!(s.load(&k, -4, None, false).await.unwrap(), "6789");
    let st = s.stats();
    assert_eq!((n(&st, "cache_hits"), n(&st, "backend_load_calls")), (2.0, 0.0));
    // A miss loads the whole item from the primary and caches it, then hits.
    std::fs::remove_file(dir.path().join("cache").join(nested(&k))).unwrap();
    assert_eq!(s.load(&k, -2, Some(1), false).await.unwrap(), "8");
    assert_eq!(std::fs::read(dir.path().join("cache").join(nested(&k))).unwrap(), b"0123456789");
    assert_eq!(s.load(&k, 0, None, false).await.unwrap(), "0123456789");
    let st = s.stats();
    assert_eq!((n(&st, "cache_hits"), n(&st, "cache_misses"), n(&st, "backend_load_calls")), (3.0, 1.0, 1.0));
    assert_eq!(n(&st, "cache_hit_ratio"), 0.75);
    // Soft delete, undelete and level changes are mirrored; list asks the primary.
    s.move_(&k, MoveAction::Delete).await.unwrap();
    assert!(dir.path().join("cache").join(nested(&k) + ".del").exists());
    assert!(!dir.path().join("cache").join(nested(&k)).exists());
    s.move_(&k, MoveAction::Undelete).await.unwrap();
    assert!(dir.path().join("cache").join(nested(&k)).exists());
    std::fs::remove_file(dir.path().join("cache").join(nested(&k))).unwrap();
    assert_eq!(s.list("data", false).unwrap().collect().await.unwrap().len(), 1, "list asks the primary");
    s.delete(&k, false).await.unwrap();
    assert!(s.list("data", false).unwrap().collect().await.unwrap().is_empty());
    s.close().await.unwrap();
}

#[tokio::test]
async fn mirror_always_reads_the_primary_and_refreshes_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with(dir.path(), CacheMode::Mirror, None, None).await;
    let k = key(2);
    s.store(&k, Bytes::from_static(b"old")).await.unwrap();
    // Someone changes the primary behind our back: mirror reads it and refreshes.
    std::fs::write(dir.path().join("primary").join(nested(&k)), b"new").unwrap();
    assert_eq!(s.load(&k, 0, None, false).await.unwrap(), "new");
    assert_eq!(std::fs::read(dir.path().join("cache").join(nested(&k))).unwrap(), b"new");
    let st = s.stats();
    assert_eq!((n(&st, "cache_hits"), n(&st, "backend_load_calls")), (0.0, 1.0));
    s.close().await.unwrap();
}

#[tokio::test]
async fn invalidate_an_item_a_namespace_or_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = store_with(dir.path(), CacheMode::Writethrough, None, None).await;
    for i in 0..4 {
        s.store(&key(i), Bytes::from(vec![i as u8; 10])).await.unwrap();
    }
    let cached = |i: u32| dir.path().join("cache").join(nested(&key(i))).exists();
    s.cache_invalidate(&key(0), false).await.unwrap();
    assert!(!cached(0) && cached(1));
    s.cache_invalidate("data", false).await.unwrap();
    assert!(!cached(1) && !cached(3));
    s.store(&key(1), Bytes::from_static(b"again")).await.unwrap();
    s.cache_invalidate("", false).await.unwrap();
    assert!(!cached(1));
    assert_eq!(s.load(&key(1), 0, None, false).await.unwrap(), "again", "the primary still has everything");
    s.close().await.unwrap();
}

#[tokio::test]
async fn eviction_keeps_the_budget_lru_first_and_expires_old_items() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(Ahead::default());
    let s = store_on_clock(dir.path(), CacheMode::Writethrough, Some(1000), Some(3600.0), clock.clone()).await;
    for i in 0..10 {
        s.store(&key(i), Bytes::from(vec![1u8; 300])).await.unwrap();
        if i == 5 {
            s.load(&key(3), 0, None, false).await.unwrap(); // used: survives the next evictions
        }
    }
    let on_disk: u64 = walk(&dir.path().join("cache/data")).iter().map(|(_, size)| size).sum();
    assert!(on_disk <= 1000, "cache holds {on_disk} bytes, budget 1000");
    let cached = |i: u32| dir.path().join("cache").join(nested(&key(i))).exists();
    assert!(cached(9) && cached(8) && cached(7), "the newest stay");
    assert!(!cached(0) && !cached(4), "the least recently used go first");
    // A value bigger than the budget is never cached.
    s.store(&key(20), Bytes::from(vec![0u8; 2000])).await.unwrap();
    assert!(!cached(20));
    // max_age: a sweep drops items unused for longer (and only those).
    s.cache_sweep().await;
    assert!(cached(9), "not expired yet");
    clock.advance(std::time::Duration::from_secs(3601));
    s.cache_sweep().await;
    assert!(walk(&dir.path().join("cache/data")).is_empty(), "expired items are gone");
    assert_eq!(s.load(&key(9), 0, None, false).await.unwrap().len(), 300);
    s.close().await.unwrap();
}

fn walk(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push((p.display().to_string(), p.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_broken_cache_degrades_to_the_primary_without_errors() {
    // An unusable cache location (a file where the directory should be): cache off.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cache"), b"not a directory").unwrap();
    let s = store_with(dir.path(), CacheMode::Writethrough, Some(10_000), None).await;
    s.store(&key(1), Bytes::from_static(b"value")).await.unwrap();
    assert_eq!(s.load(&key(1), 0, None, false).await.unwrap(), "value");
    assert_eq!(s.stats()["cache_disabled"], StatValue::Bool(true));
    s.close().await.unwrap();

    // A cache that breaks while in use: errors are counted, callers see none.
    let dir = tempfile::tempdir().unwrap();
    let s = store_with(dir.path(), CacheMode::Writethrough, None, None).await;
    let k = key(2);
    s.store(&k, Bytes::from_static(b"v1")).await.unwrap();
    let cached = dir.path().join("cache").join(nested(&k));
    std::fs::remove_file(&cached).unwrap();
    std::fs::create_dir_all(cached.join("blocker")).unwrap(); // the item's path is now a directory
    s.store(&k, Bytes::from_static(b"v2")).await.unwrap();
    assert_eq!(s.load(&k, 0, None, false).await.unwrap(), "v2");
    assert!(n(&s.stats(), "cache_errors") >= 1.0);
    assert_eq!(s.stats()["cache_disabled"], StatValue::Bool(false));
    s.close().await.unwrap();
}

fn daemon_with_cache(latency_us: u64, size: u64) -> Daemon {
    daemon_with_cache_aged(latency_us, size, None)
}

fn daemon_with_cache_aged(latency_us: u64, size: u64, max_age: Option<f64>) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[stores.slow]
url = "file://{d}/primary"
cache_url = "file://{d}/cache"
latency_us = {latency_us}
create = true
[stores.slow.namespaces."data/"]
levels = [2]
cache = "writethrough"
size = {size}
{age}
[stores.slow.namespaces.""]
levels = [0]
"#,
        d = dir.path().display(),
        age = max_age.map(|a| format!("max_age = {a}")).unwrap_or_default(),
    );
    std::fs::write(dir.path().join("borgstored.toml"), config).unwrap();
    let cfg = dir.path().join("borgstored.toml");
    Daemon::start_in(dir, &["--config", cfg.to_str().unwrap()], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_client_is_served_from_the_cache_of_the_first() {
    let d = daemon_with_cache(20_000, 10_000_000);
    let first = d.client("slow").await;
    // Fill the primary behind the cache's back (as if written before the cache existed).
    for i in 0..5 {
        let p = d.path("primary").join(nested(&key(i)));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, vec![i as u8; 1000]).unwrap();
    }
    let t = std::time::Instant::now();
    for i in 0..5 {
        assert_eq!(first.load(&key(i), 0, None, false).await.unwrap(), vec![i as u8; 1000]);
    }
    let miss_time = t.elapsed();
    let before = first.stats().await.unwrap();
    assert_eq!(n(&before, "cache_misses"), 5.0);
    // Another process (another connection) reads the same: all hits, no primary loads.
    let second = Client::connect(d.options("slow")).await.unwrap();
    let t = std::time::Instant::now();
    for i in 0..5 {
        assert_eq!(second.load(&key(i), 0, None, false).await.unwrap(), vec![i as u8; 1000]);
    }
    let hit_time = t.elapsed();
    let after = second.stats().await.unwrap();
    assert_eq!(n(&after, "cache_hits") - n(&before, "cache_hits"), 5.0);
    assert_eq!(n(&after, "backend_load_calls"), n(&before, "backend_load_calls"), "the primary was not asked");
    // Measured in the same run: the misses each waited for the slow primary, the hits did not.
    assert!(hit_time < miss_time, "5 hits took {hit_time:?}, 5 misses {miss_time:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_keep_the_budget_and_never_read_a_stale_value() {
    // About 100 KB go through a cache of 8 KB.
    let budget = 8_000u64;
    let d = daemon_with_cache(0, budget);
    let mut tasks = Vec::new();
    for c in 0..8u32 {
        let opts = d.options("slow");
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(opts).await.unwrap();
            for round in 0..25u32 {
                // Overlapping keys: every client writes and reads the same 20 items.
                let k = key((c * 7 + round) % 20);
                let value = format!("{c}:{round}:").repeat(100).into_bytes();
                client.store(&k, value.clone()).await.unwrap();
                let back = client.load(&k, 0, None, false).await.unwrap();
                // Another client may have stored since; whatever we read must be a whole
                // value some client wrote, and the primary must agree right now.
                let unit = back.len() / 100;
                assert!(back.len() % 100 == 0 && back == back[..unit].repeat(100), "torn value");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 10x the budget went through; the cache holds at most the budget.
    let on_disk: u64 = walk(&d.path("cache/data")).iter().map(|(_, s)| s).sum();
    assert!(on_disk <= budget, "cache holds {on_disk} bytes, budget {budget}");
    // Every cached copy equals the primary's value.
    for (path, _) in walk(&d.path("cache/data")) {
        let rel = Path::new(&path).strip_prefix(d.path("cache")).unwrap().to_path_buf();
        assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(d.path("primary").join(rel)).unwrap());
    }
    // And what the daemon serves now is the primary's value for every key.
    let client = d.client("slow").await;
    for i in 0..20 {
        let on_primary = std::fs::read(d.path("primary").join(nested(&key(i)))).unwrap();
        assert_eq!(client.load(&key(i), 0, None, false).await.unwrap(), on_primary);
    }
    let st = client.stats().await.unwrap();
    assert!(n(&st, "cache_hits") > 0.0);
    assert_eq!(n(&st, "cache_errors"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_expires_items_while_nobody_asks() {
    let d = daemon_with_cache_aged(0, 1_000_000, Some(1.0));
    let client = d.client("slow").await;
    client.store(&key(1), b"short-lived".to_vec()).await.unwrap();
    assert_eq!(walk(&d.path("cache/data")).len(), 1);
    // No operation in between: the store actor's periodic sweep evicts it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !walk(&d.path("cache/data")).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the expired item stayed in the cache");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(client.load(&key(1), 0, None, false).await.unwrap(), b"short-lived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_can_give_a_store_its_cache() {
    use borgstore_client::CacheOptions;
    let dir = tempfile::tempdir().unwrap();
    let arg = format!("plain=file://{}/primary", dir.path().display());
    let cache_url = format!("file://{}/client-cache", dir.path().display());
    let d = Daemon::start_in(dir, &["--store", &arg, "--levels", "plain:data/=2", "--levels", "plain:=0"], &[]);
    d.client("plain").await.create().await.unwrap();
    let options = d.options("plain").cache(CacheOptions::new(&cache_url).namespace(
        "data/",
        "writethrough",
        Some(std::time::Duration::from_secs(3600)),
        Some(1_000_000),
    ));
    let c = Client::connect(options).await.unwrap();
    c.store(&key(1), b"cached by request".to_vec()).await.unwrap();
    assert!(d.path("client-cache").join(nested(&key(1))).exists(), "written through to the client's cache");
    assert_eq!(c.load(&key(1), 0, None, false).await.unwrap(), b"cached by request");
    // The cache is the store's: another client without options is served from it too.
    let other = d.client("plain").await;
    assert_eq!(other.load(&key(1), 0, None, false).await.unwrap(), b"cached by request");
    let st = other.stats().await.unwrap();
    assert_eq!((n(&st, "cache_hits"), n(&st, "backend_load_calls")), (2.0, 0.0));
    // A bad request is a clear error at connect time.
    let bad = d.options("plain").cache(CacheOptions::new(&cache_url).namespace("data/", "sometimes", None, None));
    let err = Client::connect(bad).await.err().expect("refused");
    assert!(err.message.contains("cache mode"), "{err}");
}

/// Two daemons ("hosts") on one primary, each with its own writethrough cache (issue 16,
/// point 3). With `shared` on, what one deleted or replaced is never served by the other
/// from its cache; with it off (the single-host promise), the stale copy is served, which
/// shows that the check is what protects the other host.
#[tokio::test]
async fn a_shared_primary_never_serves_what_another_host_deleted_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let host = |name: &str| {
        let primary = Arc::new(PosixFs::new(dir.path().join("primary"), PosixFsOptions::default()).unwrap());
        let cache_be = Arc::new(PosixFs::new(dir.path().join(name), PosixFsOptions::default()).unwrap());
        let policy = CachePolicy { mode: CacheMode::Writethrough, max_age: None, size: None };
        let cache = Cache::new(cache_be, vec![("data/".into(), policy)]);
        let ns = namespaces(&[("data/", &[2]), ("", &[0])]).unwrap();
        Store::build(primary, ns, Emulator::OFF, Some(cache))
    };
    let (a, b) = (host("cache-a"), host("cache-b"));
    a.create().await.unwrap();
    for s in [&a, &b] {
        s.set_shared(true);
        s.open().await.unwrap();
    }
    let k = key(7);
    a.store(&k, Bytes::from_static(b"first version")).await.unwrap();
    assert_eq!(b.load(&k, 0, None, false).await.unwrap(), "first version");
    assert!(dir.path().join("cache-b").join(nested(&k)).exists(), "b cached it");
    assert_eq!(b.load(&k, 6, Some(7), false).await.unwrap(), "version", "a hit");
    let st = b.stats();
    assert_eq!((n(&st, "cache_hits"), n(&st, "cache_misses")), (1.0, 1.0), "the first load was a miss");
    assert_eq!(n(&st, "backend_load_calls"), 1.0, "the hit loaded nothing from the primary");

    // A deletes it: b's cached copy is not served, and is dropped.
    a.delete(&k, false).await.unwrap();
    assert!(dir.path().join("cache-b").join(nested(&k)).exists());
    let e = b.load(&k, 0, None, false).await.unwrap_err();
    assert_eq!(e.kind, borgstore_ipc::ErrorKind::ObjectNotFound, "{e}");
    assert!(!dir.path().join("cache-b").join(nested(&k)).exists(), "the stale copy is gone");

    // A stores it again with other bytes, first of another size, then of the same size.
    a.store(&k, Bytes::from_static(b"second, longer version")).await.unwrap();
    assert_eq!(b.load(&k, 0, None, false).await.unwrap(), "second, longer version");
    std::thread::sleep(std::time::Duration::from_millis(20));
    a.store(&k, Bytes::from_static(b"third, longer version!")).await.unwrap();
    assert_eq!(b.load(&k, 0, None, false).await.unwrap(), "third, longer version!", "same size, newer");
    assert_eq!(b.load(&k, 0, None, false).await.unwrap(), "third, longer version!", "now a hit again");
    assert!(n(&b.stats(), "cache_stale") >= 2.0, "{:?}", b.stats());

    // Without `shared`, b trusts its cache: the deleted item is still served.
    b.set_shared(false);
    a.delete(&k, false).await.unwrap();
    assert_eq!(b.load(&k, 0, None, false).await.unwrap(), "third, longer version!");
    for s in [&a, &b] {
        s.close().await.unwrap();
    }
}

/// REST clients (borg 2) go through the store's cache like IPC clients (issue 16: they
/// bypassed it). A small value is mirrored into the cache as it is stored; a large one
/// arrives streamed and is not held in memory for the cache: its old cached copy is
/// dropped instead, so the next load never serves the value it replaced.
#[test]
fn rest_calls_use_the_cache_and_a_streamed_upload_never_leaves_a_stale_copy() {
    use borgstore_tests::rest::{free_port, request, wait_port};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let port = free_port();
    let cfg = root.join("borgstored.toml");
    std::fs::write(
        &cfg,
        format!(
            "rest = \"127.0.0.1:{port}\"\nstate_dir = \"{r}/state\"\n[stores.s]\nurl = \"file://{r}/primary\"\n\
             create = true\ncache_url = \"file://{r}/cache\"\nrest_username = \"u\"\nrest_password = \"p\"\n\
             [stores.s.namespaces.\"data/\"]\nlevels = [1]\ncache = \"writethrough\"\n",
            r = root.display()
        ),
    )
    .unwrap();
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &["--config", cfg.to_str().unwrap()], &[]);
    wait_port(port, "borgstored REST", &d.log);
    let auth = Some(("u", "p"));
    let name = format!("data/01/01{}", &KEY[2..]);
    let cached = root.join("cache").join(&name);

    let small = b"small value".to_vec();
    assert_eq!(request(port, "POST", &format!("/s/{name}"), auth, &[], &small).status, 200);
    assert_eq!(std::fs::read(&cached).unwrap(), small, "a stored value is mirrored into the cache");
    std::fs::write(&cached, b"from the cache").unwrap();
    let r = request(port, "GET", &format!("/s/{name}"), auth, &[], b"");
    assert_eq!(r.body, b"from the cache", "a REST load is served from the cache");

    // 3 MiB: above the size from which uploads are streamed to the file.
    let big: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(request(port, "POST", &format!("/s/{name}"), auth, &[], &big).status, 200);
    assert!(!cached.exists(), "the copy of the replaced value is gone");
    let r = request(port, "GET", &format!("/s/{name}"), auth, &[], b"");
    assert!(r.status == 200 && r.body == big, "the new value, not the replaced one");
    assert_eq!(std::fs::read(&cached).unwrap(), big, "and the load cached it");

    // A delete through REST drops the copy too.
    assert_eq!(request(port, "DELETE", &format!("/s/{name}"), auth, &[], b"").status, 200);
    assert!(!cached.exists());
    assert_eq!(request(port, "GET", &format!("/s/{name}"), auth, &[], b"").status, 404);
}
