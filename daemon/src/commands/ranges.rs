//! Commands over byte ranges of many items. They touch several items at once, so each
//! runs alone (exclusive), which keeps them linearizable with the item commands.

use crate::actor::ordering::Access;
use crate::store::DefragName;
use borgstore_ipc::Source;
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

command!(Gather -> Bytes,
    access |_| Access::Exclusive,
    apply |c, served| served.open().await?.gather(&c.sources, c.namespace.as_deref(), c.deleted).await);

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

command!(Defrag -> String,
    access |_| Access::Exclusive,
    apply |c, served| served.open().await?.defrag(&c.sources, c.target, c.namespace.as_deref(), c.deleted).await);
