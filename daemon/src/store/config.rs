//! Namespace configuration: which nesting levels each namespace uses.
//!
//! A store maps namespace prefixes to nesting levels, e.g. `"data/" -> [2]`,
//! `"config/" -> [0]`. The longest matching prefix wins; `""` matches every name. More
//! than one level means a migration: lookups try each, new items go to the last.

use borgstore_ipc::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Deepest nesting we accept: 256^4 directories is already far more than anyone wants.
pub const MAX_LEVELS: u32 = 4;

/// Configuration of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Nesting levels, oldest first; new items go to the last one.
    pub levels: Vec<u32>,
}

impl NamespaceConfig {
    /// A namespace at `levels`, oldest first (not validated until [`Namespaces::new`]).
    pub fn levels(levels: &[u32]) -> Self {
        NamespaceConfig { levels: levels.to_vec() }
    }
}

/// Namespaces sorted longest prefix first, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    entries: Vec<(String, Vec<u32>)>,
}

impl Namespaces {
    /// Validate and sort a namespace map.
    pub fn new(map: &BTreeMap<String, NamespaceConfig>) -> Result<Self> {
        if map.is_empty() {
            return Err(Error::invalid("no namespaces configured (use \"\" = [0] for a flat store)"));
        }
        let mut entries = Vec::with_capacity(map.len());
        for (ns, cfg) in map {
            let trimmed = ns.trim_end_matches('/');
            crate::names::validate_name(trimmed)
                .map_err(|e| Error::invalid(format!("namespace {}: {}", crate::names::shown(ns), e.message)))?;
            if cfg.levels.is_empty() {
                return Err(Error::invalid(format!("namespace {}: levels must not be empty", crate::names::shown(ns))));
            }
            if let Some(l) = cfg.levels.iter().find(|l| **l > MAX_LEVELS) {
                return Err(Error::invalid(format!(
                    "namespace {}: nesting level {l} is deeper than the maximum {MAX_LEVELS}",
                    crate::names::shown(ns)
                )));
            }
            entries.push((ns.clone(), cfg.levels.clone()));
        }
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Namespaces { entries })
    }

    /// The flat default: everything at level 0.
    pub fn flat() -> Self {
        Namespaces { entries: vec![(String::new(), vec![0])] }
    }

    /// Levels of the longest namespace that prefixes `name`.
    pub fn levels_for(&self, name: &str) -> Result<&[u32]> {
        self.entries
            .iter()
            .find(|(ns, _)| name.starts_with(ns.as_str()))
            .map(|(_, l)| l.as_slice())
            .ok_or_else(|| Error::invalid(format!("no namespace is configured for {}", crate::names::shown(name))))
    }

    /// Every namespace prefix with its levels, longest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u32])> {
        self.entries.iter().map(|(n, l)| (n.as_str(), l.as_slice()))
    }
}

/// Build a namespace map from `(prefix, levels)` pairs (handy for tests and demos).
pub fn namespaces(pairs: &[(&str, &[u32])]) -> Result<Namespaces> {
    Namespaces::new(&pairs.iter().map(|(n, l)| (n.to_string(), NamespaceConfig::levels(l))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let ns = namespaces(&[("", &[0]), ("data/", &[2]), ("data/big/", &[1, 3])]).unwrap();
        assert_eq!(ns.levels_for("config/x").unwrap(), &[0]);
        assert_eq!(ns.levels_for("data/ab").unwrap(), &[2]);
        assert_eq!(ns.levels_for("data/big/ab").unwrap(), &[1, 3]);
        let only = namespaces(&[("data/", &[1])]).unwrap();
        assert!(only.levels_for("config/x").is_err());
        assert!(namespaces(&[("data/", &[])]).is_err());
        assert!(namespaces(&[("data/", &[9])]).is_err());
        assert!(namespaces(&[("../", &[0])]).is_err());
    }
}
