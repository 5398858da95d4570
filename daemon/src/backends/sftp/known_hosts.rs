//! known_hosts checking for the sftp backend: is the key the server presents the one we
//! have on record for it?
//!
//! Reads OpenSSH `known_hosts` files: plain and `[host]:port` host patterns, comma lists,
//! `*`/`?` wildcards and `!` negation, hashed entries (`|1|salt|hmac`, as written by
//! `ssh-keygen -H` or `HashKnownHosts yes`), `@revoked` markers (a revoked key is refused
//! even if also listed as trusted) and `@cert-authority` lines (ignored: we never ask
//! for host certificates). Unreadable files and malformed lines are skipped, never fatal.
//!
//! The policy (see [`verify`]) is OpenSSH's `StrictHostKeyChecking yes`: a host without
//! an entry is refused, a host whose recorded key of the same type differs is refused
//! loudly (possible man-in-the-middle); nothing is ever written to a known_hosts file.
//!
//! Maintained crates do the decoding: `ssh-key` (through russh) reads markers, hashed
//! names ([`HostPatterns`]) and keys, `hmac` + `sha1` check a hashed name. Hand-written,
//! because `ssh-key` has no matching at all: wildcards, negation and the `[host]:port`
//! form ([`host_port_name`], [`host_list_matches`], [`wildcard_match`]). A line is split
//! into fields here, not by `ssh_key::known_hosts::Entry`, which splits at single spaces
//! only (OpenSSH takes any run of blanks) and reads a host field that starts with a
//! hashed name as that one name (we accept hashed names anywhere in a comma list).

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::known_hosts::{HostPatterns, Marker as LineMarker};
use russh::keys::{HashAlg, PublicKey};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a known_hosts line says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A trusted host key.
    Trusted,
    /// `@revoked`: this key must never be accepted.
    Revoked,
}

/// One known_hosts line that applies to the host we connect to.
#[derive(Debug, Clone)]
pub struct KnownHost {
    /// The known_hosts file it is in.
    pub file: PathBuf,
    /// Its line number (from 1).
    pub line: usize,
    /// Trusted or revoked.
    pub marker: Marker,
    /// The host key it records.
    pub key: PublicKey,
}

/// How OpenSSH names a host in known_hosts: `host` on port 22, `[host]:port` otherwise.
pub fn host_port_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Does the hashed entry `|1|salt|hash` name `name`? (HMAC-SHA1 of the name, keyed
/// with the salt.)
fn hashed_match(entry: &str, name: &str) -> bool {
    let Ok(parsed) = entry.parse::<HostPatterns>() else {
        return false;
    };
    // The crate zero-fills a hash that decodes to fewer than 20 bytes; re-encoding it
    // must give the entry back, so only a whole, well-formed hash can match.
    let HostPatterns::HashedName { salt, hash } = &parsed else {
        return false;
    };
    if parsed.to_string() != entry {
        return false;
    }
    Hmac::<sha1_hmac::Sha1>::new_from_slice(salt)
        .is_ok_and(|mac| mac.chain_update(name.as_bytes()).verify_slice(hash).is_ok())
}

/// OpenSSH `match_pattern`: `*` matches any run of characters, `?` exactly one.
pub fn wildcard_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// OpenSSH `match_hostname` over a comma-separated pattern list: true when a positive
/// pattern matches and no negated (`!`) pattern does. Case-insensitive.
pub fn host_list_matches(patterns: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for pattern in patterns.split(',') {
        if pattern.starts_with("|1|") {
            matched |= hashed_match(pattern, &name);
            continue;
        }
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if wildcard_match(pattern.to_ascii_lowercase().as_bytes(), name.as_bytes()) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// The lines of one known_hosts text that apply to `name` (see [`host_port_name`]).
pub fn parse_entries(text: &str, file: &Path, name: &str) -> Vec<KnownHost> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut fields = line.split_ascii_whitespace();
        let Some(mut first) = fields.next() else {
            continue;
        };
        if first.starts_with('#') {
            continue;
        }
        let marker = if first.starts_with('@') {
            match first.parse::<LineMarker>() {
                Ok(LineMarker::Revoked) => Marker::Revoked,
                // Host certificates are never requested, so CA lines cannot apply;
                // unknown markers are skipped as OpenSSH does.
                Ok(LineMarker::CertAuthority) | Err(_) => continue,
            }
        } else {
            Marker::Trusted
        };
        if marker == Marker::Revoked {
            match fields.next() {
                Some(hosts) => first = hosts,
                None => continue,
            }
        }
        let (Some(keytype), Some(blob)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !host_list_matches(first, name) {
            continue;
        }
        let Ok(key) = PublicKey::from_openssh(&format!("{keytype} {blob}")) else {
            tracing::debug!("sftp: skipping unparsable key in {}:{}", file.display(), index + 1);
            continue;
        };
        out.push(KnownHost { file: file.to_path_buf(), line: index + 1, marker, key });
    }
    out
}

/// The entries of all `files` that apply to `host` on `port`. Reads files: call it
/// off the executor. Missing or unreadable files contribute nothing.
pub fn load_entries(files: &[PathBuf], host: &str, port: u16) -> Vec<KnownHost> {
    let name = host_port_name(host, port);
    let mut out = Vec::new();
    for file in files {
        match std::fs::read(file) {
            Ok(bytes) => out.extend(parse_entries(&String::from_utf8_lossy(&bytes), file, &name)),
            Err(e) => tracing::debug!("sftp: known_hosts file {} not read: {e}", file.display()),
        }
    }
    out
}

/// The key type name and SHA256 fingerprint, as `ssh` shows them.
pub fn describe_key(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm().as_str(), key.fingerprint(HashAlg::Sha256))
}

/// The outcome of checking a server's host key.
#[derive(Debug)]
pub enum Verdict {
    /// A trusted entry lists exactly this key.
    Trusted,
    /// The key is listed as `@revoked`.
    Revoked {
        /// `file:line` of the `@revoked` entry.
        at: String,
    },
    /// The host is known with a different key of the same type: refuse loudly.
    Mismatch {
        /// `file:line` of each entry with another key of that type.
        at: Vec<String>,
    },
    /// The host is known, but only with keys of other types.
    OtherTypes {
        /// The key types recorded for the host.
        types: Vec<String>,
    },
    /// The host is not in any known_hosts file.
    Unknown,
}

/// Check `key` against the entries for its host (OpenSSH `StrictHostKeyChecking yes`).
pub fn verify(entries: &[KnownHost], key: &PublicKey) -> Verdict {
    let same = |e: &KnownHost| e.key.key_data() == key.key_data();
    let at = |e: &KnownHost| format!("{}:{}", e.file.display(), e.line);
    if let Some(e) = entries.iter().find(|e| e.marker == Marker::Revoked && same(e)) {
        return Verdict::Revoked { at: at(e) };
    }
    let trusted: Vec<&KnownHost> = entries.iter().filter(|e| e.marker == Marker::Trusted).collect();
    if trusted.iter().any(|e| same(e)) {
        return Verdict::Trusted;
    }
    let conflicting: Vec<String> =
        trusted.iter().filter(|e| e.key.algorithm().as_str() == key.algorithm().as_str()).map(|e| at(e)).collect();
    if !conflicting.is_empty() {
        return Verdict::Mismatch { at: conflicting };
    }
    if trusted.is_empty() {
        Verdict::Unknown
    } else {
        let mut types: Vec<String> = trusted.iter().map(|e| e.key.algorithm().as_str().to_string()).collect();
        types.dedup();
        Verdict::OtherTypes { types }
    }
}

/// A clear, actionable message for every verdict but [`Verdict::Trusted`].
pub fn refusal_message(verdict: &Verdict, host: &str, port: u16, key: &PublicKey, files: &[PathBuf]) -> String {
    let name = host_port_name(host, port);
    let presented = describe_key(key);
    let files_text = if files.is_empty() {
        "no known_hosts file configured".to_string()
    } else {
        files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    };
    let scan = if port == 22 { format!("ssh-keyscan {host}") } else { format!("ssh-keyscan -p {port} {host}") };
    let mut m = String::new();
    match verdict {
        Verdict::Trusted => m.push_str("host key is trusted"),
        Verdict::Revoked { at } => {
            let _ = write!(
                m,
                "sftp: host key verification failed for {name}: its key {presented} is marked @revoked at {at}"
            );
        }
        Verdict::Mismatch { at } => {
            let _ = write!(
                m,
                "sftp: HOST KEY MISMATCH for {name}: the server presents {presented}, but {} record(s) a different \
                 key of that type. Someone could be intercepting the connection (man-in-the-middle), or the host \
                 key was changed. Nothing was sent to the server. If the change is expected, remove the old entry \
                 (ssh-keygen -R '{name}') and record the new key after verifying its fingerprint.",
                at.join(", ")
            );
        }
        Verdict::OtherTypes { types } => {
            let _ = write!(
                m,
                "sftp: host key verification failed for {name}: the server presents {presented}, but the known_hosts \
                 files ({files_text}) only list key type(s) {} for it. Verify the new key's fingerprint and add it \
                 (e.g. `{scan}`), or set BORGSTORE_SFTP_KNOWN_HOSTS to a file that lists it.",
                types.join(", ")
            );
        }
        Verdict::Unknown => {
            let _ = write!(
                m,
                "sftp: host key verification failed: {name} is not a known host (it presents {presented}; \
                 checked: {files_text}). Unknown hosts are never trusted automatically: connect once with \
                 `ssh` (or `sftp`) and verify the fingerprint, or check the output of `{scan}` and add it to \
                 ~/.ssh/known_hosts, or set BORGSTORE_SFTP_KNOWN_HOSTS to a file that lists the host."
            );
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";
    const ED_C: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(b64: &str) -> PublicKey {
        PublicKey::from_openssh(&format!("ssh-ed25519 {b64}")).unwrap()
    }

    fn entries(text: &str, name: &str) -> Vec<KnownHost> {
        parse_entries(text, Path::new("kh"), name)
    }

    #[test]
    fn hashed_names_are_hmac_sha1_rfc2202() {
        // RFC 2202 test cases as hashed entries: the salt is the key, the name the message.
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let entry = |key: &[u8], digest: &str| format!("|1|{}|{}", b64(key), b64(&hex::decode(digest).unwrap()));
        let cases: [(&[u8], &str, &str); 3] = [
            (&[0x0b; 20], "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
            (b"Jefe", "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
            (
                &[0xaa; 80],
                "Test Using Larger Than Block-Size Key - Hash Key First",
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
        ];
        for (key, message, digest) in cases {
            assert!(hashed_match(&entry(key, digest), message), "{message}");
            assert!(!hashed_match(&entry(key, digest), "other"), "{message}");
        }
        // A hash cut short never matches, even where the missing byte would be zero
        // (the crate zero-fills a short hash).
        let name = (0..)
            .map(|i| format!("host{i}"))
            .find(|n| {
                let mac = Hmac::<sha1_hmac::Sha1>::new_from_slice(b"salt").unwrap().chain_update(n.as_bytes());
                mac.finalize().into_bytes()[19] == 0
            })
            .unwrap();
        let mac = Hmac::<sha1_hmac::Sha1>::new_from_slice(b"salt").unwrap().chain_update(name.as_bytes());
        let digest = mac.finalize().into_bytes();
        assert!(hashed_match(&format!("|1|{}|{}", b64(b"salt"), b64(&digest)), &name));
        assert!(!hashed_match(&format!("|1|{}|{}", b64(b"salt"), b64(&digest[..19])), &name));
        assert!(!hashed_match("|1|salt", "x"));
        assert!(!hashed_match("|1|||", "x"));
    }

    #[test]
    fn host_patterns() {
        assert!(host_list_matches("example.com", "example.com"));
        assert!(host_list_matches("a,Example.COM,b", "example.com"));
        assert!(host_list_matches("*.example.com", "www.example.com"));
        assert!(!host_list_matches("*.example.com", "example.com"));
        assert!(host_list_matches("host?", "host1"));
        assert!(!host_list_matches("host?", "host12"));
        assert!(!host_list_matches("*.example.com,!bad.example.com", "bad.example.com"));
        assert!(host_list_matches("[127.0.0.1]:2222", "[127.0.0.1]:2222"));
        assert!(!host_list_matches("127.0.0.1", "[127.0.0.1]:2222"));
        assert!(host_list_matches("[127.0.0.1]:*", "[127.0.0.1]:2222"));
        assert!(wildcard_match(b"*a*b", b"xxaxxbxb"));
        assert!(!wildcard_match(b"a*", b""));
        assert!(wildcard_match(b"**", b""));
    }

    #[test]
    fn hashed_entries() {
        // From russh's tests: "|1|O33E...=|nuuC...=" is example.com.
        let text = format!("|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 {ED_B}\n");
        assert_eq!(entries(&text, "example.com").len(), 1);
        assert!(entries(&text, "example.org").is_empty());
        assert!(entries("|1|bad|base64! ssh-ed25519 x\n", "example.com").is_empty());
    }

    #[test]
    fn verdicts() {
        let text = format!(
            "# comment\n\n[localhost]:2222 ssh-ed25519 {ED_A} comment here\nother ssh-ed25519 {ED_C}\n\
             garbage line\nlocalhost ssh-ed25519 {ED_C}\n@cert-authority * ssh-ed25519 {ED_B}\n"
        );
        let e = entries(&text, &host_port_name("LocalHost", 2222));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 3);
        assert!(matches!(verify(&e, &key(ED_A)), Verdict::Trusted));
        match verify(&e, &key(ED_B)) {
            Verdict::Mismatch { at } => assert_eq!(at, ["kh:3"]),
            v => panic!("{v:?}"),
        }
        assert!(matches!(verify(&entries(&text, "nowhere"), &key(ED_A)), Verdict::Unknown));
        // Port 22 uses the bare name.
        assert!(matches!(verify(&entries(&text, &host_port_name("localhost", 22)), &key(ED_C)), Verdict::Trusted));
        // A revoked key is refused even when it is also listed as trusted.
        let revoked = format!("{text}@revoked * ssh-ed25519 {ED_A}\n");
        assert!(matches!(verify(&entries(&revoked, "[localhost]:2222"), &key(ED_A)), Verdict::Revoked { .. }));
    }

    #[test]
    fn other_key_types() {
        let ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFn+C8nNOzPd82PZZpPH/UMia\
                     VOpf5koDsPmv62wLpQNaMlCRyXUFvsBHDedV5mgXzic2TczDlWWDNUw2SxxqK0=";
        let e = entries(&format!("h {ecdsa}\n"), "h");
        match verify(&e, &key(ED_A)) {
            Verdict::OtherTypes { types } => assert_eq!(types, ["ecdsa-sha2-nistp256"]),
            v => panic!("{v:?}"),
        }
        let msg = refusal_message(&verify(&e, &key(ED_A)), "h", 22, &key(ED_A), &[PathBuf::from("kh")]);
        assert!(msg.contains("ssh-keyscan h"), "{msg}");
    }
}
