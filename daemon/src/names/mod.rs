//! Name validation: the one gate every name passes before it reaches a backend.
//!
//! The rules are those of DESIGN.md section 3 (and Python borgstore's
//! `validate_name`), made a little stricter where Python's rules would let a name
//! escape the store root or address the root itself: we also refuse control
//! characters (NUL included), any ASCII whitespace, empty path components (`a//b`)
//! and `.` components. A name that passes can be joined to a root directory and
//! never leaves it: it is relative, has no `..`, no `.` and no empty component.
//!
//! [`nesting`] turns a valid item name into the path it has at a namespace's nesting
//! level (`ns/01/23/0123...`) and back. It lives here, beside the rules, because both the
//! engine ([`crate::store`]) and the backends (pre-creating nesting directories) use it:
//! a name's shape is the lowest layer, below both.

pub mod nesting;

use borgstore_ipc::{Error, Result};

/// Longest accepted name, in bytes (all names are ASCII).
pub const MAX_NAME_LENGTH: usize = 100;
/// Suffix of temporary files (uploads in progress); never a valid name.
pub const TMP_SUFFIX: &str = ".tmp";
/// Suffix of soft-deleted items.
pub const DEL_SUFFIX: &str = ".del";
/// Suffix of hidden internal files (e.g. `quota.hid`); never a valid name.
pub const HID_SUFFIX: &str = ".hid";

/// Validate a backend name. The empty name (the store root) is accepted, because
/// `list("")` and `info("")` address the root; item operations use
/// [`validate_item_name`].
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Ok(());
    }
    // Where Python has the same rule, the message is Python's word for word (REST clients
    // see it); our stricter rules come after Python's, with their own words.
    let n = quoted(name);
    let refuse = |msg: String| Err(Error::invalid(msg));
    if name.len() > MAX_NAME_LENGTH {
        return refuse(format!("name is too long (max: {MAX_NAME_LENGTH}): {n}"));
    }
    if !name.is_ascii() {
        return refuse(format!("name must encode to plain ascii, but failed with: {n}"));
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("..") {
        return refuse(format!("name must be relative and not contain '..': {n}"));
    }
    if name.contains('\\') || name.contains(' ') {
        return refuse(format!("name must not contain backslashes or blanks: {n}"));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return refuse(format!("name must be lowercase, but got: {n}"));
    }
    if name.ends_with(TMP_SUFFIX) {
        return refuse(format!("name must not end with {TMP_SUFFIX}, but got: {n}"));
    }
    if name.ends_with(HID_SUFFIX) {
        return refuse(format!("name must not end with {HID_SUFFIX}, but got: {n}"));
    }
    if name.bytes().any(|b| b.is_ascii_control() || b.is_ascii_whitespace()) {
        return refuse(format!("name must not contain control characters or whitespace: {n}"));
    }
    if name.split('/').any(|part| part.is_empty() || part == ".") {
        return refuse(format!("name must not have empty or '.' path components: {n}"));
    }
    Ok(())
}

/// A name as the messages above show it: as it is when it is printable (as Python shows
/// it), else escaped (so it cannot forge log lines).
pub fn quoted(name: &str) -> String {
    if name.chars().any(|c| c.is_control()) || name.chars().count() > 120 {
        shown(name)
    } else {
        name.to_string()
    }
}

/// Validate the name of an item (not the root): like [`validate_name`], but empty is refused.
pub fn validate_item_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("invalid name: must not be empty"));
    }
    validate_name(name)
}

/// A name as it may appear in an error message: escaped and cut short, so a hostile
/// name can neither forge log lines nor blow up a message.
pub fn shown(name: &str) -> String {
    let mut out: String = name.chars().take(120).flat_map(|c| c.escape_default()).collect();
    if name.chars().count() > 120 {
        out.push_str("...");
    }
    format!("'{out}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_names() {
        for n in ["", "config", "data/0123abcd", "data/01/23/0123abcd.del", "a-b_c.d", "locks/x"] {
            assert!(validate_name(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        let long = "a".repeat(101);
        for n in [
            "/abs", "rel/", "a/../b", "..", "a\\b", "a b", "A", "data/ABC", "x.tmp", "x.hid", "a\0b", "é", "a//b",
            "./a", "a/./b", ".", "a\tb", "a\nb", &long,
        ] {
            assert!(validate_name(n).is_err(), "{n:?}");
        }
        assert!(validate_item_name("").is_err());
    }

    #[test]
    fn messages_are_escaped() {
        let e = validate_name("a\nb").unwrap_err();
        assert!(!e.message.contains('\n'));
    }
}
