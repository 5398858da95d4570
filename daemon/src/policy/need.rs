//! What a command needs from its caller's profile, and the admission check.
//!
//! Every command says what it needs ([`crate::commands::Command::need`]); the store
//! actor calls [`admit`] with the caller's [`Who`] right before it applies the command,
//! inside the command's place in the store's order. The letters are borgstore's, checked
//! as Python's posixfs backend checks them: a read needs `r`, a list `l`, a delete `D`,
//! a move `D` on the old name and a write on the new one, a write `W`, or `w` when the
//! item does not exist yet (only then is the store asked whether it does).

use super::profile::Who;
use crate::actor::Served;
use crate::names::DEL_SUFFIX;
use borgstore_ipc::{Error, ErrorKind, Result};
use std::borrow::Cow;

/// An item a command touches, as the command names it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Its name: an engine name (`data/0123`), or with `nested` a backend-level name
    /// (`data/01/23/0123`, `.del` part of the name).
    pub name: &'a str,
    /// `name` is a backend-level name (the REST view).
    pub nested: bool,
    /// The soft-deleted item (engine names only).
    pub deleted: bool,
}

impl<'a> Item<'a> {
    /// An engine-level item.
    pub fn engine(name: &'a str, deleted: bool) -> Self {
        Item { name, nested: false, deleted }
    }

    /// A backend-level item (REST).
    pub fn nested(name: &'a str) -> Self {
        Item { name, nested: true, deleted: false }
    }

    /// The name the permission letters are looked up for (a soft-deleted item's ends
    /// in `.del`, as on the backend).
    pub fn letters_name(&self) -> Cow<'a, str> {
        if self.deleted && !self.nested {
            Cow::Owned(format!("{}{DEL_SUFFIX}", self.name))
        } else {
            Cow::Borrowed(self.name)
        }
    }

    async fn exists(&self, served: &Served) -> Result<bool> {
        let store = served.open().await?;
        let nested = if self.nested { self.name.to_string() } else { store.find(self.name, self.deleted).await? };
        Ok(store.backend().info(&nested).await?.exists)
    }
}

/// What a command needs from its caller's profile.
#[derive(Debug, Clone)]
pub enum Need<'a> {
    /// Nothing beyond being let in (stats, quota, open).
    Nothing,
    /// The daemon's own uid (configuring a cache makes the daemon write where it says).
    Owner,
    /// One of `letters` on each of the names.
    Letters(&'static str, Vec<Cow<'a, str>>),
    /// Each group's letters on each of its names, and room for `size` new bytes in the
    /// profile's quota share (defrag: read these, write that many bytes there).
    All(Vec<(&'static str, Vec<Cow<'a, str>>)>, u64),
    /// Store `size` bytes as the item: `W`, or `w` for an item that does not exist yet;
    /// and room in the profile's quota share.
    Write {
        /// The item written.
        item: Item<'a>,
        /// Bytes written.
        size: u64,
    },
    /// Delete the item for good: `D`.
    Delete(Item<'a>),
    /// Move an item: `D` on the old name, a write on the new one.
    Move {
        /// Where it is.
        from: Item<'a>,
        /// Where it goes.
        to: Item<'a>,
    },
    /// A quarantined delete: the profile quarantines its deletes (or holds `D`).
    Quarantine(Item<'a>),
}

impl<'a> Need<'a> {
    /// One of `letters` on `name`.
    pub fn letters(letters: &'static str, name: impl Into<Cow<'a, str>>) -> Self {
        Need::Letters(letters, vec![name.into()])
    }
}

/// May `who` run a command that needs `need` on `served` now? The error is the one the
/// caller gets (PermissionDenied in Python's words, or QuotaExceeded).
pub async fn admit(need: &Need<'_>, who: &Who, served: &Served) -> Result<()> {
    let profile = &who.profile;
    if matches!(need, Need::Owner) {
        return match profile.owner {
            true => Ok(()),
            false => Err(Error::new(ErrorKind::PermissionDenied, "only the daemon's own user may do this")),
        };
    }
    if !profile.restricts() {
        return Ok(());
    }
    let perms = &profile.permissions;
    match need {
        Need::Nothing | Need::Owner => Ok(()),
        Need::Letters(letters, names) => names.iter().try_for_each(|n| perms.check(n, letters)),
        Need::All(groups, size) => {
            groups.iter().try_for_each(|(letters, names)| names.iter().try_for_each(|n| perms.check(n, letters)))?;
            within_share(who, served, *size).await
        }
        Need::Write { item, size } => {
            may_write(who, served, item).await?;
            within_share(who, served, *size).await
        }
        Need::Delete(item) => perms.check(&item.letters_name(), "D"),
        Need::Move { from, to } => {
            perms.check(&from.letters_name(), "D")?;
            may_write(who, served, to).await
        }
        Need::Quarantine(item) => match profile.quarantines(&item.letters_name()) {
            true => Ok(()),
            false => perms.check(&item.letters_name(), "D"),
        },
    }
}

/// `W`, or `w` when the item does not exist (Python's words: 'W' for an existing item,
/// 'wW' for a new one).
async fn may_write(who: &Who, served: &Served, item: &Item<'_>) -> Result<()> {
    let perms = &who.profile.permissions;
    let name = item.letters_name();
    if perms.check(&name, "W").is_ok() {
        return Ok(());
    }
    perms.check(&name, "wW")?;
    if item.exists(served).await? {
        return perms.check(&name, "W");
    }
    Ok(())
}

/// Would `size` more bytes stay within the profile's share of the store?
async fn within_share(who: &Who, served: &Served, size: u64) -> Result<()> {
    let Some(share) = who.profile.quota else {
        return Ok(());
    };
    let quota = served.open().await?.quota().await?;
    if quota.usage >= 0 && quota.usage as u64 + size > share {
        return Err(Error::new(
            ErrorKind::QuotaExceeded,
            format!("Quota exceeded: {} > {} (the share of {})", quota.usage as u64 + size, share, who.principal),
        ));
    }
    Ok(())
}
