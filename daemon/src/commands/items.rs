//! Commands on one item, by its engine name (`namespace/key`; `deleted` addresses the
//! soft-deleted item). Each is ordered with everything else on that item.

use super::{item, read, Audited};
use crate::actor::ordering::Access;
use crate::backends::value::Value;
use crate::hashing::HashAlgorithm;
use crate::policy::{Item, Need};
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
    access |c| read(&c.name),
    need |c| Need::letters("lr", Item::engine(&c.name, c.deleted).letters_name()),
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
    access |c| read(&c.name),
    need |c| Need::letters("r", Item::engine(&c.name, c.deleted).letters_name()),
    apply |c, served| served.open().await?.load_value(&c.name, c.offset, c.size, c.deleted).await,
    sent |v| v.len());

/// Store a value atomically, replacing an existing one.
pub struct Store {
    /// The item.
    pub name: String,
    /// Its new content.
    pub value: Bytes,
}

command!(Store -> (),
    access |c| item(&c.name),
    need |c| Need::Write { item: Item::engine(&c.name, false), size: c.value.len() as u64 },
    apply |c, served| served.open().await?.store(&c.name, c.value).await,
    audit |c| Audited::new("store", &[&c.name], Some(c.value.len() as u64)));

/// Delete an item for good.
pub struct Delete {
    /// The item.
    pub name: String,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

command!(Delete -> (),
    access |c| item(&c.name),
    need |c| Need::Delete(Item::engine(&c.name, c.deleted)),
    apply |c, served| served.open().await?.delete(&c.name, c.deleted).await,
    audit |c| Audited::new(if c.deleted { "delete-deleted" } else { "delete" }, &[&c.name], None));

/// A delete by a principal whose profile quarantines it: the item becomes its
/// soft-deleted twin and is purged once the store's quarantine window has passed
/// (see [`crate::policy::quarantine`]).
pub struct Quarantine {
    /// The item.
    pub name: String,
    /// The soft-deleted item (it stays in quarantine).
    pub deleted: bool,
}

command!(Quarantine -> (),
    access |c| item(&c.name),
    need |c| Need::Quarantine(Item::engine(&c.name, c.deleted)),
    apply |c, served| served.quarantine(|q, store| async move { q.engine(&store, &c.name, c.deleted).await }).await,
    audit |c| Audited::new("quarantine", &[&c.name], None));

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
}, need |c| {
    let name = c.name.as_str();
    match &c.action {
        MoveAction::Delete => Need::Move { from: Item::engine(name, false), to: Item::engine(name, true) },
        MoveAction::Undelete => Need::Move { from: Item::engine(name, true), to: Item::engine(name, false) },
        MoveAction::ChangeLevel { deleted } => {
            Need::Move { from: Item::engine(name, *deleted), to: Item::engine(name, *deleted) }
        }
        MoveAction::Rename { new_name, deleted } => {
            Need::Move { from: Item::engine(name, *deleted), to: Item::engine(new_name, *deleted) }
        }
    }
}, apply |c, served| served.open().await?.move_(&c.name, c.action).await,
audit |c| match &c.action {
    MoveAction::Delete => Audited::new("soft-delete", &[&c.name], None),
    MoveAction::Undelete => Audited::new("undelete", &[&c.name], None),
    MoveAction::ChangeLevel { .. } => Audited::new("change-level", &[&c.name], None),
    MoveAction::Rename { new_name, .. } => Audited::new("rename", &[&c.name, new_name], None),
});

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
    access |c| read(&c.name),
    need |c| Need::letters("r", Item::engine(&c.name, c.deleted).letters_name()),
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
    need |c| Need::letters("l", c.name.as_str()),
    apply |c, served| served.open().await?.list(&c.name, c.deleted));
