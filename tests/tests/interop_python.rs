//! On-disk compatibility with Python borgstore 0.7.0, both ways (issue 2, DESIGN.md 8).
//!
//! `tests/python/interop.py` runs the real Python Store from the venv `tests/run`
//! creates (`target/venv`, or `BORGSTORE_TEST_PYTHON`). Both sides write the same
//! scenario (namespace `data/` at nesting level 2, soft- and hard-deleted items, quota
//! on) and dump what they see: names and sizes, whole and tail loads, sha256 and blake3
//! hashes, the file tree and `quota.hid`. The dumps must be equal, whoever wrote the
//! store and whoever reads it, and an undelete by one side must show on the other.

use borgstore_daemon::backends::posixfs::{PosixFs, PosixFsOptions};
use borgstore_daemon::store::{Emulator, Store};
use borgstore_tests::python::{run_ok, Version};
use borgstore_tests::scenario::{self, key, names, tree, value, HARD_DELETED, ITEMS};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

const QUOTA: u64 = 1_000_000;

fn py(args: &[&str]) -> String {
    run_ok(Version::V070, "interop.py", args, &[])
}

fn py_dump(path: &Path) -> Value {
    serde_json::from_str(&py(&["dump", path.to_str().unwrap(), &QUOTA.to_string()])).unwrap()
}

fn open(path: &Path) -> Store {
    let options = PosixFsOptions { quota: Some(QUOTA), ..Default::default() };
    let be = Arc::new(PosixFs::new(path, options).unwrap());
    Store::with_emulator(be, scenario::namespaces(), Emulator::OFF)
}

async fn rust_write(path: &Path) {
    scenario::write(&open(path)).await;
}

async fn rust_undelete(path: &Path, name: &str) {
    scenario::undelete(&open(path), name).await;
}

/// What interop.py `dump` prints, seen through our engine: the scenario dump plus quota,
/// the file tree and `quota.hid`.
async fn rust_dump(path: &Path) -> Value {
    let s = open(path);
    let mut out = scenario::dump(&s, false).await;
    s.open().await.unwrap();
    let quota = s.quota().await.unwrap();
    s.close().await.unwrap();
    out.insert("quota".into(), json!({"limit": quota.limit, "usage": quota.usage}));
    let mut files = tree(path);
    files.retain(|p| p != "quota.hid");
    out.insert("tree".into(), json!(files));
    let hid = std::fs::read_to_string(path.join("quota.hid")).unwrap().trim().parse::<i64>().unwrap();
    out.insert("quota_hid".into(), json!(hid));
    Value::Object(out)
}

/// The dump holds what the scenario put there, quota and layout included.
fn check_scenario(dump: &Value) {
    scenario::check(dump);
    let usage: u64 = (0..ITEMS).filter(|i| !HARD_DELETED.contains(i)).map(|i| i * 37).sum::<u64>() + 15;
    assert_eq!(dump["quota"], json!({"limit": QUOTA, "usage": usage}));
    assert_eq!(dump["quota_hid"], json!(usage));
    assert!(dump["tree"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().ends_with(".del")));
    let k1 = &key(1)[5..];
    assert!(dump["tree"].as_array().unwrap().contains(&json!(format!("data/{}/{}/{}", &k1[..2], &k1[2..4], k1))));
}

#[tokio::test]
async fn python_writes_rust_reads_and_undeletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("py");
    py(&["write", path.to_str().unwrap(), &QUOTA.to_string()]);
    let theirs = py_dump(&path);
    check_scenario(&theirs);
    assert_eq!(rust_dump(&path).await, theirs, "our engine sees a Python-written store differently");

    rust_undelete(&path, &key(7)).await;
    let after = py_dump(&path);
    assert!(names(&after, "list").contains(&key(7)));
    assert!(!names(&after, "deleted").contains(&key(7)));
    assert_eq!(after["loads"][key(7)], json!(hex::encode(Sha256::digest(value(7)))));
    assert_eq!(rust_dump(&path).await, after);
}

#[tokio::test]
async fn rust_writes_python_reads_and_undeletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rs");
    rust_write(&path).await;
    let ours = rust_dump(&path).await;
    check_scenario(&ours);
    assert_eq!(py_dump(&path), ours, "Python sees a store we wrote differently");

    py(&["undelete", path.to_str().unwrap(), &QUOTA.to_string(), &key(3)]);
    let after = rust_dump(&path).await;
    assert!(names(&after, "list").contains(&key(3)));
    assert!(!names(&after, "deleted").contains(&key(3)));
    assert_eq!(py_dump(&path), after);
}

#[tokio::test]
async fn both_write_the_same_bytes_to_the_same_places() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("py"), dir.path().join("rs"));
    py(&["write", a.to_str().unwrap(), &QUOTA.to_string()]);
    rust_write(&b).await;
    assert_eq!(py_dump(&a), py_dump(&b));
    for rel in tree(&a) {
        assert_eq!(std::fs::read(a.join(&rel)).unwrap(), std::fs::read(b.join(&rel)).unwrap(), "{rel}");
    }
}
