//! REST client URLs, with the grammar of Python borgstore 0.7.0:
//!
//! - `http(s)://[user:pass@]host[:port][/prefix]`: a REST server over HTTP; without
//!   credentials in the URL, `BORGSTORE_REST_USERNAME`/`BORGSTORE_REST_PASSWORD` apply.
//! - `rest://[user@]host[:port]/path`: `borgstore-server-rest --stdio --backend FILE:path`
//!   started over ssh (`BORGSTORE_RSH` replaces the ssh command line);
//!   `rest:///path` runs it locally. As in Python, the `/` after the host is a separator,
//!   so `rest:///tmp/x` means the relative `tmp/x` and `rest:////tmp/x` the absolute one.

use borgstore_ipc::{Error, Result};
use percent_encoding::percent_decode_str;

/// ssh keepalive: a dead peer ends ssh instead of hanging the stdio pipe.
const SSH_ALIVE_INTERVAL: u32 = 30;
const SSH_ALIVE_COUNT_MAX: u32 = 3;

/// Where and how to reach a REST server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A REST server over HTTP(S).
    Http {
        /// `scheme://host[:port][/prefix]` without a trailing `/`; routes are appended to it.
        base: String,
        /// From the URL, else `BORGSTORE_REST_USERNAME`; basic auth needs both parts.
        username: Option<String>,
        /// From the URL (percent-decoded), else `BORGSTORE_REST_PASSWORD`.
        password: Option<String>,
    },
    /// A command that speaks HTTP on its stdin/stdout.
    Stdio {
        /// Program and arguments: ssh (or `BORGSTORE_RSH`) or the local server.
        command: Vec<String>,
    },
}

fn bad(url: &str, why: &str) -> Error {
    Error::invalid(format!("invalid REST URL {}: {why}", crate::names::shown(&redact(url))))
}

/// The URL with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.split_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `host[:port]` or `[v6]:port` -> (host, port); None for an unclosed `[`.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let after = &s[end + 1..];
        return Some((&s[..=end], if after.is_empty() { None } else { Some(after.strip_prefix(':').unwrap_or("x")) }));
    }
    Some(match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    })
}

/// Parse a REST client URL; `env` looks up environment variables.
pub fn parse(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Target> {
    if let Some((scheme, rest)) = url.split_once("://").filter(|(s, _)| *s == "http" || *s == "https") {
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (creds, hostport) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        if hostport.is_empty() {
            return Err(bad(url, "no host"));
        }
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad(url, "unclosed [ in the host"))?;
        if host.is_empty() || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(bad(url, "expected http(s)://[user:pass@]host[:port][/path]"));
        }
        let (username, password) = match creds {
            Some(c) => match c.split_once(':') {
                Some((u, p)) if !u.is_empty() && !p.is_empty() => (Some(decode(u)), Some(decode(p))),
                _ => return Err(bad(url, "credentials must be user:password")),
            },
            None => (env("BORGSTORE_REST_USERNAME"), env("BORGSTORE_REST_PASSWORD")),
        };
        let base = format!("{scheme}://{hostport}{}", path.trim_end_matches('/'));
        return Ok(Target::Http { base, username, password });
    }
    if let Some(rest) = url.strip_prefix("rest://") {
        let slash = rest.find('/').ok_or_else(|| bad(url, "expected rest://[user@]host[:port]/path"))?;
        let (authority, path) = (&rest[..slash], &rest[slash + 1..]);
        let path = path.split(['?', '#']).next().unwrap_or("");
        if path.is_empty() {
            return Err(bad(url, "the path is empty"));
        }
        let mut command = Vec::new();
        if !authority.is_empty() {
            let (user, hostport) = match authority.split_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let (host, port) = split_host_port(hostport).ok_or_else(|| bad(url, "unclosed [ in the host"))?;
            let host = host.to_string();
            if host.is_empty() || user.is_some_and(str::is_empty) {
                return Err(bad(url, "expected rest://[user@]host[:port]/path"));
            }
            let port = port.unwrap_or("22");
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(url, "the port must be a number"));
            }
            match env("BORGSTORE_RSH") {
                Some(rsh) => {
                    command = shlex::split(&rsh).ok_or_else(|| bad(url, "BORGSTORE_RSH is not a valid command line"))?
                }
                None => {
                    command = vec!["ssh".into()];
                    command.extend(["-o".into(), format!("ServerAliveInterval={SSH_ALIVE_INTERVAL}")]);
                    command.extend(["-o".into(), format!("ServerAliveCountMax={SSH_ALIVE_COUNT_MAX}")]);
                    command.extend(["-p".into(), port.to_string()]);
                }
            }
            command.push(match user {
                Some(u) => format!("{u}@{host}"),
                None => host,
            });
        }
        command.extend(["borgstore-server-rest", "--stdio", "--backend"].map(String::from));
        command.push(format!("FILE:{path}"));
        return Ok(Target::Stdio { command });
    }
    Err(bad(url, "expected http://, https:// or rest://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn http(base: &str, u: Option<&str>, p: Option<&str>) -> Target {
        Target::Http { base: base.into(), username: u.map(Into::into), password: p.map(Into::into) }
    }

    #[test]
    fn http_urls() {
        let none = env(&[]);
        assert_eq!(parse("http://127.0.0.1:5618/", &none).unwrap(), http("http://127.0.0.1:5618", None, None));
        assert_eq!(
            parse("https://u:p%40ss@host/sub/path/", &none).unwrap(),
            http("https://host/sub/path", Some("u"), Some("p@ss"))
        );
        let creds = env(&[("BORGSTORE_REST_USERNAME", "eu"), ("BORGSTORE_REST_PASSWORD", "ep")]);
        assert_eq!(parse("http://h:1", &creds).unwrap(), http("http://h:1", Some("eu"), Some("ep")));
        assert_eq!(parse("http://a:b@h:1", &creds).unwrap(), http("http://h:1", Some("a"), Some("b")));
        for bad in ["http://", "http://:80/", "http://h:x/", "http://user@h/", "ftp://h/", "http:/h"] {
            assert!(parse(bad, &none).is_err(), "{bad}");
        }
        let e = parse("http://u:secret@h:x/", &none).unwrap_err();
        assert!(!e.message.contains("secret"), "{e}");
    }

    #[test]
    fn rest_urls() {
        let none = env(&[]);
        let cmd = |v: &[&str]| Target::Stdio { command: v.iter().map(|s| s.to_string()).collect() };
        assert_eq!(
            parse("rest:////srv/repo", &none).unwrap(),
            cmd(&["borgstore-server-rest", "--stdio", "--backend", "FILE:/srv/repo"])
        );
        assert_eq!(
            parse("rest://backup@host:2222/repos/a", &none).unwrap(),
            cmd(&[
                "ssh",
                "-o",
                "ServerAliveInterval=30",
                "-o",
                "ServerAliveCountMax=3",
                "-p",
                "2222",
                "backup@host",
                "borgstore-server-rest",
                "--stdio",
                "--backend",
                "FILE:repos/a"
            ])
        );
        let rsh = env(&[("BORGSTORE_RSH", "ssh -i '/k ey' -o BatchMode=yes")]);
        assert_eq!(
            parse("rest://h/~/r", &rsh).unwrap(),
            cmd(&[
                "ssh",
                "-i",
                "/k ey",
                "-o",
                "BatchMode=yes",
                "h",
                "borgstore-server-rest",
                "--stdio",
                "--backend",
                "FILE:~/r"
            ])
        );
        let v6 = parse("rest://[::1]:22/r", &none).unwrap();
        assert!(matches!(v6, Target::Stdio { command } if command.contains(&"[::1]".to_string())));
        for bad in ["rest://host", "rest://host/", "rest://@h/x", "rest://h:x/p", "rest://[::1/p"] {
            assert!(parse(bad, &none).is_err(), "{bad}");
        }
    }
}
