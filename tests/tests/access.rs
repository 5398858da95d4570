//! One access decision on every door (issue 10, point 1 and the access part of point 4),
//! proven against the real `borgstored` with a second local user (`borgstore-t2`,
//! created when missing) as the caller:
//!
//! - a store the user was not granted is refused through the IPC socket (the `borgstore`
//!   CLI exits 4), the REST Unix socket (403 even with the store's own credentials) and
//!   REST over TCP (401 without the store's credentials), nothing is read or written,
//!   and the refusals are logged; the store it was granted works through all three;
//! - the daemon refuses to start when a store would be on TCP without credentials, and
//!   says which store and how to fix it;
//! - groups count through `SO_PEERGROUPS`: a supplementary group grants, the same uid
//!   without it is refused;
//! - `public_on` / `serve_on` open or close exactly the doors they name;
//! - a peer granted nothing is refused at the IPC handshake, `stores` lists only what
//!   the caller was granted;
//! - the startup log says, per listener, which stores it serves and how callers are
//!   identified;
//! - a TOML config file decides the same as the flags.
//!
//! Runs as root (tests/run and CI do): it creates the user and switches to it.

use borgstore_tests::callers::{cli_ok, cli_refused, curl, output_within, stderr, Who};
use borgstore_tests::daemon::{binary, Daemon};
use borgstore_tests::rest::{free_port, request, wait_port, Response};
use borgstore_tests::users::second_user;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Every file under `root` (relative path -> content); empty when `root` is missing.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.insert(format!("{}/", p.strip_prefix(root).unwrap().display()), Vec::new());
                    walk(root, &p, out);
                } else {
                    out.insert(p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A temp dir the second user can traverse (to reach the sockets in it).
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn store_arg(dir: &Path, name: &str) -> String {
    format!("{name}=file://{}/{name}", dir.display())
}

/// Start `borgstored --socket DIR/borgstored.sock ARGS` expecting it to refuse (exit 2);
/// its stderr.
#[track_caller]
fn refuses_to_start(dir: &Path, args: &[String]) -> String {
    let socket = dir.join("refused.sock");
    let mut cmd = Command::new(binary("borgstored"));
    cmd.arg("--socket").arg(&socket).args(args).env_remove("NOTIFY_SOCKET");
    let out = output_within(&mut cmd, None, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("borgstored {args:?} started (still running after 30 s) instead of refusing"));
    assert_eq!(out.status.code(), Some(2), "borgstored {args:?} must exit 2; stderr: {}", stderr(&out));
    assert!(!socket.exists(), "a daemon that refuses to start must not have opened its IPC socket");
    stderr(&out)
}

/// Log lines with all of `needles`.
fn log_lines_with(d: &Daemon, needles: &[&str]) -> Vec<String> {
    d.log_text().lines().filter(|l| needles.iter().all(|n| l.contains(n))).map(str::to_string).collect()
}

/// Does the log line carry the field `key=value` exactly (not as a prefix of a longer value)?
fn has_field(line: &str, key: &str, value: &str) -> bool {
    let field = format!("{key}={value}");
    line.split_whitespace().any(|w| w == field || w == format!("{key}=\"{value}\""))
}

#[track_caller]
fn refusal_logged(d: &Daemon, what: &[&str], door: Option<&str>, store: &str, uid: Option<u32>) {
    let found = log_lines_with(d, &[&["WARN"][..], what].concat()).iter().any(|l| {
        has_field(l, "store", store)
            && door.is_none_or(|door| has_field(l, "door", door))
            && uid.is_none_or(|uid| has_field(l, "uid", &uid.to_string()))
    });
    assert!(found, "no {what:?} warning for store {store} door {door:?} uid {uid:?} in the log:\n{}", d.log_text());
}

const SECRET_VALUE: &[u8] = b"top secret value";
const MINE: (&str, &str) = ("alice", "alice-pw");
const SECRET: (&str, &str) = ("bob", "bob-pw");

#[track_caller]
fn assert_status(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: got {} {:?}", r.status, r.text());
}

/// A refused REST response: `status`, no secret data; a 401 carries the challenge.
#[track_caller]
fn assert_refused(r: &Response, status: u16, what: &str) {
    assert_status(r, status, what);
    assert!(!r.text().contains("top secret"), "{what}: the refusal leaked the value: {:?}", r.text());
    if status == 401 {
        assert!(
            r.header("WWW-Authenticate").is_some_and(|v| v.starts_with("Basic")),
            "{what}: a 401 carries a Basic challenge: {:?}",
            r.headers
        );
    }
}

#[test]
fn a_store_not_granted_is_refused_on_every_door_and_the_granted_one_works_on_all() {
    let t2 = second_user();
    let user = Who::User(t2);
    let dir = shared_dir();
    let port = free_port();
    let rest = format!("127.0.0.1:{port}");
    let rest_socket = dir.path().join("rest.sock");
    let base: Vec<String> = vec![
        "--store".into(),
        store_arg(dir.path(), "mine"),
        "--store".into(),
        store_arg(dir.path(), "secret"),
        "--allow-uid".into(),
        format!("mine={}", t2.uid),
        "--socket-mode".into(),
        "0666".into(),
        "--rest".into(),
        rest.clone(),
        "--rest-socket".into(),
        rest_socket.display().to_string(),
    ];

    // Without credentials for TCP the daemon does not start, and says which store and how
    // to fix it.
    let mut only_mine = base.clone();
    only_mine.extend(["--rest-auth".into(), format!("mine={}:{}", MINE.0, MINE.1)]);
    let err = refuses_to_start(dir.path(), &only_mine);
    for needle in ["store secret", "--rest-auth secret=", "--serve-on secret=", "--public-on secret=rest"] {
        assert!(err.contains(needle), "the refusal must mention {needle:?}: {err}");
    }
    assert!(!err.contains("store mine "), "mine has credentials and is not the problem: {err}");
    let err = refuses_to_start(dir.path(), &base);
    assert!(err.contains("--rest-auth") && err.contains("--serve-on") && err.contains("--public-on"), "{err}");
    assert!(!rest_socket.exists(), "the refusing daemon must not have opened the REST socket");

    let mut args = only_mine;
    args.extend(["--rest-auth".into(), format!("secret={}:{}", SECRET.0, SECRET.1)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start_in(dir, &args, &[]);
    wait_port(port, "borgstored REST", &d.log);
    let secret_dir = d.path("secret");

    // --- secret, over IPC, as the other user: refused, nothing created.
    let err = cli_refused(&d, user, "secret", &["create"], None);
    assert!(err.contains("not granted"), "{err}");
    assert!(!secret_dir.exists(), "a refused create made the store directory");
    // The daemon's own user makes it and puts a value in.
    cli_ok(&d, Who::Root, "secret", &["create"], None);
    cli_ok(&d, Who::Root, "secret", &["store", "config/x", "-"], Some(SECRET_VALUE));
    let before = tree(&secret_dir);
    assert!(before.values().any(|v| v == SECRET_VALUE), "the value is on disk: {before:?}");
    cli_refused(&d, user, "secret", &["load", "config/x"], None);
    cli_refused(&d, user, "secret", &["store", "config/y", "-"], Some(b"intruder"));
    cli_refused(&d, user, "secret", &["list"], None);
    cli_refused(&d, user, "secret", &["delete", "config/x"], None);
    cli_refused(&d, user, "secret", &["destroy"], None);
    assert_eq!(tree(&secret_dir), before, "refused IPC requests changed the store");
    refusal_logged(&d, &["refused a client without a grant", "not granted"], None, "secret", Some(t2.uid));

    // --- secret, over the REST socket, as the other user: 403 even with its credentials.
    let r = curl(&rest_socket, user, "GET", "/secret/config/x", Some(SECRET), None);
    assert_refused(&r, 403, "REST socket GET with secret's credentials by an ungranted uid");
    let r = curl(&rest_socket, user, "POST", "/secret/config/y", Some(SECRET), Some(b"intruder"));
    assert_refused(&r, 403, "REST socket POST with secret's credentials by an ungranted uid");
    let r = curl(&rest_socket, user, "DELETE", "/secret/config/x", Some(SECRET), None);
    assert_refused(&r, 403, "REST socket DELETE by an ungranted uid");
    let r = curl(&rest_socket, user, "GET", "/secret/config/", Some(SECRET), None);
    assert_refused(&r, 403, "REST socket list by an ungranted uid");
    let r = curl(&rest_socket, user, "HEAD", "/secret/config/x", Some(SECRET), None);
    assert_refused(&r, 403, "REST socket HEAD (item info) by an ungranted uid");
    assert_ne!(r.header("Content-Length"), Some("16"), "the refusal must not tell the item's size");
    assert!(r.header("X-BorgStore-Is-Directory").is_none(), "no item metadata in a refusal: {:?}", r.headers);
    // The same 403 whatever the password: an ungranted uid cannot test passwords here.
    let r = curl(&rest_socket, user, "GET", "/secret/config/x", Some(MINE), None);
    assert_refused(&r, 403, "REST socket GET with mine's credentials");
    let r = curl(&rest_socket, user, "GET", "/secret/config/x", None, None);
    assert_refused(&r, 403, "REST socket GET without credentials");
    assert_eq!(tree(&secret_dir), before, "refused REST socket requests changed the store");
    refusal_logged(&d, &["REST request refused", "not granted"], Some("rest_socket"), "secret", Some(t2.uid));

    // --- secret, over TCP (the caller is the Basic-auth user, whatever its uid).
    let r = request(port, "GET", "/secret/config/x", Some(MINE), &[], b"");
    assert_refused(&r, 401, "TCP GET of secret with mine's credentials");
    let r = request(port, "GET", "/secret/config/x", None, &[], b"");
    assert_refused(&r, 401, "TCP GET of secret without credentials");
    let r = request(port, "POST", "/secret/config/y", Some(MINE), &[], b"intruder");
    assert_refused(&r, 401, "TCP POST to secret with mine's credentials");
    let r = request(port, "POST", "/secret/config/y", None, &[], b"intruder");
    assert_refused(&r, 401, "TCP POST to secret without credentials");
    let r = request(port, "DELETE", "/secret/config/x", Some(MINE), &[], b"");
    assert_refused(&r, 401, "TCP DELETE in secret with mine's credentials");
    let r = request(port, "HEAD", "/secret/config/x", Some(MINE), &[], b"");
    assert_refused(&r, 401, "TCP HEAD (item info) in secret with mine's credentials");
    assert!(r.header("X-BorgStore-Is-Directory").is_none(), "no item metadata in a refusal: {:?}", r.headers);
    assert_eq!(tree(&secret_dir), before, "refused TCP requests changed the store");
    refusal_logged(&d, &["REST request refused", "credentials"], Some("rest"), "secret", None);
    // Its own credentials are the TCP grant.
    let r = request(port, "GET", "/secret/config/x", Some(SECRET), &[], b"");
    assert_status(&r, 200, "TCP GET of secret with its credentials");
    assert_eq!(r.body, SECRET_VALUE);

    // --- mine works for the other user through all three doors.
    cli_ok(&d, user, "mine", &["create"], None);
    cli_ok(&d, user, "mine", &["store", "config/a", "-"], Some(b"via ipc"));
    assert_eq!(cli_ok(&d, user, "mine", &["load", "config/a"], None), b"via ipc");
    let r = curl(&rest_socket, user, "POST", "/mine/config/b", Some(MINE), Some(b"via rest socket"));
    assert_status(&r, 200, "REST socket POST to mine by its user");
    let r = curl(&rest_socket, user, "GET", "/mine/config/a", Some(MINE), None);
    assert_status(&r, 200, "REST socket GET from mine by its user");
    assert_eq!(r.body, b"via ipc");
    let r = curl(&rest_socket, user, "GET", "/mine/config/a", None, None);
    assert_refused(&r, 401, "mine has credentials: the REST socket asks for them too");
    let r = curl(&rest_socket, user, "HEAD", "/mine/config/a", Some(MINE), None);
    assert_status(&r, 200, "REST socket HEAD in mine by its user");
    assert_eq!(r.header("Content-Length"), Some("7"), "the size of \"via ipc\": {:?}", r.headers);
    let r = request(port, "POST", "/mine/config/c", Some(MINE), &[], b"via tcp");
    assert_status(&r, 200, "TCP POST to mine with its credentials");
    let r = request(port, "GET", "/mine/config/b", Some(MINE), &[], b"");
    assert_status(&r, 200, "TCP GET from mine with its credentials");
    assert_eq!(r.body, b"via rest socket");
    assert_eq!(cli_ok(&d, user, "mine", &["load", "config/c"], None), b"via tcp");
    let r = request(port, "GET", "/mine/config/a", Some(SECRET), &[], b"");
    assert_refused(&r, 401, "TCP GET from mine with secret's credentials");

    // --- the daemon's own uid may use both stores on the Unix doors.
    assert_eq!(cli_ok(&d, Who::Root, "secret", &["load", "config/x"], None), SECRET_VALUE);
    assert_eq!(cli_ok(&d, Who::Root, "mine", &["load", "config/b"], None), b"via rest socket");
    let r = curl(&rest_socket, Who::Root, "GET", "/secret/config/x", Some(SECRET), None);
    assert_status(&r, 200, "REST socket GET from secret by the daemon's uid");
    assert_eq!(r.body, SECRET_VALUE);
    let r = curl(&rest_socket, Who::Root, "POST", "/secret/config/z", Some(SECRET), Some(b"by root"));
    assert_status(&r, 200, "REST socket POST to secret by the daemon's uid");
    assert_eq!(cli_ok(&d, Who::Root, "secret", &["load", "config/z"], None), b"by root");
    let r = curl(&rest_socket, Who::Root, "GET", "/secret/config/x", None, None);
    assert_refused(&r, 401, "the REST socket asks the daemon's uid for secret's credentials too");
    let r = curl(&rest_socket, Who::Root, "GET", "/mine/config/c", Some(MINE), None);
    assert_status(&r, 200, "REST socket GET from mine by the daemon's uid");
    assert_eq!(r.body, b"via tcp");
}

#[test]
fn a_supplementary_group_grants_and_the_same_uid_without_it_is_refused() {
    let t2 = second_user();
    assert_ne!(t2.gid, t2.extra_gid, "the group must be a supplementary group of the user, not its primary group");
    let dir = shared_dir();
    let rest_socket = dir.path().join("rest.sock");
    let (g, u) = (store_arg(dir.path(), "g"), store_arg(dir.path(), "u"));
    let (allow_gid, allow_uid) = (format!("g={}", t2.extra_gid), format!("u={}", t2.uid));
    let d = Daemon::start_in(
        dir,
        &[
            "--store",
            &g,
            "--store",
            &u,
            "--allow-gid",
            &allow_gid,
            "--allow-uid",
            &allow_uid,
            "--socket-mode",
            "0666",
            "--rest-socket",
            rest_socket.to_str().unwrap(),
        ],
        &[],
    );
    let with = Who::User(t2);
    let without = Who::UserWithoutGroups(t2);

    // With the supplementary group: IPC and REST socket.
    cli_ok(&d, with, "g", &["create"], None);
    cli_ok(&d, with, "g", &["store", "config/a", "-"], Some(b"group ipc"));
    assert_eq!(cli_ok(&d, with, "g", &["load", "config/a"], None), b"group ipc");
    let r = curl(&rest_socket, with, "POST", "/g/config/b", None, Some(b"group rest"));
    assert_status(&r, 200, "REST socket POST by a member of the granted group");
    let r = curl(&rest_socket, with, "GET", "/g/config/a", None, None);
    assert_status(&r, 200, "REST socket GET by a member of the granted group");
    assert_eq!(r.body, b"group ipc");

    // The same uid without the group: refused on both doors, nothing read or written.
    // (Its uid grant on `u` gets it through the handshake: the refusal is g's own.)
    cli_ok(&d, without, "u", &["create"], None);
    let before = tree(&d.path("g"));
    let err = cli_refused(&d, without, "g", &["load", "config/a"], None);
    assert!(err.contains("not granted"), "{err}");
    cli_refused(&d, without, "g", &["store", "config/c", "-"], Some(b"no group"));
    let r = curl(&rest_socket, without, "GET", "/g/config/a", None, None);
    assert_status(&r, 403, "REST socket GET by the uid without the group");
    assert!(!r.text().contains("group ipc"), "{:?}", r.text());
    let r = curl(&rest_socket, without, "POST", "/g/config/c", None, Some(b"no group"));
    assert_status(&r, 403, "REST socket POST by the uid without the group");
    assert_eq!(tree(&d.path("g")), before, "refused requests changed the store");
    refusal_logged(&d, &["refused a client without a grant", "not granted"], None, "g", Some(t2.uid));
    refusal_logged(&d, &["REST request refused", "not granted"], Some("rest_socket"), "g", Some(t2.uid));

    // And the group member again, to show the refusal was about the group alone.
    assert_eq!(cli_ok(&d, with, "g", &["load", "config/b"], None), b"group rest");
}

#[test]
fn public_on_and_serve_on_open_and_close_exactly_the_doors_they_name() {
    let t2 = second_user();
    let user = Who::User(t2);
    let dir = shared_dir();
    let port = free_port();
    let rest = format!("127.0.0.1:{port}");
    let rest_socket = dir.path().join("rest.sock");
    let (x, y, z) = (store_arg(dir.path(), "x"), store_arg(dir.path(), "y"), store_arg(dir.path(), "z"));
    let d = Daemon::start_in(
        dir,
        &[
            "--store",
            &x,
            "--store",
            &y,
            "--store",
            &z,
            "--public-on",
            "x=rest",
            "--serve-on",
            "y=socket",
            "--serve-on",
            "z=socket,rest_socket",
            "--public-on",
            "z=rest_socket",
            "--socket-mode",
            "0666",
            "--rest",
            &rest,
            "--rest-socket",
            rest_socket.to_str().unwrap(),
        ],
        &[],
    );
    wait_port(port, "borgstored REST", &d.log);

    // x: public on TCP, no credentials needed there.
    assert_status(&request(port, "POST", "/x/?cmd=create", None, &[], b""), 200, "TCP create of public x");
    assert_status(&request(port, "POST", "/x/config/a", None, &[], b"public"), 200, "TCP POST to public x");
    let r = request(port, "GET", "/x/config/a", None, &[], b"");
    assert_status(&r, 200, "TCP GET from public x");
    assert_eq!(r.body, b"public");
    // ... which does not open the Unix doors to an ungranted uid.
    let r = curl(&rest_socket, user, "GET", "/x/config/a", None, None);
    assert_status(&r, 403, "x is public on TCP only: the REST socket still checks the uid");
    assert!(!r.text().contains("public"), "{:?}", r.text());
    let err = cli_refused(&d, user, "x", &["load", "config/a"], None);
    assert!(err.contains("not granted"), "{err}");

    // y: only on IPC; the REST doors answer as if it did not exist.
    cli_ok(&d, Who::Root, "y", &["create"], None);
    cli_ok(&d, Who::Root, "y", &["store", "config/a", "-"], Some(b"ipc only"));
    assert_eq!(cli_ok(&d, Who::Root, "y", &["load", "config/a"], None), b"ipc only");
    let before = tree(&d.path("y"));
    let nonexistent = request(port, "GET", "/nosuchstore/config/a", None, &[], b"");
    assert_status(&nonexistent, 404, "TCP GET from a store that does not exist");
    for (method, body) in [("GET", &b""[..]), ("POST", &b"over tcp"[..])] {
        let r = request(port, method, "/y/config/a", None, &[], body);
        assert_status(&r, 404, &format!("TCP {method} to y (serve_on socket)"));
        assert_eq!(r.body, nonexistent.body, "y looks like a store that does not exist");
    }
    for who in [Who::Root, user] {
        let r = curl(&rest_socket, who, "GET", "/y/config/a", None, None);
        assert_status(&r, 404, &format!("REST socket GET from y (serve_on socket) by {who:?}"));
        assert_eq!(r.body, nonexistent.body, "y looks like a store that does not exist");
        let r = curl(&rest_socket, who, "POST", "/y/config/a", None, Some(b"over rest socket"));
        assert_status(&r, 404, &format!("REST socket POST to y (serve_on socket) by {who:?}"));
    }
    assert_eq!(tree(&d.path("y")), before, "y changed through a door it is not served on");

    // z: any uid that can connect to the REST socket, without a uid grant.
    let r = curl(&rest_socket, user, "POST", "/z/?cmd=create", None, None);
    assert_status(&r, 200, "REST socket create of z (public on rest_socket) by an ungranted uid");
    let r = curl(&rest_socket, user, "POST", "/z/config/a", None, Some(b"anyone local"));
    assert_status(&r, 200, "REST socket POST to z by an ungranted uid");
    let r = curl(&rest_socket, user, "GET", "/z/config/a", None, None);
    assert_status(&r, 200, "REST socket GET from z by an ungranted uid");
    assert_eq!(r.body, b"anyone local");
    // ... and only there: not IPC (not public there), not TCP (not served there).
    cli_refused(&d, user, "z", &["load", "config/a"], None);
    let r = request(port, "GET", "/z/config/a", None, &[], b"");
    assert_status(&r, 404, "TCP GET from z (not served on rest)");
    assert_eq!(cli_ok(&d, Who::Root, "z", &["load", "config/a"], None), b"anyone local");
}

#[test]
fn a_peer_granted_nothing_is_refused_at_the_handshake_and_stores_lists_only_grants() {
    let t2 = second_user();
    let dir = shared_dir();
    let (a, b, c) = (store_arg(dir.path(), "a"), store_arg(dir.path(), "b"), store_arg(dir.path(), "c"));
    let (allow_uid, allow_gid) = (format!("b={}", t2.uid), format!("c={}", t2.extra_gid));
    let d = Daemon::start_in(
        dir,
        &[
            "--store",
            &a,
            "--store",
            &b,
            "--store",
            &c,
            "--allow-uid",
            &allow_uid,
            "--allow-gid",
            &allow_gid,
            "--socket-mode",
            "0666",
        ],
        &[],
    );
    for args in [&["stores"][..], &["create"][..], &["load", "config/a"][..]] {
        let err = cli_refused(&d, Who::Nobody, "a", args, None);
        assert!(err.contains("not granted any store"), "{args:?}: the handshake refuses: {err}");
    }
    assert!(!d.path("a").exists(), "nothing was created for the refused peer");
    assert!(
        !log_lines_with(&d, &["WARN", "refused a client granted no store", "uid=65534"]).is_empty(),
        "{}",
        d.log_text()
    );

    let listed = |who: Who| {
        let out = cli_ok(&d, who, "b", &["stores"], None);
        let text = String::from_utf8(out).unwrap();
        text.lines().map(|l| l.split('\t').next().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(listed(Who::User(t2)), ["b", "c"], "by uid and by supplementary group");
    assert_eq!(listed(Who::UserWithoutGroups(t2)), ["b"], "without its group, by uid only");
    assert_eq!(listed(Who::Root), ["a", "b", "c"], "the daemon's own uid has them all");
}

/// The stores entry `name (...)` of a startup log line, e.g. `mine (uid 0 ...; ...)`.
fn entry(line: &str, name: &str) -> Option<String> {
    let start = [format!(": {name} ("), format!("; {name} (")].iter().find_map(|p| line.find(p.as_str()))? + 2;
    let mut depth = 0;
    for (i, ch) in line[start..].char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(line[start..start + i + 1].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

#[track_caller]
fn one_line(d: &Daemon, needles: &[&str]) -> String {
    let lines = log_lines_with(d, needles);
    assert_eq!(lines.len(), 1, "one startup line with {needles:?}, got {lines:?}; log:\n{}", d.log_text());
    lines.into_iter().next().unwrap()
}

#[test]
fn the_startup_log_says_per_listener_which_stores_and_how_callers_are_identified() {
    let t2 = second_user();
    let dir = shared_dir();
    let port = free_port();
    let rest = format!("127.0.0.1:{port}");
    let rest_socket = dir.path().join("rest.sock");
    let stores: Vec<String> = ["mine", "secret", "pub", "ipconly"].iter().map(|n| store_arg(dir.path(), n)).collect();
    let allow = format!("mine={}", t2.uid);
    let (mine_auth, secret_auth) = (format!("mine={}:{}", MINE.0, MINE.1), format!("secret={}:{}", SECRET.0, SECRET.1));
    let mut args = Vec::new();
    for s in &stores {
        args.extend(["--store", s.as_str()]);
    }
    args.extend([
        "--allow-uid",
        &allow,
        "--rest-auth",
        &mine_auth,
        "--rest-auth",
        &secret_auth,
        "--public-on",
        "pub=rest",
        "--serve-on",
        "ipconly=socket",
        "--rest",
        &rest,
        "--rest-socket",
        rest_socket.to_str().unwrap(),
    ]);
    let d = Daemon::start_in(dir, &args, &[]);
    wait_port(port, "borgstored REST", &d.log);
    let own = nix::unistd::getuid().as_raw().to_string();
    let t2uid = t2.uid.to_string();
    let has_id = |text: &str, id: &str| text.split(|c: char| !c.is_ascii_digit()).any(|w| w == id);

    let ipc = one_line(&d, &["INFO", "IPC on ", "callers identified by"]);
    assert!(ipc.contains(&d.socket.display().to_string()), "{ipc}");
    assert!(ipc.contains("uid"), "IPC identifies by uid: {ipc}");
    let tcp = one_line(&d, &["INFO", &format!("REST on http://{rest}"), "callers identified by"]);
    assert!(tcp.contains("Basic auth"), "TCP identifies by Basic auth: {tcp}");
    let unix = one_line(&d, &["INFO", &format!("REST on unix:{}", rest_socket.display()), "callers identified by"]);
    assert!(unix.contains("uid") && unix.contains("Basic auth"), "{unix}");

    let get = |line: &str, name: &str| entry(line, name).unwrap_or_else(|| panic!("no entry for {name} in {line}"));
    // IPC: every store, by uid; mine names the allowed uid, secret does not.
    let mine = get(&ipc, "mine");
    assert!(has_id(&mine, &t2uid) && has_id(&mine, &own), "mine on IPC: {mine}");
    let secret = get(&ipc, "secret");
    assert!(has_id(&secret, &own) && !has_id(&secret, &t2uid), "secret on IPC: {secret}");
    assert!(!secret.contains("Basic"), "IPC has no Basic auth: {secret}");
    get(&ipc, "ipconly");
    get(&ipc, "pub");
    // TCP: by Basic auth; the public store to anyone; ipconly not at all.
    let secret = get(&tcp, "secret");
    assert!(secret.contains("Basic auth") && secret.contains(SECRET.0), "secret on TCP: {secret}");
    assert!(!has_id(&secret, &own), "TCP carries no uid: {secret}");
    let mine = get(&tcp, "mine");
    assert!(mine.contains("Basic auth") && mine.contains(MINE.0) && !has_id(&mine, &t2uid), "mine on TCP: {mine}");
    assert!(get(&tcp, "pub").contains("anyone"), "pub on TCP: {tcp}");
    assert!(entry(&tcp, "ipconly").is_none(), "ipconly is not served on TCP: {tcp}");
    // REST socket: uid and Basic auth where the store has credentials.
    let mine = get(&unix, "mine");
    assert!(has_id(&mine, &t2uid) && mine.contains("Basic auth"), "mine on the REST socket: {mine}");
    let public = get(&unix, "pub");
    assert!(!public.contains("anyone") && has_id(&public, &own), "pub is public on TCP only: {public}");
    assert!(entry(&unix, "ipconly").is_none(), "ipconly is not served on the REST socket: {unix}");
}

#[test]
fn a_config_file_decides_like_the_flags() {
    let t2 = second_user();
    let dir = shared_dir();
    let port = free_port();
    let rest_socket = dir.path().join("rest.sock");
    let stores = format!(
        r#"
[stores.open]
url = "file://{d}/open"
public_on = ["rest"]

[stores.grp]
url = "file://{d}/grp"
allow_gids = [{gid}]
serve_on = ["socket", "rest_socket"]

[stores.auth]
url = "file://{d}/auth"
allow_uids = [{uid}]
rest_username = "carol"
rest_password = "carol-pw"
"#,
        d = dir.path().display(),
        gid = t2.extra_gid,
        uid = t2.uid,
    );
    let head =
        format!("socket_mode = \"0666\"\nrest = \"127.0.0.1:{port}\"\nrest_socket = \"{}\"\n", rest_socket.display());
    // Without public_on, the open store would be on TCP without credentials: no start.
    let refused: PathBuf = dir.path().join("refused.toml");
    std::fs::write(&refused, format!("{head}{}", stores.replace("public_on = [\"rest\"]\n", ""))).unwrap();
    let err = refuses_to_start(dir.path(), &["--config".into(), refused.display().to_string()]);
    assert!(err.contains("store open") && err.contains("public_on"), "{err}");

    let config = dir.path().join("borgstored.toml");
    std::fs::write(&config, format!("{head}{stores}")).unwrap();
    let d = Daemon::start_in(dir, &["--config", config.to_str().unwrap()], &[]);
    wait_port(port, "borgstored REST", &d.log);
    let (with, without) = (Who::User(t2), Who::UserWithoutGroups(t2));

    // open: anyone on TCP; not the other uid on the REST socket.
    assert_status(&request(port, "POST", "/open/?cmd=create", None, &[], b""), 200, "TCP create of open");
    assert_status(&request(port, "POST", "/open/config/a", None, &[], b"open"), 200, "TCP POST to open");
    assert_status(&curl(&rest_socket, with, "GET", "/open/config/a", None, None), 403, "open on the REST socket");
    // grp: its group on the Unix doors, nobody on TCP.
    cli_ok(&d, with, "grp", &["create"], None);
    cli_ok(&d, with, "grp", &["store", "config/a", "-"], Some(b"grp"));
    let r = curl(&rest_socket, with, "GET", "/grp/config/a", None, None);
    assert_status(&r, 200, "grp on the REST socket by a group member");
    assert_eq!(r.body, b"grp");
    assert_status(&curl(&rest_socket, without, "GET", "/grp/config/a", None, None), 403, "grp without the group");
    cli_refused(&d, without, "grp", &["load", "config/a"], None);
    assert_status(&request(port, "GET", "/grp/config/a", None, &[], b""), 404, "grp is not served on TCP");
    // auth: its credentials on TCP; its uid and credentials on the REST socket.
    assert_status(&request(port, "POST", "/auth/?cmd=create", None, &[], b""), 401, "auth without credentials");
    let carol = Some(("carol", "carol-pw"));
    assert_status(&request(port, "POST", "/auth/?cmd=create", carol, &[], b""), 200, "auth with its credentials");
    let r = curl(&rest_socket, without, "POST", "/auth/config/a", carol, Some(b"carol"));
    assert_status(&r, 200, "auth on the REST socket by its uid with its credentials");
    assert_eq!(cli_ok(&d, without, "auth", &["load", "config/a"], None), b"carol");
    let r = curl(&rest_socket, Who::Nobody, "GET", "/auth/config/a", carol, None);
    assert_status(&r, 403, "auth on the REST socket by an ungranted uid with its credentials");
}
