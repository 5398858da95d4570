//! Permission letters of the posixfs backend, as in Python borgstore.
//!
//! - `l` list names, `r` read contents, `w` write new items, `W` write and overwrite,
//!   `D` delete.
//!
//! A map assigns letters to names; `""` is the root. A check walks from the full name
//! up to the root and stops at the first (most specific) listed ancestor: if that entry
//! grants one of the required letters the operation is allowed, else it is refused. An
//! empty map allows everything.

use borgstore_ipc::{Error, ErrorKind, Result};
use std::collections::BTreeMap;

/// The names of borg's repository permission modes, as `borg serve --permissions` and
/// `BORG_REPO_PERMISSIONS` take them.
pub const BORG_MODES: [&str; 4] = ["all", "no-delete", "write-only", "read-only"];

/// The letters of one of borg's permission modes (`no-delete`, or `borgbackup-no-delete`
/// as Python borgstore's server names it): `None` for an unknown name, `Some(None)` for
/// `all` (no restriction).
///
/// borg 2 has laid out repositories two ways: `packs/` and `index/` (current) and `data/`
/// (older betas). The two sets of namespaces do not overlap, so one map grants the right
/// letters for either layout:
/// - `no-delete`: read and add everything, overwrite only the manifest (`config/`) and
///   borg's own bookkeeping (`cache/`, `index/`), delete only locks, caches and indexes;
/// - `write-only`: as `no-delete`, but archives and data cannot be read back;
/// - `read-only`: read everything, write only locks.
pub fn borg_mode(name: &str) -> Option<Option<BTreeMap<String, String>>> {
    let map = |pairs: &[(&str, &str)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    let mode = name.strip_prefix("borgbackup-").unwrap_or(name);
    Some(match mode {
        "all" => None,
        "no-delete" => map(&[
            ("", "lr"),
            ("archives", "lrw"),
            ("cache", "lrwWD"),
            ("config", "lrW"),
            ("data", "lrw"),
            ("index", "lrwWD"),
            ("keys", "lr"),
            ("locks", "lrwD"),
            ("packs", "lrw"),
        ]),
        "write-only" => map(&[
            ("", "l"),
            ("archives", "lw"),
            ("cache", "lrwWD"),
            ("config", "lrW"),
            ("data", "lw"),
            ("index", "lrwWD"),
            ("keys", "lr"),
            ("locks", "lrwD"),
            ("packs", "lw"),
        ]),
        "read-only" => map(&[("", "lr"), ("locks", "lrwD")]),
        _ => return None,
    })
}

/// Name (or directory) -> granted letters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    map: BTreeMap<String, String>,
}

impl Permissions {
    /// Build from a map, refusing letters other than `lrwWD`.
    pub fn new(map: BTreeMap<String, String>) -> Result<Self> {
        for (name, letters) in &map {
            if let Some(bad) = letters.chars().find(|c| !"lrwWD".contains(*c)) {
                return Err(Error::invalid(format!(
                    "permission letters for {} contain {bad:?}; use only l r w W D",
                    crate::names::shown(name)
                )));
            }
        }
        Ok(Permissions { map })
    }

    /// No restrictions.
    pub fn all() -> Self {
        Permissions::default()
    }

    /// Is the map empty, so that every operation is allowed?
    pub fn is_unrestricted(&self) -> bool {
        self.map.is_empty()
    }

    /// The name -> letters map as given (empty when unrestricted).
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.map
    }

    /// Allow if the most specific listed ancestor of `name` grants any of `required`.
    pub fn check(&self, name: &str, required: &str) -> Result<()> {
        if self.map.is_empty() {
            return Ok(());
        }
        let mut path = name;
        loop {
            if let Some(granted) = self.map.get(path) {
                if required.chars().any(|c| granted.contains(c)) {
                    return Ok(());
                }
                break;
            }
            if path.is_empty() {
                break;
            }
            path = path.rsplit_once('/').map(|(parent, _)| parent).unwrap_or("");
        }
        Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("One of permissions '{required}' required for '{}'", crate::names::quoted(name)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(pairs: &[(&str, &str)]) -> Permissions {
        Permissions::new(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()).unwrap()
    }

    #[test]
    fn inherit_and_override() {
        let p = perms(&[("", "lr"), ("data", "lrw"), ("data/keep", "l")]);
        assert!(p.check("config/x", "r").is_ok());
        assert!(p.check("config/x", "wW").is_err());
        assert!(p.check("data/01/x", "wW").is_ok());
        assert!(p.check("data/keep/x", "r").is_err());
        assert!(p.check("data/keep/x", "l").is_ok());
        assert!(Permissions::all().check("x", "D").is_ok());
        assert!(perms(&[("data", "lr")]).check("config", "l").is_err());
        assert!(Permissions::new([("".into(), "lx".into())].into()).is_err());
    }

    #[test]
    fn borg_modes_cover_both_layouts() {
        let p = |name: &str| Permissions::new(borg_mode(name).unwrap().unwrap()).unwrap();
        assert_eq!(borg_mode("all"), Some(None));
        assert_eq!(borg_mode("borgbackup-all"), Some(None));
        assert_eq!(borg_mode("borgbackup-no-delete"), borg_mode("no-delete"));
        assert!(borg_mode("everything").is_none() && borg_mode("borgbackup-").is_none());
        let nd = p("no-delete");
        for (name, ok, refused) in [
            ("packs/00/0011", "lrw", "WD"),
            ("data/00/11/0011", "lrw", "WD"),
            ("index/0011", "lrwWD", ""),
            ("archives/a1", "lrw", "WD"),
            ("config/manifest", "lrW", "D"),
            ("keys/repokey", "lr", "wWD"),
            ("locks/l", "lrwD", ""),
        ] {
            for c in ok.chars() {
                assert!(nd.check(name, &c.to_string()).is_ok(), "no-delete {name} {c}");
            }
            for c in refused.chars() {
                assert!(nd.check(name, &c.to_string()).is_err(), "no-delete {name} {c}");
            }
        }
        let wo = p("write-only");
        assert!(wo.check("packs/00/0011", "r").is_err() && wo.check("packs/00/0011", "w").is_ok());
        assert!(wo.check("data/00/11/0011", "r").is_err() && wo.check("index/0011", "r").is_ok());
        let ro = p("read-only");
        assert!(ro.check("packs/00/0011", "w").is_err() && ro.check("index/x", "r").is_ok());
    }
}
