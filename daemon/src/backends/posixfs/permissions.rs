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

    pub fn is_unrestricted(&self) -> bool {
        self.map.is_empty()
    }

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
            format!("one of the permissions '{required}' is required for {}", crate::names::shown(name)),
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
}
