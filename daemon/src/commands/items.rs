//! Commands on one item, by its engine name (`namespace/key`; `deleted` addresses the
//! soft-deleted item). Each is ordered with everything else on that item.

use super::{item, Command};
use crate::actor::ordering::Access;
use crate::actor::Served;
use crate::hashing::HashAlgorithm;
use crate::store::{Lister, MoveAction};
use borgstore_ipc::{ItemInfo, Result};
use bytes::Bytes;

/// Metadata of an item; a missing item gives `exists: false`.
pub struct Info {
    /// The item.
    pub name: String,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

impl Command for Info {
    type Output = ItemInfo;
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<ItemInfo> {
        served.open().await?.info(&self.name, self.deleted).await
    }
}

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

impl Command for Load {
    type Output = Bytes;
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<Bytes> {
        served.open().await?.load(&self.name, self.offset, self.size, self.deleted).await
    }
}

/// Store a value atomically, replacing an existing one.
pub struct Store {
    /// The item.
    pub name: String,
    /// Its new content.
    pub value: Bytes,
}

impl Command for Store {
    type Output = ();
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.store(&self.name, self.value).await
    }
}

/// Delete an item for good.
pub struct Delete {
    /// The item.
    pub name: String,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

impl Command for Delete {
    type Output = ();
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.delete(&self.name, self.deleted).await
    }
}

/// Soft delete, undelete, change level or rename an item.
pub struct Move {
    /// The item.
    pub name: String,
    /// What happens to it.
    pub action: MoveAction,
}

impl Command for Move {
    type Output = ();
    fn access(&self) -> Access {
        match self.action {
            // Two items: runs alone.
            MoveAction::Rename { .. } => Access::Exclusive,
            _ => item(&self.name),
        }
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.move_(&self.name, self.action).await
    }
}

/// Hex digest of an item's content.
pub struct Hash {
    /// The item.
    pub name: String,
    /// The digest algorithm.
    pub algorithm: HashAlgorithm,
    /// Address the soft-deleted item.
    pub deleted: bool,
}

impl Command for Hash {
    type Output = String;
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<String> {
        served.open().await?.hash(&self.name, self.algorithm, self.deleted).await
    }
}

/// All items of a namespace, recursively, sorted: a cursor the caller drains (a
/// listing is not ordered with item commands; it sees the store as it walks it).
pub struct List {
    /// The namespace.
    pub name: String,
    /// List the soft-deleted items instead.
    pub deleted: bool,
}

impl Command for List {
    type Output = Lister;
    fn access(&self) -> Access {
        Access::Free
    }
    async fn apply(self, served: &Served) -> Result<Lister> {
        served.open().await?.list(&self.name, self.deleted)
    }
}
