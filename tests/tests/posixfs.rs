//! posixfs specifics that the generic conformance suite cannot see: the on-disk layout,
//! temp files, permissions, quota, timestamps.

use borgstore_daemon::backends::body::{Body, BodyStream};
use borgstore_daemon::backends::posixfs::{quota, Permissions, PosixFsOptions};
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::Backend;
use borgstore_ipc::{ErrorKind, Source};
use borgstore_tests::conformance::opened;
use borgstore_tests::fixtures::{posixfs, posixfs_with, Fixture};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fs;

fn kind<T: std::fmt::Debug>(r: borgstore_ipc::Result<T>) -> ErrorKind {
    r.expect_err("expected an error").kind
}

/// Every file under `root`, as paths relative to it.
fn files(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out
}

fn perms(pairs: &[(&str, &str)]) -> Permissions {
    Permissions::new(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<BTreeMap<_, _>>()).unwrap()
}

#[tokio::test]
async fn layout_and_temp_files() {
    let f = posixfs().await;
    let be = opened(&f).await;
    let root = f.root.clone().unwrap();
    be.store("data/00/11/0011aa", Bytes::from_static(b"v")).await.unwrap();
    assert_eq!(fs::read(root.join("data/00/11/0011aa")).unwrap(), b"v");
    // Leftovers of an aborted upload, hidden files and foreign names are not listed.
    fs::write(root.join("data/00/11/tmpabc.tmp"), b"partial").unwrap();
    fs::write(root.join("data/00/11/UPPER"), b"foreign").unwrap();
    fs::write(root.join("data/00/11/x.hid"), b"hidden").unwrap();
    let names: Vec<String> = be.list("data/00/11").await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["0011aa"]);
    // No temp files remain after stores.
    for i in 0..20 {
        be.store(&format!("data/00/11/0011{i:02}"), Bytes::from(vec![1u8; 1000])).await.unwrap();
    }
    let tmps = fs::read_dir(root.join("data/00/11"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(tmps, 1, "only the planted temp file");
    be.close().await.unwrap();
}

#[tokio::test]
async fn create_refuses_non_empty_and_accepts_empty_dir() {
    let f = posixfs().await;
    let root = f.root.clone().unwrap();
    fs::create_dir_all(&root).unwrap();
    f.backend.create().await.expect("an existing empty directory is fine");
    fs::write(root.join("foreign"), b"x").unwrap();
    let e = f.backend.create().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BackendAlreadyExists);
    assert!(!e.message.contains(root.to_str().unwrap()), "no absolute path in {e}");
    f.backend.destroy().await.unwrap();
    assert!(!root.exists());
}

#[tokio::test]
async fn timestamps_in_info_and_list() {
    let f = posixfs().await;
    let be = opened(&f).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    be.store("t/x", Bytes::from_static(b"1")).await.unwrap();
    let i = be.info("t/x").await.unwrap();
    assert!((i.mtime - now).abs() < 60.0 && i.atime > 0.0, "{i:?}");
    let l = &be.list("t").await.unwrap()[0];
    assert_eq!((l.mtime, l.size), (i.mtime, 1));
    be.close().await.unwrap();
}

#[tokio::test]
async fn errors_never_leak_the_root_path() {
    let f = posixfs().await;
    let be = opened(&f).await;
    let root = f.root.clone().unwrap();
    be.store("p/file", Bytes::from_static(b"x")).await.unwrap();
    let errors = vec![
        be.load("p/missing", 0, None).await.unwrap_err(),
        be.store("p/file/below", Bytes::from_static(b"x")).await.unwrap_err(),
        be.load("p", 0, None).await.unwrap_err(),
        be.delete("p").await.unwrap_err(),
        be.list("p/file").await.unwrap_err(),
    ];
    for e in errors {
        assert!(!e.message.contains(root.to_str().unwrap()), "{e}");
        assert!(!e.message.contains("/tmp"), "{e}");
    }
    be.close().await.unwrap();
}

async fn restricted(pairs: &[(&str, &str)]) -> Fixture {
    // Create and fill the store without restrictions, then reopen it restricted.
    let open = posixfs().await;
    let be = opened(&open).await;
    be.store("config/c", Bytes::from_static(b"c")).await.unwrap();
    be.store("data/00/0011", Bytes::from_static(b"d")).await.unwrap();
    be.store("locks/l", Bytes::from_static(b"l")).await.unwrap();
    be.close().await.unwrap();
    let root = open.root.clone().unwrap();
    let f = posixfs_with(PosixFsOptions { permissions: perms(pairs), ..Default::default() });
    fs::remove_dir_all(f.root.as_ref().unwrap().parent().unwrap()).ok();
    fs::create_dir_all(f.root.as_ref().unwrap().parent().unwrap()).unwrap();
    fs::rename(&root, f.root.as_ref().unwrap()).unwrap();
    f.backend.open().await.unwrap();
    f
}

#[tokio::test]
async fn permissions_read_only() {
    let f = restricted(&[("", "lr"), ("locks", "lrwD")]).await;
    let be = &f.backend;
    assert_eq!(&be.load("data/00/0011", 0, None).await.unwrap()[..], b"d");
    assert_eq!(be.list("data").await.unwrap().len(), 1);
    assert_eq!(kind(be.store("data/00/0022", Bytes::new()).await), ErrorKind::PermissionDenied);
    assert_eq!(kind(be.delete("data/00/0011").await), ErrorKind::PermissionDenied);
    assert_eq!(kind(be.move_("data/00/0011", "data/00/0011.del").await), ErrorKind::PermissionDenied);
    assert_eq!(kind(be.mkdir("newdir").await), ErrorKind::PermissionDenied);
    be.store("locks/new", Bytes::from_static(b"n")).await.unwrap();
    be.delete("locks/new").await.unwrap();
    assert!(be.info("data/00/0011").await.unwrap().exists, "nothing changed");
    be.close().await.unwrap();
}

#[tokio::test]
async fn permissions_no_delete_no_overwrite() {
    let f = restricted(&[("", "lrw"), ("locks", "lrwWD")]).await;
    let be = &f.backend;
    be.store("data/00/0022", Bytes::from_static(b"new")).await.unwrap();
    assert_eq!(kind(be.store("data/00/0011", Bytes::from_static(b"over")).await), ErrorKind::PermissionDenied);
    assert_eq!(kind(be.delete("data/00/0011").await), ErrorKind::PermissionDenied);
    assert_eq!(&be.load("data/00/0011", 0, None).await.unwrap()[..], b"d", "old value kept");
    be.store("locks/l", Bytes::from_static(b"over")).await.unwrap();
    be.close().await.unwrap();
}

#[tokio::test]
async fn permissions_write_only() {
    let f = restricted(&[("", "lw"), ("config", "lrW"), ("data", "lwD"), ("locks", "lrwWD")]).await;
    let be = &f.backend;
    assert_eq!(kind(be.load("data/00/0011", 0, None).await), ErrorKind::PermissionDenied);
    assert_eq!(kind(be.hash("data/00/0011", HashAlgorithm::Sha256).await), ErrorKind::PermissionDenied);
    assert_eq!(kind(be.gather(&[Source::new("data/00/0011", 0, 1)]).await), ErrorKind::PermissionDenied);
    assert!(be.info("data/00/0011").await.unwrap().exists, "l allows info");
    be.store("data/00/0033", Bytes::from_static(b"x")).await.unwrap();
    be.delete("data/00/0033").await.unwrap();
    assert_eq!(&be.load("config/c", 0, None).await.unwrap()[..], b"c");
    be.close().await.unwrap();
}

#[tokio::test]
async fn quota_limits_stores_and_persists() {
    let f = posixfs_with(PosixFsOptions { quota: Some(1000), ..Default::default() });
    let be = opened(&f).await;
    let root = f.root.clone().unwrap();
    be.store("q/a", Bytes::from(vec![0u8; 600])).await.unwrap();
    let e = be.store("q/b", Bytes::from(vec![0u8; 500])).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::QuotaExceeded);
    assert!(!be.info("q/b").await.unwrap().exists, "nothing written");
    // Overwriting counts the difference only.
    be.store("q/a", Bytes::from(vec![0u8; 900])).await.unwrap();
    assert_eq!(be.quota().await.unwrap().usage, 900);
    be.delete("q/a").await.unwrap();
    be.store("q/b", Bytes::from(vec![0u8; 400])).await.unwrap();
    assert_eq!(be.quota().await.unwrap().limit, 1000);
    assert_eq!(be.quota().await.unwrap().usage, 400);
    be.close().await.unwrap();
    assert_eq!(quota::read(&root), Some(400), "usage persisted on close");
    // An invalid usage file is replaced by a rescan.
    fs::write(root.join(quota::QUOTA_FILE), b"garbage").unwrap();
    be.open().await.unwrap();
    assert_eq!(be.quota().await.unwrap().usage, 400);
    be.close().await.unwrap();
    // A store opened without quota drops the stale file.
    let plain = borgstore_daemon::backends::posixfs::PosixFs::new(root.clone(), Default::default()).unwrap();
    plain.open().await.unwrap();
    assert!(!root.join(quota::QUOTA_FILE).exists());
    plain.close().await.unwrap();
}

#[tokio::test]
async fn quota_shared_by_two_backends() {
    let f = posixfs_with(PosixFsOptions { quota: Some(10_000_000_000), ..Default::default() });
    let a = opened(&f).await;
    let root = f.root.clone().unwrap();
    let b = borgstore_daemon::backends::posixfs::PosixFs::new(
        root.clone(),
        PosixFsOptions { quota: Some(10_000_000_000), ..Default::default() },
    )
    .unwrap();
    b.open().await.unwrap();
    a.store("x/a", Bytes::from(vec![0u8; 1234])).await.unwrap();
    b.store("x/b", Bytes::from(vec![0u8; 4321])).await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    assert_eq!(quota::read(&root), Some(1234 + 4321), "both sessions' deltas applied under the lock");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fsync_mode_stores_moves_and_deletes_alike() {
    use borgstore_daemon::backends::durability::FsyncMode;
    for mode in [FsyncMode::Off, FsyncMode::Always, FsyncMode::Batch] {
        let f = posixfs_with(PosixFsOptions { fsync: mode, quota: Some(10 << 20), ..Default::default() });
        let be = opened(&f).await;
        be.store("s/x", Bytes::from_static(b"synced")).await.unwrap();
        be.store("s/x", Bytes::from_static(b"again")).await.unwrap();
        assert_eq!(&be.load("s/x", 0, None).await.unwrap()[..], b"again", "{mode}");
        be.mkdir("d/e/f").await.unwrap();
        be.rmdir("d/e/f").await.unwrap();
        be.move_("s/x", "n/e/w/x").await.unwrap();
        assert_eq!(&be.load("n/e/w/x", 0, None).await.unwrap()[..], b"again", "{mode}");
        // A streamed value (larger than what is collected in memory) in pieces.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (tx, stream) = BodyStream::channel(big.len() as u64);
        let feed = {
            let big = big.clone();
            async move {
                let mut tx = tx;
                assert!(tx.wanted().await);
                for piece in big.chunks(70_000) {
                    assert!(tx.send(Bytes::copy_from_slice(piece)).await);
                }
            }
        };
        let (_, stored) = tokio::join!(feed, be.store_body("s/big", Body::Stream(stream)));
        stored.unwrap();
        assert_eq!(be.load("s/big", 0, None).await.unwrap(), big, "{mode}");
        be.delete("s/big").await.unwrap();
        be.delete("n/e/w/x").await.unwrap();
        assert_eq!(be.quota().await.unwrap().usage, 0, "{mode}");
        assert!(files(f.root.as_ref().unwrap()).iter().all(|p| !p.ends_with(".tmp")), "{mode}: no temp files left");
        be.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_store_is_refused_before_a_byte_is_read_and_a_failed_one_leaves_nothing() {
    let f = posixfs_with(PosixFsOptions {
        quota: Some(2_000_000),
        permissions: perms(&[("", "lrw"), ("ro", "lr")]),
        ..Default::default()
    });
    let be = opened(&f).await;
    for (name, len, kind) in [
        ("s/huge", 3_000_000u64, ErrorKind::QuotaExceeded),
        ("s/small-over", 2_000_001, ErrorKind::QuotaExceeded),
        ("ro/x", 10, ErrorKind::PermissionDenied),
        ("ro/big", 1_500_000, ErrorKind::PermissionDenied),
    ] {
        let (mut tx, stream) = BodyStream::channel(len);
        let err = be.store_body(name, Body::Stream(stream)).await.unwrap_err();
        assert_eq!(err.kind, kind, "{name}");
        assert!(!tx.wanted().await, "{name}: the body was asked for before the refusal");
    }
    // Overwriting needs W: the small path decides by looking at the item first.
    be.store("s/w", Bytes::from_static(b"first")).await.unwrap();
    let (mut tx, stream) = BodyStream::channel(3);
    assert_eq!(be.store_body("s/w", Body::Stream(stream)).await.unwrap_err().kind, ErrorKind::PermissionDenied);
    assert!(!tx.wanted().await);
    // A client that goes away halfway: nothing stored, no temp file left.
    let (tx, stream) = BodyStream::channel(1_500_000);
    let feed = async move {
        let mut tx = tx;
        assert!(tx.wanted().await);
        tx.send(Bytes::from(vec![1u8; 700_000])).await;
    };
    let (_, stored) = tokio::join!(feed, be.store_body("s/partial", Body::Stream(stream)));
    assert_eq!(stored.unwrap_err().kind, ErrorKind::ConnectionLost);
    assert!(!be.info("s/partial").await.unwrap().exists);
    assert!(
        files(f.root.as_ref().unwrap()).iter().all(|p| !p.ends_with(".tmp")),
        "{:?}",
        files(f.root.as_ref().unwrap())
    );
    assert_eq!(be.quota().await.unwrap().usage, 5);
}

#[tokio::test]
async fn a_move_onto_itself_changes_nothing_and_frees_nothing() {
    let f = posixfs_with(PosixFsOptions { quota: Some(1000), ..Default::default() });
    let be = opened(&f).await;
    be.store("ns/x", Bytes::from_static(b"0123456789")).await.unwrap();
    be.move_("ns/x", "ns/x").await.unwrap();
    assert_eq!(be.quota().await.unwrap().usage, 10, "the item is still there and still counts");
    assert_eq!(&be.load("ns/x", 0, None).await.unwrap()[..], b"0123456789");
    assert_eq!(kind(be.move_("ns/missing", "ns/missing").await), ErrorKind::ObjectNotFound);
    // A move that replaces another item gives that item's bytes back.
    be.store("ns/y", Bytes::from_static(b"abc")).await.unwrap();
    be.move_("ns/y", "ns/x").await.unwrap();
    assert_eq!(be.quota().await.unwrap().usage, 3);
}

/// The daemon's posixfs answers an info and a small load from the kernel's caches on
/// the calling thread, and goes to the blocking pool for what is not in memory, for
/// large values, and for everything that writes.
#[tokio::test]
async fn off_thread_info_and_small_loads_come_from_the_caches_and_the_rest_from_the_pool() {
    use borgstore_daemon::backends::posixfs::{PosixFs, INLINE_MAX};
    use borgstore_daemon::backends::value::Value;
    use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let be = PosixFs::new(root.clone(), PosixFsOptions { off_thread: true, ..Default::default() }).unwrap();
    be.create().await.unwrap();
    be.open().await.unwrap();
    let small: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    be.store("data/aa/01", Bytes::from(small.clone())).await.unwrap();
    let large = vec![9u8; INLINE_MAX as usize + 2];
    be.store("data/aa/02", Bytes::from(large.clone())).await.unwrap();

    // The first lookup of a missing name may go to the pool; it leaves the kernel a
    // negative entry that answers the next ones.
    assert!(!be.info("data/aa/missing").await.unwrap().exists);
    let before = be.pool_calls();
    for _ in 0..50 {
        assert_eq!(be.info("data/aa/01").await.unwrap().size, 4096);
        assert_eq!(&be.load("data/aa/01", 0, None).await.unwrap()[..], &small[..]);
        assert_eq!(&be.load("data/aa/01", -100, Some(10)).await.unwrap()[..], &small[3996..4006]);
        assert!(!be.info("data/aa/missing").await.unwrap().exists);
    }
    assert_eq!(kind(be.load("data/aa/missing", 0, None).await), ErrorKind::ObjectNotFound);
    assert_eq!(be.pool_calls(), before, "answered from the caches, no hop");

    // A large value is opened from the caches and read in pieces by its reader (the
    // door), from the page cache where it is there, not by a call of the backend.
    assert_eq!(&be.load("data/aa/02", 0, None).await.unwrap()[..], &large[..]);
    match be.load_value("data/aa/02", 1, None).await.unwrap() {
        Value::File(mut range) => {
            assert_eq!(range.left(), large.len() as u64 - 1);
            let mut got = 0;
            while let Some(piece) = range.next_piece().await.unwrap() {
                got += piece.len();
            }
            assert_eq!(got, large.len() - 1);
        }
        Value::Bytes(_) => panic!("a large value comes as its open file"),
    }
    assert_eq!(be.pool_calls(), before);

    // A value no longer in the page cache is read on the pool, and read right.
    let f = fs::File::open(root.join("data/aa/01")).unwrap();
    f.sync_all().unwrap();
    posix_fadvise(f.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
    assert_eq!(&be.load("data/aa/01", 0, None).await.unwrap()[..], &small[..]);
    assert_eq!(be.pool_calls(), before + 1);

    // Writes always go to the pool.
    be.store("data/aa/03", Bytes::from_static(b"w")).await.unwrap();
    assert!(be.pool_calls() > before + 1);
}
