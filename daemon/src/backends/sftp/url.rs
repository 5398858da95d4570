//! The `sftp:` URL grammar, exactly as Python borgstore 0.7.0 reads it.
//!
//! `sftp://[user@]host[:port]/path`: the first `/` after the host (and port) separates,
//! it is not part of the path. So `sftp://h/rel/path` addresses `rel/path` relative to the
//! server's start directory (usually the user's home), and `sftp://h//abs/path` the
//! absolute `/abs/path`. User and port are optional; user and path are percent-decoded,
//! the host is not (it may be an alias from `~/.ssh/config`). Port 0 means "not given".

use borgstore_ipc::{Error, Result};
use percent_encoding::percent_decode_str;

/// The parts of an `sftp:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftpUrl {
    /// Login name; `None` lets `~/.ssh/config` or the local user name decide.
    pub user: Option<String>,
    /// Host name, IP address or `~/.ssh/config` alias, as written.
    pub host: String,
    /// TCP port; `None` lets `~/.ssh/config` decide (else 22).
    pub port: Option<u16>,
    /// Store location on the server: relative (to the start directory) or absolute.
    pub path: String,
}

const GRAMMAR: &str = "expected sftp://[user@]host[:port]/relative/path or sftp://[user@]host[:port]//absolute/path";

fn decode(what: &str, s: &str) -> Result<String> {
    let decoded = percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| Error::invalid(format!("sftp: URL {what} is not valid UTF-8 after percent-decoding")))?;
    if decoded.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!("sftp: URL {what} contains a control character")));
    }
    Ok(decoded.into_owned())
}

/// Host, optional port and path after the user part (`host[:port]/path`), as the regex
/// `(?P<host>[^:/]+)(?::(?P<port>\d+))?/(?P<path>.+)` matches it.
fn host_port_path(s: &str) -> Option<(&str, Option<&str>, &str)> {
    let host_end = s.find([':', '/'])?;
    if host_end == 0 {
        return None;
    }
    let (host, rest) = s.split_at(host_end);
    let (port, rest) = match rest.strip_prefix(':') {
        Some(after) => {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            (Some(&after[..digits]), &after[digits..])
        }
        None => (None, rest),
    };
    let path = rest.strip_prefix('/')?;
    if path.is_empty() {
        return None;
    }
    Some((host, port, path))
}

/// Parse an `sftp:` URL. Anything that does not match the grammar is an InvalidArgument error.
pub fn parse(url: &str) -> Result<SftpUrl> {
    let invalid = || Error::invalid(format!("invalid sftp: URL {}: {GRAMMAR}", crate::names::shown(url)));
    let rest = url.strip_prefix("sftp://").ok_or_else(invalid)?;
    // Python's `.+` stops at a line break; we refuse such URLs instead of cutting them.
    if rest.contains(['\n', '\r']) {
        return Err(invalid());
    }
    // First try with a user part (everything up to the first '@'), then without, like the
    // regex's optional group does when matching with it fails.
    let with_user = rest
        .find('@')
        .filter(|&at| at > 0)
        .and_then(|at| host_port_path(&rest[at + 1..]).map(|hpp| (Some(&rest[..at]), hpp)));
    let (user, (host, port, path)) = match with_user {
        Some(m) => m,
        None => (None, host_port_path(rest).ok_or_else(invalid)?),
    };
    let port = match port {
        None => None,
        Some(digits) => {
            // Python: int(digits), where 0 means "not given".
            let significant = digits.trim_start_matches('0');
            let n: u32 = if significant.is_empty() { 0 } else { significant.parse().unwrap_or(u32::MAX) };
            match n {
                0 => None,
                n => Some(
                    u16::try_from(n)
                        .map_err(|_| Error::invalid(format!("sftp: URL port {digits} is out of range (1..65535)")))?,
                ),
            }
        }
    };
    Ok(SftpUrl {
        user: user.map(|u| decode("user name", u)).transpose()?,
        host: host.to_string(),
        port,
        path: decode("path", path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(url: &str) -> SftpUrl {
        parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn url(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> SftpUrl {
        SftpUrl { user: user.map(str::to_string), host: host.to_string(), port, path: path.to_string() }
    }

    #[test]
    fn full_and_minimal() {
        assert_eq!(p("sftp://user@host:2222/rel/path"), url(Some("user"), "host", Some(2222), "rel/path"));
        assert_eq!(p("sftp://user@host:2222//abs/path"), url(Some("user"), "host", Some(2222), "/abs/path"));
        assert_eq!(p("sftp://host/repo"), url(None, "host", None, "repo"));
        assert_eq!(p("sftp://host//srv/repo/"), url(None, "host", None, "/srv/repo/"));
        assert_eq!(p("sftp://u@127.0.0.1/x"), url(Some("u"), "127.0.0.1", None, "x"));
        assert_eq!(p("sftp://host:22/x"), url(None, "host", Some(22), "x"));
        // The path is everything after the separating slash, also a lone slash (the root).
        assert_eq!(p("sftp://host//"), url(None, "host", None, "/"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(p("sftp://us%40er@h/a%20b/%C3%A4"), url(Some("us@er"), "h", None, "a b/ä"));
        // The host is not decoded, as in Python.
        assert_eq!(p("sftp://h%41/x").host, "h%41");
        assert!(parse("sftp://h/%ff").is_err(), "invalid UTF-8");
        assert!(parse("sftp://h/a%00b").is_err(), "NUL");
        assert!(parse("sftp://h/a%0ab").is_err(), "line break");
    }

    #[test]
    fn port_zero_means_default() {
        assert_eq!(p("sftp://h:0/x").port, None);
        assert_eq!(p("sftp://h:00022/x").port, Some(22));
        assert_eq!(p("sftp://h:000000000000/x").port, None);
        assert!(parse("sftp://h:65536/x").is_err());
        assert!(parse("sftp://h:99999999999999999999/x").is_err());
    }

    #[test]
    fn odd_but_python_compatible() {
        // The user part ends at the first '@'; the host may then contain more '@'s.
        assert_eq!(p("sftp://a@b@c/p"), url(Some("a"), "b@c", None, "p"));
        // A user may contain ':' and '/': it is everything before the first '@'.
        assert_eq!(p("sftp://a:b@h/p"), url(Some("a:b"), "h", None, "p"));
        assert_eq!(p("sftp://x/y@h/p"), url(Some("x/y"), "h", None, "p"));
        // When the form with a user does not match, the '@' belongs to the host.
        assert_eq!(p("sftp://a@:22/p"), url(None, "a@", Some(22), "p"));
        assert_eq!(p("sftp://a@/p"), url(None, "a@", None, "p"));
        // An empty user is no user part at all, so "@" is the host (and DNS will refuse it).
        assert_eq!(p("sftp://@/x"), url(None, "@", None, "x"));
    }

    #[test]
    fn refused() {
        for bad in [
            "sftp://",
            "sftp://host",
            "sftp://host/",
            "sftp://host:/x",
            "sftp://host:22",
            "sftp://host:22/",
            "sftp://host:2x/y",
            "sftp:///x",
            "sftp://:22/x",
            "sftp://[::1]:22/x",
            "sftp:/host/x",
            "file:///x",
            "sftp://h/x\ny",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.kind, borgstore_ipc::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
