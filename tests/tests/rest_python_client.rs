//! The real Python borgstore REST client (0.7.0 and 0.5.5) against our REST servers
//! (issue 4 point 4): its whole backend API and the Python `Store` (nesting, soft
//! deletes) over TCP, over `--stdio` through a `rest://` URL with our binary first on
//! PATH, and through real nginx proxying a sub-path to `borgstored`'s REST Unix socket.
//! The checks live in `tests/python/rest_client_suite.py`, which passes against the
//! Python reference server too.

use borgstore_tests::daemon::{binary, Daemon};
use borgstore_tests::nginx::Nginx;
use borgstore_tests::python::{run_ok, Version};
use borgstore_tests::rest::{Impl, RestServer};

fn suite(version: Version, mode: &str, url: &str, env: &[(&str, &str)]) {
    let out = run_ok(version, "rest_client_suite.py", &[mode, url], env);
    assert!(out.lines().any(|l| l.starts_with(&format!("OK {mode} "))), "no OK line:\n{out}");
}

#[test]
fn backend_api_and_store_over_tcp() {
    for version in [Version::V070, Version::V055] {
        for mode in ["backend", "store"] {
            let s = RestServer::start(Impl::Ours, &["--username", "client", "--password", "secret"]);
            suite(version, mode, &s.url(Some(("client", "secret"))), &[]);
        }
    }
}

#[test]
fn backend_api_and_store_over_stdio() {
    // `rest:///path` makes the client start `borgstore-server-rest --stdio` from PATH.
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(binary("borgstore-server-rest"), bin.path().join("borgstore-server-rest")).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    for version in [Version::V070, Version::V055] {
        for mode in ["backend", "store"] {
            let data = tempfile::tempdir().unwrap();
            // Four slashes: the client takes the one after the empty host as a separator.
            let url = format!("rest:///{}", data.path().join("store").display());
            suite(version, mode, &url, &[("PATH", &path)]);
        }
    }
}

#[test]
fn behind_nginx_on_a_sub_path_to_the_daemon_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let a = format!("alpha=file://{}/alpha", dir.path().display());
    let b = format!("beta=file://{}/beta", dir.path().display());
    let sock = dir.path().join("rest.sock");
    let d = Daemon::start_in(
        dir,
        &[
            "--store",
            &a,
            "--store",
            &b,
            "--rest-socket",
            sock.to_str().unwrap(),
            "--rest-auth",
            "beta=bob:builder",
            // nginx's workers run as another uid: the socket file's mode decides who reaches it.
            "--public-on",
            "alpha=rest_socket",
            "--public-on",
            "beta=rest_socket",
        ],
        &[],
    );
    let nginx = Nginx::start(&format!(
        r#"
        location /repos/ {{
            proxy_pass http://unix:{}:/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            client_max_body_size 0;
        }}"#,
        sock.display()
    ));
    let base = format!("http://127.0.0.1:{}/repos", nginx.port);
    suite(Version::V070, "backend", &format!("{base}/alpha/"), &[]);
    suite(Version::V070, "store", &format!("{base}/alpha/"), &[]);
    let beta = format!("http://bob:builder@127.0.0.1:{}/repos/beta/", nginx.port);
    suite(Version::V055, "roundtrip", &beta, &[]);
    suite(Version::V070, "roundtrip", &beta, &[]);
    assert!(d.path("beta").is_dir(), "beta was created through nginx");
    assert!(!nginx.error_log().contains("[crit]"), "{}", nginx.error_log());
}
