//! The backend-level commands the REST protocol speaks: names are nested names
//! (`data/01/23/0123...`, `.del` included), see [`crate::store::Nested`].
//!
//! Each is ordered by the item its nested name belongs to
//! ([`crate::names::nesting::item_of`]), so a REST request and an IPC request on the
//! same item are ordered with each other.

use super::Command;
use crate::actor::ordering::Access;
use crate::actor::Served;
use crate::backends::body::Body;
use crate::backends::DefragTarget;
use crate::hashing::HashAlgorithm;
use crate::names::nesting::item_of;
use borgstore_ipc::{ItemInfo, Quota, Result, Source};
use bytes::Bytes;

fn item(nested: &str) -> Access {
    Access::Item(item_of(nested))
}

/// Create a directory (and its parents).
pub struct Mkdir {
    /// The directory.
    pub name: String,
}

impl Command for Mkdir {
    type Output = ();
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.nested().mkdir(&self.name).await
    }
}

/// Remove an empty directory.
pub struct Rmdir {
    /// The directory.
    pub name: String,
}

impl Command for Rmdir {
    type Output = ();
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.nested().rmdir(&self.name).await
    }
}

/// Metadata of a file or directory; a missing one gives `exists: false`.
pub struct Info {
    /// The nested name.
    pub name: String,
}

impl Command for Info {
    type Output = ItemInfo;
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<ItemInfo> {
        served.open().await?.nested().info(&self.name).await
    }
}

/// One directory level, sorted.
pub struct List {
    /// The directory.
    pub name: String,
}

impl Command for List {
    type Output = Vec<ItemInfo>;
    fn access(&self) -> Access {
        Access::Free
    }
    async fn apply(self, served: &Served) -> Result<Vec<ItemInfo>> {
        served.open().await?.nested().list(&self.name).await
    }
}

/// `size` bytes (None: to the end) from `offset` (negative: from the end).
pub struct Load {
    /// The nested name.
    pub name: String,
    /// First byte; negative counts from the end.
    pub offset: i64,
    /// Bytes to read; None reads to the end.
    pub size: Option<u64>,
}

impl Command for Load {
    type Output = Bytes;
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<Bytes> {
        served.open().await?.nested().load(&self.name, self.offset, self.size).await
    }
}

/// Store a value that may still be arriving (a streamed upload).
pub struct Store {
    /// The nested name.
    pub name: String,
    /// The value, whole or as a stream.
    pub value: Body,
}

impl Command for Store {
    type Output = ();
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.nested().store(&self.name, self.value).await
    }
}

/// Delete a file for good.
pub struct Delete {
    /// The nested name.
    pub name: String,
}

impl Command for Delete {
    type Output = ();
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.nested().delete(&self.name).await
    }
}

/// Rename a file (soft delete and level changes are renames at this level).
pub struct Move {
    /// The current nested name.
    pub current: String,
    /// The new nested name.
    pub new: String,
}

impl Command for Move {
    type Output = ();
    fn access(&self) -> Access {
        // Within one item (soft delete, level change) it is that item's; across items
        // it runs alone.
        if item_of(&self.current) == item_of(&self.new) {
            item(&self.current)
        } else {
            Access::Exclusive
        }
    }
    async fn apply(self, served: &Served) -> Result<()> {
        served.open().await?.nested().move_(&self.current, &self.new).await
    }
}

/// Hex digest of a file's content.
pub struct Hash {
    /// The nested name.
    pub name: String,
    /// The digest algorithm.
    pub algorithm: HashAlgorithm,
}

impl Command for Hash {
    type Output = String;
    fn access(&self) -> Access {
        item(&self.name)
    }
    async fn apply(self, served: &Served) -> Result<String> {
        served.open().await?.nested().hash(&self.name, self.algorithm).await
    }
}

/// The bytes of many ranges, concatenated in order.
pub struct Gather {
    /// The ranges, by nested name.
    pub sources: Vec<Source>,
}

impl Command for Gather {
    type Output = Bytes;
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<Bytes> {
        served.open().await?.nested().gather(&self.sources).await
    }
}

/// A new file from byte ranges; answers its name.
pub struct Defrag {
    /// The ranges, by nested name.
    pub sources: Vec<Source>,
    /// How the new file is named.
    pub target: DefragTarget,
}

impl Command for Defrag {
    type Output = String;
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<String> {
        served.open().await?.nested().defrag(&self.sources, &self.target).await
    }
}

/// The store's quota (limit 0: none), as the backend counts it.
pub struct GetQuota;

impl Command for GetQuota {
    type Output = Quota;
    fn access(&self) -> Access {
        Access::Free
    }
    async fn apply(self, served: &Served) -> Result<Quota> {
        served.open().await?.nested().quota().await
    }
}
