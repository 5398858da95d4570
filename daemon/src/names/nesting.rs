//! Nesting: `ns/0123abcd` at level 2 lives at `ns/01/23/0123abcd`.
//!
//! Keys are spread over two-hex-char directories so that no directory gets huge; the
//! leaf keeps the full key, so a sorted listing of the leaves is a sorted key list.

use borgstore_ipc::{Error, Result};

/// Split `ns/key` into (`Some("ns")`, `"key"`); a name without `/` has no namespace.
pub fn split_key(name: &str) -> (Option<&str>, &str) {
    match name.rsplit_once('/') {
        Some((ns, key)) => (Some(ns), key),
        None => (None, name),
    }
}

/// Nest `name` at `levels` and append `suffix` (e.g. `.del`).
///
/// A key too short to give `levels` directory names is refused: it would produce an
/// empty path component.
pub fn nest(name: &str, levels: u32, suffix: Option<&str>) -> Result<String> {
    let mut out = String::with_capacity(name.len() + 3 * levels as usize + 4);
    if levels > 0 && !name.is_empty() {
        let (ns, key) = split_key(name);
        let needed = 2 * levels as usize;
        if key.len() < needed {
            return Err(Error::invalid(format!(
                "key {} is too short for {levels} nesting levels",
                crate::names::shown(key)
            )));
        }
        if let Some(ns) = ns {
            out.push_str(ns);
            out.push('/');
        }
        for level in 0..levels as usize {
            out.push_str(&key[2 * level..2 * level + 2]);
            out.push('/');
        }
        out.push_str(key);
    } else {
        out.push_str(name);
    }
    if let Some(s) = suffix {
        out.push_str(s);
    }
    Ok(out)
}

/// Inverse of [`nest`]: `ns/01/23/0123abcd` with namespace `ns` gives `ns/0123abcd`.
pub fn unnest(name: &str, namespace: &str, remove_suffix: Option<&str>) -> Result<String> {
    let mut prefix = namespace.to_string();
    let rest = if namespace.is_empty() {
        name
    } else {
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        name.strip_prefix(prefix.as_str()).ok_or_else(|| {
            Error::invalid(format!(
                "name {} is not in namespace {}",
                crate::names::shown(name),
                crate::names::shown(namespace)
            ))
        })?
    };
    let mut key = rest.rsplit('/').next().unwrap_or(rest);
    if let Some(s) = remove_suffix {
        key = key.strip_suffix(s).unwrap_or(key);
    }
    Ok(format!("{prefix}{key}"))
}

/// The item a nested backend name belongs to: `ns/01/23/0123ab.del` gives `ns/0123ab`.
///
/// Nesting directories are recognised by shape (each is the next two characters of the
/// leaf), so no configuration is needed; the daemon uses this to order backend-level
/// (REST) operations with the item-level (IPC) operations on the same item.
pub fn item_of(nested: &str) -> String {
    let name = nested.strip_suffix(crate::names::DEL_SUFFIX).unwrap_or(nested);
    let parts: Vec<&str> = name.split('/').collect();
    let Some((leaf, dirs)) = parts.split_last() else { return String::new() };
    // `get` rather than indexing: names reach here before validation and may hold
    // multi-byte characters, and this must never panic.
    let nesting_at = |levels: usize| {
        levels <= dirs.len() && (0..levels).all(|i| Some(dirs[dirs.len() - levels + i]) == leaf.get(2 * i..2 * i + 2))
    };
    let levels = (1..=dirs.len()).rev().find(|&l| nesting_at(l)).unwrap_or(0);
    let mut out = dirs[..dirs.len() - levels].join("/");
    if !out.is_empty() {
        out.push('/');
    }
    out.push_str(leaf);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nest_and_unnest() {
        assert_eq!(nest("data/0123abcd", 2, None).unwrap(), "data/01/23/0123abcd");
        assert_eq!(nest("data/0123abcd", 0, Some(".del")).unwrap(), "data/0123abcd.del");
        assert_eq!(nest("0123abcd", 1, None).unwrap(), "01/0123abcd");
        assert_eq!(nest("a/b/0123", 1, Some(".del")).unwrap(), "a/b/01/0123.del");
        assert!(nest("data/0", 1, None).is_err());
        assert_eq!(unnest("data/01/23/0123abcd", "data", None).unwrap(), "data/0123abcd");
        assert_eq!(unnest("data/01/0123.del", "data/", Some(".del")).unwrap(), "data/0123");
        assert_eq!(unnest("01/0123", "", None).unwrap(), "0123");
        assert!(unnest("other/01/0123", "data", None).is_err());
    }

    #[test]
    fn item_of_nested_names() {
        assert_eq!(item_of("data/01/23/0123abcd"), "data/0123abcd");
        assert_eq!(item_of("data/01/23/0123abcd.del"), "data/0123abcd");
        assert_eq!(item_of("data/0123abcd"), "data/0123abcd");
        assert_eq!(item_of("config/main"), "config/main");
        assert_eq!(item_of("01/0123"), "0123");
        assert_eq!(item_of("a/b/01/0123"), "a/b/0123");
        assert_eq!(item_of("data/02/0123"), "data/02/0123");
        assert_eq!(item_of(""), "");
        assert_eq!(item_of("data/\u{ff}/\u{ff}\u{fe}"), "data/\u{ff}\u{fe}");
        assert_eq!(item_of("d/\u{e9}x/\u{e9}"), "d/\u{e9}x/\u{e9}");
    }

    proptest::proptest! {
        #[test]
        fn item_of_never_panics(name in ".{0,60}") {
            let _ = item_of(&name);
        }

        #[test]
        fn item_of_inverts_nest(key in "[0-9a-f]{8,64}", levels in 0u32..4, del: bool) {
            let nested = nest(&format!("data/{key}"), levels, del.then_some(".del")).unwrap();
            proptest::prop_assert_eq!(item_of(&nested), format!("data/{key}"));
        }
    }
}
