//! On-disk compatibility with Python borgstore 0.7.0, both ways (issue 2, DESIGN.md 8).
//!
//! `tests/python/interop.py` runs the real Python Store from the venv `tests/run`
//! creates (`target/venv`, or `BORGSTORE_TEST_PYTHON`). Both sides write the same
//! scenario (namespace `data/` at nesting level 2, soft- and hard-deleted items, quota
//! on) and dump what they see: names and sizes, whole and tail loads, sha256 and blake3
//! hashes, the file tree and `quota.hid`. The dumps must be equal, whoever wrote the
//! store and whoever reads it, and an undelete by one side must show on the other.

use borgstore_daemon::backends::posixfs::{PosixFs, PosixFsOptions};
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::store::config::namespaces;
use borgstore_daemon::store::{Emulator, MoveAction, Store};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const QUOTA: u64 = 1_000_000;
const ITEMS: u64 = 20;
const SOFT_DELETED: [u64; 3] = [3, 7, 11];
const HARD_DELETED: [u64; 1] = [15];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python() -> PathBuf {
    let p = std::env::var_os("BORGSTORE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/venv/bin/python"));
    assert!(
        p.exists(),
        "Python with borgstore 0.7.0 not found at {}: run tests/run (it creates target/venv), or \
         python3 -m venv target/venv && target/venv/bin/pip install borgstore==0.7.0 blake3",
        p.display()
    );
    p
}

/// Run interop.py; returns its stdout, panics with its stderr on failure.
fn py(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(workspace().join("tests/python/interop.py"))
        .args(args)
        .output()
        .expect("run python");
    assert!(out.status.success(), "interop.py {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn py_dump(path: &Path) -> Value {
    serde_json::from_str(&py(&["dump", path.to_str().unwrap(), &QUOTA.to_string()])).unwrap()
}

fn key(i: u64) -> String {
    format!("data/{}", hex::encode(Sha256::digest(i.to_le_bytes())))
}

fn value(i: u64) -> Bytes {
    (0..i * 37).map(|j| ((i * 7 + j) % 251) as u8).collect::<Vec<u8>>().into()
}

async fn open(path: &Path) -> Store {
    let options = PosixFsOptions { quota: Some(QUOTA), ..Default::default() };
    let be = Arc::new(PosixFs::new(path, options).unwrap());
    let ns = namespaces(&[("config/", &[0]), ("data/", &[2]), ("", &[0])]).unwrap();
    Store::with_emulator(be, ns, Emulator::OFF)
}

/// The scenario of interop.py `write`, through our engine.
async fn rust_write(path: &Path) {
    let s = open(path).await;
    s.create().await.unwrap();
    s.open().await.unwrap();
    s.store("config/main", Bytes::from_static(b"interop config\n")).await.unwrap();
    for i in 0..ITEMS {
        s.store(&key(i), value(i)).await.unwrap();
    }
    for i in SOFT_DELETED {
        s.move_(&key(i), MoveAction::Delete).await.unwrap();
    }
    for i in HARD_DELETED {
        s.delete(&key(i), false).await.unwrap();
    }
    s.close().await.unwrap();
}

async fn rust_undelete(path: &Path, name: &str) {
    let s = open(path).await;
    s.open().await.unwrap();
    s.move_(name, MoveAction::Undelete).await.unwrap();
    s.close().await.unwrap();
}

/// What interop.py `dump` prints, seen through our engine.
async fn rust_dump(path: &Path) -> Value {
    let s = open(path).await;
    s.open().await.unwrap();
    let (mut list, mut deleted_list) = (Map::new(), Map::new());
    let (mut loads, mut tails, mut hashes) = (Map::new(), Map::new(), Map::new());
    for ns in ["config", "data"] {
        for deleted in [false, true] {
            let infos = s.list(ns, deleted).unwrap().collect().await.unwrap();
            let entries: Vec<Value> = infos.iter().map(|i| json!([i.name, i.size])).collect();
            if deleted { &mut deleted_list } else { &mut list }.insert(ns.into(), Value::Array(entries));
            for info in &infos {
                let full = format!("{ns}/{}", info.name);
                let tag = if deleted { format!("{full}#deleted") } else { full.clone() };
                let data = s.load(&full, 0, None, deleted).await.unwrap();
                loads.insert(tag.clone(), json!(hex::encode(Sha256::digest(&data))));
                let tail = s.load(&full, -(info.size.min(5) as i64), None, deleted).await.unwrap();
                tails.insert(tag.clone(), json!(hex::encode(&tail)));
                let sha = s.hash(&full, HashAlgorithm::Sha256, deleted).await.unwrap();
                let b3 = s.hash(&full, HashAlgorithm::Blake3, deleted).await.unwrap();
                hashes.insert(tag, json!({"sha256": sha, "blake3": b3}));
            }
        }
    }
    let quota = s.quota().await.unwrap();
    s.close().await.unwrap();
    json!({
        "list": list, "deleted": deleted_list, "loads": loads, "tails": tails, "hashes": hashes,
        "quota": {"limit": quota.limit, "usage": quota.usage},
        "tree": tree(path),
        "quota_hid": std::fs::read_to_string(path.join("quota.hid")).unwrap().trim().parse::<i64>().unwrap(),
    })
}

/// Every file under the store root except quota.hid, relative and sorted.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.retain(|p| p != "quota.hid");
    out.sort();
    out
}

fn names(dump: &Value, section: &str) -> Vec<String> {
    dump[section]["data"].as_array().unwrap().iter().map(|e| format!("data/{}", e[0].as_str().unwrap())).collect()
}

/// The dump is not trivially equal: it holds what the scenario put there.
fn check_scenario(dump: &Value) {
    let live = names(dump, "list");
    let gone = names(dump, "deleted");
    assert_eq!(live.len(), (ITEMS as usize) - SOFT_DELETED.len() - HARD_DELETED.len());
    let mut want_gone: Vec<String> = SOFT_DELETED.iter().map(|&i| key(i)).collect();
    want_gone.sort();
    assert_eq!(gone, want_gone);
    assert!(!live.contains(&key(15)) && live.contains(&key(0)));
    let usage: u64 = (0..ITEMS).filter(|i| !HARD_DELETED.contains(i)).map(|i| i * 37).sum::<u64>() + 15;
    assert_eq!(dump["quota"], json!({"limit": QUOTA, "usage": usage}));
    assert_eq!(dump["quota_hid"], json!(usage));
    assert!(dump["tree"].as_array().unwrap().iter().any(|p| p.as_str().unwrap().ends_with(".del")));
    let k0 = &key(1)[5..];
    assert!(dump["tree"].as_array().unwrap().contains(&json!(format!("data/{}/{}/{}", &k0[..2], &k0[2..4], k0))));
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
