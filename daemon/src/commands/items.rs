//! Commands on one item, by its engine name (`namespace/key`; `deleted` addresses the
//! soft-deleted item). Each is ordered with everything else on that item.

use super::item;
use crate::actor::ordering::Access;
use crate::backends::value::Value;
use crate::hashing::HashAlgorithm;
use crate::store::{Lister, MoveAction};
use borgstore_ipc::ItemInfo;
use bytes::Bytes;

/// Metadata of an item; a missing item gives `exists: false`.
pub struct Info {
    /// The item.
    pub name: String,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

command!(Info -> ItemInfo,
    access |c| item(&c.name),
    apply |c, served| served.open().await?.info(&c.name, c.deleted).await);

/// `size` bytes (None: to the end) from `offset` (negative: counted from the end).
pub struct Load {
    /// The item.
    pub name: String,
    /// First byte; negative counts from the end.
    pub offset: i64,
    /// Bytes to read; None reads to the end.
    pub size: Option<u64>,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

command!(Load -> Value,
    access |c| item(&c.name),
    apply |c, served| served.open().await?.load_value(&c.name, c.offset, c.size, c.deleted).await);

/// Store a value atomically, replacing an existing one.
pub struct Store {
    /// The item.
    pub name: String,
    /// Its new content.
    pub value: Bytes,
}

command!(Store -> (),
    access |c| item(&c.name),
    apply |c, served| served.open().await?.store(&c.name, c.value).await);

/// Delete an item for good.
pub struct Delete {
    /// The item.
    pub name: String,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

command!(Delete -> (),
    access |c| item(&c.name),
    apply |c, served| served.open().await?.delete(&c.name, c.deleted).await);

/// Soft delete, undelete, change level or rename an item.
pub struct Move {
    /// The item.
    pub name: String,
    /// What happens to it.
    pub action: MoveAction,
}

command!(Move -> (), access |c| {
    match c.action {
        // Two items: runs alone.
        MoveAction::Rename { .. } => Access::Exclusive,
        _ => item(&c.name),
    }
}, apply |c, served| served.open().await?.move_(&c.name, c.action).await);

/// Hex digest of an item's content.
pub struct Hash {
    /// The item.
    pub name: String,
    /// The digest algorithm.
    pub algorithm: HashAlgorithm,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

command!(Hash -> String,
    access |c| item(&c.name),
    apply |c, served| served.open().await?.hash(&c.name, c.algorithm, c.deleted).await);

/// All items of a namespace, recursively, sorted: a cursor the caller drains (a
/// listing is not ordered with item commands; it sees the store as it walks it).
pub struct List {
    /// The namespace.
    pub name: String,
    /// List the soft-deleted items instead.
    pub deleted: bool,
}

command!(List -> Lister,
    access |_| Access::Free,
    apply |c, served| served.open().await?.list(&c.name, c.deleted));
