//! The interop scenario every "Python reads ours, we read Python's" test shares (posixfs,
//! sftp, s3), the Rust half of `tests/python/scenario.py`: namespace `data/` at nesting
//! level 2, 20 items of different sizes, 3 soft-deleted, 1 hard-deleted; and a dump of
//! what a store holds (lists, whole and tail loads, optional ranges, sha256 and blake3)
//! that both implementations print the same way, so dumps compare with `==`.

use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::store::config::{namespaces as make_namespaces, Namespaces};
use borgstore_daemon::store::{MoveAction, Store};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

pub const ITEMS: u64 = 20;
pub const SOFT_DELETED: [u64; 3] = [3, 7, 11];
pub const HARD_DELETED: [u64; 1] = [15];
pub const CONFIG_VALUE: &[u8] = b"interop config\n";

/// The namespaces of scenario.py's CONFIG.
pub fn namespaces() -> Namespaces {
    make_namespaces(&[("config/", &[0]), ("data/", &[2]), ("", &[0])]).expect("valid namespaces")
}

pub fn key(i: u64) -> String {
    format!("data/{}", hex::encode(Sha256::digest(i.to_le_bytes())))
}

/// Sizes 0, 37, 74, ...; contents differ per item and per position.
pub fn value(i: u64) -> Bytes {
    (0..i * 37).map(|j| ((i * 7 + j) % 251) as u8).collect::<Vec<u8>>().into()
}

/// scenario.py `write`: create the store and fill it.
pub async fn write(s: &Store) {
    s.create().await.unwrap();
    s.open().await.unwrap();
    s.store("config/main", Bytes::from_static(CONFIG_VALUE)).await.unwrap();
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

pub async fn undelete(s: &Store, name: &str) {
    s.open().await.unwrap();
    s.move_(name, MoveAction::Undelete).await.unwrap();
    s.close().await.unwrap();
}

/// scenario.py `dump`; with `ranges`, also 7 bytes from a third into each item.
pub async fn dump(s: &Store, ranges: bool) -> Map<String, Value> {
    s.open().await.unwrap();
    let (mut list, mut deleted_list) = (Map::new(), Map::new());
    let (mut loads, mut tails, mut parts, mut hashes) = (Map::new(), Map::new(), Map::new(), Map::new());
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
                if ranges {
                    let part = if info.size > 0 {
                        s.load(&full, (info.size / 3) as i64, Some(7), deleted).await.unwrap()
                    } else {
                        Bytes::new()
                    };
                    parts.insert(tag.clone(), json!(hex::encode(&part)));
                }
                let sha = s.hash(&full, HashAlgorithm::Sha256, deleted).await.unwrap();
                let b3 = s.hash(&full, HashAlgorithm::Blake3, deleted).await.unwrap();
                hashes.insert(tag, json!({"sha256": sha, "blake3": b3}));
            }
        }
    }
    s.close().await.unwrap();
    let mut out = Map::new();
    out.insert("list".into(), Value::Object(list));
    out.insert("deleted".into(), Value::Object(deleted_list));
    out.insert("loads".into(), Value::Object(loads));
    out.insert("tails".into(), Value::Object(tails));
    if ranges {
        out.insert("ranges".into(), Value::Object(parts));
    }
    out.insert("hashes".into(), Value::Object(hashes));
    out
}

/// The `data/` names of a dump's `list` or `deleted` section.
pub fn names(dump: &Value, section: &str) -> Vec<String> {
    dump[section]["data"].as_array().unwrap().iter().map(|e| format!("data/{}", e[0].as_str().unwrap())).collect()
}

/// The dump holds what the scenario put there (two equal dumps are not trivially equal).
pub fn check(dump: &Value) {
    let live = names(dump, "list");
    let gone = names(dump, "deleted");
    assert_eq!(live.len(), (ITEMS as usize) - SOFT_DELETED.len() - HARD_DELETED.len());
    let mut want_gone: Vec<String> = SOFT_DELETED.iter().map(|&i| key(i)).collect();
    want_gone.sort();
    assert_eq!(gone, want_gone);
    assert!(!live.contains(&key(15)) && live.contains(&key(0)));
    assert_eq!(dump["loads"][key(2)], json!(hex::encode(Sha256::digest(value(2)))));
    assert_eq!(dump["loads"][key(4)], json!(hex::encode(Sha256::digest(value(4)))));
    assert_eq!(dump["tails"][key(4)], json!(hex::encode(&value(4)[value(4).len() - 5..])));
}

/// Every file below `root`, relative and sorted.
pub fn tree(root: &Path) -> Vec<String> {
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
    out.sort();
    out
}
