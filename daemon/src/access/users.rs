//! The REST users of a store: many `username -> password verifier` pairs, from Apache
//! htpasswd files, from password hashes in the daemon's config, and from the legacy
//! plain `rest_username`/`rest_password` (issue 14).
//!
//! [`credentials`](super::credentials) knows one user with a plain password; a store
//! shared by several borg clients (or a team behind one reverse proxy) wants one account
//! each, managed with the tools admins already use (`htpasswd -B`). This module is that
//! user database and nothing else: which store uses which [`UserDb`] is decided where
//! the config is read, and the access decision only asks [`UserDb::verify`] who, if
//! anyone, an `Authorization` header names.
//!
//! What is accepted, and why:
//! - bcrypt (`$2y$`, `$2a$`, `$2b$`: `htpasswd -B`) and SHA-crypt (`$5$`, `$6$`:
//!   `htpasswd -2`/`-5`, `mkpasswd -m sha-512`), verified by the `bcrypt` and
//!   `sha-crypt` crates. MD5 (`$apr1$`, htpasswd's default), `{SHA}`, DES crypt and
//!   plain text are refused at load time with an error naming the file, line and user
//!   (never the hash) and how to make an accepted hash.
//! - A plain legacy password is kept only as a salted SHA-256 digest.
//!
//! Verification, and what it costs:
//! - bcrypt and SHA-crypt are slow on purpose (tens of ms at bcrypt cost 10), and borg
//!   sends Basic auth with every request. A successful verification is therefore
//!   remembered in a small cache (at most [`CACHE_ENTRIES`] users, least recently used
//!   evicted) as a digest of user and password under a random per-db key, compared in
//!   constant time; the password itself is never stored. Failures are not cached, so
//!   guessing stays slow. The cache belongs to the `UserDb`: a reloaded db starts empty
//!   and a changed password cannot keep working.
//! - A wrong password and an unknown user get the same answer (`None`) after the same
//!   work: an unknown user is checked against the hash of an existing user of the
//!   db's most common kind and cost (the result thrown away), so timing does not tell
//!   which users exist. (A db mixing kinds, e.g. bcrypt users and one plain legacy
//!   user, can only hide users of the most common kind.)
//! - A cache miss takes as long as the hash does: call [`UserDb::verify`] where blocking
//!   for tens of ms is fine (e.g. `spawn_blocking`), or try [`UserDb::verify_cached`]
//!   first on the async thread and go to a blocking thread only when it says `None`.
//! - Nothing grows with what clients send: headers longer than [`MAX_AUTHORIZATION_LEN`]
//!   are refused before decoding, and only verified users enter the bounded cache.
//!
//! A `UserDb` is `Send + Sync`; share it in an `Arc`. Its `Debug` shows user names
//! only.

use super::credentials::parse_basic;
use borgstore_ipc::{Error, Result};
use sha2::{Digest, Sha256};
use sha_crypt::{PasswordVerifier, ShaCrypt};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use subtle::ConstantTimeEq;

/// At most this many users' last good passwords are remembered (as keyed digests).
pub const CACHE_ENTRIES: usize = 1024;

/// `Authorization` headers longer than this are refused without decoding them. Basic
/// credentials of a 255-byte user and a 1 KiB password take under 1.8 KiB.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;

/// Longest user name accepted from an htpasswd file or the config (Apache's limit).
pub const MAX_USER_LEN: usize = 255;

/// What to tell an admin whose hash is refused.
const ACCEPTED: &str = "accepted are bcrypt ($2y$/$2a$/$2b$, made by `htpasswd -B`) and SHA-crypt \
     ($5$/$6$, made by `htpasswd -2`/`htpasswd -5` or `mkpasswd -m sha-512`)";

/// How one user's password is checked.
enum Verifier {
    /// A bcrypt hash, validated at load time.
    Bcrypt { hash: String, cost: u32 },
    /// A SHA-crypt hash (`$5$` or `$6$`), validated at load time.
    ShaCrypt { hash: String, sha512: bool, rounds: u32 },
    /// A legacy plain password: SHA-256 over a random salt and the password.
    Plain { salt: [u8; 16], digest: [u8; 32] },
}

/// The kind and cost of a verifier: unknown users are checked against a hash of the
/// most common class, so they take as long as a wrong password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Plain,
    Bcrypt(u32),
    ShaCrypt { sha512: bool, rounds: u32 },
}

fn plain_digest(salt: &[u8; 16], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password);
    h.finalize().into()
}

impl Verifier {
    fn plain(password: &str) -> Verifier {
        let salt: [u8; 16] = rand::random();
        Verifier::Plain { digest: plain_digest(&salt, password.as_bytes()), salt }
    }

    fn class(&self) -> Class {
        match self {
            Verifier::Plain { .. } => Class::Plain,
            Verifier::Bcrypt { cost, .. } => Class::Bcrypt(*cost),
            Verifier::ShaCrypt { sha512, rounds, .. } => Class::ShaCrypt { sha512: *sha512, rounds: *rounds },
        }
    }

    /// Slow on purpose (bcrypt, SHA-crypt): worth caching, counted.
    fn is_slow(&self) -> bool {
        !matches!(self, Verifier::Plain { .. })
    }

    /// Does `password` match? Any error of the hash crates counts as no.
    fn matches(&self, password: &[u8]) -> bool {
        match self {
            Verifier::Plain { salt, digest } => bool::from(plain_digest(salt, password).ct_eq(digest)),
            Verifier::Bcrypt { hash, .. } => bcrypt::verify(password, hash).unwrap_or(false),
            Verifier::ShaCrypt { hash, .. } => ShaCrypt::default().verify_password(password, hash.as_str()).is_ok(),
        }
    }

    /// Parse a hash from an htpasswd file or the config; the error says why not,
    /// without the hash.
    fn from_hash(hash: &str) -> std::result::Result<Verifier, String> {
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
            let parts: bcrypt::HashParts = hash.parse().map_err(|_| "a malformed bcrypt hash".to_string())?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err(format!("a bcrypt hash with cost {cost} (bcrypt allows 4 to 31)"));
            }
            return Ok(Verifier::Bcrypt { hash: hash.to_string(), cost });
        }
        if hash.starts_with("$5$") || hash.starts_with("$6$") {
            let sha512 = hash.starts_with("$6$");
            let rounds = check_sha_crypt(hash, sha512)?;
            return Ok(Verifier::ShaCrypt { hash: hash.to_string(), sha512, rounds });
        }
        Err(refused_kind(hash).to_string())
    }
}

/// Check a SHA-crypt hash: `$5$` or `$6$`, then `[rounds=N$]salt$hash`, with the hash
/// 43 (SHA-256) or 86 (SHA-512) characters of crypt's base64. The number of rounds, or
/// why the hash is refused.
fn check_sha_crypt(hash: &str, sha512: bool) -> std::result::Result<u32, String> {
    let name = if sha512 { "SHA-512-crypt" } else { "SHA-256-crypt" };
    let malformed = || format!("a malformed {name} hash");
    let rest = hash.get(3..).unwrap_or("");
    let mut fields: Vec<&str> = rest.split('$').collect();
    let mut rounds = sha_crypt::Params::RECOMMENDED_ROUNDS;
    if let Some(r) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        rounds = r.parse().map_err(|_| malformed())?;
        if !(sha_crypt::Params::ROUNDS_MIN..=sha_crypt::Params::ROUNDS_MAX).contains(&rounds) {
            return Err(format!(
                "a {name} hash with {rounds} rounds (allowed are {} to {})",
                sha_crypt::Params::ROUNDS_MIN,
                sha_crypt::Params::ROUNDS_MAX
            ));
        }
        fields.remove(0);
    }
    let [salt, digest] = fields[..] else {
        return Err(malformed());
    };
    let crypt64 = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    let digest_len = if sha512 { 86 } else { 43 };
    if salt.is_empty() || salt.len() > 16 || !crypt64(salt) || digest.len() != digest_len || !crypt64(digest) {
        return Err(malformed());
    }
    // The crate parses the hash itself at verify time; make sure it will (cheaply, with
    // the mcf parser it uses), so a hash it cannot read is refused now, not every login.
    if sha_crypt::PasswordHashRef::new(hash).is_err() {
        return Err(malformed());
    }
    Ok(rounds)
}

/// Name a refused hash kind, without the hash.
fn refused_kind(hash: &str) -> &'static str {
    const KINDS: [(&str, &str); 11] = [
        ("$apr1$", "an MD5 hash ($apr1$, htpasswd's default and `htpasswd -m`)"),
        ("{SHA}", "a SHA-1 hash ({SHA}, `htpasswd -s`)"),
        ("$1$", "an MD5-crypt hash ($1$)"),
        ("$2x$", "a bcrypt hash of the buggy $2x$ variant"),
        ("$2$", "a bcrypt hash of the original $2$ variant"),
        ("$y$", "a yescrypt hash ($y$)"),
        ("$gy$", "a gost-yescrypt hash ($gy$)"),
        ("$7$", "a scrypt hash ($7$)"),
        ("$argon2", "an Argon2 hash"),
        ("$md5", "a SunMD5 hash"),
        ("$sha1$", "a SHA1-crypt hash ($sha1$)"),
    ];
    if let Some((_, kind)) = KINDS.iter().find(|(prefix, _)| hash.starts_with(prefix)) {
        return kind;
    }
    if hash.len() == 13 && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/') {
        return "what looks like a DES crypt hash (`htpasswd -d`)";
    }
    if hash.is_empty() {
        return "an empty hash";
    }
    if hash.starts_with('$') {
        return "an unknown kind of hash";
    }
    "not a hash (a plain-text password, `htpasswd -p`?)"
}

/// Is `user` a name a client can present in Basic auth, and an admin can write?
fn check_user(user: &str) -> std::result::Result<(), String> {
    if user.is_empty() {
        return Err("an empty user name".into());
    }
    if user.contains(':') {
        return Err("a user name with ':' (Basic auth cannot carry it)".into());
    }
    if user.chars().any(char::is_control) {
        return Err("a user name with control characters".into());
    }
    if user.len() > MAX_USER_LEN {
        return Err(format!("a user name longer than {MAX_USER_LEN} bytes"));
    }
    Ok(())
}

/// One user: the verifier and where it was defined (for errors about duplicates).
struct Entry {
    verifier: Verifier,
    source: String,
}

/// Remembered successful verifications: user -> keyed digest of (user, password).
#[derive(Default)]
struct Cache {
    entries: HashMap<String, Cached>,
    /// Bumped on every hit and insert, for least-recently-used eviction.
    clock: u64,
}

struct Cached {
    digest: [u8; 32],
    used: u64,
}

impl Cache {
    fn hit(&mut self, user: &str, digest: &[u8; 32]) -> bool {
        self.clock += 1;
        let clock = self.clock;
        match self.entries.get_mut(user) {
            Some(c) if bool::from(c.digest.ct_eq(digest)) => {
                c.used = clock;
                true
            }
            _ => false,
        }
    }

    fn insert(&mut self, user: &str, digest: [u8; 32]) {
        self.clock += 1;
        if !self.entries.contains_key(user) && self.entries.len() >= CACHE_ENTRIES {
            // O(n) over at most CACHE_ENTRIES, and only after a slow hash succeeded.
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, c)| c.used).map(|(u, _)| u.clone()) {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(user.to_string(), Cached { digest, used: self.clock });
    }
}

/// A set of REST users, each a user name and a password verifier. See the module doc.
pub struct UserDb {
    users: BTreeMap<String, Entry>,
    /// How many users of each class, and one of them: the stand-in for unknown users.
    classes: BTreeMap<Class, (usize, String)>,
    /// The user whose hash unknown users are checked against (most common class).
    stand_in: Option<String>,
    /// Random per db: cache digests mean nothing outside this process and this db.
    cache_key: [u8; 32],
    cache: Mutex<Cache>,
    hash_verifications: AtomicU64,
}

impl Default for UserDb {
    fn default() -> Self {
        UserDb::new()
    }
}

impl std::fmt::Debug for UserDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserDb").field("users", &self.users.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl UserDb {
    /// An empty db: it verifies nobody.
    pub fn new() -> UserDb {
        UserDb {
            users: BTreeMap::new(),
            classes: BTreeMap::new(),
            stand_in: None,
            cache_key: rand::random(),
            cache: Mutex::new(Cache::default()),
            hash_verifications: AtomicU64::new(0),
        }
    }

    /// The legacy single user of `rest_username`/`rest_password`. Only a salted digest of
    /// the password is kept. A name a client cannot present (empty, or with ':') simply
    /// never matches; the config checks the names it reads.
    pub fn from_legacy(username: &str, password: &str) -> UserDb {
        let mut db = UserDb::new();
        db.add(username.to_string(), Verifier::plain(password), "rest_username/rest_password".into());
        db.choose_stand_in();
        db
    }

    /// The users of the Apache htpasswd file at `path` (see [`UserDb::from_htpasswd_text`]).
    pub fn from_htpasswd(path: &Path) -> Result<UserDb> {
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::invalid(format!("htpasswd file {what}: {e}")))?;
        match String::from_utf8(bytes) {
            Ok(text) => UserDb::from_htpasswd_text(&text, &what),
            Err(e) => {
                let bytes = e.as_bytes();
                let line = 1 + bytes[..e.utf8_error().valid_up_to()].iter().filter(|&&b| b == b'\n').count();
                Err(Error::invalid(format!("htpasswd file {what} line {line}: not UTF-8")))
            }
        }
    }

    /// The users of htpasswd `text`; `what` names it in errors (a path, "config ...").
    ///
    /// One `user:hash` a line, as `htpasswd` writes them; blank lines and lines starting
    /// with `#` are ignored, and fields after a second `:` too (as Apache does). A line
    /// without `:`, a refused hash kind, a bad user name or a user defined twice is an
    /// error naming `what`, the line number and the user, never the hash.
    pub fn from_htpasswd_text(text: &str, what: &str) -> Result<UserDb> {
        let mut db = UserDb::new();
        let mut lines: HashMap<&str, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, rest)) = line.split_once(':') else {
                return Err(Error::invalid(format!(
                    "htpasswd file {what} line {n}: not `user:hash` (no ':'); make entries with `htpasswd -B {what} USER`"
                )));
            };
            let hash = rest.split(':').next().unwrap_or("");
            let at = format!("htpasswd file {what} line {n}");
            check_user(user).map_err(|e| Error::invalid(format!("{at}: {e}")))?;
            if let Some(first) = lines.insert(user, n) {
                return Err(Error::invalid(format!("{at}: user {user:?} is defined twice (first on line {first})")));
            }
            let verifier = Verifier::from_hash(hash).map_err(|why| refusal(&at, user, &why))?;
            db.add(user.to_string(), verifier, at);
        }
        db.choose_stand_in();
        Ok(db)
    }

    /// Add `user` with a password `hash` from the config (same kinds and errors as an
    /// htpasswd file); `what` names where it came from, in errors.
    pub fn insert_hash(&mut self, user: &str, hash: &str, what: &str) -> Result<()> {
        check_user(user).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
        self.check_new(user, what)?;
        let verifier = Verifier::from_hash(hash).map_err(|why| refusal(what, user, &why))?;
        self.add(user.to_string(), verifier, what.to_string());
        self.choose_stand_in();
        Ok(())
    }

    /// Add `user` with a plain `password` (the legacy `rest_password`); only a salted
    /// digest of it is kept. `what` names where it came from, in errors.
    pub fn insert_plain(&mut self, user: &str, password: &str, what: &str) -> Result<()> {
        check_user(user).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
        if password.is_empty() {
            return Err(Error::invalid(format!("{what}: user {user:?} has an empty password")));
        }
        self.check_new(user, what)?;
        self.add(user.to_string(), Verifier::plain(password), what.to_string());
        self.choose_stand_in();
        Ok(())
    }

    /// Add all users of `other` (e.g. a store's config users and its htpasswd file). A
    /// user in both is an error naming both places, and then nothing is added.
    pub fn merge(&mut self, other: UserDb) -> Result<()> {
        if let Some((user, theirs)) = other.users.iter().find(|(u, _)| self.users.contains_key(*u)) {
            let ours = &self.users[user].source;
            return Err(Error::invalid(format!(
                "REST user {user:?} is defined twice: in {ours} and in {}",
                theirs.source
            )));
        }
        for (user, entry) in other.users {
            self.add(user, entry.verifier, entry.source);
        }
        self.choose_stand_in();
        Ok(())
    }

    /// The user names, sorted (for logs and metrics).
    pub fn users(&self) -> impl Iterator<Item = &str> + '_ {
        self.users.keys().map(String::as_str)
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No users at all (then nobody is verified).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Is `user` one of them?
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// How many slow hashes (bcrypt, SHA-crypt, including stand-ins for unknown users)
    /// this db has computed: cache misses, for tests and metrics.
    pub fn hash_verifications(&self) -> u64 {
        self.hash_verifications.load(Ordering::Relaxed)
    }

    /// Who an `Authorization: Basic ...` header value names, if the password is right.
    ///
    /// A cache miss costs one bcrypt/SHA-crypt computation (tens of ms at bcrypt cost
    /// 10), whether the user exists or not: run it where blocking is fine. Never panics;
    /// anything unreadable is `None`.
    pub fn verify(&self, authorization: Option<&[u8]>) -> Option<String> {
        let (user, password) = self.parse(authorization)?;
        let digest = self.cache_digest(&user, &password);
        if self.lock_cache().hit(&user, &digest) {
            return Some(user);
        }
        let (verifier, known) = match self.users.get(&user) {
            Some(entry) => (&entry.verifier, true),
            // The same work as a wrong password, the answer thrown away.
            None => (&self.users.get(self.stand_in.as_ref()?)?.verifier, false),
        };
        if verifier.is_slow() {
            self.hash_verifications.fetch_add(1, Ordering::Relaxed);
        }
        let good = verifier.matches(password.as_bytes());
        if !(known && good) {
            return None;
        }
        if verifier.is_slow() {
            self.lock_cache().insert(&user, digest);
        }
        Some(user)
    }

    /// [`UserDb::verify`] without the slow path: the user when the header carries a
    /// password verified before (fast, fine on an async thread), else `None`, which
    /// means "not known yet", not "wrong": then call `verify` on a blocking thread.
    pub fn verify_cached(&self, authorization: Option<&[u8]>) -> Option<String> {
        let (user, password) = self.parse(authorization)?;
        let digest = self.cache_digest(&user, &password);
        self.lock_cache().hit(&user, &digest).then_some(user)
    }

    /// The answer of [`UserDb::verify`] when it can be had without a slow hash: a
    /// header that does not parse, a password verified before, a user whose verifier
    /// is fast (a plain legacy password). `None`: only [`UserDb::verify`] can tell, and
    /// it takes a slow hash (run it on a blocking thread).
    pub fn verify_now(&self, authorization: Option<&[u8]>) -> Option<Option<String>> {
        let Some((user, password)) = self.parse(authorization) else {
            return Some(None);
        };
        if self.lock_cache().hit(&user, &self.cache_digest(&user, &password)) {
            return Some(Some(user));
        }
        let slow = match self.users.get(&user) {
            Some(entry) => entry.verifier.is_slow(),
            None => self.stand_in.as_ref().and_then(|s| self.users.get(s)).is_some_and(|e| e.verifier.is_slow()),
        };
        if slow {
            return None;
        }
        Some(self.verify(authorization))
    }

    /// How many verified users are remembered now (at most [`CACHE_ENTRIES`]).
    pub fn cached(&self) -> usize {
        self.lock_cache().entries.len()
    }

    fn parse(&self, authorization: Option<&[u8]>) -> Option<(String, String)> {
        let header = authorization?;
        if header.len() > MAX_AUTHORIZATION_LEN || self.users.is_empty() {
            return None;
        }
        // An empty user or password is refused by anyone; saying so fast reveals nothing.
        parse_basic(header).filter(|(u, p)| !u.is_empty() && !p.is_empty())
    }

    fn cache_digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic elsewhere could break.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_new(&self, user: &str, what: &str) -> Result<()> {
        match self.users.get(user) {
            Some(e) => {
                Err(Error::invalid(format!("REST user {user:?} is defined twice: in {} and in {what}", e.source)))
            }
            None => Ok(()),
        }
    }

    /// Add a checked, new user. Callers then call `choose_stand_in`.
    fn add(&mut self, user: String, verifier: Verifier, source: String) {
        let class = self.classes.entry(verifier.class()).or_insert_with(|| (0, user.clone()));
        class.0 += 1;
        self.users.insert(user, Entry { verifier, source });
        // A new user (or a merge) must not meet entries of an older password.
        self.lock_cache().entries.clear();
    }

    /// The stand-in for unknown users: a user of the most common class (on a tie, the
    /// costlier one, so unknown users are never the quick answer).
    fn choose_stand_in(&mut self) {
        self.stand_in = self.classes.iter().max_by_key(|(_, (count, _))| *count).map(|(_, (_, u))| u.clone());
    }
}

fn refusal(at: &str, user: &str, why: &str) -> Error {
    Error::invalid(format!(
        "{at}: user {user:?} has {why}, which is not accepted; {ACCEPTED}; e.g. `htpasswd -B FILE {user}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn basic(s: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s)).into_bytes()
    }

    fn bcrypt_hash(password: &str) -> String {
        bcrypt::hash(password, 4).unwrap()
    }

    /// From the SHA-crypt specification (Ulrich Drepper), password "Hello world!" (checked
    /// against glibc: `mkpasswd -m sha256crypt -S saltstring "Hello world!"`).
    const SHA256_HELLO: &str = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
    const SHA512_HELLO: &str =
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    const SHA256_ROUNDS_HELLO: &str = "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA";

    fn team() -> UserDb {
        let text = format!(
            "# users of the team store\n\nalice:{}\nbob:{SHA512_HELLO}\r\ncarol:{SHA256_HELLO}\n  dave:{}  \n",
            bcrypt_hash("pa:ss word"),
            bcrypt_hash("dave's")
        );
        UserDb::from_htpasswd_text(&text, "test").unwrap()
    }

    #[test]
    fn verifies_bcrypt_and_sha_crypt_users() {
        let db = team();
        assert_eq!(db.users().collect::<Vec<_>>(), ["alice", "bob", "carol", "dave"]);
        assert_eq!(db.len(), 4);
        assert!(!db.is_empty() && db.contains("bob") && !db.contains("eve"));
        assert_eq!(db.verify(Some(&basic("alice:pa:ss word"))).as_deref(), Some("alice"));
        assert_eq!(db.verify(Some(&basic("bob:Hello world!"))).as_deref(), Some("bob"));
        assert_eq!(db.verify(Some(&basic("carol:Hello world!"))).as_deref(), Some("carol"));
        assert_eq!(db.verify(Some(&basic("dave:dave's"))).as_deref(), Some("dave"));
        // Wrong passwords, wrong users, a password of another user.
        for refused in ["alice:pa:ss", "alice:pa:ss word ", "bob:hello world!", "carol:Hello world", "eve:Hello world!"]
        {
            assert_eq!(db.verify(Some(&basic(refused))), None, "{refused}");
        }
        let rounds = UserDb::from_htpasswd_text(&format!("u:{SHA256_ROUNDS_HELLO}"), "t").unwrap();
        assert_eq!(rounds.verify(Some(&basic("u:Hello world!"))).as_deref(), Some("u"));
        assert_eq!(rounds.verify(Some(&basic("u:Hello world?"))), None);
    }

    #[test]
    fn every_bcrypt_prefix_htpasswd_writes_is_accepted() {
        let hash = bcrypt_hash("secret");
        let body = hash.strip_prefix("$2b$").unwrap();
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let mut db = UserDb::new();
            db.insert_hash("u", &format!("{prefix}{body}"), "config").unwrap();
            assert_eq!(db.verify(Some(&basic("u:secret"))).as_deref(), Some("u"), "{prefix}");
            assert_eq!(db.verify(Some(&basic("u:secreT"))), None, "{prefix}");
        }
        let err = UserDb::new().insert_hash("u", &format!("$2x${body}"), "config").unwrap_err();
        assert!(err.message.contains("$2x$") && !err.message.contains(body), "{}", err.message);
    }

    #[test]
    fn headers_that_are_not_good_credentials_are_refused() {
        let db = team();
        let long_user = format!("{}:x", "a".repeat(MAX_AUTHORIZATION_LEN));
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"Basic".to_vec(),
            b"Basic ".to_vec(),
            b"Bearer abc".to_vec(),
            b"Basic !!!not base64!!!".to_vec(),
            b"Basic \xff\xfe".to_vec(),
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(b"alice:\xff\xfe")).into_bytes(),
            basic("alice"),
            basic("alice:"),
            basic(":pa:ss word"),
            basic(":"),
            basic(&long_user),
            vec![b'A'; 1 << 20],
            [b"Basic ".as_slice(), &vec![b'A'; 1 << 20]].concat(),
        ];
        for header in &cases {
            assert_eq!(db.verify(Some(header)), None, "{:?}", String::from_utf8_lossy(&header[..header.len().min(40)]));
        }
        assert_eq!(db.verify(None), None);
        // The scheme is case-insensitive, as in credentials.rs.
        let lower = basic("alice:pa:ss word");
        let lower = [b"basic".as_slice(), &lower[5..]].concat();
        assert_eq!(db.verify(Some(&lower)).as_deref(), Some("alice"));
    }

    #[test]
    fn a_right_password_is_hashed_once_then_cached() {
        let db = team();
        let good = basic("alice:pa:ss word");
        assert_eq!(db.verify_cached(Some(&good)), None, "nothing is cached before a verification");
        assert_eq!(db.verify(Some(&good)).as_deref(), Some("alice"));
        assert_eq!(db.hash_verifications(), 1);
        for _ in 0..100 {
            assert_eq!(db.verify(Some(&good)).as_deref(), Some("alice"));
        }
        assert_eq!(db.verify_cached(Some(&good)).as_deref(), Some("alice"));
        assert_eq!(db.hash_verifications(), 1, "cache hits compute no hash");
        assert_eq!(db.cached(), 1);

        // A wrong password after the right one: the cache is keyed by the password.
        assert_eq!(db.verify(Some(&basic("alice:pa:ss wordX"))), None);
        assert_eq!(db.verify_cached(Some(&basic("alice:pa:ss wordX"))), None);
        assert_eq!(db.hash_verifications(), 2, "a wrong password is hashed");
        // Failures are not cached: every guess costs a hash.
        assert_eq!(db.verify(Some(&basic("alice:pa:ss wordX"))), None);
        assert_eq!(db.hash_verifications(), 3);
        // The right one still works from the cache.
        assert_eq!(db.verify(Some(&good)).as_deref(), Some("alice"));
        assert_eq!(db.hash_verifications(), 3);

        // A reloaded db starts with an empty cache: a changed password is not remembered.
        let reloaded = team();
        assert_eq!(reloaded.cached(), 0);
        assert_eq!(reloaded.verify_cached(Some(&good)), None);
    }

    #[test]
    fn unknown_users_cost_a_hash_like_wrong_passwords() {
        let db = team();
        assert_eq!(db.verify(Some(&basic("eve:whatever"))), None);
        assert_eq!(db.hash_verifications(), 1, "an unknown user is checked against a stand-in hash");
        // The stand-in is a user of the most common class (two bcrypt users at cost 4).
        assert!(matches!(db.users[db.stand_in.as_deref().unwrap()].verifier.class(), Class::Bcrypt(4)));
        // Even the stand-in's own password does not let an unknown user in.
        let stand_in = db.stand_in.clone().unwrap();
        let password = if stand_in == "alice" { "pa:ss word" } else { "dave's" };
        assert_eq!(db.verify(Some(&basic(&format!("eve:{password}")))), None);
        assert_eq!(db.cached(), 0);
    }

    #[test]
    fn the_stand_in_follows_the_most_common_class() {
        let mut db = UserDb::from_htpasswd_text(&format!("a:{SHA512_HELLO}\nb:{SHA512_HELLO}"), "t").unwrap();
        db.insert_hash("c", &bcrypt_hash("x"), "config").unwrap();
        assert!(matches!(db.users[db.stand_in.as_deref().unwrap()].verifier.class(), Class::ShaCrypt { .. }));
        db.insert_hash("d", &bcrypt_hash("x"), "config").unwrap();
        db.insert_hash("e", &bcrypt_hash("x"), "config").unwrap();
        assert!(matches!(db.users[db.stand_in.as_deref().unwrap()].verifier.class(), Class::Bcrypt(4)));
        let legacy = UserDb::from_legacy("u", "p");
        assert_eq!(legacy.stand_in.as_deref(), Some("u"));
        assert_eq!(UserDb::new().stand_in, None);
    }

    #[test]
    fn legacy_and_plain_users() {
        let db = UserDb::from_legacy("user", "pa:ss");
        assert_eq!(db.verify(Some(&basic("user:pa:ss"))).as_deref(), Some("user"));
        assert_eq!(db.verify(Some(&basic("user:pa:sx"))), None);
        assert_eq!(db.verify(Some(&basic("usex:pa:ss"))), None);
        assert_eq!(db.hash_verifications(), 0, "plain digests are not slow hashes");
        assert!(!format!("{db:?}").contains("pa:ss"));

        let mut db = UserDb::new();
        db.insert_plain("a", "one", "config store s").unwrap();
        assert!(db.insert_plain("b", "", "config store s").unwrap_err().message.contains("empty password"));
        assert!(db.insert_plain("a:b", "x", "config store s").is_err());
        assert!(db.insert_plain("", "x", "config store s").is_err());
        let err = db.insert_plain("a", "two", "the command line").unwrap_err();
        assert!(err.message.contains("config store s") && err.message.contains("the command line"), "{}", err.message);
        assert_eq!(db.verify(Some(&basic("a:one"))).as_deref(), Some("a"));
        // An empty db verifies nobody.
        assert_eq!(UserDb::new().verify(Some(&basic("a:one"))), None);
    }

    #[test]
    fn refused_hashes_say_why_and_how_but_not_the_hash() {
        let cases = [
            ("$apr1$Ny4mRlUm$L3rRcS0JjNu3GLpNXgpaN/", "MD5"),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "MD5-crypt"),
            ("rqXexS6ZhobKA", "DES crypt"),
            ("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9SqC.5i5rd.RhAtQ7", "yescrypt"),
            ("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g", "Argon2"),
            ("hunter2hunter2", "plain-text"),
            ("$2y$05$tooshort", "malformed bcrypt"),
            ("$2y$99$abcdefghijklmnopqrstuu5bKb4aaNTYXnLuiHqrpcyvdHRV5dKlC", "cost 99"),
            ("$6$salt$tooshort", "malformed SHA-512-crypt"),
            ("$5$rounds=10$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "10 rounds"),
            ("$5$rounds=x$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "malformed SHA-256-crypt"),
            ("$5$a$b$c$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5", "malformed SHA-256-crypt"),
            ("$6$salt:moresalt", "malformed SHA-512-crypt"),
        ];
        for (hash, why) in cases {
            let text = format!("# header\n\nok:{SHA256_HELLO}\nmallory:{hash}\n");
            let err = UserDb::from_htpasswd_text(&text, "/etc/borgstore/users").unwrap_err();
            let m = &err.message;
            assert!(m.contains("/etc/borgstore/users line 4"), "{m}");
            assert!(m.contains("\"mallory\""), "{m}");
            assert!(m.contains(why), "{why}: {m}");
            assert!(m.contains("htpasswd -B"), "{m}");
            let secret = hash.split(':').next().unwrap();
            let tail = &secret[secret.len().saturating_sub(8)..];
            assert!(!m.contains(tail), "the message shows the hash: {m}");
            // The same from the config.
            let err = UserDb::new().insert_hash("mallory", secret, "store s in /etc/borgstored.toml").unwrap_err();
            assert!(err.message.contains("store s in /etc/borgstored.toml") && err.message.contains(why));
            assert!(!err.message.contains(tail), "{}", err.message);
        }
        let err = UserDb::from_htpasswd_text("empty:\n", "f").unwrap_err();
        assert!(err.message.contains("empty hash"), "{}", err.message);
    }

    #[test]
    fn malformed_files_and_duplicates_are_errors_with_line_numbers() {
        let err = UserDb::from_htpasswd_text(&format!("a:{SHA256_HELLO}\nno colon here\n"), "f").unwrap_err();
        assert!(err.message.contains("f line 2") && err.message.contains("no ':'"), "{}", err.message);
        assert!(!err.message.contains("no colon here"), "a malformed line may hold a password: {}", err.message);
        let err = UserDb::from_htpasswd_text(&format!(":{SHA256_HELLO}\n"), "f").unwrap_err();
        assert!(err.message.contains("line 1") && err.message.contains("empty user"), "{}", err.message);
        let err =
            UserDb::from_htpasswd_text(&format!("a:{SHA256_HELLO}\n# x\nb:{SHA512_HELLO}\na:{SHA512_HELLO}\n"), "f")
                .unwrap_err();
        assert!(err.message.contains("line 4") && err.message.contains("first on line 1"), "{}", err.message);
        let long = "u".repeat(MAX_USER_LEN + 1);
        assert!(UserDb::from_htpasswd_text(&format!("{long}:{SHA256_HELLO}"), "f").is_err());
        // Fields after the hash are ignored, as Apache does; an empty file is an empty db.
        let db = UserDb::from_htpasswd_text(&format!("a:{SHA256_HELLO}:extra:fields\n"), "f").unwrap();
        assert_eq!(db.verify(Some(&basic("a:Hello world!"))).as_deref(), Some("a"));
        assert!(UserDb::from_htpasswd_text("\n# nobody\n", "f").unwrap().is_empty());
    }

    #[test]
    fn files_are_read_and_their_errors_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, format!("a:{SHA256_HELLO}\n")).unwrap();
        let db = UserDb::from_htpasswd(&path).unwrap();
        assert_eq!(db.verify(Some(&basic("a:Hello world!"))).as_deref(), Some("a"));
        assert!(format!("{db:?}").contains("\"a\""));
        std::fs::write(&path, b"# ok\nb\xff:x\n").unwrap();
        let err = UserDb::from_htpasswd(&path).unwrap_err();
        assert!(err.message.contains(&format!("{} line 2: not UTF-8", path.display())), "{}", err.message);
        let err = UserDb::from_htpasswd(&dir.path().join("missing")).unwrap_err();
        assert!(err.message.contains("missing"), "{}", err.message);
    }

    #[test]
    fn merging_refuses_a_user_defined_twice_naming_both_places() {
        let mut config = UserDb::new();
        config.insert_hash("a", SHA256_HELLO, "store s in borgstored.toml").unwrap();
        let file =
            UserDb::from_htpasswd_text(&format!("b:{SHA512_HELLO}\na:{SHA512_HELLO}\n"), "/etc/htpasswd").unwrap();
        let err = config.merge(file).unwrap_err();
        assert!(err.message.contains("\"a\""), "{}", err.message);
        assert!(err.message.contains("store s in borgstored.toml"), "{}", err.message);
        assert!(err.message.contains("/etc/htpasswd line 2"), "{}", err.message);
        assert_eq!(config.len(), 1, "a refused merge adds nobody");
        config.merge(UserDb::from_htpasswd_text(&format!("b:{SHA512_HELLO}\n"), "/etc/htpasswd").unwrap()).unwrap();
        assert_eq!(config.users().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(config.verify(Some(&basic("b:Hello world!"))).as_deref(), Some("b"));
    }

    #[test]
    fn debug_shows_names_only() {
        let hash = bcrypt_hash("secret");
        let mut db = UserDb::new();
        db.insert_hash("alice", &hash, "config").unwrap();
        db.merge(UserDb::from_legacy("bob", "hunter2")).unwrap();
        let shown = format!("{db:?} {db:#?}");
        assert!(shown.contains("alice") && shown.contains("bob"), "{shown}");
        for secret in [&hash[7..], "hunter2", "$2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
        let mut cache = Cache::default();
        for i in 0..CACHE_ENTRIES {
            cache.insert(&format!("u{i}"), [i as u8; 32]);
        }
        assert!(cache.hit("u0", &[0; 32]), "u0 is now the most recently used");
        assert!(!cache.hit("u1", &[2; 32]), "a different digest is a miss");
        for i in CACHE_ENTRIES..3 * CACHE_ENTRIES {
            cache.insert(&format!("u{i}"), [1; 32]);
            assert!(cache.entries.len() <= CACHE_ENTRIES);
        }
        assert_eq!(cache.entries.len(), CACHE_ENTRIES);
        assert!(!cache.entries.contains_key("u1"));
        // Re-inserting a user replaces its entry (a changed password), not another's.
        cache.insert("u2999", [9; 32]);
        assert!(cache.hit("u2999", &[9; 32]) && !cache.hit("u2999", &[1; 32]));
        assert_eq!(cache.entries.len(), CACHE_ENTRIES);
    }

    #[test]
    fn shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<UserDb>();
        let db = Arc::new(team());
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let db = Arc::clone(&db);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        assert_eq!(db.verify(Some(&basic("alice:pa:ss word"))).as_deref(), Some("alice"));
                        assert_eq!(db.verify(Some(&basic(&format!("alice:wrong{i}")))), None);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(db.cached(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn random_headers_never_panic_nor_pass(header in proptest::collection::vec(any::<u8>(), 0..300)) {
            let db = UserDb::from_legacy("user", "password");
            prop_assert_eq!(db.verify(Some(&header)), None);
            prop_assert_eq!(db.verify_cached(Some(&header)), None);
        }

        #[test]
        fn random_credentials_never_panic_nor_pass(credentials in proptest::collection::vec(any::<u8>(), 0..200)) {
            let db = UserDb::from_legacy("user", "password");
            let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&credentials));
            prop_assert_eq!(db.verify(Some(header.as_bytes())), None);
        }

        #[test]
        fn random_htpasswd_text_never_panics(text in "[a-z:$#{}./0-9A-Z \n]{0,200}") {
            let _ = UserDb::from_htpasswd_text(&text, "t");
        }
    }
}
