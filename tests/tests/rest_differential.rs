//! Differential test: our `borgstore-server-rest` answers exactly like Python borgstore
//! 0.7.0's `borgstore-server-rest` (issue 11, point 2).
//!
//! Both servers start on fresh stores with the same flags (no auth, Basic auth, quota,
//! each `borgbackup-*` permission shortcut and a JSON permission map; the store directory
//! missing, existing and empty, or already populated) and get the same generated
//! sequence of raw HTTP/1.1 requests: every route and `cmd=` of REST-API.md, good and bad
//! names, Range forms, hash algorithms, gather/defrag bodies, auth and Accept variants,
//! requests before `create` and after `destroy`. Each sequence runs over TCP (keep-alive
//! connections) and over `--stdio` (one session per server, Host header sent on every
//! other request, plus a framing probe and a crash probe in sessions of their own).
//!
//! Per request the status, the reason phrase, every header (name case as sent and value;
//! timestamps and `Date` by format) and the body must be equal; after each sequence both
//! store trees must hold the same paths with the same contents. The only accepted
//! differences are listed in [`ALLOWED`], each with its reason; anything else fails the
//! test with a report of all differences, grouped.

use borgstore_tests::daemon::binary;
use borgstore_tests::differential::{
    compare, stop_gracefully, tree, tree_differences, Diff, Outcome, Request, Rules, StdioSession, TcpClient,
};
use borgstore_tests::python::{bin_dir, Version};
use borgstore_tests::rest::{free_port, Impl, RestServer, ACCEPT};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

// ---------------------------------------------------------------------------------------
// The one table of accepted differences.

/// A difference the test accepts, with the reason.
enum Allowed {
    /// A normalisation applied before comparing.
    Normalise(Normalisation, &'static str),
    /// Differences of `aspect` ("*": any) for requests whose label starts with `label` and
    /// whose group key contains `key` ("" matches anything).
    Diff { aspect: &'static str, label: &'static str, key: &'static str, reason: &'static str },
}

/// The one known difference the generator steers around instead of listing it in
/// ALLOWED (its effects would show in every later quota number): a move that replaces
/// an item gives the replaced item's bytes back to our quota, while Python's server keeps
/// counting them until it rescans. Tested on its own in tests/posixfs.rs.
#[allow(dead_code)]
const QUOTA_NOTE: &str = "move replacing an item: our quota frees its bytes, Python's does not";

/// Names our stricter rules refuse on purpose (see ALLOWED), generated apart (label
/// `odd-strict:`): `.` and empty path components, and control characters.
const DOT_NAMES: &[&str] = &[".", "./dot", "odd/.", "odd//b", "%00"];

enum Normalisation {
    HtmlErrorPage,
    DateServerValues,
}

const ALLOWED: &[Allowed] = &[
    Allowed::Diff {
        aspect: "*",
        label: "odd-strict:",
        key: "",
        reason: "Names with '.' or empty path components (./dot, odd/., odd//b, .) or control \
                 characters (a NUL) are refused (400): Python's server lets pathlib resolve the \
                 former into other names (and fails on the NUL with 'embedded null byte', after \
                 the permission check); ours never maps two names onto one file.",
    },
    Allowed::Diff {
        aspect: "*",
        label: "range:",
        key: "",
        reason: "Malformed Range headers get 400: Python's server ignores what it cannot parse and \
                 answers 206 with the whole value (bytes=-100 on a shorter value is its 500, \
                 bytes=5-1 its own wording); a client bug never silently reads the wrong bytes here.",
    },
    Allowed::Diff {
        aspect: "*",
        label: "gather:body",
        key: "",
        reason: "JSON syntax errors and numbers Python takes as unbounded ints (2^64 as a size: its \
                 404/500) are worded and refused by our JSON parser (400); well-formed sources get \
                 Python's words.",
    },
    Allowed::Diff {
        aspect: "*",
        label: "defrag:",
        key: "",
        reason: "defrag checks its input (algorithm, JSON, target name) before the target's \
                 permission: Python's server checks the permission first (403 where we say 400), \
                 and reports shake_* algorithms with hashlib's own message.",
    },
    Allowed::Diff {
        aspect: "*",
        label: "hash:algorithm",
        key: "",
        reason: "An unsupported algorithm (shake_*) is refused as such before the item is looked \
                 at or the permission checked; Python's server checks permission and existence \
                 first and words shake_* with hashlib's message.",
    },
    Allowed::Diff {
        aspect: "*",
        label: "store-hash-header:",
        key: "ours 403",
        reason: "A store the permissions refuse is refused from the request head, before its body \
                 is read (issue 10), so its X-Content-hash-sha256 is never checked: 403 where \
                 Python's server, which reads the body first, says 422.",
    },
    Allowed::Diff {
        aspect: "*",
        label: "crash-probe:",
        key: "",
        reason: "defrag with levels=abc crashes Python's handler (no answer over TCP, the stdio \
                 process exits); ours answers 400.",
    },
    Allowed::Diff {
        aspect: "stdio",
        label: "stdio-crash",
        key: "",
        reason: "The same crash over --stdio: Python's server exits 1 without answering.",
    },
    Allowed::Diff {
        aspect: "*",
        label: "stdio-framing",
        key: "",
        reason: "After a refused request with an unread body, Python's stdio server reads the body \
                 as the next request (501 'helloGET'); ours drops the rest of that body and answers \
                 the real next request.",
    },
    Allowed::Diff {
        aspect: "reason",
        label: "",
        key: "",
        reason: "Python's send_error puts the error message into the status line; ours sends the \
                 standard reason phrase (a message with CR/LF or non-Latin-1 text cannot go there).",
    },
    Allowed::Diff {
        aspect: "header-presence",
        label: "",
        key: "Connection: close only from Python",
        reason: "Python's send_error closes the connection after every error; ours keeps it open \
                 (answers are complete, so the client can go on).",
    },
    Allowed::Diff {
        aspect: "header-presence",
        label: "",
        key: "Connection: close only from ours",
        reason: "A request refused from its head (401) whose body was not read closes the \
                 connection instead of reading the body (issue 10).",
    },
    Allowed::Diff {
        aspect: "header-presence",
        label: "",
        key: "Cache-Control",
        reason: "Ours sends Cache-Control on every answer, as REST-API.md says; Python's error \
                 pages lack it.",
    },
    Allowed::Diff {
        aspect: "header-presence",
        label: "",
        key: "Server",
        reason: "Python's http.server announces itself in a Server header; ours sends none.",
    },
    Allowed::Normalise(
        Normalisation::HtmlErrorPage,
        "Python's send_error wraps the error message in an HTML page (Content-Type text/html, \
         its own Content-Length); ours sends the same message as text/plain. The message is \
         compared: Python's, taken out of the page and unescaped, against our whole body.",
    ),
    Allowed::Normalise(
        Normalisation::DateServerValues,
        "Date and Server values differ by nature (time, implementation); Date is compared by format.",
    ),
];

fn rules() -> Rules {
    let mut r = Rules::default();
    for a in ALLOWED {
        if let Allowed::Normalise(n, _) = a {
            match n {
                Normalisation::HtmlErrorPage => r.unwrap_html_errors = true,
                Normalisation::DateServerValues => r.ignore_date_server_values = true,
            }
        }
    }
    r
}

fn allowed(d: &Diff) -> bool {
    ALLOWED.iter().any(|a| match a {
        Allowed::Diff { aspect, label, key, .. } => {
            (*aspect == "*" || *aspect == d.aspect) && d.label.starts_with(label) && d.key.contains(key)
        }
        Allowed::Normalise(..) => false,
    })
}

// ---------------------------------------------------------------------------------------
// Configurations.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum StoreInit {
    /// The store directory does not exist yet.
    Missing,
    /// It exists and is empty.
    Empty,
    /// It holds a borg-like layout already (for permission configurations: `create`
    /// itself may be refused there).
    Populated,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Before {
    /// `create` is the very first request.
    Nothing,
    /// Only reads before `create` (a write would make an existing directory non-empty).
    Reads,
    /// Reads and writes before `create`.
    Everything,
}

struct Config {
    name: &'static str,
    flags: &'static [&'static str],
    auth: Option<(&'static str, &'static str)>,
    store: StoreInit,
    before: Before,
}

const JSON_PERMISSIONS: &str =
    r#"{"": "lrwWD", "config": "lr", "keys": "r", "locks": "l", "data": "lw", "pub": "lrwWD", "pub/drop": "wW"}"#;

const CONFIGS: &[Config] = &[
    Config { name: "plain", flags: &[], auth: None, store: StoreInit::Missing, before: Before::Everything },
    Config { name: "empty-dir", flags: &[], auth: None, store: StoreInit::Empty, before: Before::Reads },
    Config {
        name: "auth",
        flags: &["--username", "u", "--password", "p"],
        auth: Some(("u", "p")),
        store: StoreInit::Missing,
        before: Before::Everything,
    },
    Config {
        name: "quota-missing-dir",
        flags: &["--quota", "1000"],
        auth: None,
        store: StoreInit::Missing,
        before: Before::Everything,
    },
    Config {
        name: "quota-empty-dir",
        flags: &["--quota", "1000"],
        auth: None,
        store: StoreInit::Empty,
        before: Before::Nothing,
    },
    Config {
        name: "no-delete",
        flags: &["--permissions", "borgbackup-no-delete"],
        auth: None,
        store: StoreInit::Populated,
        before: Before::Nothing,
    },
    Config {
        name: "write-only",
        flags: &["--permissions", "borgbackup-write-only"],
        auth: None,
        store: StoreInit::Populated,
        before: Before::Nothing,
    },
    Config {
        name: "read-only",
        flags: &["--permissions", "borgbackup-read-only"],
        auth: None,
        store: StoreInit::Populated,
        before: Before::Nothing,
    },
    Config {
        name: "json-permissions",
        flags: &["--permissions", JSON_PERMISSIONS],
        auth: None,
        store: StoreInit::Populated,
        before: Before::Nothing,
    },
];

/// The layout of a populated store (borg-like namespaces plus a root item).
const POPULATED: &[(&str, &[u8])] = &[
    ("config/manifest", b"manifest"),
    ("keys/repokey", b"repokey"),
    ("data/00/0011aabb", b"chunk data"),
    ("archives/a0", b"archive"),
    ("cache/c0", b"cache entry"),
    ("locks/l0", b"lock"),
    ("pub/p0", b"public"),
    ("other", b"root item"),
];

fn prepare_store(dir: &Path, init: StoreInit) {
    let store = dir.join("store");
    match init {
        StoreInit::Missing => {}
        StoreInit::Empty => std::fs::create_dir(&store).unwrap(),
        StoreInit::Populated => {
            for (name, value) in POPULATED {
                let path = store.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, value).unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The request generator.

/// How a request's Accept and Authorization headers deviate from a well-behaved client's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Normal,
    NoAccept,
    WrongAccept,
    AcceptList,
    AcceptTwice,
    AcceptUpperCase,
    NoAuth,
    WrongPassword,
    WrongUser,
    Bearer,
    NotBase64,
    LowerCaseScheme,
    NoColon,
}

const VARIANTS: &[Variant] = &[
    Variant::NoAccept,
    Variant::WrongAccept,
    Variant::AcceptList,
    Variant::AcceptTwice,
    Variant::AcceptUpperCase,
    Variant::NoAuth,
    Variant::WrongPassword,
    Variant::WrongUser,
    Variant::Bearer,
    Variant::NotBase64,
    Variant::LowerCaseScheme,
    Variant::NoColon,
];

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

impl Variant {
    fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    /// Accept and Authorization lines for this variant.
    fn headers(self, auth: Option<(&str, &str)>) -> Vec<(String, String)> {
        let mut h = Vec::new();
        let accept = |h: &mut Vec<(String, String)>, v: &str| h.push(("Accept".to_string(), v.to_string()));
        match self {
            Variant::NoAccept => {}
            Variant::WrongAccept => accept(&mut h, "application/json"),
            Variant::AcceptList => accept(&mut h, &format!("{ACCEPT}, */*")),
            Variant::AcceptTwice => {
                accept(&mut h, ACCEPT);
                accept(&mut h, "application/json");
            }
            Variant::AcceptUpperCase => accept(&mut h, &ACCEPT.to_uppercase()),
            _ => accept(&mut h, ACCEPT),
        }
        let (user, pass) = auth.unwrap_or(("u", "p"));
        let authorization = match self {
            Variant::NoAuth => None,
            Variant::WrongPassword => Some(format!("Basic {}", basic(user, "wrong"))),
            Variant::WrongUser => Some(format!("Basic {}", basic("wrong", pass))),
            Variant::Bearer => Some(format!("Bearer {}", basic(user, pass))),
            Variant::NotBase64 => Some("Basic !!not-base64!!".to_string()),
            Variant::LowerCaseScheme => Some(format!("basic {}", basic(user, pass))),
            Variant::NoColon => Some(format!("Basic {}", {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(format!("{user}{pass}"))
            })),
            _ => auth.map(|(u, p)| format!("Basic {}", basic(u, p))),
        };
        if let Some(a) = authorization {
            h.push(("Authorization".to_string(), a));
        }
        h
    }

    /// Does Python's server get past its Accept and auth checks with this variant?
    fn passes(self, auth: bool) -> bool {
        match self {
            Variant::NoAccept | Variant::WrongAccept | Variant::AcceptList | Variant::AcceptUpperCase => false,
            Variant::AcceptTwice => true, // the first Accept counts
            Variant::Normal | Variant::LowerCaseScheme => true,
            Variant::NoAuth
            | Variant::WrongPassword
            | Variant::WrongUser
            | Variant::Bearer
            | Variant::NotBase64
            | Variant::NoColon => !auth,
        }
    }
}

/// Does Python's handler read the request body? (Where it does not, the unread body stays
/// in the stream: over TCP such requests get a connection of their own, over stdio they
/// are sent without a body; the framing probe covers the rest.)
fn python_reads_body(method: &str, target: &str, passes: bool) -> bool {
    if method != "POST" || !passes {
        return false;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.split('#').next().unwrap_or("");
    let cmd = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, v)| *k == "cmd" && !v.is_empty())
        .map(|(_, v)| v);
    let has = |key: &str| query.split('&').any(|kv| kv.split_once('=').is_some_and(|(k, v)| k == key && !v.is_empty()));
    match cmd {
        Some("create" | "move" | "mkdir" | "hash" | "quota") => false,
        Some("gather") => true,
        Some("defrag") => has("target") || has("algorithm"),
        _ => !path.trim_matches('/').is_empty(),
    }
}

/// Good names: borg's namespaces (permission maps name them), nested and root-level.
const GOOD_NAMES: &[&str] = &[
    "a",
    "zz",
    "data/00/0123abcd",
    "config/manifest",
    "keys/repokey",
    "locks/lock1",
    "archives/a1",
    "cache/c1",
    "pub/x",
    "pub/drop/y",
];

/// Names as they appear in the request target: invalid ones, and odd ones whose validity
/// depends on whether the path is percent-decoded or normalised.
const ODD_NAMES: &[&str] = &[
    "..",
    "odd/../b",
    "../etc",
    "UPPER",
    "Mixed/x",
    "x.tmp",
    "x.hid",
    "quota.hid",
    "odd%20b",
    "odd%2Fb",
    "%2e%2e/x",
    "pct%41",
    "%C3%A9",
    "\u{e9}t\u{e9}",
    "odd%5Cb",
    "/abs",
    "with;semicolon",
    "frag#ment",
    "ends.del",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxy",
];

const RANGES: &[&str] = &[
    "bytes=0-3",
    "bytes=2-",
    "bytes=-3",
    "bytes=0-0",
    "bytes=0-",
    "bytes=3-100",
    "bytes=100-200",
    "bytes=100-",
    "bytes=-100",
    "bytes=5-1",
    "items=0-1",
    "bytes=0-1,3-4",
    "bytes=-",
    "bytes=a-b",
    "bytes= 0-3",
    "bytes=0-99999999999999999999",
    "",
];

const ALGORITHMS: &[&str] = &[
    "sha256",
    "sha1",
    "md5",
    "sha224",
    "sha384",
    "sha512",
    "sha3_256",
    "sha3_512",
    "blake2b",
    "blake2s",
    "blake3",
    "shake_128",
    "SHA256",
    "nope",
    "",
];

const GATHER_BODIES: &[&str] = &[
    r#"[["a", 0, 3]]"#,
    r#"[["a", 0, 3], ["zz", 1, 2], ["a", 2, 1]]"#,
    r#"[]"#,
    r#"[["a", 0, 0]]"#,
    r#"[["a", -3, 3]]"#,
    r#"[["a", 0, 999]]"#,
    r#"[["a", 500, 1]]"#,
    r#"[["missing", 0, 1]]"#,
    r#"[["../x", 0, 1]]"#,
    r#"[["UP", 0, 1]]"#,
    r#"[["a", 0]]"#,
    r#"[["a", 0, 1, 2]]"#,
    r#"[["a", "0", 1]]"#,
    r#"[["a", 0, -1]]"#,
    r#"[["a", 0.0, 1]]"#,
    r#"[["a", true, 1]]"#,
    r#"[[1, 0, 1]]"#,
    r#"{"a": 1}"#,
    r#"null"#,
    r#"42"#,
    r#""a""#,
    r#"not json"#,
    r#""#,
    r#"[["a", 0, 18446744073709551616]]"#,
    r#"[["ns", 0, 1]]"#,
];

struct Gen<'a> {
    cfg: &'a Config,
    reqs: Vec<Request>,
    /// Compare the trees before request N.
    checkpoints: Vec<(usize, &'static str)>,
    rng: u64,
    /// Give some requests a random header variant.
    sprinkle: bool,
}

impl<'a> Gen<'a> {
    fn new(cfg: &'a Config) -> Self {
        Gen { cfg, reqs: Vec::new(), checkpoints: Vec::new(), rng: 0x9e37_79b9_7f4a_7c15, sprinkle: false }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, the same sequence on every run.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn push_full(&mut self, label: &str, method: &str, target: &str, extra: &[(&str, &str)], body: &[u8], v: Variant) {
        let mut headers = v.headers(self.cfg.auth);
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let passes = v.passes(self.cfg.auth.is_some());
        let label = if v == Variant::Normal { label.to_string() } else { format!("{label} [{}]", v.name()) };
        let reads = python_reads_body(method, target, passes);
        self.reqs.push(Request {
            label,
            method: method.into(),
            target: target.into(),
            headers,
            body: body.to_vec(),
            host: true,
            content_length: method == "POST",
            // Python leaves this body unread on a connection it keeps: send it alone.
            fresh_connection: !body.is_empty() && !reads,
        });
    }

    fn push_with(&mut self, label: &str, method: &str, target: &str, extra: &[(&str, &str)], body: &[u8]) {
        let v = if self.sprinkle && self.next().is_multiple_of(16) {
            VARIANTS[(self.next() % VARIANTS.len() as u64) as usize]
        } else {
            Variant::Normal
        };
        self.push_full(label, method, target, extra, body, v);
    }

    fn push(&mut self, label: &str, method: &str, target: &str) {
        self.push_with(label, method, target, &[], b"");
    }

    fn post(&mut self, label: &str, target: &str, body: &[u8]) {
        self.push_with(label, "POST", target, &[], body);
    }

    /// Reads only: nothing changes on disk even where the store directory exists.
    fn reads(&mut self, p: &str) {
        self.push(&format!("{p}:info-root"), "HEAD", "/");
        self.push(&format!("{p}:list-root"), "GET", "/");
        self.push(&format!("{p}:info"), "HEAD", "/a");
        self.push(&format!("{p}:load"), "GET", "/a");
        self.push(&format!("{p}:load-range"), "GET", "/a");
        self.push(&format!("{p}:list"), "GET", "/data/");
        self.post(&format!("{p}:hash"), "/a?cmd=hash&algorithm=sha256", b"");
        self.post(&format!("{p}:quota"), "/?cmd=quota", b"");
        self.post(&format!("{p}:gather"), "/?cmd=gather", br#"[["a", 0, 1]]"#);
    }

    fn writes(&mut self, p: &str) {
        self.post(&format!("{p}:store"), "/a", b"early");
        self.push(&format!("{p}:delete"), "DELETE", "/a");
        self.post(&format!("{p}:mkdir-root"), "/?cmd=mkdir", b"");
        self.post(&format!("{p}:mkdir"), "/ns?cmd=mkdir", b"");
        self.push(&format!("{p}:rmdir"), "DELETE", "/ns?cmd=rmdir");
        self.post(&format!("{p}:move"), "/?cmd=move&current=a&new=b", b"");
        self.post(&format!("{p}:defrag"), "/?cmd=defrag&target=t", br#"[["a", 0, 1]]"#);
        self.push(&format!("{p}:destroy"), "DELETE", "/?cmd=destroy");
    }

    fn create(&mut self) {
        self.post("create", "/?cmd=create", b"");
        self.post("create:again", "/?cmd=create", b"");
        self.post("create:with-name", "/a?cmd=create", b"");
        self.push("create:info-root", "HEAD", "/");
        self.push("create:list-root", "GET", "/");
        self.post("create:quota", "/?cmd=quota", b"");
    }

    fn directories(&mut self) {
        let p = "dir";
        self.post(&format!("{p}:mkdir-root"), "/?cmd=mkdir", b"");
        self.post(&format!("{p}:mkdir-root-slashes"), "//?cmd=mkdir", b"");
        self.post(&format!("{p}:mkdir"), "/ns?cmd=mkdir", b"");
        self.post(&format!("{p}:mkdir-again"), "/ns?cmd=mkdir", b"");
        self.post(&format!("{p}:mkdir-deep"), "/ns/sub/deep?cmd=mkdir", b"");
        self.post(&format!("{p}:mkdir-trailing-slash"), "/ns2/?cmd=mkdir", b"");
        self.push(&format!("{p}:info"), "HEAD", "/ns");
        self.push(&format!("{p}:info-trailing-slash"), "HEAD", "/ns/");
        self.push(&format!("{p}:list"), "GET", "/ns/");
        self.push(&format!("{p}:list-deep"), "GET", "/ns/sub/");
        self.push(&format!("{p}:list-missing"), "GET", "/nothere/");
        self.push(&format!("{p}:list-root"), "GET", "/");
        self.push(&format!("{p}:list-root-slashes"), "GET", "//");
        self.push(&format!("{p}:info-root"), "HEAD", "/");
        self.push(&format!("{p}:load-dir"), "GET", "/ns");
        self.post(&format!("{p}:hash-dir"), "/ns?cmd=hash", b"");
        self.post(&format!("{p}:store-onto-dir"), "/ns", b"value");
        self.push(&format!("{p}:delete-dir"), "DELETE", "/ns");
        self.push(&format!("{p}:rmdir-not-empty"), "DELETE", "/ns?cmd=rmdir");
        self.push(&format!("{p}:rmdir-root"), "DELETE", "/?cmd=rmdir");
        self.push(&format!("{p}:rmdir"), "DELETE", "/ns/sub/deep?cmd=rmdir");
        self.push(&format!("{p}:rmdir-missing"), "DELETE", "/ns/sub/deep?cmd=rmdir");
        self.push(&format!("{p}:rmdir-trailing-slash"), "DELETE", "/ns/sub/?cmd=rmdir");
        self.post(&format!("{p}:store-in-dir"), "/ns/item", b"in ns");
        self.push(&format!("{p}:list-file"), "GET", "/ns/item/");
        self.post(&format!("{p}:mkdir-onto-file"), "/ns/item?cmd=mkdir", b"");
        self.push(&format!("{p}:rmdir-file"), "DELETE", "/ns/item?cmd=rmdir");
        self.post(&format!("{p}:mkdir-under-file"), "/ns/item/sub?cmd=mkdir", b"");
        self.post(&format!("{p}:store-under-file"), "/ns/item/sub", b"under a file");
        self.push(&format!("{p}:info-under-file"), "HEAD", "/ns/item/sub");
        self.push(&format!("{p}:load-under-file"), "GET", "/ns/item/sub");
    }

    fn objects(&mut self) {
        self.sprinkle = true;
        for (i, name) in GOOD_NAMES.iter().enumerate() {
            let p = "object";
            let t = format!("/{name}");
            let parent = match name.rfind('/') {
                Some(j) => format!("/{}/", &name[..j]),
                None => "/".to_string(),
            };
            self.push(&format!("{p}:info-missing"), "HEAD", &t);
            self.push(&format!("{p}:load-missing"), "GET", &t);
            self.post(&format!("{p}:hash-missing"), &format!("{t}?cmd=hash"), b"");
            self.push(&format!("{p}:delete-missing"), "DELETE", &t);
            self.post(&format!("{p}:store"), &t, format!("first value of {name}").as_bytes());
            self.post(&format!("{p}:store-overwrite"), &t, format!("value #{i} of {name}").as_bytes());
            self.push(&format!("{p}:info"), "HEAD", &t);
            self.push(&format!("{p}:load"), "GET", &t);
            self.push_with(&format!("{p}:load-range"), "GET", &t, &[("Range", "bytes=1-4")], b"");
            self.post(&format!("{p}:hash"), &format!("{t}?cmd=hash&algorithm=sha256"), b"");
            self.post(&format!("{p}:hash-default"), &format!("{t}?cmd=hash"), b"");
            self.push(&format!("{p}:list-parent"), "GET", &parent);
            self.post(&format!("{p}:move-away"), &format!("/?cmd=move&current={name}&new={name}.moved"), b"");
            self.push(&format!("{p}:info-moved"), "HEAD", &t);
            self.push(&format!("{p}:info-moved-to"), "HEAD", &format!("{t}.moved"));
            self.post(&format!("{p}:move-back"), &format!("/?cmd=move&current={name}.moved&new={name}"), b"");
            self.push(&format!("{p}:delete"), "DELETE", &t);
            self.push(&format!("{p}:delete-again"), "DELETE", &t);
            self.post(&format!("{p}:store-final"), &t, format!("final value of {name}").as_bytes());
            self.push(&format!("{p}:get-with-cmd"), "GET", &format!("{t}?cmd=hash"));
            self.push(&format!("{p}:info-with-query"), "HEAD", &format!("{t}?x=1"));
        }
        self.sprinkle = false;
    }

    /// Ranges, hash algorithms and hash headers on "a" (stored by [`Gen::objects`]).
    fn a_details(&mut self) {
        self.post("value:store-ten", "/a", b"0123456789");
        for r in RANGES {
            self.push_with("range:load", "GET", "/a", &[("Range", r)], b"");
        }
        self.push_with("range:load-missing", "GET", "/missing", &[("Range", "bytes=0-3")], b"");
        for alg in ALGORITHMS {
            self.post("hash:algorithm", &format!("/a?cmd=hash&algorithm={alg}"), b"");
        }
        self.post("hash:algorithm-missing-object", "/missing?cmd=hash&algorithm=nope", b"");
        self.post("hash:no-name", "/?cmd=hash&algorithm=sha256", b"");
        self.post("hash:no-name-bad-algorithm", "/?cmd=hash&algorithm=nope", b"");
        self.post("hash:bad-name", "/UP?cmd=hash", b"");
        let body = b"checked value";
        let right = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body));
        let wrong = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"other"));
        for (case, h) in
            [("right", right.clone()), ("upper-case", right.to_uppercase()), ("wrong", wrong), ("empty", String::new())]
        {
            self.push_with(
                &format!("store-hash-header:{case}"),
                "POST",
                "/checked",
                &[("X-Content-hash-sha256", &h)],
                body,
            );
            self.push(&format!("store-hash-header:{case}:load"), "GET", "/checked");
            self.push(&format!("store-hash-header:{case}:delete"), "DELETE", "/checked");
        }
        self.push_with("store-hash-header:wrong-no-body", "POST", "/checked", &[("X-Content-hash-sha256", "00")], b"");
        self.post("store:empty-value", "/empty", b"");
        self.push("store:empty-value:info", "HEAD", "/empty");
        self.push("store:empty-value:load", "GET", "/empty");
        self.push_with("store:empty-value:range", "GET", "/empty", &[("Range", "bytes=0-0")], b"");
        self.post("store:binary", "/bin", &(0u8..=255).collect::<Vec<u8>>());
        self.push("store:binary:load", "GET", "/bin");
        self.post("store:no-name", "/", b"value");
        self.push("load:no-name", "GET", "/");
        self.push("delete:no-name", "DELETE", "/");
        self.post("file-ops:mkdir-onto-file", "/a?cmd=mkdir", b"");
        self.push("file-ops:rmdir-file", "DELETE", "/a?cmd=rmdir");
    }

    fn odd_names(&mut self) {
        for name in ODD_NAMES.iter().chain(DOT_NAMES) {
            let p = if DOT_NAMES.contains(name) { "odd-strict" } else { "odd-name" };
            let t = format!("/{name}");
            self.post(&format!("{p}:store"), &t, b"odd");
            self.push(&format!("{p}:info"), "HEAD", &t);
            self.push(&format!("{p}:load"), "GET", &t);
            self.post(&format!("{p}:hash"), &format!("{t}?cmd=hash"), b"");
            self.push(&format!("{p}:delete"), "DELETE", &t);
            // Directory operations once the item is gone.
            self.post(&format!("{p}:mkdir"), &format!("{t}?cmd=mkdir"), b"");
            self.push(&format!("{p}:list"), "GET", &format!("{t}/"));
            self.push(&format!("{p}:rmdir"), "DELETE", &format!("{t}?cmd=rmdir"));
            // Moves from and to the name, on items of their own.
            self.post(&format!("{p}:move-setup"), "/oddsrc", b"src");
            self.post(&format!("{p}:move-to"), &format!("/?cmd=move&current=oddsrc&new={name}"), b"");
            self.post(&format!("{p}:move-from"), &format!("/?cmd=move&current={name}&new=oddback"), b"");
            self.push(&format!("{p}:move-cleanup"), "DELETE", "/oddsrc");
            self.push(&format!("{p}:move-cleanup"), "DELETE", "/oddback");
        }
    }

    /// Each case on items of its own, so that one difference does not change the next case.
    fn moves(&mut self) {
        let p = "move";
        let cases: &[(&str, &[&str], &str)] = &[
            ("missing-current", &[], "new=mv-x"),
            ("missing-new", &["mv-a"], "current=mv-a"),
            ("missing-both", &[], ""),
            ("empty-current", &[], "current=&new=mv-x"),
            ("empty-new", &["mv-a"], "current=mv-a&new="),
            ("current-not-found", &[], "current=nothere&new=mv-x"),
            ("extra-param", &["mv-b"], "current=mv-b&new=mv-b2&foo=bar"),
            ("replace", &["mv-c", "mv-d"], "current=mv-c&new=mv-d"),
            ("same", &["mv-e"], "current=mv-e&new=mv-e"),
            ("repeated-param", &["mv-f"], "current=mv-f&current=nothere&new=mv-f2"),
            ("into-new-namespace", &["mv-g"], "current=mv-g&new=mvns/deep/mv-g"),
            ("onto-directory", &["mv-h", "mvdir/sub/x"], "current=mv-h&new=mvdir"),
            ("directory", &["mvdir2/sub/x"], "current=mvdir2&new=mvdir3"),
            ("encoded-slash", &["mvns2/mv-i"], "current=mvns2%2Fmv-i&new=mv-i"),
            ("plus-is-space", &["mv-j"], "current=mv-j&new=mv+j"),
            ("bad-current", &[], "current=../mv&new=mv-k"),
            ("bad-new", &["mv-l"], "current=mv-l&new=UP"),
            ("new-tmp", &["mv-m"], "current=mv-m&new=x.tmp"),
        ];
        for (case, setup, q) in cases {
            // A move that replaces an item gives the replaced bytes back to our quota;
            // Python's server keeps counting them (until it rescans), so every later quota
            // number would differ. That case runs without a quota (see QUOTA_NOTE).
            if *case == "replace" && self.cfg.flags.contains(&"--quota") {
                continue;
            }
            for item in *setup {
                self.post(&format!("{p}:{case}:setup"), &format!("/{item}"), format!("{item} value").as_bytes());
            }
            let amp = if q.is_empty() { "" } else { "&" };
            self.post(&format!("{p}:{case}"), &format!("/?cmd=move{amp}{q}"), b"");
        }
        self.post(&format!("{p}:with-name:setup"), "/mv-n", b"mv-n value");
        self.post(&format!("{p}:with-name"), "/ignored?cmd=move&current=mv-n&new=mv-n2", b"");
        self.push(&format!("{p}:list-root"), "GET", "/");
    }

    fn gather_defrag(&mut self) {
        self.post("gather:setup", "/a", b"0123456789");
        self.post("gather:setup", "/zz", b"abcdefghij");
        for body in GATHER_BODIES {
            self.post("gather:body", "/?cmd=gather", body.as_bytes());
        }
        self.post("gather:with-name", "/a?cmd=gather", br#"[["a", 0, 2]]"#);
        let good = br#"[["a", 0, 3], ["zz", 2, 2]]"#;
        for (case, q) in [
            ("target", "target=t1"),
            ("target-existing", "target=t1"),
            ("target-nested", "target=ns/t2"),
            ("target-bad-name", "target=../t3"),
            ("target-upper", "target=T4"),
            ("target-and-algorithm", "target=t5&algorithm=sha256"),
            ("algorithm", "algorithm=sha256"),
            ("algorithm-namespace", "algorithm=sha256&namespace=data"),
            ("algorithm-namespace-slash", "algorithm=md5&namespace=data/"),
            ("algorithm-namespace-levels", "algorithm=sha256&namespace=data&levels=2"),
            ("algorithm-levels-no-namespace", "algorithm=sha1&levels=1"),
            ("algorithm-negative-levels", "algorithm=sha1&namespace=data&levels=-1"),
            ("algorithm-blake3", "algorithm=blake3&namespace=data"),
            ("algorithm-unknown", "algorithm=nope"),
            ("algorithm-shake", "algorithm=shake_128"),
            ("namespace-only", "namespace=data"),
            ("nothing", ""),
            ("empty-target", "target="),
        ] {
            let amp = if q.is_empty() { "" } else { "&" };
            self.post(&format!("defrag:{case}"), &format!("/?cmd=defrag{amp}{q}"), good);
        }
        self.post("defrag:missing-target-no-body", "/?cmd=defrag", b"");
        for body in [r#"[]"#, r#"[["a", 0, 999]]"#, r#"not json"#, r#"[["missing", 0, 1]]"#, r#"[["a", 0]]"#, ""] {
            self.post("defrag:body", "/?cmd=defrag&target=t6", body.as_bytes());
        }
        self.push("defrag:result", "GET", "/t1");
        self.push("defrag:list-data", "GET", "/data/");
    }

    fn quota(&mut self) {
        let big = vec![b'q'; 700];
        self.post("quota:query", "/?cmd=quota", b"");
        self.post("quota:big-store", "/big1", &big);
        self.post("quota:big-store-second", "/big2", &big);
        self.post("quota:query", "/?cmd=quota", b"");
        self.post("quota:overwrite-smaller", "/big1", b"small");
        self.post("quota:big-store-again", "/big2", &big);
        self.post("quota:defrag-over", "/?cmd=defrag&target=big3", br#"[["big2", 0, 700]]"#);
        self.push("quota:delete", "DELETE", "/big2");
        self.post("quota:query", "/?cmd=quota", b"");
        self.post("quota:with-name", "/a?cmd=quota", b"");
        self.push("quota:get", "GET", "/?cmd=quota");
    }

    fn odd_requests(&mut self) {
        let p = "odd-request";
        self.post(&format!("{p}:no-cmd-no-name"), "/", b"");
        self.post(&format!("{p}:unknown-cmd"), "/?cmd=nope", b"");
        self.post(&format!("{p}:unknown-cmd-with-name"), "/unk?cmd=nope", b"stored?");
        self.push(&format!("{p}:unknown-cmd-with-name:load"), "GET", "/unk");
        self.post(&format!("{p}:upper-case-cmd"), "/ucmd?cmd=MKDIR", b"");
        self.post(&format!("{p}:empty-cmd"), "/ecmd?cmd=", b"empty cmd");
        self.post(&format!("{p}:repeated-cmd"), "/rcmd?cmd=mkdir&cmd=nope", b"");
        self.push(&format!("{p}:delete-unknown-cmd"), "DELETE", "/unk?cmd=nope");
        self.push(&format!("{p}:delete-no-name"), "DELETE", "/?cmd=");
        self.push(&format!("{p}:put"), "PUT", "/a");
        self.push(&format!("{p}:options"), "OPTIONS", "/");
        self.push(&format!("{p}:patch"), "PATCH", "/a");
        self.push(&format!("{p}:brew"), "BREW", "/a");
        self.push(&format!("{p}:absolute-form"), "GET", "http://127.0.0.1/a");
        self.push(&format!("{p}:absolute-form-list"), "GET", "http://127.0.0.1/");
        self.push(&format!("{p}:query-only-list"), "GET", "/?x=1");
        self.push(&format!("{p}:malformed-query"), "GET", "/a?%zz=1&=&&");
        self.post(&format!("{p}:post-malformed-query"), "/?cmd=quota&%zz", b"");
        self.post(&format!("{p}:store-query-junk"), "/junk?%zz", b"junk");
        self.push(&format!("{p}:list-root-query"), "GET", "/?cmd=mkdir");
        self.push_with(&format!("{p}:expect-header-ignored"), "GET", "/a", &[("X-Unknown", "1")], b"");
    }

    /// Every route once with every header variant.
    fn variants(&mut self) {
        for v in VARIANTS {
            let routes: &[(&str, &str, &str, &[u8])] = &[
                ("info", "HEAD", "/a", b""),
                ("info-root", "HEAD", "/", b""),
                ("load", "GET", "/a", b""),
                ("list", "GET", "/", b""),
                ("store", "POST", "/variant", b"variant value"),
                ("delete", "DELETE", "/nothere", b""),
                ("mkdir", "POST", "/vdir?cmd=mkdir", b""),
                ("rmdir", "DELETE", "/vdir?cmd=rmdir", b""),
                ("hash", "POST", "/a?cmd=hash", b""),
                ("quota", "POST", "/?cmd=quota", b""),
                ("move", "POST", "/?cmd=move&current=nothere&new=b", b""),
                ("gather", "POST", "/?cmd=gather", br#"[["a", 0, 1]]"#),
                ("defrag", "POST", "/?cmd=defrag&target=vt", br#"[["a", 0, 1]]"#),
                ("create", "POST", "/?cmd=create", b""),
                ("put", "PUT", "/a", b""),
            ];
            for (route, method, target, body) in routes {
                self.push_full(&format!("variant:{route}"), method, target, &[], body, *v);
            }
        }
    }

    fn destroy_and_after(&mut self) {
        self.checkpoints.push((self.reqs.len(), "store tree before destroy"));
        for v in [Variant::NoAccept, Variant::WrongAccept, Variant::WrongPassword] {
            if v.passes(self.cfg.auth.is_some()) {
                continue; // that one would destroy the store already
            }
            self.push_full("destroy", "DELETE", "/?cmd=destroy", &[], b"", v);
        }
        self.push("destroy", "DELETE", "/?cmd=destroy");
        let p = "after-destroy";
        self.push(&format!("{p}:info-root"), "HEAD", "/");
        self.push(&format!("{p}:list-root"), "GET", "/");
        self.push(&format!("{p}:load"), "GET", "/a");
        self.post(&format!("{p}:store"), "/a", b"after destroy");
        self.post(&format!("{p}:quota"), "/?cmd=quota", b"");
        self.post(&format!("{p}:mkdir-root"), "/?cmd=mkdir", b"");
        self.post(&format!("{p}:gather"), "/?cmd=gather", br#"[]"#);
        self.push(&format!("{p}:destroy-again"), "DELETE", "/?cmd=destroy");
        self.post(&format!("{p}:create"), "/?cmd=create", b"");
        self.post(&format!("{p}:store-final"), "/final", b"the end");
        self.push(&format!("{p}:info-final"), "HEAD", "/final");
        self.push(&format!("{p}:list-root-final"), "GET", "/");
    }

    /// A request Python's server cannot answer: `levels` that is not a number raises
    /// outside its error handling (over TCP it drops the connection, over stdio the
    /// process dies), so over stdio it runs in a session of its own.
    fn crash_probe() -> (&'static str, &'static str, &'static [u8]) {
        ("POST", "/?cmd=defrag&algorithm=sha256&levels=abc", b"[]")
    }
}

/// The requests for `cfg` and where to compare the trees on the way.
struct Sequence {
    reqs: Vec<Request>,
    checkpoints: Vec<(usize, &'static str)>,
}

/// The sequence for `cfg`, with `crash`: include the crash probe (TCP only).
fn sequence(cfg: &Config, crash: bool) -> Sequence {
    let mut g = Gen::new(cfg);
    match cfg.before {
        Before::Nothing => {}
        Before::Reads => g.reads("before-create"),
        Before::Everything => {
            g.reads("before-create");
            g.writes("before-create");
        }
    }
    g.create();
    g.directories();
    g.objects();
    g.a_details();
    g.odd_names();
    g.moves();
    g.gather_defrag();
    g.quota();
    g.odd_requests();
    g.variants();
    if crash {
        let (_, t, b) = Gen::crash_probe();
        g.post("crash-probe:levels-not-a-number", t, b);
        g.push("crash-probe:then-info-root", "HEAD", "/");
    }
    g.destroy_and_after();
    Sequence { reqs: g.reqs, checkpoints: g.checkpoints }
}

// ---------------------------------------------------------------------------------------
// Runs.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transport {
    Tcp,
    Stdio,
}

struct RunResult {
    diffs: Vec<Diff>,
    requests: usize,
}

fn place(cfg: &Config, t: Transport, i: usize) -> String {
    format!("{}/{:?}#{i}", cfg.name, t).to_lowercase()
}

fn tree_diffs(cfg: &Config, t: Transport, when: &str, ours: &Path, python: &Path) -> Vec<Diff> {
    tree_differences(&tree(ours), &tree(python))
        .into_iter()
        .map(|line| Diff {
            aspect: "tree",
            label: when.to_string(),
            brief: line.clone(),
            // Grouped by the top-level entry (a whole subtree usually differs for one reason).
            key: line.split([':', '/']).next().unwrap_or("").to_string(),
            place: format!("{}/{:?}", cfg.name, t).to_lowercase(),
            request: "(the whole sequence)".into(),
            ours: line.clone(),
            python: line,
        })
        .collect()
}

fn run_tcp(cfg: &Config) -> RunResult {
    let Sequence { reqs, checkpoints } = sequence(cfg, true);
    let start = |which: Impl| {
        let dir = tempfile::tempdir().unwrap();
        prepare_store(dir.path(), cfg.store);
        let backend = format!("file://{}", dir.path().join("store").display());
        RestServer::start_exe(&exe(which), dir, &backend, free_port(), cfg.flags)
    };
    let mut ours = start(Impl::Ours);
    let mut python = start(Impl::Python);
    let mut oc = TcpClient::new(ours.port);
    let mut pc = TcpClient::new(python.port);
    let mut diffs = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        for (_, when) in checkpoints.iter().filter(|(at, _)| *at == i) {
            diffs.extend(tree_diffs(cfg, Transport::Tcp, when, &ours.store_path(), &python.store_path()));
        }
        let (oa, on) = oc.send(req);
        let (pa, pn) = pc.send(req);
        let here = place(cfg, Transport::Tcp, i);
        diffs.extend(compare(req, &here, &oa, &pa, rules()));
        if on != pn {
            diffs.push(Diff {
                aspect: "connection",
                label: req.label.clone(),
                brief: String::new(),
                key: format!(
                    "no answer on the kept-alive connection, answered on a new one: Python {}, ours {}",
                    pn.silently_closed, on.silently_closed
                ),
                place: here,
                request: req.show(),
                ours: oa.show(),
                python: pa.show(),
            });
        }
    }
    stop_gracefully(&mut ours.child);
    stop_gracefully(&mut python.child);
    diffs.extend(tree_diffs(cfg, Transport::Tcp, "store tree at the end", &ours.store_path(), &python.store_path()));
    RunResult { diffs, requests: reqs.len() }
}

/// Set to another build of our `borgstore-server-rest` to compare that one instead (e.g. an
/// older commit's, to see which differences a change removed).
const OURS_OVERRIDE: &str = "BORGSTORE_DIFFERENTIAL_OURS";

fn exe(which: Impl) -> PathBuf {
    match which {
        Impl::Ours => {
            std::env::var_os(OURS_OVERRIDE).map(PathBuf::from).unwrap_or_else(|| binary("borgstore-server-rest"))
        }
        Impl::Python => bin_dir(Version::V070).join("borgstore-server-rest"),
    }
}

fn stdio_args(cfg: &Config) -> Vec<String> {
    let mut args: Vec<String> = ["--stdio", "--backend", "FILE:store"].iter().map(|s| s.to_string()).collect();
    args.extend(cfg.flags.iter().map(|s| s.to_string()));
    args
}

/// Start both servers' stdio sessions in their directories.
fn sessions(cfg: &Config, ours: &Path, python: &Path) -> (StdioSession, StdioSession) {
    let args = stdio_args(cfg);
    (
        StdioSession::start(&exe(Impl::Ours), &args, ours, &ours.join("server.log")),
        StdioSession::start(&exe(Impl::Python), &args, python, &python.join("server.log")),
    )
}

fn restart(which: Impl, args: &[String], dir: &Path) -> StdioSession {
    StdioSession::start(&exe(which), args, dir, &dir.join("server.log"))
}

/// Send raw `bytes` to both sessions, close their stdin and compare every answer that
/// comes out (all requests in `bytes` are GET/POST, so answers are framed by length).
fn probe(cfg: &Config, what: &str, bytes: &[u8], ours_dir: &Path, python_dir: &Path) -> Vec<Diff> {
    let (mut o, mut p) = sessions(cfg, ours_dir, python_dir);
    o.write_raw(bytes);
    p.write_raw(bytes);
    let (oans, o_status) = finish_collect(o);
    let (pans, p_status) = finish_collect(p);
    let req = Request {
        label: format!("stdio-{what}"),
        method: "RAW".into(),
        target: String::new(),
        headers: vec![],
        body: bytes.to_vec(),
        host: false,
        content_length: false,
        fresh_connection: false,
    };
    let mut diffs = Vec::new();
    let here = format!("{}/stdio-{what}", cfg.name);
    let answered = |v: &Vec<Outcome>| v.iter().filter(|a| matches!(a, Outcome::Answered(_))).count();
    if answered(&oans) != answered(&pans) {
        diffs.push(Diff {
            aspect: "stdio",
            label: req.label.clone(),
            key: format!("number of answers: Python {}, ours {}", answered(&pans), answered(&oans)),
            brief: String::new(),
            place: here.clone(),
            request: req.show(),
            ours: oans.iter().map(Outcome::show).collect::<Vec<_>>().join("  ||  "),
            python: pans.iter().map(Outcome::show).collect::<Vec<_>>().join("  ||  "),
        });
    }
    for (i, (oa, pa)) in oans.iter().zip(pans.iter()).enumerate() {
        diffs.extend(compare(&req, &format!("{here}#{i}"), oa, pa, rules()));
    }
    if o_status != p_status {
        diffs.push(Diff {
            aspect: "stdio",
            label: req.label.clone(),
            key: format!("exit status at EOF: Python {p_status}, ours {o_status}"),
            brief: String::new(),
            place: here,
            request: req.show(),
            ours: o_status,
            python: p_status,
        });
    }
    diffs
}

/// Close stdin, read every remaining answer, and say how the process ended.
fn finish_collect(s: StdioSession) -> (Vec<Outcome>, String) {
    let end = s.finish();
    let mut wire = borgstore_tests::differential::Wire::new(std::io::Cursor::new(end.trailing));
    let mut answers = Vec::new();
    while let Outcome::Answered(a) = wire.read_answer(false) {
        answers.push(Outcome::Answered(a));
    }
    let status = match end.status {
        Some(s) if s.success() => "success".to_string(),
        Some(s) => format!("failure ({s})"),
        None => "still running".to_string(),
    };
    (answers, status)
}

fn auth_lines(cfg: &Config) -> String {
    Variant::Normal.headers(cfg.auth).iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect()
}

fn run_stdio(cfg: &Config) -> RunResult {
    let Sequence { mut reqs, checkpoints } = sequence(cfg, false);
    for (i, r) in reqs.iter_mut().enumerate() {
        // Python's stdio client sends no Host header; send it on every other request.
        r.host = i % 2 == 0;
        if r.fresh_connection {
            // One connection for the whole session: a body Python leaves unread would be
            // taken for the next request (the framing probe shows that once).
            r.body.clear();
            r.fresh_connection = false;
        }
    }
    let odir = tempfile::tempdir().unwrap();
    let pdir = tempfile::tempdir().unwrap();
    prepare_store(odir.path(), cfg.store);
    prepare_store(pdir.path(), cfg.store);
    let (mut o, mut p) = sessions(cfg, odir.path(), pdir.path());
    let mut diffs = Vec::new();
    let args = stdio_args(cfg);
    for (i, req) in reqs.iter().enumerate() {
        for (_, when) in checkpoints.iter().filter(|(at, _)| *at == i) {
            let (os, ps) = (odir.path().join("store"), pdir.path().join("store"));
            diffs.extend(tree_diffs(cfg, Transport::Stdio, when, &os, &ps));
        }
        let oa = o.send(req);
        let pa = p.send(req);
        diffs.extend(compare(req, &place(cfg, Transport::Stdio, i), &oa, &pa, rules()));
        // A session that lost step (no answer) is over: the next requests go to a new
        // session on the same store, so that one broken answer is reported once.
        if matches!(oa, Outcome::NoAnswer(_)) {
            let _ = std::mem::replace(&mut o, restart(Impl::Ours, &args, odir.path())).finish();
        }
        if matches!(pa, Outcome::NoAnswer(_)) {
            let _ = std::mem::replace(&mut p, restart(Impl::Python, &args, pdir.path())).finish();
        }
    }
    let (o_rest, o_status) = finish_collect(o);
    let (p_rest, p_status) = finish_collect(p);
    let mut end_diff = |key: String, ours: String, python: String| {
        diffs.push(Diff {
            aspect: "stdio",
            label: "stdio-session-end".into(),
            key,
            brief: String::new(),
            place: format!("{}/stdio", cfg.name),
            request: "(EOF on stdin after the sequence)".into(),
            ours,
            python,
        })
    };
    if o_status != p_status {
        end_diff(format!("exit status at EOF: Python {p_status}, ours {o_status}"), o_status.clone(), p_status.clone());
    }
    if !o_rest.is_empty() || !p_rest.is_empty() {
        let show = |v: &Vec<Outcome>| v.iter().map(Outcome::show).collect::<Vec<_>>().join("  ||  ");
        end_diff("output after the last answer".into(), show(&o_rest), show(&p_rest));
    }
    let auth = auth_lines(cfg);
    // Framing: a refused request with a body Python does not read, then a good request.
    let framing = format!(
        "POST /framed HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nAccept: {ACCEPT}\r\n{auth}\r\n"
    );
    diffs.extend(probe(cfg, "framing", framing.as_bytes(), odir.path(), pdir.path()));
    // Crash: a request Python's server cannot answer, then a good request.
    let (m, t, b) = Gen::crash_probe();
    let crash = format!(
        "{m} {t} HTTP/1.1\r\nAccept: {ACCEPT}\r\n{auth}Content-Length: {}\r\n\r\n{}GET / HTTP/1.1\r\nAccept: {ACCEPT}\r\n{auth}\r\n",
        b.len(),
        String::from_utf8_lossy(b)
    );
    diffs.extend(probe(cfg, "crash", crash.as_bytes(), odir.path(), pdir.path()));
    let (os, ps) = (odir.path().join("store"), pdir.path().join("store"));
    diffs.extend(tree_diffs(cfg, Transport::Stdio, "store tree at the end", &os, &ps));
    RunResult { diffs, requests: reqs.len() + 4 }
}

// ---------------------------------------------------------------------------------------
// The report.

/// Which runs: "tcp: all; stdio: plain, auth".
fn runs(ds: &[&Diff]) -> String {
    let mut out = Vec::new();
    for t in ["tcp", "stdio"] {
        let mut cfgs: Vec<&str> = CONFIGS
            .iter()
            .map(|c| c.name)
            .filter(|n| ds.iter().any(|d| d.place.starts_with(&format!("{n}/{t}"))))
            .collect();
        cfgs.dedup();
        match cfgs.len() {
            0 => {}
            n if n == CONFIGS.len() => out.push(format!("{t}: all")),
            _ => out.push(format!("{t}: {}", cfgs.join(", "))),
        }
    }
    out.join("; ")
}

/// Grouped findings: one per (aspect, key), with the request templates it shows in and
/// `examples` examples; `all`: list every instance as well.
fn report(diffs: &[Diff], examples: usize, all: bool) -> String {
    let mut findings: BTreeMap<(&str, &str), BTreeMap<&str, Vec<&Diff>>> = BTreeMap::new();
    for d in diffs {
        findings.entry((d.aspect, &d.key)).or_default().entry(&d.label).or_default().push(d);
    }
    let mut out = format!("{} differences, {} findings (aspect + what differs):\n", diffs.len(), findings.len());
    for ((aspect, key), labels) in &findings {
        let every: Vec<&Diff> = labels.values().flatten().copied().collect();
        out.push_str(&format!("\n### [{aspect}] {key}\n    {}x; {}\n", every.len(), runs(&every)));
        let listed: Vec<String> = labels.iter().map(|(l, ds)| format!("{l} ({})", ds.len())).collect();
        let shown = if all { listed.len() } else { 12 };
        out.push_str(&format!("    in: {}", listed.iter().take(shown).cloned().collect::<Vec<_>>().join(", ")));
        if listed.len() > shown {
            out.push_str(&format!(", and {} more", listed.len() - shown));
        }
        out.push('\n');
        // Examples from different request families (the label up to its first ':').
        let mut families = Vec::new();
        for (label, ds) in labels {
            let family = label.split([':', ' ']).next().unwrap_or(label);
            if families.contains(&family) || families.len() == examples {
                continue;
            }
            families.push(family);
            let d = ds[0];
            out.push_str(&format!("    e.g. {label} @ {}\n", d.place));
            out.push_str(&format!("      request: {}\n", d.request));
            out.push_str(&format!("      python:  {}\n", d.python));
            out.push_str(&format!("      ours:    {}\n", d.ours));
        }
        if all {
            for d in &every {
                out.push_str(&format!("    - {} {}: {}\n        {}\n", d.place, d.label, d.request, d.brief));
            }
        }
    }
    out
}

/// Runs at a time: the servers mostly wait on each other, so more than the 2 cores.
const WORKERS: usize = 6;

fn python_venv_present() {
    // Panics with how to create it when missing (never a skip).
    let _ = bin_dir(Version::V070);
}

#[test]
fn ours_answers_like_python_over_tcp_and_stdio() {
    python_venv_present();
    let started = Instant::now();
    let jobs: Vec<(&Config, Transport)> =
        CONFIGS.iter().flat_map(|c| [(c, Transport::Tcp), (c, Transport::Stdio)]).collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(String, RunResult)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((cfg, t)) = jobs.get(i) else { break };
                let r = match t {
                    Transport::Tcp => run_tcp(cfg),
                    Transport::Stdio => run_stdio(cfg),
                };
                results.lock().unwrap().push((format!("{}/{:?}", cfg.name, t), r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let total: usize = results.iter().map(|(_, r)| r.requests).sum();
    let all: Vec<Diff> = results.iter().flat_map(|(_, r)| r.diffs.iter().cloned()).collect();
    let (accepted, remaining): (Vec<Diff>, Vec<Diff>) = all.into_iter().partition(allowed);
    let per_run: Vec<String> = results.iter().map(|(n, r)| format!("{n}: {}", r.requests)).collect();
    eprintln!(
        "rest_differential: {} runs, {total} requests in all (each to both servers) in {:.1?} ({})",
        results.len(),
        started.elapsed(),
        per_run.join(", "),
    );
    eprintln!("accepted differences ({} instances):", accepted.len());
    for a in ALLOWED {
        match a {
            Allowed::Normalise(_, reason) => eprintln!("  - (normalised) {reason}"),
            Allowed::Diff { aspect, label, key, reason } => {
                let n = accepted
                    .iter()
                    .filter(|d| d.aspect == *aspect && d.label.starts_with(label) && d.key.contains(key))
                    .count();
                eprintln!("  - [{aspect}] {label}* {key:?}: {n}x: {reason}");
            }
        }
    }
    if !remaining.is_empty() {
        let path = std::env::temp_dir().join("rest_differential_report.txt");
        let _ = std::fs::write(&path, report(&remaining, 6, true));
        panic!(
            "our borgstore-server-rest differs from Python borgstore 0.7.0's (every instance: {}):\n{}",
            path.display(),
            report(&remaining, 3, false)
        );
    }
}
