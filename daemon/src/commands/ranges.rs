//! Commands over byte ranges of many items. They touch several items at once, so each
//! runs alone (exclusive), which keeps them linearizable with the item commands.

use super::Audited;
use crate::actor::ordering::Access;
use crate::policy::Need;
use crate::store::DefragName;
use borgstore_ipc::Source;
use bytes::Bytes;
use std::borrow::Cow;

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
    need |c| Need::Letters("r", source_names(&c.sources, c.namespace.as_deref(), c.deleted)),
    apply |c, served| served.open().await?.gather(&c.sources, c.namespace.as_deref(), c.deleted).await,
    sent |v| v.len() as u64);

/// The names of engine sources as the permission letters see them.
fn source_names<'a>(sources: &[Source], namespace: Option<&str>, deleted: bool) -> Vec<Cow<'a, str>> {
    let prefix = namespace.map(|n| n.trim_end_matches('/')).filter(|n| !n.is_empty());
    let mut names: Vec<Cow<'a, str>> = sources
        .iter()
        .map(|s| {
            let full = match prefix {
                Some(p) => format!("{p}/{}", s.name),
                None => s.name.clone(),
            };
            Cow::Owned(if deleted { format!("{full}{}", crate::names::DEL_SUFFIX) } else { full })
        })
        .collect();
    names.dedup();
    names
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

command!(Defrag -> String,
access |_| Access::Exclusive,
need |c| {
    let ns = c.namespace.as_deref().map(|n| n.trim_end_matches('/')).filter(|n| !n.is_empty());
    let target = match (&c.target, ns) {
        (DefragName::Given(t), Some(ns)) => format!("{ns}/{t}"),
        (DefragName::Given(t), None) => t.clone(),
        (DefragName::Hash(_), Some(ns)) => format!("{ns}/0"),
        (DefragName::Hash(_), None) => "0".to_string(),
    };
    let size = c.sources.iter().fold(0u64, |sum, s| sum.saturating_add(s.size));
    let groups = vec![
        ("r", source_names(&c.sources, c.namespace.as_deref(), c.deleted)),
        ("wW", vec![Cow::Owned(target)]),
    ];
    Need::All(groups, size)
},
apply |c, served| served.open().await?.defrag(&c.sources, c.target, c.namespace.as_deref(), c.deleted).await,
audit |c| {
    let mut names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
    names.dedup();
    if let DefragName::Given(t) = &c.target {
        names.push(t);
    }
    Audited::new("defrag", &names, None)
});
