//! The backend conformance suite: what every [`Backend`] must do, whatever it stores on.
//!
//! Each case is an `async fn(Fixture)` that starts from a store that does not exist yet.
//! [`conformance_suite!`](crate::conformance_suite) turns the whole list into one
//! `#[tokio::test]` per case for a given fixture factory, so a new backend joins the
//! suite with one line and can never skip a case.

use crate::fixtures::Fixture;
use borgstore_daemon::backends::DefragTarget;
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::Backend;
use borgstore_ipc::{ErrorKind, Quota, Source};
use bytes::Bytes;
use std::sync::Arc;

/// Generate one test per conformance case for `$factory` (an async fn returning a
/// [`Fixture`]) inside a module named `$name`.
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $factory:path) => {
        $crate::conformance_suite!(@cases $name, $factory,
            lifecycle, closed_backend_refuses, store_and_load, overwrite, load_ranges, info,
            delete, move_items, list_one_level, mkdir_rmdir, hash_all_algorithms, gather_ranges,
            defrag_named_and_hashed, invalid_names, quota_off_by_default, large_value,
            concurrent_overwrite_is_atomic);
    };
    (@cases $name:ident, $factory:path, $($case:ident),+ $(,)?) => {
        mod $name {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::conformance::$case($factory().await).await;
                }
            )+
        }
    };
}

/// Create and open the fixture's store.
pub async fn opened(f: &Fixture) -> Arc<dyn Backend> {
    let b = f.backend.clone();
    b.create().await.expect("create");
    b.open().await.expect("open");
    b
}

fn kind<T: std::fmt::Debug>(r: borgstore_ipc::Result<T>) -> ErrorKind {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.kind,
    }
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

pub async fn lifecycle(f: Fixture) {
    let be = f.backend.clone();
    assert_eq!(kind(be.open().await), ErrorKind::BackendDoesNotExist);
    assert_eq!(kind(be.destroy().await), ErrorKind::BackendDoesNotExist);
    be.create().await.unwrap();
    be.open().await.unwrap();
    assert_eq!(kind(be.open().await), ErrorKind::BackendMustNotBeOpen);
    assert_eq!(kind(be.create().await), ErrorKind::BackendMustNotBeOpen);
    assert_eq!(kind(be.destroy().await), ErrorKind::BackendMustNotBeOpen);
    be.store("config/x", b(b"1")).await.unwrap();
    be.close().await.unwrap();
    assert_eq!(kind(be.close().await), ErrorKind::BackendMustBeOpen);
    // A store with contents is not created again.
    assert_eq!(kind(be.create().await), ErrorKind::BackendAlreadyExists);
    // Reopening sees what was stored.
    be.open().await.unwrap();
    assert_eq!(&be.load("config/x", 0, None).await.unwrap()[..], b"1");
    be.close().await.unwrap();
    be.destroy().await.unwrap();
    assert_eq!(kind(be.open().await), ErrorKind::BackendDoesNotExist);
    // Destroyed means gone: it can be created anew.
    be.create().await.unwrap();
    be.open().await.unwrap();
    assert!(be.list("").await.unwrap().is_empty());
    be.close().await.unwrap();
}

pub async fn closed_backend_refuses(f: Fixture) {
    let be = f.backend.clone();
    be.create().await.unwrap();
    assert_eq!(kind(be.store("a", b(b"x")).await), ErrorKind::BackendMustBeOpen);
    assert_eq!(kind(be.load("a", 0, None).await), ErrorKind::BackendMustBeOpen);
    assert_eq!(kind(be.info("a").await), ErrorKind::BackendMustBeOpen);
    assert_eq!(kind(be.delete("a").await), ErrorKind::BackendMustBeOpen);
    assert_eq!(kind(be.move_("a", "b").await), ErrorKind::BackendMustBeOpen);
    assert_eq!(kind(be.list("").await), ErrorKind::BackendMustBeOpen);
    assert_eq!(kind(be.mkdir("d").await), ErrorKind::BackendMustBeOpen);
    assert_eq!(kind(be.hash("a", HashAlgorithm::Sha256).await), ErrorKind::BackendMustBeOpen);
}

pub async fn store_and_load(f: Fixture) {
    let be = opened(&f).await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    be.store("data/00/0011", Bytes::from(binary.clone())).await.unwrap();
    be.store("config/empty", Bytes::new()).await.unwrap();
    assert_eq!(be.load("data/00/0011", 0, None).await.unwrap().to_vec(), binary);
    assert!(be.load("config/empty", 0, None).await.unwrap().is_empty());
    assert_eq!(kind(be.load("config/missing", 0, None).await), ErrorKind::ObjectNotFound);
    assert_eq!(kind(be.load("nodir/missing", 0, None).await), ErrorKind::ObjectNotFound);
    be.close().await.unwrap();
}

pub async fn overwrite(f: Fixture) {
    let be = opened(&f).await;
    be.store("k", b(b"first value")).await.unwrap();
    be.store("k", b(b"2nd")).await.unwrap();
    assert_eq!(&be.load("k", 0, None).await.unwrap()[..], b"2nd");
    assert_eq!(be.info("k").await.unwrap().size, 3);
    be.close().await.unwrap();
}

pub async fn load_ranges(f: Fixture) {
    let be = opened(&f).await;
    be.store("r", b(b"0123456789")).await.unwrap();
    let load = |o: i64, s: Option<u64>| {
        let be = be.clone();
        async move { be.load("r", o, s).await.unwrap().to_vec() }
    };
    assert_eq!(load(0, Some(3)).await, b"012");
    assert_eq!(load(4, None).await, b"456789");
    assert_eq!(load(4, Some(2)).await, b"45");
    assert_eq!(load(-3, None).await, b"789");
    assert_eq!(load(-4, Some(2)).await, b"67");
    assert_eq!(load(8, Some(10)).await, b"89", "a size beyond the end gives the rest");
    assert_eq!(load(10, None).await, b"", "offset at the end gives nothing");
    assert_eq!(load(0, Some(0)).await, b"");
    be.close().await.unwrap();
}

pub async fn info(f: Fixture) {
    let be = opened(&f).await;
    be.store("ns/item", b(b"12345")).await.unwrap();
    let i = be.info("ns/item").await.unwrap();
    assert!(i.exists && !i.directory);
    assert_eq!((i.name.as_str(), i.size), ("item", 5));
    assert!(i.mtime >= 0.0 && i.atime >= 0.0);
    let d = be.info("ns").await.unwrap();
    assert!(d.exists && d.directory);
    let m = be.info("ns/missing").await.unwrap();
    assert!(!m.exists && m.size == 0 && !m.directory);
    let under_file = be.info("ns/item/below").await.unwrap();
    assert!(!under_file.exists);
    be.close().await.unwrap();
}

pub async fn delete(f: Fixture) {
    let be = opened(&f).await;
    be.store("d/x", b(b"x")).await.unwrap();
    be.delete("d/x").await.unwrap();
    assert!(!be.info("d/x").await.unwrap().exists);
    assert_eq!(kind(be.delete("d/x").await), ErrorKind::ObjectNotFound);
    assert_eq!(kind(be.delete("nodir/x").await), ErrorKind::ObjectNotFound);
    be.close().await.unwrap();
}

pub async fn move_items(f: Fixture) {
    let be = opened(&f).await;
    be.store("a/one", b(b"1")).await.unwrap();
    be.store("a/two", b(b"2")).await.unwrap();
    be.move_("a/one", "a/one.del").await.unwrap();
    assert!(!be.info("a/one").await.unwrap().exists);
    assert_eq!(&be.load("a/one.del", 0, None).await.unwrap()[..], b"1");
    // Replaces the target.
    be.move_("a/one.del", "a/two").await.unwrap();
    assert_eq!(&be.load("a/two", 0, None).await.unwrap()[..], b"1");
    // Into a directory that does not exist yet.
    be.move_("a/two", "b/c/two").await.unwrap();
    assert_eq!(&be.load("b/c/two", 0, None).await.unwrap()[..], b"1");
    assert_eq!(kind(be.move_("a/missing", "a/x").await), ErrorKind::ObjectNotFound);
    be.close().await.unwrap();
}

pub async fn list_one_level(f: Fixture) {
    let be = opened(&f).await;
    for name in ["ns/b", "ns/a", "ns/c.del", "ns/sub/x", "ns/0"] {
        be.store(name, b(b"v")).await.unwrap();
    }
    let items = be.list("ns").await.unwrap();
    let names: Vec<(&str, bool)> = items.iter().map(|i| (i.name.as_str(), i.directory)).collect();
    assert_eq!(names, [("0", false), ("a", false), ("b", false), ("c.del", false), ("sub", true)]);
    assert!(items.iter().all(|i| i.exists));
    assert_eq!(items[1].size, 1);
    let root: Vec<String> = be.list("").await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(root, ["ns"]);
    assert_eq!(kind(be.list("missing").await), ErrorKind::ObjectNotFound);
    be.close().await.unwrap();
}

pub async fn mkdir_rmdir(f: Fixture) {
    let be = opened(&f).await;
    be.mkdir("x/y/z").await.unwrap();
    be.mkdir("x/y/z").await.unwrap();
    assert!(be.info("x/y/z").await.unwrap().directory);
    be.rmdir("x/y/z").await.unwrap();
    assert!(!be.info("x/y/z").await.unwrap().exists);
    assert!(be.info("x/y").await.unwrap().directory);
    assert_eq!(kind(be.rmdir("x/nope").await), ErrorKind::ObjectNotFound);
    be.close().await.unwrap();
}

pub async fn hash_all_algorithms(f: Fixture) {
    let be = opened(&f).await;
    let value: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    be.store("h", Bytes::from(value.clone())).await.unwrap();
    for alg in HashAlgorithm::ALL {
        assert_eq!(be.hash("h", alg).await.unwrap(), alg.hex_digest(&value), "{alg}");
    }
    assert_eq!(kind(be.hash("missing", HashAlgorithm::Sha256).await), ErrorKind::ObjectNotFound);
    be.close().await.unwrap();
}

pub async fn gather_ranges(f: Fixture) {
    let be = opened(&f).await;
    be.store("g/a", b(b"abcdef")).await.unwrap();
    be.store("g/b", b(b"0123456789")).await.unwrap();
    let sources =
        [Source::new("g/a", 1, 2), Source::new("g/b", -3, 3), Source::new("g/a", 0, 0), Source::new("g/b", 0, 1)];
    assert_eq!(&be.gather(&sources).await.unwrap()[..], b"bc7890");
    assert!(be.gather(&[]).await.unwrap().is_empty());
    assert_eq!(kind(be.gather(&[Source::new("g/a", 4, 5)]).await), ErrorKind::ReadRangeError);
    assert_eq!(kind(be.gather(&[Source::new("g/zz", 0, 1)]).await), ErrorKind::ObjectNotFound);
    be.close().await.unwrap();
}

pub async fn defrag_named_and_hashed(f: Fixture) {
    let be = opened(&f).await;
    be.store("d/01/0123", b(b"hello ")).await.unwrap();
    be.store("d/ab/abcd", b(b"world!")).await.unwrap();
    let sources = [Source::new("d/01/0123", 0, 6), Source::new("d/ab/abcd", 0, 5)];
    let named = be.defrag(&sources, &DefragTarget::Name("d/ff/ffee".into())).await.unwrap();
    assert_eq!(named, "d/ff/ffee");
    assert_eq!(&be.load("d/ff/ffee", 0, None).await.unwrap()[..], b"hello world");
    let digest = HashAlgorithm::Sha256.hex_digest(b"hello world");
    let target = DefragTarget::Hashed { algorithm: HashAlgorithm::Sha256, namespace: "d".into(), levels: 1 };
    let hashed = be.defrag(&sources, &target).await.unwrap();
    assert_eq!(hashed, format!("d/{}/{digest}", &digest[..2]));
    assert_eq!(&be.load(&hashed, 0, None).await.unwrap()[..], b"hello world");
    // The sources stay.
    assert!(be.info("d/01/0123").await.unwrap().exists);
    be.close().await.unwrap();
}

pub async fn invalid_names(f: Fixture) {
    let be = opened(&f).await;
    let bad = ["/abs", "a/../b", "..", "UPPER", "a b", "x.tmp", "x.hid", "a\\b", "a\0b", "a//b", "tail/"];
    for name in bad {
        assert_eq!(kind(be.store(name, b(b"x")).await), ErrorKind::InvalidArgument, "store {name:?}");
        assert_eq!(kind(be.load(name, 0, None).await), ErrorKind::InvalidArgument, "load {name:?}");
        assert_eq!(kind(be.info(name).await), ErrorKind::InvalidArgument, "info {name:?}");
        assert_eq!(kind(be.delete(name).await), ErrorKind::InvalidArgument, "delete {name:?}");
        assert_eq!(kind(be.move_("ok", name).await), ErrorKind::InvalidArgument, "move {name:?}");
        assert_eq!(kind(be.list(name).await), ErrorKind::InvalidArgument, "list {name:?}");
        assert_eq!(kind(be.mkdir(name).await), ErrorKind::InvalidArgument, "mkdir {name:?}");
        assert_eq!(kind(be.hash(name, HashAlgorithm::Md5).await), ErrorKind::InvalidArgument, "hash {name:?}");
    }
    assert_eq!(kind(be.store(&"a".repeat(101), b(b"x")).await), ErrorKind::InvalidArgument);
    assert_eq!(kind(be.store("", b(b"x")).await), ErrorKind::InvalidArgument);
    assert!(be.list("").await.unwrap().is_empty(), "nothing was written");
    be.close().await.unwrap();
}

pub async fn quota_off_by_default(f: Fixture) {
    let be = opened(&f).await;
    assert_eq!(be.quota().await.unwrap(), Quota::OFF);
    be.close().await.unwrap();
}

pub async fn large_value(f: Fixture) {
    let be = opened(&f).await;
    let value: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i ^ (i >> 8)) as u8).collect();
    be.store("big/item", Bytes::from(value.clone())).await.unwrap();
    assert_eq!(be.info("big/item").await.unwrap().size, value.len() as u64);
    let back = be.load("big/item", 0, None).await.unwrap();
    assert!(back[..] == value[..], "8 MiB value round trip");
    let tail = be.load("big/item", -1000, None).await.unwrap();
    assert!(tail[..] == value[value.len() - 1000..]);
    be.close().await.unwrap();
}

pub async fn concurrent_overwrite_is_atomic(f: Fixture) {
    let be = opened(&f).await;
    let a = Bytes::from(vec![b'a'; 256 * 1024]);
    let z = Bytes::from(vec![b'z'; 256 * 1024]);
    be.store("atom", a.clone()).await.unwrap();
    let writer = {
        let be = be.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                be.store("atom", if i % 2 == 0 { z.clone() } else { a.clone() }).await.unwrap();
            }
        })
    };
    while !writer.is_finished() {
        let v = be.load("atom", 0, None).await.unwrap();
        assert_eq!(v.len(), 256 * 1024, "a reader never sees a partial value");
        assert!(v.iter().all(|c| *c == v[0]), "a reader never sees a mix of two values");
    }
    writer.await.unwrap();
    be.close().await.unwrap();
}
