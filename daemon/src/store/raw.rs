//! Backend-level operations through the engine: what the REST protocol speaks.
//!
//! REST clients (Python borgstore's REST backend, borg 2) nest names and soft-delete
//! themselves, so they address the backend directly (`data/01/23/0123...`). Running
//! those calls through the [`Store`] rather than around it keeps one set of books per
//! store: the same stats counters, the same latency emulation and the same backend
//! instance (so the same quota tracking) as the IPC clients of that store.

use super::Store;
use crate::backends::body::Body;
use crate::backends::DefragTarget;
use crate::hashing::HashAlgorithm;
use crate::names::validate_name;
use borgstore_ipc::{ItemInfo, Quota, Result, Source};
use bytes::Bytes;

/// One backend-level operation on nested names.
#[derive(Debug)]
pub enum RawOp {
    Mkdir(String),
    Rmdir(String),
    Info(String),
    /// One directory level, sorted.
    List(String),
    Load {
        name: String,
        offset: i64,
        size: Option<u64>,
    },
    /// The value may still be arriving (a streamed upload).
    Store {
        name: String,
        value: Body,
    },
    Delete(String),
    Move {
        current: String,
        new: String,
    },
    Hash {
        name: String,
        algorithm: HashAlgorithm,
    },
    Gather(Vec<Source>),
    Defrag {
        sources: Vec<Source>,
        target: DefragTarget,
    },
    Quota,
}

/// The answer to a [`RawOp`].
#[derive(Debug, Clone)]
pub enum RawReply {
    Ok,
    Info(ItemInfo),
    List(Vec<ItemInfo>),
    Data(Bytes),
    Text(String),
    Quota(Quota),
}

impl RawOp {
    /// The names this operation touches (for validation and ordering).
    pub fn names(&self) -> Vec<&str> {
        match self {
            RawOp::Mkdir(n) | RawOp::Rmdir(n) | RawOp::Info(n) | RawOp::List(n) | RawOp::Delete(n) => vec![n],
            RawOp::Load { name, .. } | RawOp::Store { name, .. } | RawOp::Hash { name, .. } => vec![name],
            RawOp::Move { current, new } => vec![current, new],
            RawOp::Gather(sources) => sources.iter().map(|s| s.name.as_str()).collect(),
            RawOp::Defrag { sources, target } => {
                let mut v: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
                match target {
                    DefragTarget::Name(n) => v.push(n),
                    DefragTarget::Hashed { namespace, .. } => v.push(namespace),
                }
                v
            }
            RawOp::Quota => vec![],
        }
    }
}

impl Store {
    /// Run one backend-level operation, counted and emulated like the engine's own calls
    /// (stats keys as the matching Store operation: `load_calls`, `store_volume`, ...).
    pub async fn raw(&self, op: RawOp) -> Result<RawReply> {
        for name in op.names() {
            validate_name(name)?;
        }
        let be = self.inner.backend.clone();
        match op {
            RawOp::Mkdir(name) => self.backend_call(None, |_| 0, be.mkdir(&name)).await.map(|_| RawReply::Ok),
            RawOp::Rmdir(name) => self.backend_call(None, |_| 0, be.rmdir(&name)).await.map(|_| RawReply::Ok),
            RawOp::Info(name) => {
                self.counted("info", self.backend_call(None, |_| 0, be.info(&name))).await.map(RawReply::Info)
            }
            RawOp::List(name) => {
                let items = self.backend_call(None, |_| 0, be.list(&name)).await?;
                self.stats_add("list_calls", 1);
                Ok(RawReply::List(items))
            }
            RawOp::Load { name, offset, size } => {
                let data = self
                    .counted(
                        "load",
                        self.backend_call(Some("load"), |v: &Bytes| v.len() as u64, be.load(&name, offset, size)),
                    )
                    .await?;
                self.stats_add("load_volume", data.len() as u64);
                Ok(RawReply::Data(data))
            }
            RawOp::Store { name, value } => {
                let len = value.len();
                self.counted("store", self.backend_call(Some("store"), |_| len, be.store_body(&name, value))).await?;
                self.stats_add("store_volume", len);
                Ok(RawReply::Ok)
            }
            RawOp::Delete(name) => self
                .counted("delete", self.backend_call(Some("delete"), |_| 0, be.delete(&name)))
                .await
                .map(|_| RawReply::Ok),
            RawOp::Move { current, new } => self
                .counted("move", self.backend_call(None, |_| 0, be.move_(&current, &new)))
                .await
                .map(|_| RawReply::Ok),
            RawOp::Hash { name, algorithm } => self
                .counted("hash", self.backend_call(None, |_| 0, be.hash(&name, algorithm)))
                .await
                .map(RawReply::Text),
            RawOp::Gather(sources) => {
                let data = self
                    .counted(
                        "gather",
                        self.backend_call(Some("gather"), |v: &Bytes| v.len() as u64, be.gather(&sources)),
                    )
                    .await?;
                self.stats_add("gather_volume", data.len() as u64);
                Ok(RawReply::Data(data))
            }
            RawOp::Defrag { sources, target } => self
                .counted("defrag", self.backend_call(None, |_| 0, be.defrag(&sources, &target)))
                .await
                .map(RawReply::Text),
            RawOp::Quota => be.quota().await.map(RawReply::Quota),
        }
    }
}
