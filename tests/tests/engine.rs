//! The store engine over posixfs: namespaces, nesting and level migration, soft delete,
//! recursive listing, hash/gather/defrag, stats and latency emulation.

use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::store::config::namespaces;
use borgstore_daemon::store::{DefragName, Emulator, MoveAction, Store};
use borgstore_ipc::{ErrorKind, Source, StatValue};
use borgstore_tests::fixtures::{posixfs, Fixture};
use bytes::Bytes;
use std::path::Path;
use std::time::{Duration, Instant};

async fn store_with(f: &Fixture, ns: &[(&str, &[u32])], emulator: Emulator) -> Store {
    let s = Store::with_emulator(f.backend.clone(), namespaces(ns).unwrap(), emulator);
    s.create().await.unwrap();
    s.open().await.unwrap();
    s
}

async fn standard(f: &Fixture) -> Store {
    store_with(f, &[("config/", &[0]), ("data/", &[2]), ("", &[0])], Emulator::OFF).await
}

fn key(i: u32) -> String {
    HashAlgorithm::Sha256.hex_digest(&i.to_le_bytes())
}

fn names(items: &[borgstore_ipc::ItemInfo]) -> Vec<String> {
    items.iter().map(|i| i.name.clone()).collect()
}

#[tokio::test]
async fn nesting_puts_items_in_hex_dirs() {
    let f = posixfs().await;
    let s = standard(&f).await;
    let root = f.root.clone().unwrap();
    let k = key(1);
    s.store(&format!("data/{k}"), Bytes::from_static(b"v")).await.unwrap();
    s.store("config/main", Bytes::from_static(b"c")).await.unwrap();
    assert!(root.join(format!("data/{}/{}/{k}", &k[..2], &k[2..4])).is_file());
    assert!(root.join("config/main").is_file());
    assert_eq!(s.find(&format!("data/{k}"), true).await.unwrap(), format!("data/{}/{}/{k}.del", &k[..2], &k[2..4]));
    s.close().await.unwrap();
}

#[tokio::test]
async fn soft_delete_undelete_and_filtered_lists() {
    let f = posixfs().await;
    let s = standard(&f).await;
    let mut keys: Vec<String> = (0..40).map(key).collect();
    for k in &keys {
        s.store(&format!("data/{k}"), Bytes::from(k.clone())).await.unwrap();
    }
    keys.sort();
    let gone: Vec<String> = keys.iter().step_by(3).cloned().collect();
    for k in &gone {
        s.move_(&format!("data/{k}"), MoveAction::Delete).await.unwrap();
    }
    let live = names(&s.list("data", false).unwrap().collect().await.unwrap());
    let deleted = names(&s.list("data", true).unwrap().collect().await.unwrap());
    let expect_live: Vec<String> = keys.iter().filter(|k| !gone.contains(k)).cloned().collect();
    assert_eq!(live, expect_live, "sorted, live only");
    assert_eq!(deleted, gone, "sorted, soft-deleted only, without .del");
    let g = format!("data/{}", gone[0]);
    assert_eq!(s.load(&g, 0, None, false).await.unwrap_err().kind, ErrorKind::ObjectNotFound);
    assert_eq!(&s.load(&g, 0, None, true).await.unwrap()[..], gone[0].as_bytes());
    assert!(s.info(&g, true).await.unwrap().exists);
    s.move_(&g, MoveAction::Undelete).await.unwrap();
    assert_eq!(&s.load(&g, 0, None, false).await.unwrap()[..], gone[0].as_bytes());
    s.delete(&format!("data/{}", gone[1]), true).await.unwrap();
    assert_eq!(s.list("data", true).unwrap().collect().await.unwrap().len(), gone.len() - 2);
    // A name with .del must use the flag instead.
    assert_eq!(s.load("config/x.del", 0, None, false).await.unwrap_err().kind, ErrorKind::InvalidArgument);
    s.close().await.unwrap();
}

#[tokio::test]
async fn streamed_list_in_chunks() {
    let f = posixfs().await;
    let s = standard(&f).await;
    for i in 0..250 {
        s.store(&format!("data/{}", key(i)), Bytes::new()).await.unwrap();
    }
    let mut lister = s.list("data", false).unwrap();
    let mut all = Vec::new();
    loop {
        let chunk = lister.next_chunk(64).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 64);
        all.extend(chunk);
    }
    assert_eq!(all.len(), 250);
    assert!(all.windows(2).all(|w| w[0].name < w[1].name));
    assert_eq!(s.list("nothing", false).unwrap().collect().await.unwrap_err().kind, ErrorKind::ObjectNotFound);
    s.close().await.unwrap();
}

#[tokio::test]
async fn level_migration_and_change_level() {
    let f = posixfs().await;
    let old = store_with(&f, &[("data/", &[0]), ("", &[0])], Emulator::OFF).await;
    let (a, b) = (key(1), key(2));
    old.store(&format!("data/{a}"), Bytes::from_static(b"a")).await.unwrap();
    old.store(&format!("data/{b}"), Bytes::from_static(b"b")).await.unwrap();
    old.move_(&format!("data/{b}"), MoveAction::Delete).await.unwrap();
    old.close().await.unwrap();
    // Migrating from level 0 to level 2: old items are still found, new ones go to level 2.
    let s =
        Store::with_emulator(f.backend.clone(), namespaces(&[("data/", &[0, 2]), ("", &[0])]).unwrap(), Emulator::OFF);
    s.open().await.unwrap();
    let root = f.root.clone().unwrap();
    assert_eq!(&s.load(&format!("data/{a}"), 0, None, false).await.unwrap()[..], b"a");
    let c = key(3);
    s.store(&format!("data/{c}"), Bytes::from_static(b"c")).await.unwrap();
    assert!(root.join(format!("data/{}/{}/{c}", &c[..2], &c[2..4])).is_file());
    // Overwriting an old item keeps its level.
    s.store(&format!("data/{a}"), Bytes::from_static(b"A")).await.unwrap();
    assert!(root.join(format!("data/{a}")).is_file());
    s.move_(&format!("data/{a}"), MoveAction::ChangeLevel { deleted: false }).await.unwrap();
    assert!(root.join(format!("data/{}/{}/{a}", &a[..2], &a[2..4])).is_file());
    assert!(!root.join(format!("data/{a}")).exists());
    s.move_(&format!("data/{b}"), MoveAction::ChangeLevel { deleted: true }).await.unwrap();
    assert!(root.join(format!("data/{}/{}/{b}.del", &b[..2], &b[2..4])).is_file());
    let live = names(&s.list("data", false).unwrap().collect().await.unwrap());
    let mut expect = vec![a.clone(), c.clone()];
    expect.sort();
    assert_eq!(live, expect);
    s.close().await.unwrap();
}

#[tokio::test]
async fn rename_and_errors() {
    let f = posixfs().await;
    let s = standard(&f).await;
    s.store("config/a", Bytes::from_static(b"1")).await.unwrap();
    s.move_("config/a", MoveAction::Rename { new_name: "config/b".into(), deleted: false }).await.unwrap();
    assert_eq!(&s.load("config/b", 0, None, false).await.unwrap()[..], b"1");
    let e = s.move_("config/a", MoveAction::Delete).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ObjectNotFound);
    let only = store_with(&posixfs().await, &[("data/", &[1])], Emulator::OFF).await;
    assert_eq!(only.store("other/x", Bytes::new()).await.unwrap_err().kind, ErrorKind::InvalidArgument);
    assert_eq!(s.store("data/ab", Bytes::new()).await.unwrap_err().kind, ErrorKind::InvalidArgument, "key too short");
    s.close().await.unwrap();
}

#[tokio::test]
async fn hash_gather_defrag_with_namespaces() {
    let f = posixfs().await;
    let s = standard(&f).await;
    let (a, b) = (key(10), key(11));
    s.store(&format!("data/{a}"), Bytes::from_static(b"hello ")).await.unwrap();
    s.store(&format!("data/{b}"), Bytes::from_static(b"world!")).await.unwrap();
    for alg in HashAlgorithm::ALL {
        assert_eq!(s.hash(&format!("data/{a}"), alg, false).await.unwrap(), alg.hex_digest(b"hello "));
    }
    let sources = [Source::new(&a, 0, 6), Source::new(&b, 0, 5)];
    assert_eq!(&s.gather(&sources, Some("data"), false).await.unwrap()[..], b"hello world");
    let e = s.gather(&[Source::new(&a, 0, 60)], Some("data"), false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ReadRangeError);
    let slash = s.gather(&[Source::new(format!("x/{a}"), 0, 1)], Some("data"), false).await.unwrap_err();
    assert_eq!(slash.kind, ErrorKind::InvalidArgument);
    let made = s.defrag(&sources, DefragName::Hash(HashAlgorithm::Sha256), Some("data"), false).await.unwrap();
    assert_eq!(made, HashAlgorithm::Sha256.hex_digest(b"hello world"));
    assert_eq!(&s.load(&format!("data/{made}"), 0, None, false).await.unwrap()[..], b"hello world");
    let root = f.root.clone().unwrap();
    assert!(root.join(format!("data/{}/{}/{made}", &made[..2], &made[2..4])).is_file(), "nested at the ns level");
    let named = s.defrag(&sources, DefragName::Given(key(99)), Some("data"), false).await.unwrap();
    assert_eq!(named, key(99));
    s.close().await.unwrap();
}

#[tokio::test]
async fn stats_count_calls_and_volume() {
    let f = posixfs().await;
    let s = standard(&f).await;
    s.store("config/a", Bytes::from(vec![0u8; 1000])).await.unwrap();
    s.load("config/a", 0, None, false).await.unwrap();
    s.load("config/a", 0, Some(10), false).await.unwrap();
    s.info("config/a", false).await.unwrap();
    s.list("config", false).unwrap().collect().await.unwrap();
    let st = s.stats();
    assert_eq!(st["store_calls"], StatValue::Int(1));
    assert_eq!(st["store_volume"], StatValue::Int(1000));
    assert_eq!(st["load_calls"], StatValue::Int(2));
    assert_eq!(st["load_volume"], StatValue::Int(1010));
    assert_eq!(st["backend_load_volume"], StatValue::Int(1010));
    assert_eq!(st["info_calls"], StatValue::Int(1));
    assert_eq!(st["list_calls"], StatValue::Int(1));
    assert!(st["load_time"].as_f64() > 0.0);
    assert!(st.contains_key("cache_hit_ratio") && st.contains_key("gather_throughput"));
    s.close().await.unwrap();
}

#[tokio::test]
async fn latency_emulation_slows_backend_calls() {
    let f = posixfs().await;
    let emu = Emulator::from_values(Some("20000"), None).unwrap();
    let s = store_with(&f, &[("", &[0])], emu).await;
    s.store("x", Bytes::from_static(b"1")).await.unwrap();
    let start = Instant::now();
    for _ in 0..5 {
        s.load("x", 0, None, false).await.unwrap();
    }
    assert!(start.elapsed() >= Duration::from_millis(100), "5 loads at 20 ms each took {:?}", start.elapsed());
    let bw = Emulator::from_values(None, Some("8000000")).unwrap(); // 1 MB/s
    let slow = Store::with_emulator(f.backend.clone(), namespaces(&[("", &[0])]).unwrap(), bw);
    let start = Instant::now();
    slow.store("y", Bytes::from(vec![0u8; 200_000])).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200), "200 kB at 1 MB/s took {:?}", start.elapsed());
    s.close().await.unwrap();
}

#[tokio::test]
async fn create_precreates_levels_when_asked() {
    let f = posixfs().await;
    let s = store_with(&f, &[("data/", &[1]), ("config/", &[0])], Emulator::OFF).await;
    s.create_levels().await.unwrap();
    let root = f.root.clone().unwrap();
    let dirs = std::fs::read_dir(root.join("data")).unwrap().count();
    assert_eq!(dirs, 256);
    assert!(Path::new(&root.join("data/ff")).is_dir() && root.join("config").is_dir());
    s.close().await.unwrap();
}

/// A recursive listing of a remote store lists the next directories ahead, concurrently
/// (issue 16: 256 round trips one after another made listing 100k items on Garage take
/// minutes). Same items in the same order either way; with look-ahead, the listings
/// overlap: the wall time is well below the summed time of the backend list calls, which
/// without it can only be the other way round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_ahead_overlaps_directory_listings_and_keeps_the_order() {
    use borgstore_daemon::backends::posixfs::{PosixFs, PosixFsOptions};
    use borgstore_daemon::flow::FlowSettings;
    let dir = tempfile::tempdir().unwrap();
    let slow = Emulator { latency: Duration::from_millis(20), bandwidth: 0.0 };
    let build = |ahead: usize| {
        let be = std::sync::Arc::new(PosixFs::new(dir.path().join("s"), PosixFsOptions::default()).unwrap());
        let ns = namespaces(&[("data/", &[1]), ("", &[0])]).unwrap();
        let flow = FlowSettings { list_ahead: ahead, ..FlowSettings::default() };
        Store::build_with_flow(be, ns, slow, None, &flow)
    };
    let s = build(0);
    s.create().await.unwrap();
    s.open().await.unwrap();
    for i in 0..64u32 {
        let k = format!("data/{:02x}{}", i * 4, &key(i)[7..]);
        s.store(&k, Bytes::from(vec![i as u8; 3])).await.unwrap();
    }
    let timed = |s: Store| async move {
        let before = list_time(&s);
        let started = Instant::now();
        let items = s.list("data", false).unwrap().collect().await.unwrap();
        (names(&items), started.elapsed().as_secs_f64(), list_time(&s) - before)
    };
    let (sequential, wall0, sum0) = timed(s.clone()).await;
    s.close().await.unwrap();
    let s = build(8);
    s.open().await.unwrap();
    let (ahead, wall8, sum8) = timed(s.clone()).await;
    assert_eq!(sequential.len(), 64);
    assert_eq!(ahead, sequential, "the same items in the same order");
    assert!(wall0 >= sum0 * 0.99, "one listing after another: {wall0} s wall, {sum0} s in list calls");
    assert!(wall8 < sum8 * 0.5, "listings ahead overlap: {wall8} s wall, {sum8} s in list calls");
    s.close().await.unwrap();
}

fn list_time(s: &Store) -> f64 {
    match s.stats().get("list_time") {
        Some(StatValue::Float(f)) => *f,
        Some(StatValue::Int(i)) => *i as f64,
        _ => 0.0,
    }
}
