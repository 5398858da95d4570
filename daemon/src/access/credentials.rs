//! HTTP Basic credentials of a store, compared in constant time.
//!
//! The offered and the expected credentials are both hashed first, so the comparison
//! takes the same time whatever their lengths and wherever they differ; a wrong user
//! and a wrong password look the same to the caller.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The `WWW-Authenticate` challenge sent with every 401.
pub const CHALLENGE: &str = r#"Basic realm="BorgStore REST Server""#;

/// A username and password a REST client must present.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ..)", self.username)
    }
}

fn digest(username: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((username.len() as u64).to_le_bytes());
    h.update(username.as_bytes());
    h.update(password.as_bytes());
    h.finalize().into()
}

impl Credentials {
    /// Credentials for `username` and `password`; only a digest of them is kept.
    pub fn new(username: &str, password: &str) -> Self {
        Credentials { username: username.to_string(), digest: digest(username, password) }
    }

    /// Credentials when both parts are given (Python's server ignores a lone one, as do we).
    pub fn optional(username: Option<&str>, password: Option<&str>) -> Option<Self> {
        match (username, password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some(Self::new(u, p)),
            _ => None,
        }
    }

    /// The user name (not secret: it names the principal in logs).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Does this `Authorization` header value carry these credentials?
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some((u, p)) = header.and_then(parse_basic) else {
            return false;
        };
        bool::from(digest(&u, &p).ct_eq(&self.digest))
    }
}

/// `Basic base64(user:password)` -> (user, password).
pub(crate) fn parse_basic(header: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s)).into_bytes()
    }

    #[test]
    fn checks_user_and_password() {
        let c = Credentials::new("user", "pa:ss");
        assert_eq!(c.username(), "user");
        assert!(c.accepts(Some(&basic("user:pa:ss"))));
        assert!(!c.accepts(Some(&basic("user:pa:sx"))));
        assert!(!c.accepts(Some(&basic("usex:pa:ss"))));
        assert!(!c.accepts(Some(&basic("userpa:ss"))));
        assert!(!c.accepts(Some(b"Bearer xyz")));
        assert!(!c.accepts(Some(b"Basic !!!")));
        assert!(!c.accepts(None));
        assert!(Credentials::optional(Some("u"), None).is_none());
        assert!(!format!("{c:?}").contains("pa:ss"));
    }
}
