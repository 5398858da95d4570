//! Drop-in fidelity of our REST server (issue 11): each finding where ours differed from
//! Python borgstore 0.7.0's server, as a test that failed before the fix. The complete,
//! generated comparison is `rest_differential.rs`.

use borgstore_tests::daemon::{binary, Daemon};
use borgstore_tests::python::{python, Version};
use borgstore_tests::rest::{free_port, raw_request, request, wait_port, Impl, RestServer, ACCEPT};
use std::io::Write;
use std::process::{Command, Stdio};

/// The header names of a raw response head, as sent.
fn header_names(head: &str) -> Vec<String> {
    head.split("\r\n").skip(1).filter_map(|l| l.split_once(':').map(|(k, _)| k.to_string())).collect()
}

/// Send `requests` one at a time over one connection (`w`, `r`), reading each answer
/// before the next request: every answer's head (and body) as text.
fn lockstep(w: &mut impl Write, r: &mut impl std::io::BufRead, requests: &[String]) -> String {
    let mut all = String::new();
    for req in requests {
        w.write_all(req.as_bytes()).unwrap();
        w.flush().unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                panic!("the connection ended before the answer to {req:?}; so far:\n{all}{head}");
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len: usize = head
            .split("\r\n")
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
            .map(|(_, v)| v.trim().parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; if req.starts_with("HEAD ") { 0 } else { len }];
        r.read_exact(&mut body).unwrap();
        all.push_str(&head);
        all.push_str(&String::from_utf8_lossy(&body));
    }
    all
}

const CANONICAL: [&str; 7] = [
    "Content-Length",
    "Content-Type",
    "Cache-Control",
    "X-BorgStore-Is-Directory",
    "X-BorgStore-Atime",
    "X-BorgStore-Mtime",
    "WWW-Authenticate",
];

/// Every header name of `answer` that is one of ours is in canonical case, and the ones
/// in `want` are there.
fn assert_canonical(answer: &str, want: &[&str], what: &str) {
    let mut seen = Vec::new();
    for head in answer.split("HTTP/1.1 ").filter(|h| !h.is_empty()) {
        let head = head.split("\r\n\r\n").next().unwrap_or("");
        for name in header_names(&format!("x\r\n{head}")) {
            if let Some(c) = CANONICAL.iter().find(|c| c.eq_ignore_ascii_case(&name)) {
                assert_eq!(&name, c, "{what}: header name not in canonical case in\n{answer}");
            }
            seen.push(name);
        }
    }
    for w in want {
        assert!(seen.iter().any(|s| s == w), "{what}: no {w} in\n{answer}");
    }
}

/// A create, then a store, info, load, listing, a load without credentials (401) and a
/// missing item, under `prefix`, with `auth` headers.
fn sequence(prefix: &str, auth: &str, host: bool) -> Vec<String> {
    let host = if host { "Host: x\r\n" } else { "" };
    let a = format!("{host}Accept: {ACCEPT}\r\n{auth}");
    vec![
        format!("POST {prefix}/?cmd=create HTTP/1.1\r\n{a}Content-Length: 0\r\n\r\n"),
        format!("POST {prefix}/data/x HTTP/1.1\r\n{a}Content-Length: 5\r\n\r\nhello"),
        format!("HEAD {prefix}/data/x HTTP/1.1\r\n{a}\r\n"),
        format!("GET {prefix}/data/x HTTP/1.1\r\n{a}\r\n"),
        format!("GET {prefix}/data/ HTTP/1.1\r\n{a}\r\n"),
        format!("GET {prefix}/data/x HTTP/1.1\r\n{host}Accept: {ACCEPT}\r\n\r\n"),
        format!("GET {prefix}/data/missing HTTP/1.1\r\n{a}\r\n"),
    ]
}

#[test]
fn header_names_are_canonical_on_tcp_unix_socket_and_stdio() {
    let auth = "Authorization: Basic dTpw\r\n"; // u:p
                                                // borgstore-server-rest on TCP, with credentials (for a 401 and its challenge).
    let s = RestServer::start(Impl::Ours, &["--username", "u", "--password", "p"]);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let answer = lockstep(&mut &tcp, &mut std::io::BufReader::new(&tcp), &sequence("", auth, true));
    assert_canonical(&answer, &CANONICAL, "borgstore-server-rest on TCP");
    assert!(answer.contains("\r\n\r\nhello"), "the body after a canonical head: {answer}");

    // borgstored on its REST Unix socket.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("s=file://{}/s", dir.path().display());
    let sock = dir.path().join("rest.sock");
    let rest = format!("127.0.0.1:{port}");
    let d = Daemon::start_in(
        dir,
        &["--store", &store, "--rest-socket", sock.to_str().unwrap(), "--rest", &rest, "--rest-auth", "s=u:p"],
        &[],
    );
    wait_port(port, "borgstored REST", &d.log);
    let unix = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    unix.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let answer = lockstep(&mut &unix, &mut std::io::BufReader::new(&unix), &sequence("/s", auth, true));
    assert_canonical(&answer, &CANONICAL, "borgstored on its REST socket");

    // --stdio: raw HTTP on stdin; Python's stdio transport sends no Host header.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary("borgstore-server-rest"))
        .args(["--stdio", "--backend"])
        .arg(format!("FILE:{}", dir.path().join("store").display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let answer = lockstep(&mut stdin, &mut stdout, &sequence("", "", false)[..5]);
    assert_canonical(&answer, &CANONICAL[..6], "--stdio");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_quota_store_is_created_on_an_existing_empty_directory() {
    // A hoster made the directory; the daemon opened it (and wrote its usage file) before
    // the client's create.
    for which in [Impl::Ours, Impl::Python] {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let url = format!("file://{}", store.display());
        let s = RestServer::start_with_backend(which, tempfile::tempdir().unwrap(), &url, &["--quota", "1000"]);
        let script = format!(
            r#"
from borgstore.store import Store
s = Store(url="{url}", config={{"config/": {{"levels": [0]}}, "data/": {{"levels": [2]}}}})
s.create()
with s:
    q = s.quota()
    assert q == {{"limit": 1000, "usage": 0}}, q
    s.store("config/x", b"12345")
    assert s.quota()["usage"] == 5, s.quota()
print("ok")
"#,
            url = s.url(None)
        );
        let out = Command::new(python(Version::V070)).arg("-c").arg(&script).output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
            "{which:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A store with something in it is still refused.
        assert_eq!(request(s.port, "POST", "/?cmd=create", None, &[], b"").status, 409, "{which:?}");
    }
}

#[test]
fn the_root_namespace_levels_are_created_over_rest() {
    let s = RestServer::start(Impl::Ours, &[]);
    let script = format!(
        r#"
from borgstore.store import Store
s = Store(url="{}", config={{"": {{"levels": [0]}}}})
s.create()
s.set_levels({{"": [0]}}, create=True)
with s:
    s.store("x", b"root item")
    assert s.load("x") == b"root item"
print("ok")
"#,
        s.url(None)
    );
    let out = Command::new(python(Version::V070)).arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(request(s.port, "POST", "/?cmd=mkdir", None, &[], b"").status, 200);
}

#[test]
fn error_texts_are_pythons() {
    let s = RestServer::start(Impl::Ours, &["--quota", "100"]);
    assert_eq!(request(s.port, "POST", "/?cmd=create", None, &[], b"").status, 200);
    assert_eq!(request(s.port, "POST", "/data/x", None, &[], b"0123456789").status, 200);
    let gather = br#"[["data/x", 5, 10]]"#;
    for (method, target, body, status, text) in [
        ("POST", "/data/x?cmd=hash&algorithm=crc32", &b""[..], 400, "Unsupported hash algorithm: crc32"),
        ("POST", "/?cmd=hash", b"", 400, "Missing name for hash"),
        ("POST", "/?cmd=defrag", b"[]", 400, "Missing target or algorithm for defrag"),
        ("POST", "/?cmd=gather", gather, 416, "Read range error from data/x (requested 10 bytes at offset 5, got 5)"),
        ("POST", "/?cmd=move&current=data/x", b"", 400, "Missing current or new name for move"),
        ("POST", "/", b"", 400, "Bad Request"),
        ("DELETE", "/", b"", 400, "Bad Request"),
        ("POST", "/data/y", &[0u8; 200], 507, "Quota exceeded: 210 > 100"),
        ("GET", "/data/missing", b"", 404, "data/missing"),
        ("POST", "/DATA/x", b"v", 400, "name must be lowercase, but got: DATA/x"),
        ("POST", "/data/x.tmp", b"v", 400, "name must not end with .tmp, but got: data/x.tmp"),
        // As Python's server: a percent escape is part of the name, not decoded.
        ("POST", "/data/a%20b", b"v", 200, ""),
        ("POST", "/?cmd=create", b"", 409, "posixfs storage base path is not empty: [STORAGE_BASE]"),
    ] {
        let r = request(s.port, method, target, None, &[], body);
        assert_eq!((r.status, r.text().as_str()), (status, text), "{method} {target}");
    }
    assert_eq!(std::fs::read(s.store_path().join("data/a%20b")).unwrap(), b"v");
    // A raw blank cannot travel in a request line; a raw non-ASCII byte can, and is read
    // as Latin-1, as Python's server reads it.
    let raw = raw_request(
        s.port,
        "GET /data/\u{e9} HTTP/1.1\r\nHost: x\r\nAccept: application/vnd.x.borgstore.rest.v1\r\nConnection: close\r\n\r\n"
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(
        (raw.status, raw.text().as_str()),
        (400, "name must encode to plain ascii, but failed with: data/\u{c3}\u{a9}")
    );
    let raw = raw_request(s.port, b"GET /data/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!((raw.status, raw.text().as_str()), (406, "Not Acceptable: unsupported or missing Accept header"));
    // Before create (a fresh store): Python's words, the path replaced as Python does.
    let fresh = RestServer::start(Impl::Ours, &[]);
    let r = request(fresh.port, "GET", "/data/x", None, &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (410, "posixfs storage base path does not exist or is not a directory: [STORAGE_BASE]")
    );
    let perm = RestServer::start(Impl::Ours, &["--permissions", r#"{"": "lr"}"#]);
    let r = request(perm.port, "POST", "/?cmd=create", None, &[], b"");
    assert_eq!((r.status, r.text().as_str()), (403, "One of permissions 'wW' required for ''"));
}

#[test]
fn listings_and_quota_are_formatted_as_python_formats_them() {
    let s = RestServer::start(Impl::Ours, &["--quota", "1000"]);
    assert_eq!(request(s.port, "POST", "/?cmd=create", None, &[], b"").status, 200);
    assert_eq!(request(s.port, "POST", "/data/x", None, &[], b"12345").status, 200);
    let q = request(s.port, "POST", "/?cmd=quota", None, &[], b"");
    assert_eq!(q.text(), r#"{"limit": 1000, "usage": 5}"#);
    let l = request(s.port, "GET", "/data/", None, &[], b"").text();
    // json.dumps(items, indent=2): keys in Python's order, two-space indent.
    assert!(
        l.starts_with("[\n  {\n    \"name\": \"x\",\n    \"size\": 5,\n    \"directory\": false,\n    \"atime\": "),
        "{l}"
    );
    assert!(l.ends_with("\n  }\n]"), "{l}");
    assert_eq!(request(s.port, "GET", "/config/", None, &[], b"").status, 404);
    assert_eq!(request(s.port, "DELETE", "/data/x", None, &[], b"").status, 200);
    assert_eq!(request(s.port, "GET", "/data/", None, &[], b"").text(), "[]");
}

#[test]
fn borg_permission_modes_cover_the_current_layout_too() {
    // Seed a store in borg's current layout (packs/, index/) and serve it no-delete.
    let data = tempfile::tempdir().unwrap();
    let url = format!("file://{}", data.path().join("store").display());
    {
        let seed = RestServer::start_with_backend(Impl::Ours, tempfile::tempdir().unwrap(), &url, &[]);
        assert_eq!(request(seed.port, "POST", "/?cmd=create", None, &[], b"").status, 200);
        for name in ["packs/00/0000aa", "index/00aa", "config/manifest", "data/00/00/0000bb"] {
            assert_eq!(request(seed.port, "POST", &format!("/{name}"), None, &[], b"seed").status, 200, "{name}");
        }
    }
    let s = RestServer::start_with_backend(
        Impl::Ours,
        tempfile::tempdir().unwrap(),
        &url,
        &["--permissions", "borgbackup-no-delete"],
    );
    let st = |m: &str, t: &str, b: &[u8]| request(s.port, m, t, None, &[], b).status;
    assert_eq!(st("POST", "/packs/00/0000cc", b"new pack"), 200, "new packs may be written");
    assert_eq!(st("POST", "/packs/00/0000aa", b"overwrite"), 403);
    assert_eq!(st("DELETE", "/packs/00/0000aa", b""), 403);
    assert_eq!(st("POST", "/index/00aa", b"merged index"), 200, "indexes may be replaced (W)");
    assert_eq!(st("DELETE", "/index/00aa", b""), 200, "and deleted (D)");
    assert_eq!(st("POST", "/data/00/00/0000dd", b"older layout"), 200);
    assert_eq!(st("DELETE", "/data/00/00/0000bb", b""), 403);
    assert!(data.path().join("store/packs/00/0000aa").exists());
}
