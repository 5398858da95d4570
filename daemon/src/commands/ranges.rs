//! Commands over byte ranges of many items. They touch several items at once, so each
//! runs alone (exclusive), which keeps them linearizable with the item commands.

use super::Command;
use crate::actor::ordering::Access;
use crate::actor::Served;
use crate::store::DefragName;
use borgstore_ipc::{Result, Source};
use bytes::Bytes;

/// The bytes of many ranges, concatenated in order.
pub struct Gather {
    /// The ranges, names relative to `namespace`.
    pub sources: Vec<Source>,
    /// Namespace of the source names (None: names are full names).
    pub namespace: Option<String>,
    /// Read the soft-deleted items.
    pub deleted: bool,
}

impl Command for Gather {
    type Output = Bytes;
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<Bytes> {
        served.open().await?.gather(&self.sources, self.namespace.as_deref(), self.deleted).await
    }
}

/// A new item from byte ranges of items; answers the new item's name.
pub struct Defrag {
    /// The ranges, names relative to `namespace`.
    pub sources: Vec<Source>,
    /// How the new item is named.
    pub target: DefragName,
    /// Namespace of the sources and the new item.
    pub namespace: Option<String>,
    /// Read the soft-deleted items.
    pub deleted: bool,
}

impl Command for Defrag {
    type Output = String;
    fn access(&self) -> Access {
        Access::Exclusive
    }
    async fn apply(self, served: &Served) -> Result<String> {
        served.open().await?.defrag(&self.sources, self.target, self.namespace.as_deref(), self.deleted).await
    }
}
