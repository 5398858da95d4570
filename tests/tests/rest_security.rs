//! REST front end security and robustness (issue 4 point 5), against our
//! `borgstore-server-rest` with raw HTTP requests: authentication, the permission
//! shortcuts, quota, path traversal, oversize and malformed requests, hash verification.
//! Every test also checks that nothing changed that should not have, and that no error
//! body shows the storage path.

use borgstore_tests::rest::{raw_request, request, Impl, Response, RestServer};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;

const AUTH: Option<(&str, &str)> = Some(("user", "s3cret"));

fn files_under(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                out.insert(p.strip_prefix(root).unwrap().display().to_string());
                if p.is_dir() {
                    walk(root, &p, out);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// Common checks on every response: the no-cache header and no path leak.
fn checked(server: &RestServer, r: Response) -> Response {
    assert_eq!(
        r.header("cache-control"),
        Some("no-store, no-cache, must-revalidate, max-age=0"),
        "status {} without Cache-Control",
        r.status
    );
    let root = server.dir.path().display().to_string();
    assert!(!r.text().contains(&root), "response leaks the storage path: {}", r.text());
    r
}

fn req(s: &RestServer, method: &str, target: &str, body: &[u8]) -> Response {
    checked(s, request(s.port, method, target, AUTH, &[], body))
}

fn create(s: &RestServer) {
    assert_eq!(req(s, "POST", "/?cmd=create", b"").status, 200);
}

#[test]
fn accept_header_is_required() {
    let s = RestServer::start(Impl::Ours, &[]);
    let raw = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let r = checked(&s, raw_request(s.port, raw).unwrap());
    assert_eq!(r.status, 406);
    let r = checked(
        &s,
        raw_request(s.port, b"GET /x HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n").unwrap(),
    );
    assert_eq!(r.status, 406);
}

#[test]
fn wrong_or_missing_credentials_get_401_and_change_nothing() {
    let mut s = RestServer::start(Impl::Ours, &["--username", "user", "--password", "s3cret"]);
    create(&s);
    assert_eq!(req(&s, "POST", "/config/keep", b"original").status, 200);
    let before = files_under(&s.store_path());
    for auth in [None, Some(("user", "wrong")), Some(("wrong", "s3cret")), Some(("user", "")), Some(("", ""))] {
        for (method, target, body) in [
            ("POST", "/config/keep", &b"overwritten"[..]),
            ("POST", "/config/new", b"new"),
            ("DELETE", "/config/keep", b""),
            ("DELETE", "/?cmd=destroy", b""),
            ("POST", "/?cmd=move&current=config/keep&new=config/moved", b""),
            ("GET", "/config/keep", b""),
            ("GET", "/config/", b""),
            ("HEAD", "/config/keep", b""),
        ] {
            let r = checked(&s, request(s.port, method, target, auth, &[], body));
            assert_eq!(r.status, 401, "{method} {target} with {auth:?}");
            if method != "HEAD" {
                assert_eq!(r.header("www-authenticate"), Some(r#"Basic realm="BorgStore REST Server""#));
            }
        }
    }
    // A garbled Authorization header is just as unauthorized.
    for bad in ["Basic", "Basic !!!!", "Bearer abc", "Basic dXNlcg=="] {
        let r = checked(&s, request(s.port, "GET", "/config/keep", None, &[("Authorization", bad)], b""));
        assert_eq!(r.status, 401, "{bad}");
    }
    assert_eq!(files_under(&s.store_path()), before);
    assert_eq!(std::fs::read(s.store_path().join("config/keep")).unwrap(), b"original");
    assert_eq!(req(&s, "GET", "/config/keep", b"").body, b"original");
    assert!(s.alive());
}

/// Seed a store with an unrestricted server, then serve it with `permissions`.
fn restricted(permissions: &str) -> (RestServer, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let url = format!("file://{}", data.path().join("store").display());
    {
        let seed = RestServer::start_with_backend(Impl::Ours, tempfile::tempdir().unwrap(), &url, &[]);
        assert_eq!(request(seed.port, "POST", "/?cmd=create", None, &[], b"").status, 200);
        for name in ["config/manifest", "data/00/0000aa", "keys/repokey", "archives/a1", "locks/l1", "cache/c1"] {
            assert_eq!(request(seed.port, "POST", &format!("/{name}"), None, &[], b"seed").status, 200, "{name}");
        }
    }
    let s =
        RestServer::start_with_backend(Impl::Ours, tempfile::tempdir().unwrap(), &url, &["--permissions", permissions]);
    (s, data)
}

fn status(s: &RestServer, method: &str, target: &str, body: &[u8]) -> u16 {
    let r = checked(s, request(s.port, method, target, None, &[], body));
    assert!(r.status == 200 || r.status == 206 || r.status >= 400, "{method} {target}: {}", r.status);
    r.status
}

#[test]
fn permission_shortcuts_are_enforced() {
    // borgbackup-no-delete: no delete and no overwrite of data; new data is fine.
    let (s, data) = restricted("borgbackup-no-delete");
    let store = data.path().join("store");
    assert_eq!(status(&s, "DELETE", "/data/00/0000aa", b""), 403);
    assert_eq!(status(&s, "POST", "/data/00/0000aa", b"overwrite"), 403);
    assert_eq!(status(&s, "POST", "/?cmd=move&current=data/00/0000aa&new=data/00/0000aa.del", b""), 403);
    assert_eq!(std::fs::read(store.join("data/00/0000aa")).unwrap(), b"seed");
    assert_eq!(status(&s, "POST", "/data/00/0000bb", b"new"), 200);
    assert_eq!(status(&s, "GET", "/data/00/0000aa", b""), 200);
    assert_eq!(status(&s, "POST", "/config/manifest", b"updated manifest"), 200, "config is lrW");
    assert_eq!(status(&s, "DELETE", "/locks/l1", b""), 200, "locks are lrwD");
    assert_eq!(status(&s, "POST", "/keys/repokey", b"evil"), 403);
    assert_eq!(status(&s, "DELETE", "/?cmd=destroy", b""), 403);
    assert!(store.join("data/00/0000aa").exists());
    drop(s);

    // borgbackup-write-only: data can be added but not read back.
    let (s, data) = restricted("borgbackup-write-only");
    assert_eq!(status(&s, "GET", "/data/00/0000aa", b""), 403);
    assert_eq!(status(&s, "POST", "/?cmd=hash&algorithm=sha256", b""), 400, "hash needs a name");
    assert_eq!(status(&s, "POST", "/data/00/0000aa?cmd=hash", b""), 403);
    assert_eq!(status(&s, "POST", "/data/00/0000cc", b"new"), 200);
    assert_eq!(status(&s, "POST", "/data/00/0000aa", b"overwrite"), 403);
    assert_eq!(status(&s, "GET", "/keys/repokey", b""), 200);
    assert_eq!(status(&s, "GET", "/data/", b""), 200, "listing is allowed (l)");
    assert_eq!(std::fs::read(data.path().join("store/data/00/0000aa")).unwrap(), b"seed");
    drop(s);

    // borgbackup-read-only: reads only, except the lock directory.
    let (s, data) = restricted("borgbackup-read-only");
    assert_eq!(status(&s, "POST", "/data/00/0000dd", b"new"), 403);
    assert_eq!(status(&s, "DELETE", "/archives/a1", b""), 403);
    assert_eq!(status(&s, "POST", "/config/manifest", b"x"), 403);
    assert_eq!(status(&s, "GET", "/data/00/0000aa", b""), 200);
    assert_eq!(status(&s, "POST", "/locks/l2", b"lock"), 200);
    assert_eq!(status(&s, "DELETE", "/locks/l2", b""), 200);
    assert!(!data.path().join("store/data/00/0000dd").exists());
    drop(s);

    // borgbackup-all: no restriction.
    let (s, _data) = restricted("borgbackup-all");
    assert_eq!(status(&s, "DELETE", "/data/00/0000aa", b""), 200);
    assert_eq!(status(&s, "POST", "/keys/repokey", b"new key"), 200);

    // A JSON map works too; a bad value is a startup error, not a silent default.
    let (s, _data) = restricted(r#"{"": "lr"}"#);
    assert_eq!(status(&s, "POST", "/config/x", b"x"), 403);
    let out = std::process::Command::new(borgstore_tests::daemon::binary("borgstore-server-rest"))
        .args(["--backend", "file:///tmp/never-created", "--permissions", "borgbackup-everything"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --permissions"));
}

#[test]
fn quota_exceeded_is_507_and_writes_nothing() {
    let s = RestServer::start(Impl::Ours, &["--quota", "1000"]);
    create(&s);
    assert_eq!(req(&s, "POST", "/data/a", &[1u8; 600]).status, 200);
    let r = req(&s, "POST", "/data/b", &[2u8; 600]);
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(!s.store_path().join("data/b").exists());
    assert!(files_under(&s.store_path().join("data")).iter().all(|f| !f.ends_with(".tmp")));
    let q: serde_json::Value = serde_json::from_slice(&req(&s, "POST", "/?cmd=quota", b"").body).unwrap();
    assert_eq!(q, serde_json::json!({"limit": 1000, "usage": 600}));
    // Overwriting within the quota is fine (the old size is given back).
    assert_eq!(req(&s, "POST", "/data/a", &[3u8; 900]).status, 200);
}

#[test]
fn traversal_attempts_are_400_and_touch_nothing_outside() {
    let mut s = RestServer::start(Impl::Ours, &[]);
    create(&s);
    assert_eq!(req(&s, "POST", "/data/inside", b"x").status, 200);
    std::fs::write(s.dir.path().join("outside"), b"precious").unwrap();
    let before = files_under(s.dir.path());
    let long = format!("/data/{}", "a".repeat(200));
    let targets = [
        "/../outside",
        "/data/../../outside",
        "/data/..%5c..%5coutside",
        "/data/%5c..%5coutside",
        "/DATA/x",
        "/data/x.tmp",
        "/data/x.hid",
        "/data/./x",
        "/data//x",
        long.as_str(),
    ];
    for t in targets {
        for method in ["POST", "GET", "DELETE", "HEAD"] {
            let r = req(&s, method, t, b"evil");
            assert_eq!(r.status, 400, "{method} {t}: {} {}", r.status, r.text());
        }
        let move_target = format!("/?cmd=move&current=data/inside&new={}", &t[1..]);
        assert_eq!(req(&s, "POST", &move_target, b"").status, 400, "move to {t}");
        let move_source = format!("/?cmd=move&current={}&new=data/moved", &t[1..]);
        assert_eq!(req(&s, "POST", &move_source, b"").status, 400, "move from {t}");
        if !t.contains('%') {
            // JSON bodies are not URL-decoded: only the literal attempts apply there.
            let gather = serde_json::json!([[&t[1..], 0, 1]]).to_string();
            assert_eq!(req(&s, "POST", "/?cmd=gather", gather.as_bytes()).status, 400, "gather {t}");
        }
    }
    // Percent escapes are not decoded (as in Python's server): each is a literal name
    // inside the store, never a way out of it.
    for (t, inside) in [
        ("/%2e%2e/outside", "%2e%2e/outside"),
        ("/data/%2E%2E/%2e%2e/outside", "data/%2E%2E/%2e%2e/outside"),
        ("/%2e%2e%2foutside", "%2e%2e%2foutside"),
        ("/data/a%00b", "data/a%00b"),
        ("/data/%ff%fe", "data/%ff%fe"),
    ] {
        let status = req(&s, "POST", t, b"literal").status;
        if t.bytes().any(|b| b.is_ascii_uppercase()) {
            assert_eq!(status, 400, "{t}: upper-case letters are refused as in any name");
            continue;
        }
        assert_eq!(status, 200, "{t}");
        assert_eq!(std::fs::read(s.store_path().join(inside)).unwrap(), b"literal", "{t}");
        assert_eq!(req(&s, "DELETE", t, b"").status, 200, "{t}");
        let _ = std::fs::remove_dir(s.store_path().join(inside).parent().unwrap());
    }
    // Extra slashes around a name are dropped, as Python's server drops them: these
    // address names inside the store, never the absolute paths they look like.
    let stored = files_under(s.dir.path());
    for (t, inside) in
        [("//inside-a", "inside-a"), ("///etc/passwd", "etc/passwd"), ("/%2fetc%2fshadow", "%2fetc%2fshadow")]
    {
        assert_eq!(req(&s, "POST", t, b"kept inside").status, 200, "{t}");
        assert_eq!(std::fs::read(s.store_path().join(inside)).unwrap(), b"kept inside", "{t}");
        assert_eq!(req(&s, "DELETE", t, b"").status, 200, "{t}");
    }
    let _ = std::fs::remove_dir(s.store_path().join("etc"));
    assert_eq!(files_under(s.dir.path()), stored);
    // A backslash in the raw request line.
    let r = raw_request(
        s.port,
        b"GET /data\\..\\..\\outside HTTP/1.1\r\nHost: x\r\nAccept: application/vnd.x.borgstore.rest.v1\r\nConnection: close\r\n\r\n",
    )
    .expect("an answer");
    assert_eq!(r.status, 400);
    assert_eq!(files_under(s.dir.path()), before, "something changed outside or inside the store");
    assert_eq!(std::fs::read(s.dir.path().join("outside")).unwrap(), b"precious");
    assert!(s.alive());
}

#[test]
fn oversize_and_malformed_requests_are_answered_without_crashing() {
    let mut s = RestServer::start(Impl::Ours, &["--max-body", "4096"]);
    create(&s);
    assert_eq!(req(&s, "POST", "/data/fits", &[0u8; 4096]).status, 200);
    assert_eq!(req(&s, "POST", "/data/toobig", &[0u8; 8192]).status, 413);
    assert!(!s.store_path().join("data/toobig").exists());
    for (method, target, headers, body, want) in [
        ("GET", "/data/fits", vec![("Range", "bytes=5-1")], &b""[..], 400),
        ("GET", "/data/fits", vec![("Range", "lines=1-2")], b"", 400),
        ("GET", "/data/fits", vec![("Range", "bytes=0-1,5-6")], b"", 400),
        ("POST", "/?cmd=gather", vec![], b"not json", 400),
        ("POST", "/?cmd=gather", vec![], b"[[\"data/fits\", \"zero\", 1]]", 400),
        ("POST", "/?cmd=defrag", vec![], b"[]", 400),
        ("POST", "/?cmd=defrag&algorithm=rot13", vec![], b"[]", 400),
        ("POST", "/data/fits?cmd=hash&algorithm=crc32", vec![], b"", 400),
        ("POST", "/?cmd=move&current=data/fits", vec![], b"", 400),
        ("POST", "/?cmd=frobnicate", vec![], b"", 400),
        ("DELETE", "/", vec![], b"", 400),
        ("GET", "/", vec![], b"", 200),
        ("PUT", "/data/fits", vec![], b"x", 501),
        ("GET", "/data/missing", vec![], b"", 404),
        ("GET", "/data/missing/", vec![], b"", 404),
        ("POST", "/?cmd=create", vec![], b"", 409),
    ] {
        let r = checked(&s, request(s.port, method, target, AUTH, &headers, body));
        assert_eq!(r.status, want, "{method} {target} {headers:?}: {}", r.text());
    }
    // Garbage, a truncated body, a huge header, an unknown version: no crash.
    let _ = raw_request(s.port, b"\x00\x01\x02 garbage\r\n\r\n");
    let _ = raw_request(s.port, b"GET / HTTP/9.9\r\n\r\n");
    {
        // A client that promises 1000 bytes, sends a few and goes away.
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.write_all(b"POST /data/partial HTTP/1.1\r\nHost: x\r\nAccept: application/vnd.x.borgstore.rest.v1\r\nContent-Length: 1000\r\n\r\nonly a little").unwrap();
        c.shutdown(std::net::Shutdown::Both).unwrap();
    }
    let mut huge = b"GET /data/fits HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200_000));
    huge.extend_from_slice(b"\r\n\r\n");
    let r = raw_request(s.port, &huge);
    assert!(r.is_none_or(|r| r.status >= 400));
    assert!(!s.store_path().join("data/partial").exists(), "a truncated upload must not be stored");
    assert!(s.alive(), "server died; log:\n{}", s.log_text());
    assert_eq!(req(&s, "GET", "/data/fits", b"").body.len(), 4096);
}

#[test]
fn content_hash_mismatch_is_422_and_stores_nothing() {
    let s = RestServer::start(Impl::Ours, &[]);
    create(&s);
    let value = b"the value";
    let good = hex::encode(Sha256::digest(value));
    let bad = hex::encode(Sha256::digest(b"another value"));
    let r = checked(&s, request(s.port, "POST", "/data/v", None, &[("X-Content-hash-sha256", &bad)], value));
    assert_eq!(r.status, 422);
    assert!(!s.store_path().join("data/v").exists());
    let r = checked(&s, request(s.port, "POST", "/data/v", None, &[("X-Content-hash-sha256", &good)], value));
    assert_eq!(r.status, 200);
    assert_eq!(std::fs::read(s.store_path().join("data/v")).unwrap(), value);
}

#[test]
fn head_list_range_and_errors_follow_the_protocol() {
    let s = RestServer::start(Impl::Ours, &[]);
    assert_eq!(req(&s, "GET", "/data/x", b"").status, 410, "store does not exist yet");
    create(&s);
    assert_eq!(req(&s, "POST", "/data/x", b"0123456789").status, 200);
    let h = req(&s, "HEAD", "/data/x", b"");
    assert_eq!((h.status, h.header("content-length")), (200, Some("10")));
    assert_eq!(h.header("x-borgstore-is-directory"), Some("false"));
    assert!(h.header("x-borgstore-mtime").unwrap().parse::<f64>().unwrap() > 1e9);
    assert!(h.header("x-borgstore-atime").unwrap().parse::<f64>().is_ok());
    let d = req(&s, "HEAD", "/data", b"");
    assert_eq!(d.header("x-borgstore-is-directory"), Some("true"));
    assert_eq!(req(&s, "HEAD", "/data/nope", b"").status, 404);
    for (range, want) in [("bytes=2-4", &b"234"[..]), ("bytes=7-", b"789"), ("bytes=-2", b"89")] {
        let r = checked(&s, request(s.port, "GET", "/data/x", None, &[("Range", range)], b""));
        assert_eq!((r.status, r.body.as_slice()), (206, want), "{range}");
    }
    let list: serde_json::Value = serde_json::from_slice(&req(&s, "GET", "/data/", b"").body).unwrap();
    assert_eq!(list[0]["name"], "x");
    assert_eq!(list[0]["size"], 10);
    assert_eq!(list[0]["directory"], false);
    assert!(list[0]["mtime"].as_f64().unwrap() > 1e9);
    assert_eq!(req(&s, "DELETE", "/?cmd=destroy", b"").status, 200);
    assert_eq!(req(&s, "DELETE", "/?cmd=destroy", b"").status, 410);
}
