//! The shape of one line of a store's audit log, defined once for the daemon that writes
//! it (`borgstore_daemon::audit`) and the `borgstore audit` CLI that reads it.
//!
//! The log is JSON Lines: one [`AuditLine`] object per line, for example
//!
//! ```text
//! {"time":"2026-11-30T12:34:56.789Z","store":"main","principal":"uid 1001","door":"socket","op":"store","names":["data/0123"],"size":4096,"result":"ok"}
//! {"time":"2026-11-30T12:34:57.001Z","store":"main","principal":"uid 1002","door":"rest","op":"delete","names":["data/0123"],"result":"error","error":"PermissionDenied","message":"store main: delete not granted"}
//! ```
//!
//! There is no field for a value or a password: the log says who did what to which
//! names, never what was stored. Readers are lenient (see [`AuditLine::parse`]): a field
//! a newer daemon adds is ignored, an error kind it invents is kept as its word.

use serde::{Deserialize, Serialize};

/// `result` of a command that succeeded.
pub const RESULT_OK: &str = "ok";
/// `result` of a command that failed; `error` and `message` say how.
pub const RESULT_ERROR: &str = "error";

/// One audit record as it is written, one JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    /// When the command finished: RFC 3339, UTC, milliseconds (`2026-11-30T12:34:56.789Z`).
    pub time: String,
    /// The store's name in the daemon's configuration.
    pub store: String,
    /// Who asked, as the door identified them (`uid 1001`, a REST user, a certificate subject).
    pub principal: String,
    /// The door the command came through (`socket`, `rest`, ...).
    pub door: String,
    /// The operation (`store`, `delete`, `move`, `create`, ...).
    pub op: String,
    /// The item names the operation touched (none for store-wide operations).
    #[serde(default)]
    pub names: Vec<String>,
    /// The size in bytes of what was written, when the operation writes a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// [`RESULT_OK`] or [`RESULT_ERROR`].
    pub result: String,
    /// With an error: its kind, as `ErrorKind::as_str` spells it (`PermissionDenied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With an error: a short message (never a value, never an absolute storage path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl AuditLine {
    /// Did the command succeed?
    pub fn is_ok(&self) -> bool {
        self.result == RESULT_OK
    }

    /// Parse one line (without its `\n`). `None` for anything that is not a complete
    /// audit object: a reader shows such a line raw, it never fails on it.
    pub fn parse(line: &[u8]) -> Option<AuditLine> {
        serde_json::from_slice(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_extra_fields_are_ignored() {
        let l = br#"{"time":"2026-11-30T12:34:56.789Z","store":"main","principal":"uid 1001","door":"socket","op":"store","names":["data/0123"],"size":4096,"result":"ok","later":1}"#;
        let a = AuditLine::parse(l).expect("parses");
        assert_eq!(a.op, "store");
        assert_eq!(a.names, ["data/0123"]);
        assert_eq!(a.size, Some(4096));
        assert!(a.is_ok());
        assert_eq!(a.error, None);
    }

    #[test]
    fn broken_lines_are_none_not_panics() {
        for l in [&b""[..], b"{", b"null", b"[1,2]", b"{\"time\":1}", b"\xff\xfe", b"{\"time\":\"t\",\"store\""] {
            assert_eq!(AuditLine::parse(l), None, "{l:?}");
        }
    }
}
