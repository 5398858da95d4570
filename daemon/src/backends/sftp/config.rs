//! Where the sftp backend gets its settings: [`SftpOptions`] (from the environment or
//! given by code), `ssh_config` files (host aliases, as Python borgstore reads them), and
//! the resolved connection [`Target`].
//!
//! Environment (read by [`SftpOptions::from_env`], i.e. for every `sftp:` store URL):
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BORGSTORE_SFTP_KEY` | private key file(s), `:`-separated, tried first | none |
//! | `BORGSTORE_SFTP_KNOWN_HOSTS` | extra known_hosts file(s), `:`-separated | none |
//! | `SSH_AUTH_SOCK` | ssh-agent socket; its keys are tried after the configured ones | unset: no agent |
//! | `BORGSTORE_SFTP_CONNECT_TIMEOUT` | seconds for TCP connect + handshake + auth + sftp start | 30 |
//! | `BORGSTORE_SFTP_TIMEOUT` | seconds one sftp request may take before the connection counts as lost | 120 |
//! | `BORGSTORE_SFTP_RECONNECT_TRIES` | reconnect attempts after a lost connection | 3 |
//! | `BORGSTORE_SFTP_RECONNECT_WAIT` | seconds to wait before each reconnect attempt | 5 |
//!
//! Always consulted as well: `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts` (plus any
//! `UserKnownHostsFile` from ssh_config), the identity files `~/.ssh/id_ed25519`,
//! `~/.ssh/id_ecdsa`, `~/.ssh/id_rsa` (unencrypted ones; put encrypted keys into
//! ssh-agent), and `/etc/ssh/ssh_config` then `~/.ssh/config` for `HostName`, `User`,
//! `Port`, `IdentityFile` and `UserKnownHostsFile` (the user file wins, as in Python).
//! There is deliberately no switch to accept unknown host keys.
//!
//! The ssh_config reader ([`lookup`]) is our own: the maintained crate, `ssh2-config`,
//! needs Rust 1.88 (we build with 1.80), takes `~` from the process's home instead of
//! [`SftpOptions::home`] and expands none of the `%d %u %h %r %p` tokens; `ssh_config` has
//! had one release, in 2020. We need only five keywords of the format.

use super::url::SftpUrl;
use borgstore_ipc::{Error, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Settings of the sftp backend that do not come from the URL.
#[derive(Debug, Clone)]
pub struct SftpOptions {
    /// Private key files tried before anything else, in order.
    pub identity_files: Vec<PathBuf>,
    /// ssh-agent socket whose keys are tried next (None: no agent).
    pub agent_socket: Option<PathBuf>,
    /// Try `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` after the agent.
    pub default_identities: bool,
    /// Every known_hosts file consulted (missing files are fine).
    pub known_hosts: Vec<PathBuf>,
    /// ssh_config files for host aliases, later ones override earlier ones.
    pub ssh_config: Vec<PathBuf>,
    /// Home directory (for `~` and the default files); None: none are used.
    pub home: Option<PathBuf>,
    /// Bound on connecting: TCP, SSH handshake, authentication and sftp start.
    pub connect_timeout: Duration,
    /// Bound on each sftp request (whole seconds, at least 1).
    pub request_timeout: Duration,
    /// SSH keepalive interval; three missed replies end the connection.
    pub keepalive_interval: Duration,
    /// Reconnect attempts after a lost connection, before giving up with ConnectionLost.
    pub reconnect_tries: u32,
    /// Wait before each reconnect attempt.
    pub reconnect_wait: Duration,
    /// Flush each stored file on the server (`fsync@openssh.com`) before its rename.
    pub fsync: bool,
    /// Most SSH connections an open store holds (1 to 64; the store's config key
    /// `connections`), see [`super::pool`].
    pub connections: usize,
}

// The defaults of Python borgstore's sftp backend.
/// Default of [`SftpOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`SftpOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Default of [`SftpOptions::keepalive_interval`].
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default of [`SftpOptions::reconnect_tries`].
pub const DEFAULT_RECONNECT_TRIES: u32 = 3;
/// Default of [`SftpOptions::reconnect_wait`].
pub const DEFAULT_RECONNECT_WAIT: Duration = Duration::from_secs(5);

impl SftpOptions {
    /// Nothing from the environment: no keys, no agent, no known hosts, no ssh_config.
    /// Callers (tests, embedders) add exactly what they want.
    pub fn isolated() -> Self {
        SftpOptions {
            identity_files: Vec::new(),
            agent_socket: None,
            default_identities: false,
            known_hosts: Vec::new(),
            ssh_config: Vec::new(),
            home: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            reconnect_tries: DEFAULT_RECONNECT_TRIES,
            reconnect_wait: DEFAULT_RECONNECT_WAIT,
            fsync: true,
            connections: super::pool::DEFAULT_CONNECTIONS,
        }
    }

    /// Options from the process environment (see the module docs).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// Options from environment-like variables given by `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Result<Self> {
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        let home = nonempty("HOME").map(PathBuf::from).or_else(home_from_passwd);
        let mut o = SftpOptions::isolated();
        if let Some(keys) = nonempty("BORGSTORE_SFTP_KEY") {
            o.identity_files = std::env::split_paths(&keys).filter(|p| !p.as_os_str().is_empty()).collect();
        }
        o.agent_socket = nonempty("SSH_AUTH_SOCK").map(PathBuf::from);
        o.default_identities = home.is_some();
        if let Some(files) = nonempty("BORGSTORE_SFTP_KNOWN_HOSTS") {
            o.known_hosts.extend(std::env::split_paths(&files).filter(|p| !p.as_os_str().is_empty()));
        }
        if let Some(h) = &home {
            o.known_hosts.push(h.join(".ssh/known_hosts"));
        }
        o.known_hosts.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
        o.ssh_config.push(PathBuf::from("/etc/ssh/ssh_config"));
        if let Some(h) = &home {
            o.ssh_config.push(h.join(".ssh/config"));
        }
        o.home = home;
        let seconds = |k: &str| -> Result<Option<Duration>> {
            let Some(v) = nonempty(k) else { return Ok(None) };
            let v = v.to_string_lossy().into_owned();
            match v.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
                _ => Err(Error::invalid(format!("{k}={v:?} is not a positive number of seconds"))),
            }
        };
        if let Some(d) = seconds("BORGSTORE_SFTP_CONNECT_TIMEOUT")? {
            o.connect_timeout = d;
        }
        if let Some(d) = seconds("BORGSTORE_SFTP_TIMEOUT")? {
            o.request_timeout = d;
        }
        if let Some(d) = seconds("BORGSTORE_SFTP_RECONNECT_WAIT")? {
            o.reconnect_wait = d;
        }
        if let Some(v) = nonempty("BORGSTORE_SFTP_RECONNECT_TRIES") {
            let v = v.to_string_lossy().into_owned();
            o.reconnect_tries = v
                .trim()
                .parse()
                .map_err(|_| Error::invalid(format!("BORGSTORE_SFTP_RECONNECT_TRIES={v:?} is not a whole number")))?;
        }
        Ok(o)
    }
}

fn home_from_passwd() -> Option<PathBuf> {
    nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.dir)
}

/// The local user name (`$USER`, `$LOGNAME`, then the password database), the login
/// name when neither the URL nor ssh_config give one.
pub fn local_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Some(u) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return u.to_string_lossy().into_owned();
        }
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".to_string())
}

/// Values one ssh_config file gives a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName` (with `%h` expanded): the real host to connect to.
    pub hostname: Option<String>,
    /// `User`: the login name.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// Every `IdentityFile`, unexpanded.
    pub identity_files: Vec<String>,
    /// `UserKnownHostsFile`'s files, unexpanded.
    pub known_hosts_files: Vec<String>,
}

impl HostConfig {
    /// Values of `later` override ours where it has them.
    fn overlay(&mut self, later: HostConfig) {
        if later.hostname.is_some() {
            self.hostname = later.hostname;
        }
        if later.user.is_some() {
            self.user = later.user;
        }
        if later.port.is_some() {
            self.port = later.port;
        }
        if !later.identity_files.is_empty() {
            self.identity_files = later.identity_files;
        }
        if !later.known_hosts_files.is_empty() {
            self.known_hosts_files = later.known_hosts_files;
        }
    }
}

/// Split an ssh_config line into keyword and arguments (`Key value`, `Key=value`,
/// double-quoted arguments).
fn split_line(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let key_end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let key = line[..key_end].to_ascii_lowercase();
    let mut rest = line[key_end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut arg = String::new();
        if c == '"' {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                arg.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                arg.push(c);
                chars.next();
            }
        }
        args.push(arg);
    }
    Some((key, args))
}

/// Do `Host` patterns match `host`? (Any positive pattern, and no negated one.)
fn host_patterns_match(patterns: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let mut matched = false;
    for p in patterns {
        let (neg, p) = match p.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, p.as_str()),
        };
        if super::known_hosts::wildcard_match(p.to_ascii_lowercase().as_bytes(), host.as_bytes()) {
            if neg {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// What one ssh_config text says about `host` (the name as given in the URL). As in
/// OpenSSH, the first value found wins within a file; `IdentityFile` accumulates.
/// `Match` blocks are not evaluated (except `Match all`) and apply to nothing.
pub fn lookup(text: &str, host: &str) -> HostConfig {
    let mut out = HostConfig::default();
    let mut active = true; // lines before the first Host apply to every host
    for line in text.lines() {
        let Some((key, args)) = split_line(line) else { continue };
        match key.as_str() {
            "host" => active = host_patterns_match(&args, host),
            "match" => active = args.len() == 1 && args[0].eq_ignore_ascii_case("all"),
            _ if !active => {}
            "hostname" if out.hostname.is_none() => {
                out.hostname = args.first().map(|h| h.replace("%h", host).replace("%%", "%"));
            }
            "user" if out.user.is_none() => out.user = args.first().cloned(),
            "port" if out.port.is_none() => {
                out.port = args.first().and_then(|p| p.parse().ok()).filter(|&p: &u16| p != 0);
            }
            "identityfile" => out.identity_files.extend(args.first().cloned()),
            "userknownhostsfile" if out.known_hosts_files.is_empty() => out.known_hosts_files = args,
            _ => {}
        }
    }
    out
}

/// Expand `~` and the `%d %u %h %r %p %%` tokens of a file name from ssh_config.
fn expand_path(raw: &str, home: Option<&Path>, host: &str, user: &str, port: u16) -> Option<PathBuf> {
    let mut s = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            s.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => s.push('%'),
            Some('d') => s.push_str(&home?.to_string_lossy()),
            Some('u') => s.push_str(&local_user()),
            Some('h') => s.push_str(host),
            Some('r') => s.push_str(user),
            Some('p') => s.push_str(&port.to_string()),
            _ => return None,
        }
    }
    if s == "~" {
        return home.map(Path::to_path_buf);
    }
    if let Some(rest) = s.strip_prefix("~/") {
        return home.map(|h| h.join(rest));
    }
    Some(PathBuf::from(s))
}

/// Everything needed to reach one sftp store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address to connect to (after ssh_config `HostName`).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Login name.
    pub user: String,
    /// The store path on the server, relative or absolute, as in the URL.
    pub path: String,
    /// Key files to try first: the configured ones, then ssh_config `IdentityFile`s.
    pub identity_files: Vec<PathBuf>,
    /// Every known_hosts file to consult.
    pub known_hosts: Vec<PathBuf>,
}

impl Target {
    /// `user@host:port`, for messages.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Resolve `url` with ssh_config files and options. Reads files: call it off the executor.
pub fn resolve(url: &SftpUrl, options: &SftpOptions) -> Target {
    let mut hc = HostConfig::default();
    for file in &options.ssh_config {
        if let Ok(text) = std::fs::read_to_string(file) {
            hc.overlay(lookup(&text, &url.host));
        }
    }
    let host = hc.hostname.clone().unwrap_or_else(|| url.host.clone());
    let user = url.user.clone().or(hc.user.clone()).unwrap_or_else(local_user);
    let port = url.port.or(hc.port).unwrap_or(22);
    let home = options.home.as_deref();
    let expand = |raw: &String| expand_path(raw, home, &host, &user, port);
    let mut identity_files = options.identity_files.clone();
    identity_files.extend(hc.identity_files.iter().filter_map(expand));
    let mut known_hosts = options.known_hosts.clone();
    known_hosts.extend(hc.known_hosts_files.iter().filter_map(expand));
    known_hosts.dedup();
    Target { host, port, user, path: url.path.clone(), identity_files, known_hosts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_options() {
        let vars = |k: &str| -> Option<OsString> {
            match k {
                "HOME" => Some("/home/u".into()),
                "BORGSTORE_SFTP_KEY" => Some("/k1:/k2".into()),
                "BORGSTORE_SFTP_KNOWN_HOSTS" => Some("/kh".into()),
                "SSH_AUTH_SOCK" => Some("/agent.sock".into()),
                "BORGSTORE_SFTP_TIMEOUT" => Some("2.5".into()),
                "BORGSTORE_SFTP_RECONNECT_TRIES" => Some("0".into()),
                _ => None,
            }
        };
        let o = SftpOptions::from_vars(vars).unwrap();
        assert_eq!(o.identity_files, [PathBuf::from("/k1"), PathBuf::from("/k2")]);
        assert_eq!(
            o.known_hosts,
            [
                PathBuf::from("/kh"),
                PathBuf::from("/home/u/.ssh/known_hosts"),
                PathBuf::from("/etc/ssh/ssh_known_hosts")
            ]
        );
        assert_eq!(o.ssh_config, [PathBuf::from("/etc/ssh/ssh_config"), PathBuf::from("/home/u/.ssh/config")]);
        assert_eq!(o.agent_socket, Some(PathBuf::from("/agent.sock")));
        assert!(o.default_identities);
        assert_eq!(o.request_timeout, Duration::from_millis(2500));
        assert_eq!(o.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(o.reconnect_tries, 0);
        let bad = |k: &'static str, v: &'static str| {
            SftpOptions::from_vars(move |q| (q == k).then(|| OsString::from(v))).unwrap_err().kind
        };
        assert_eq!(bad("BORGSTORE_SFTP_TIMEOUT", "-1"), borgstore_ipc::ErrorKind::InvalidArgument);
        assert_eq!(bad("BORGSTORE_SFTP_CONNECT_TIMEOUT", "soon"), borgstore_ipc::ErrorKind::InvalidArgument);
        assert_eq!(bad("BORGSTORE_SFTP_RECONNECT_TRIES", "x"), borgstore_ipc::ErrorKind::InvalidArgument);
    }

    const CONFIG: &str = "\
# global
Port 2200
Host backup bk
    HostName backup.example.net
    User borg
    IdentityFile ~/.ssh/borg_key
    IdentityFile=\"%d/second key\"
Host *.example.net !evil.example.net
    User webuser
    Port 2222
Host evil.example.net
    User eviluser
Match exec \"true\"
    User nobody
Host *
    User fallback
    UserKnownHostsFile ~/.ssh/kh1 /abs/kh2
";

    #[test]
    fn ssh_config_lookup() {
        let b = lookup(CONFIG, "backup");
        assert_eq!(b.hostname.as_deref(), Some("backup.example.net"));
        assert_eq!(b.user.as_deref(), Some("borg"), "first value wins");
        assert_eq!(b.port, Some(2200), "global lines apply to all hosts");
        assert_eq!(b.identity_files, ["~/.ssh/borg_key", "%d/second key"]);
        assert_eq!(b.known_hosts_files, ["~/.ssh/kh1", "/abs/kh2"]);
        let w = lookup(CONFIG, "WWW.example.net");
        assert_eq!((w.user.as_deref(), w.port, w.hostname.as_deref()), (Some("webuser"), Some(2200), None));
        let e = lookup(CONFIG, "evil.example.net");
        assert_eq!(e.user.as_deref(), Some("eviluser"), "negated pattern excludes the block");
        assert_eq!(lookup(CONFIG, "other").user.as_deref(), Some("fallback"), "Match exec is not evaluated");
    }

    #[test]
    fn resolve_target() {
        let dir = tempfile::tempdir().unwrap();
        let user_cfg = dir.path().join("config");
        std::fs::write(&user_cfg, CONFIG).unwrap();
        let system_cfg = dir.path().join("system");
        std::fs::write(&system_cfg, "Host backup\n  User sysuser\n  Port 2022\n").unwrap();
        let mut o = SftpOptions::isolated();
        o.home = Some(PathBuf::from("/home/u"));
        o.ssh_config = vec![system_cfg, user_cfg];
        o.identity_files = vec![PathBuf::from("/explicit")];
        o.known_hosts = vec![PathBuf::from("/kh")];
        let url = super::super::url::parse("sftp://backup/repo").unwrap();
        let t = resolve(&url, &o);
        assert_eq!(t.host, "backup.example.net");
        assert_eq!(t.user, "borg", "the user's config overrides the system one");
        assert_eq!(t.port, 2200);
        assert_eq!(t.path, "repo");
        assert_eq!(
            t.identity_files,
            [PathBuf::from("/explicit"), PathBuf::from("/home/u/.ssh/borg_key"), PathBuf::from("/home/u/second key")]
        );
        assert_eq!(t.known_hosts, [PathBuf::from("/kh"), PathBuf::from("/home/u/.ssh/kh1"), PathBuf::from("/abs/kh2")]);
        // The URL's user and port beat ssh_config.
        let url = super::super::url::parse("sftp://me@backup:7//srv/r").unwrap();
        let t = resolve(&url, &o);
        assert_eq!((t.user.as_str(), t.port, t.path.as_str()), ("me", 7, "/srv/r"));
        assert_eq!(t.label(), "me@backup.example.net:7");
        // Without any config, the URL is taken as is.
        let t = resolve(&super::super::url::parse("sftp://u@h/p").unwrap(), &SftpOptions::isolated());
        assert_eq!((t.host.as_str(), t.port, t.user.as_str()), ("h", 22, "u"));
    }
}
