//! A profile: what a principal may do with one store.
//!
//! A profile has a name (the rule's label: it names the principal in stats, metrics and
//! the audit log, so its number is bounded by the configuration), borgstore permission
//! letters per name (`l` list, `r` read, `w` write new, `W` overwrite, `D` delete; an
//! empty map allows everything), an optional quota share (the store usage above which
//! this principal's writes are refused) and whether its deletes are quarantined.

use crate::access::Door;
use crate::backends::posixfs::Permissions;
use std::sync::Arc;

/// What a principal may do with one store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The rule's label (`uid:1001`, `rest:alice`, or the name the rule was given).
    pub name: String,
    /// Permission letters per name; empty: everything.
    pub permissions: Permissions,
    /// Writes by this principal are refused once the store's usage would pass this many
    /// bytes (a share of the store's quota).
    pub quota: Option<u64>,
    /// A delete this profile has no `D` for becomes a soft delete kept for the store's
    /// quarantine window (None: such a delete is refused).
    pub quarantine_days: Option<u32>,
    /// The daemon's own uid: may also configure caches and purge.
    pub owner: bool,
}

impl Profile {
    /// Everything allowed, nothing quarantined: the daemon's own uid and in-process use.
    pub fn full(name: &str) -> Profile {
        Profile {
            name: name.to_string(),
            permissions: Permissions::all(),
            quota: None,
            quarantine_days: None,
            owner: true,
        }
    }

    /// Does this profile restrict anything at all (so admission has work to do)?
    pub fn restricts(&self) -> bool {
        !self.permissions.is_unrestricted() || self.quota.is_some()
    }

    /// May this profile delete `name` for good?
    pub fn may_delete(&self, name: &str) -> bool {
        self.permissions.check(name, "D").is_ok()
    }

    /// Does a delete of `name` by this profile become a quarantined soft delete? Only
    /// where it may write but not delete: a read-only principal deletes nothing, not
    /// even softly. Deleting an item that is soft-deleted already (`.del`) leaves it
    /// where it is, in quarantine until its window has passed (borg's compact deletes
    /// the archives its prune soft-deleted).
    pub fn quarantines(&self, name: &str) -> bool {
        self.quarantine_days.is_some() && !self.may_delete(name) && self.permissions.check(name, "wW").is_ok()
    }
}

/// Who runs a command: the principal as a door named it, the door, and its profile.
#[derive(Debug, Clone)]
pub struct Who {
    /// The principal, as logs and the audit log show it (`uid 1001`, `REST user alice`).
    pub principal: String,
    /// The door the request came through (None: in-process).
    pub door: Option<Door>,
    /// What it may do.
    pub profile: Arc<Profile>,
}

impl Who {
    /// In-process use (the bench, tests, the daemon's own housekeeping): full rights.
    pub fn internal() -> Arc<Who> {
        static INTERNAL: std::sync::OnceLock<Arc<Who>> = std::sync::OnceLock::new();
        INTERNAL
            .get_or_init(|| {
                Arc::new(Who { principal: "the daemon".into(), door: None, profile: Arc::new(Profile::full("daemon")) })
            })
            .clone()
    }

    /// The door's name for logs and the audit log.
    pub fn door_name(&self) -> &'static str {
        self.door.map(Door::key).unwrap_or("internal")
    }
}
