//! The backend-level commands the REST protocol speaks: names are nested names
//! (`data/01/23/0123...`, `.del` included), see [`crate::store::Nested`].
//!
//! Each is ordered by the item its nested name belongs to
//! ([`crate::names::nesting::item_of`]), so a REST request and an IPC request on the
//! same item are ordered with each other.

use super::Audited;
use crate::actor::ordering::Access;
use crate::backends::body::Body;
use crate::backends::value::Value;
use crate::backends::DefragTarget;
use crate::hashing::HashAlgorithm;
use crate::names::nesting::item_of;
use crate::policy::{Item, Need};
use borgstore_ipc::{ItemInfo, Quota, Source};
use bytes::Bytes;

fn item(nested: &str) -> Access {
    Access::Item(item_of(nested))
}

/// A read of the item `nested` names (see [`super::read`]).
fn read(nested: &str) -> Access {
    Access::Read(item_of(nested))
}

/// Create a directory (and its parents).
pub struct Mkdir {
    /// The directory.
    pub name: String,
}

command!(Mkdir -> (),
    access |_| Access::Exclusive,
    need |c| Need::letters("w", c.name.as_str()),
    apply |c, served| served.open().await?.nested().mkdir(&c.name).await,
    audit |c| Audited::new("mkdir", &[&c.name], None));

/// Remove an empty directory.
pub struct Rmdir {
    /// The directory.
    pub name: String,
}

command!(Rmdir -> (),
    access |_| Access::Exclusive,
    need |c| Need::Letters("wD", vec![c.name.as_str().into()]),
    apply |c, served| served.open().await?.nested().rmdir(&c.name).await,
    audit |c| Audited::new("rmdir", &[&c.name], None));

/// Metadata of a file or directory; a missing one gives `exists: false`.
pub struct Info {
    /// The nested name.
    pub name: String,
}

command!(Info -> ItemInfo,
    access |c| read(&c.name),
    need |c| Need::letters("lr", c.name.as_str()),
    apply |c, served| served.open().await?.nested().info(&c.name).await);

/// One directory level, sorted.
pub struct List {
    /// The directory.
    pub name: String,
}

command!(List -> Vec<ItemInfo>,
    access |_| Access::Free,
    need |c| Need::letters("l", c.name.as_str()),
    apply |c, served| served.open().await?.nested().list(&c.name).await);

/// `size` bytes (None: to the end) from `offset` (negative: from the end).
pub struct Load {
    /// The nested name.
    pub name: String,
    /// First byte; negative counts from the end.
    pub offset: i64,
    /// Bytes to read; None reads to the end.
    pub size: Option<u64>,
}

command!(Load -> Value,
    access |c| read(&c.name),
    need |c| Need::letters("r", c.name.as_str()),
    apply |c, served| served.open().await?.nested().load(&c.name, c.offset, c.size).await,
    sent |v| v.len());

/// Store a value that may still be arriving (a streamed upload).
pub struct Store {
    /// The nested name.
    pub name: String,
    /// The value, whole or as a stream.
    pub value: Body,
}

command!(Store -> (),
    access |c| item(&c.name),
    need |c| Need::Write { item: Item::nested(&c.name), size: c.value.len() },
    apply |c, served| served.open().await?.nested().store(&c.name, c.value).await,
    audit |c| Audited::new("store", &[&c.name], Some(c.value.len())));

/// Delete a file for good.
pub struct Delete {
    /// The nested name.
    pub name: String,
}

command!(Delete -> (),
    access |c| item(&c.name),
    need |c| Need::Delete(Item::nested(&c.name)),
    apply |c, served| served.open().await?.nested().delete(&c.name).await,
    audit |c| Audited::new("delete", &[&c.name], None));

/// A delete by a principal whose profile quarantines it: the file is renamed to its
/// `.del` twin and purged once the store's quarantine window has passed (see
/// [`crate::policy::quarantine`]).
pub struct Quarantine {
    /// The nested name.
    pub name: String,
}

command!(Quarantine -> (),
    access |c| item(&c.name),
    need |c| Need::Quarantine(Item::nested(&c.name)),
    apply |c, served| served.quarantine(|q, store| async move { q.nested(&store, &c.name).await }).await,
    audit |c| Audited::new("quarantine", &[&c.name], None));

/// Rename a file (soft delete and level changes are renames at this level).
pub struct Move {
    /// The current nested name.
    pub current: String,
    /// The new nested name.
    pub new: String,
}

command!(Move -> (), access |c| {
    // Within one item (soft delete, level change) it is that item's; across items
    // it runs alone.
    if item_of(&c.current) == item_of(&c.new) {
        item(&c.current)
    } else {
        Access::Exclusive
    }
}, need |c| Need::Move { from: Item::nested(&c.current), to: Item::nested(&c.new) },
apply |c, served| served.open().await?.nested().move_(&c.current, &c.new).await,
audit |c| Audited::new("move", &[&c.current, &c.new], None));

/// Hex digest of a file's content.
pub struct Hash {
    /// The nested name.
    pub name: String,
    /// The digest algorithm.
    pub algorithm: HashAlgorithm,
}

command!(Hash -> String,
    access |c| read(&c.name),
    need |c| Need::letters("r", c.name.as_str()),
    apply |c, served| served.open().await?.nested().hash(&c.name, c.algorithm).await);

/// The bytes of many ranges, concatenated in order.
pub struct Gather {
    /// The ranges, by nested name.
    pub sources: Vec<Source>,
}

command!(Gather -> Bytes,
    access |_| Access::Exclusive,
    need |c| Need::Letters("r", c.sources.iter().map(|s| s.name.as_str().into()).collect()),
    apply |c, served| served.open().await?.nested().gather(&c.sources).await,
    sent |v| v.len() as u64);

/// A new file from byte ranges; answers its name.
pub struct Defrag {
    /// The ranges, by nested name.
    pub sources: Vec<Source>,
    /// How the new file is named.
    pub target: DefragTarget,
}

command!(Defrag -> String,
    access |_| Access::Exclusive,
    need |c| defrag_need(&c.sources, &c.target),
    apply |c, served| served.open().await?.nested().defrag(&c.sources, &c.target).await,
    audit |c| Audited::new("defrag", &defrag_names(&c.sources, &c.target), None));

/// Defrag reads its sources and writes its target: `r` on each source and, for the
/// target, the letters of a new item (a hashed name is new, or the same bytes again),
/// and room in the quota share for the bytes it writes.
fn defrag_need<'a>(sources: &'a [Source], target: &'a DefragTarget) -> Need<'a> {
    let mut names: Vec<std::borrow::Cow<'a, str>> = sources.iter().map(|s| s.name.as_str().into()).collect();
    names.dedup();
    let target = match target {
        DefragTarget::Name(n) => n.clone(),
        DefragTarget::Hashed { namespace, .. } => format!("{}/0", namespace.trim_end_matches('/')),
    };
    let size = sources.iter().fold(0u64, |sum, s| sum.saturating_add(s.size));
    Need::All(vec![("r", names), ("wW", vec![target.into()])], size)
}

fn defrag_names<'a>(sources: &'a [Source], target: &'a DefragTarget) -> Vec<&'a str> {
    let mut names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    names.dedup();
    if let DefragTarget::Name(n) = target {
        names.push(n);
    }
    names
}

/// The store's quota (limit 0: none), as the backend counts it.
pub struct GetQuota;

command!(GetQuota -> Quota,
    access |_| Access::Free,
    need |_| Need::Nothing,
    apply |c, served| served.open().await?.nested().quota().await);
