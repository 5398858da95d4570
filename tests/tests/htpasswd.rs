//! REST users from REAL htpasswd files (issue 14, point 2): the files are written by
//! Apache's `htpasswd` (Debian apache2-utils) and `mkpasswd` (Debian whois), so the
//! formats are the ones admins will hand the daemon, not what our own hashing crates
//! happen to produce.
//!
//! - bcrypt (`htpasswd -B`, `mkpasswd -m bcrypt`/`bcrypt-a`: `$2y$`, `$2b$`, `$2a$`) and
//!   SHA-crypt (`htpasswd -2`/`-5`, with and without `-r` rounds, `mkpasswd -m
//!   sha512crypt`/`sha256crypt`) verify the right password and refuse wrong ones,
//!   unknown users, and malformed headers;
//! - a right password is hashed once, then served from the cache; a wrong password
//!   after it is still refused;
//! - what `htpasswd` writes by default (MD5 `$apr1$`), `-s` (`{SHA}`), `-d` (DES
//!   crypt), `-p` (plain) and `mkpasswd`'s default yescrypt are refused, naming the
//!   file, line and user and how to make an accepted hash, never the hash.
//!
//! The tools are required: tests/run installs them; without them these tests fail and
//! say which package to install.

use base64::Engine;
use borgstore_daemon::access::users::UserDb;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The path of `tool`; panics naming the Debian package when it is missing.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: apt-get install {package} (tests/run installs it)"))
}

/// Run `htpasswd ARGS` (batch mode, password on the command line); panics on failure.
fn htpasswd(args: &[&str]) {
    let out = Command::new(tool("htpasswd", "apache2-utils")).args(args).output().expect("run htpasswd");
    assert!(out.status.success(), "htpasswd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `mkpasswd -m METHOD [EXTRA] PASSWORD`: one hash.
fn mkpasswd(method: &str, extra: &[&str], password: &str) -> String {
    let out = Command::new(tool("mkpasswd", "whois"))
        .args(["-m", method])
        .args(extra)
        .arg(password)
        .output()
        .expect("run mkpasswd");
    assert!(out.status.success(), "mkpasswd -m {method}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn basic(credentials: &str) -> Vec<u8> {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials)).into_bytes()
}

/// The hash `htpasswd` wrote for `user` in `file`.
fn hash_of(file: &Path, user: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{user}:"))).expect("the user's line");
    line[user.len() + 1..].to_string()
}

/// Users and passwords, and the `htpasswd` flags each is added with.
const USERS: [(&str, &str, &[&str]); 7] = [
    ("alice", "correct horse:battery staple", &["-B"]),
    ("bob", "hunter2", &["-B", "-C", "10"]),
    ("carol", "pässwörd", &["-2"]),
    ("dave", "s3cret", &["-5"]),
    ("erin", "rounds!", &["-5", "-r", "20000"]),
    ("frank", "x", &["-2", "-r", "1000"]),
    ("grace", "a very long password that goes on past the seventy-two bytes bcrypt reads", &["-B"]),
];

fn written_by_htpasswd(dir: &Path) -> PathBuf {
    let file = dir.join("htpasswd");
    for (i, (user, password, flags)) in USERS.iter().enumerate() {
        let mut args: Vec<&str> = flags.to_vec();
        args.push("-b");
        if i == 0 {
            args.push("-c");
        }
        args.extend([file.to_str().unwrap(), user, password]);
        htpasswd(&args);
    }
    file
}

#[test]
fn htpasswd_bcrypt_and_sha_crypt_files_verify_their_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = written_by_htpasswd(dir.path());
    // What htpasswd wrote is what we claim to read.
    assert!(hash_of(&file, "alice").starts_with("$2y$05$"));
    assert!(hash_of(&file, "bob").starts_with("$2y$10$"));
    assert!(hash_of(&file, "carol").starts_with("$5$"));
    assert!(hash_of(&file, "dave").starts_with("$6$"));
    assert!(hash_of(&file, "erin").starts_with("$6$rounds=20000$"));
    // Comments and blank lines an admin adds are ignored.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("# borg clients\n\n{}\n# end\n", text.replace('\n', "\n\n"))).unwrap();

    let db = UserDb::from_htpasswd(&file).unwrap();
    assert_eq!(db.users().collect::<Vec<_>>(), ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]);
    for (user, password, _) in USERS {
        assert_eq!(db.verify(Some(&basic(&format!("{user}:{password}")))).as_deref(), Some(user), "{user}");
        assert_eq!(db.verify(Some(&basic(&format!("{user}:!{password}")))), None, "{user}: a wrong password");
        assert_eq!(db.verify(Some(&basic(&format!("{user}:{password}.")))).is_some(), user == "grace", "{user}");
        assert_eq!(db.verify(Some(&basic(&format!("{user}:")))), None, "{user}: an empty password");
        assert_eq!(db.verify(Some(&basic(user))), None, "{user}: no password at all");
    }
    // bcrypt reads 72 bytes of a password; `htpasswd -v` also accepts grace's with a byte
    // more (asserted above), so we agree with Apache there too.
    // Another user's password, an unknown user, a user with the wrong case.
    assert_eq!(db.verify(Some(&basic("alice:hunter2"))), None);
    assert_eq!(db.verify(Some(&basic("mallory:hunter2"))), None);
    assert_eq!(db.verify(Some(&basic("Bob:hunter2"))), None);
    // The colon belongs to alice's password: only the first one separates.
    assert_eq!(db.verify(Some(&basic("alice:correct horse"))), None);
    // Headers that are not Basic credentials at all.
    for header in [&b"Basic !!!"[..], b"Bearer hunter2", b"Basic \xff\xfe\xfd", b"", b"Basic"] {
        assert_eq!(db.verify(Some(header)), None);
    }
    assert_eq!(db.verify(Some(&[b'a'; 1 << 20])), None, "a 1 MB header");
    assert_eq!(db.verify(None), None);
    assert!(!format!("{db:?}").contains(&hash_of(&file, "bob")[7..]), "Debug shows no hash");
}

#[test]
fn mkpasswd_hashes_in_the_config_verify() {
    let mut db = UserDb::new();
    let cases = [
        ("b2b", "bcrypt", &["-R", "5"][..], "$2b$"),
        ("b2a", "bcrypt-a", &["-R", "5"][..], "$2a$"),
        ("s512", "sha512crypt", &[][..], "$6$"),
        ("s256", "sha256crypt", &["-R", "12345"][..], "$5$rounds=12345$"),
    ];
    for (user, method, extra, prefix) in cases {
        let hash = mkpasswd(method, extra, &format!("{user} pw"));
        assert!(hash.starts_with(prefix), "{method}: {hash}");
        db.insert_hash(user, &hash, "store s in borgstored.toml").unwrap();
    }
    for (user, ..) in cases {
        assert_eq!(db.verify(Some(&basic(&format!("{user}:{user} pw")))).as_deref(), Some(user));
        assert_eq!(db.verify(Some(&basic(&format!("{user}:{user} pW")))), None);
    }
}

#[test]
fn a_right_password_is_hashed_once_and_a_wrong_one_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = written_by_htpasswd(dir.path());
    let db = UserDb::from_htpasswd(&file).unwrap();
    let good = basic("bob:hunter2");
    // Thousands of requests of one borg backup, each with Basic auth: one bcrypt.
    for _ in 0..2000 {
        assert_eq!(db.verify(Some(&good)).as_deref(), Some("bob"));
    }
    assert_eq!(db.hash_verifications(), 1);
    assert_eq!(db.verify_cached(Some(&good)).as_deref(), Some("bob"));
    // A wrong password after the right one is refused, and costs a hash each time.
    for n in 1..=3 {
        assert_eq!(db.verify(Some(&basic("bob:hunter3"))), None);
        assert_eq!(db.hash_verifications(), 1 + n);
    }
    // Unknown users cost a hash too (no cheap "no such user" answer).
    assert_eq!(db.verify(Some(&basic("mallory:hunter2"))), None);
    assert_eq!(db.hash_verifications(), 5);
    // Every user verified once is served from the cache.
    for (user, password, _) in USERS {
        assert_eq!(db.verify(Some(&basic(&format!("{user}:{password}")))).as_deref(), Some(user));
    }
    let after_first = db.hash_verifications();
    for (user, password, _) in USERS {
        assert_eq!(db.verify(Some(&basic(&format!("{user}:{password}")))).as_deref(), Some(user));
    }
    assert_eq!(db.hash_verifications(), after_first);

    // A changed password: the reloaded db refuses the old one and takes the new one.
    htpasswd(&["-B", "-b", file.to_str().unwrap(), "bob", "hunter3"]);
    let reloaded = UserDb::from_htpasswd(&file).unwrap();
    assert_eq!(reloaded.verify(Some(&good)), None);
    assert_eq!(reloaded.verify(Some(&basic("bob:hunter3"))).as_deref(), Some("bob"));
}

#[test]
fn weak_hashes_are_refused_naming_file_line_and_user_but_not_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&[], "MD5"),     // htpasswd's default: $apr1$
        (&["-m"], "MD5"), // the same, asked for
        (&["-s"], "SHA-1"),
        (&["-d"], "DES crypt"),
        (&["-p"], "plain-text"),
    ];
    for (flags, why) in cases {
        let file = dir.path().join("weak");
        htpasswd(&["-B", "-b", "-c", file.to_str().unwrap(), "good", "pw"]);
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["-b", file.to_str().unwrap(), "weakling", "secretpw"]);
        htpasswd(&args);
        let hash = hash_of(&file, "weakling");
        let err = UserDb::from_htpasswd(&file).unwrap_err();
        let m = &err.message;
        assert!(m.contains(&format!("{} line 2", file.display())), "{flags:?}: {m}");
        assert!(m.contains("\"weakling\"") && m.contains(why) && m.contains("htpasswd -B"), "{flags:?}: {m}");
        assert!(!m.contains(&hash) && !m.contains("secretpw"), "{flags:?}: the message shows the hash: {m}");
        let tail = &hash[hash.len().saturating_sub(10)..];
        assert!(!m.contains(tail), "{flags:?}: the message shows part of the hash: {m}");
    }
    // mkpasswd's (and Debian's /etc/shadow's) default, yescrypt.
    let hash = mkpasswd("yescrypt", &[], "secretpw");
    assert!(hash.starts_with("$y$"), "{hash}");
    let err = UserDb::from_htpasswd_text(&format!("# c\ny:{hash}\n"), "users.htpasswd").unwrap_err();
    assert!(err.message.contains("users.htpasswd line 2") && err.message.contains("yescrypt"), "{}", err.message);
    assert!(!err.message.contains(&hash[hash.len() - 10..]), "{}", err.message);
}

#[test]
fn a_user_in_the_config_and_the_file_is_an_error_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = written_by_htpasswd(dir.path());
    let mut config = UserDb::new();
    config.insert_hash("zoe", &mkpasswd("sha512crypt", &[], "z"), "store s in borgstored.toml").unwrap();
    config.merge(UserDb::from_htpasswd(&file).unwrap()).unwrap();
    assert_eq!(config.len(), USERS.len() + 1);

    let mut config = UserDb::new();
    config.insert_hash("dave", &mkpasswd("sha512crypt", &[], "d"), "store s in borgstored.toml").unwrap();
    let err = config.merge(UserDb::from_htpasswd(&file).unwrap()).unwrap_err();
    let m = &err.message;
    assert!(m.contains("\"dave\"") && m.contains("store s in borgstored.toml"), "{m}");
    assert!(m.contains(&format!("{} line 4", file.display())), "{m}");

    // Duplicates inside one file (htpasswd never writes them; an admin's editor might).
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}{}", text.lines().next().unwrap())).unwrap();
    let err = UserDb::from_htpasswd(&file).unwrap_err();
    assert!(err.message.contains("\"alice\" is defined twice (first on line 1)"), "{}", err.message);
}
