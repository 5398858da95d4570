//! HTTPS and client certificates on our REST listeners, without a proxy (issue 14 point
//! 6): `--tls-cert/--tls-key/--tls-client-ca` of `borgstore-server-rest` and `borgstored`.
//!
//! Each test makes a throw-away CA with rcgen, a server certificate for 127.0.0.1 and
//! localhost, and client certificates. Checked with real clients: the Python borgstore
//! REST client (requests, `REQUESTS_CA_BUNDLE`) and borg 2 over `https://`, plus a
//! rustls client of our own that shows which certificate the server presents and keeps
//! a connection open across a SIGHUP reload.

use borgstore_tests::daemon::{binary, Daemon};
use borgstore_tests::python::{run_ok, run_script, workspace, Version};
use borgstore_tests::rest::{free_port, wait_port, Impl, RestServer, ACCEPT};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A certificate with its key, as PEM, and its DER (to compare with what a server shows).
struct Leaf {
    cert: String,
    key: String,
    der: Vec<u8>,
}

/// A throw-away CA.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost with subject CN `cn`.
    fn server(&self, cn: &str) -> Leaf {
        self.leaf(cn, &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with subject CN `cn`.
    fn client(&self, cn: &str) -> Leaf {
        self.leaf(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, cn: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        Leaf { cert: cert.pem(), key: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

/// The server's certificate files in `dir` (replaced in place for a reload).
fn install(dir: &Path, leaf: &Leaf) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    // Written beside and renamed, as a certificate renewal tool does: a reload never
    // reads half a file.
    for (path, text) in [(&cert, &leaf.cert), (&key, &leaf.key)] {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (cert, key)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A rustls client trusting `ca_pem`, presenting `client` when given.
fn client_config(ca_pem: &str, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A finished TLS handshake with 127.0.0.1:port, or why not.
fn connect(port: u16, config: &Arc<ClientConfig>) -> Result<Tls, String> {
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = ClientConnection::new(config.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// The leaf certificate the server presented.
fn presented(tls: &Tls) -> Vec<u8> {
    tls.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default()
}

/// `GET path` on an open connection (kept alive): the status.
fn get(tls: &mut Tls, path: &str) -> Result<u16, String> {
    send(tls, "GET", path, b"")
}

/// `METHOD path` with `body` on an open connection (kept alive): the status.
fn send(tls: &mut Tls, method: &str, path: &str, body: &[u8]) -> Result<u16, String> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: {ACCEPT}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    tls.write_all(&req).and_then(|_| tls.flush()).map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&head))),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(format!("no status in {head:?}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
        .map_or(0, |(_, v)| v.trim().parse().unwrap());
    let mut body = vec![0; length];
    tls.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    Ok(status)
}

/// A new connection and one request on it: the status, or why there was none.
fn get_new(port: u16, config: &Arc<ClientConfig>, path: &str) -> Result<u16, String> {
    get(&mut connect(port, config)?, path)
}

/// Wait (polling) until `cond` holds; panics with `what` and the server log after 20 s.
fn wait_for(what: &str, log: &dyn Fn() -> String, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; server log:\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sighup(pid: u32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
}

/// `borgstored` with store `alpha` (bob:builder) on a TLS rest listener, with the
/// certificate installed in `pki`: its port and the daemon.
fn tls_daemon(pki: &Path) -> (u16, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (cert, key) = (pki.join("server.pem"), pki.join("server.key"));
    let store = format!("alpha=file://{}/alpha", dir.path().display());
    let rest = format!("127.0.0.1:{port}");
    let args = [
        "--store",
        &store,
        "--rest",
        &rest,
        "--rest-auth",
        "alpha=bob:builder",
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
    ];
    let d = Daemon::start_in(dir, &args, &[]);
    wait_port(port, "borgstored --rest", &d.log);
    (port, d)
}

/// `borgstore-server-rest` over TLS with `extra` flags; credentials client:secret.
fn tls_server(dir: &Path, leaf: &Leaf, extra: &[&str]) -> RestServer {
    let (cert, key) = install(dir, leaf);
    let mut args = vec!["--username", "client", "--password", "secret", "--tls-cert", s(&cert), "--tls-key", s(&key)];
    args.extend_from_slice(extra);
    RestServer::start(Impl::Ours, &args)
}

#[test]
fn python_client_over_https_to_the_server_and_the_daemon_mount() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_file = write(pki.path(), "ca.pem", &ca.pem());
    let env = [("REQUESTS_CA_BUNDLE", s(&ca_file))];

    // borgstore-server-rest: the whole backend API.
    let server = tls_server(pki.path(), &ca.server("server"), &[]);
    let url = format!("https://client:secret@127.0.0.1:{}/", server.port);
    let out = run_ok(Version::V070, "rest_client_suite.py", &["backend", &url], &env);
    assert!(out.lines().any(|l| l.starts_with("OK backend ")), "no OK line:\n{out}");
    assert!(server.log_text().contains(&format!("https://127.0.0.1:{}/", server.port)), "{}", server.log_text());

    // borgstored: a store under its per-store mount; store, load, list, delete...
    let (port, d) = tls_daemon(pki.path());
    let url = format!("https://bob:builder@127.0.0.1:{port}/alpha/");
    let out = run_ok(Version::V070, "rest_client_suite.py", &["store", &url], &env);
    assert!(out.lines().any(|l| l.starts_with("OK store ")), "no OK line:\n{out}");
    assert!(d.log_text().contains(&format!("REST on https://127.0.0.1:{port}/")), "{}", d.log_text());

    // The same client not trusting our CA is refused by its own verification.
    let other = write(pki.path(), "other-ca.pem", &Ca::new("other CA").pem());
    let out =
        run_script(Version::V070, "rest_client_suite.py", &["roundtrip", &url], &[("REQUESTS_CA_BUNDLE", s(&other))]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && said.contains("CERTIFICATE_VERIFY_FAILED"), "not refused:\n{said}");
}

#[test]
fn the_tls_port_speaks_only_tls_and_only_with_the_right_ca() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let server = tls_server(pki.path(), &ca.server("server"), &[]);

    // Trusting the CA: an HTTP answer (401: the store wants credentials).
    assert_eq!(get_new(server.port, &client_config(&ca.pem(), None), "/"), Ok(401));

    // Plain HTTP on the TLS port: no HTTP answer, the connection is closed.
    let mut plain = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    plain.write_all(format!("GET / HTTP/1.1\r\nHost: localhost\r\nAccept: {ACCEPT}\r\n\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP answered: {:?}", String::from_utf8_lossy(&answer));

    // A client trusting another CA refuses the server.
    let e = get_new(server.port, &client_config(&Ca::new("other CA").pem(), None), "/").unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[test]
fn client_certificates_are_required_verified_and_their_cn_arrives() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let ca_file = write(pki.path(), "clients.pem", &clients.pem());
    let server = tls_server(
        pki.path(),
        &ca.server("server"),
        &["--tls-client-ca", s(&ca_file), "--log", "info,borgstore_daemon::rest=debug"],
    );

    // No certificate: refused in the handshake (TLS 1.3 tells the client on its first read).
    let e = get_new(server.port, &client_config(&ca.pem(), None), "/").unwrap_err();
    assert!(e.contains("CertificateRequired") || e.contains("alert"), "{e}");
    // A certificate from another CA (here: the server's own): refused.
    let stranger = ca.client("tester-1");
    let e = get_new(server.port, &client_config(&ca.pem(), Some(&stranger)), "/").unwrap_err();
    assert!(e.contains("alert"), "{e}");
    assert!(!server.log_text().contains("tester-1"), "{}", server.log_text());

    // One signed by the client CA: served, and its CN reaches the access decision.
    let good = clients.client("tester-1");
    assert_eq!(get_new(server.port, &client_config(&ca.pem(), Some(&good)), "/"), Ok(401));
    let log = || server.log_text();
    wait_for("the client CN in the log", &log, || {
        log().contains("REST caller with TLS client certificate CN=\"tester-1\"")
    });
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_open_connections() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (a, b) = (ca.server("server A"), ca.server("server B"));
    let config = client_config(&ca.pem(), None);
    // `path`: where the server answers 401 (a store that wants credentials).
    let check = |log: &dyn Fn() -> String, port: u16, pid: u32, path: &str| {
        // One keep-alive connection with certificate A.
        let mut old = connect(port, &config).unwrap();
        assert!(presented(&old) == a.der, "not served certificate A at first");
        assert_eq!(get(&mut old, path), Ok(401));

        // Certificate B on disk, SIGHUP: new connections see B (once the reload ran).
        install(pki.path(), &b);
        sighup(pid);
        wait_for("certificate B on a new connection", log, || presented(&connect(port, &config).unwrap()) == b.der);
        // The old connection still answers (within the 5 s keep-alive).
        assert_eq!(get(&mut old, path), Ok(401), "the open connection was dropped by the reload");
        assert!(presented(&old) == a.der);

        // A broken certificate file: the reload fails, B stays in use.
        let warnings = log().matches("TLS not reloaded").count();
        std::fs::write(pki.path().join("server.pem"), "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
        sighup(pid);
        wait_for("the failed reload's warning", log, || log().matches("TLS not reloaded").count() > warnings);
        let mut fresh = connect(port, &config).unwrap();
        assert!(presented(&fresh) == b.der, "a failed reload changed the certificate");
        assert_eq!(get(&mut fresh, path), Ok(401));
        // Back to A for the next round.
        install(pki.path(), &a);
    };

    let mut server = tls_server(pki.path(), &a, &[]);
    let (port, pid) = (server.port, server.child.id());
    check(&|| server.log_text(), port, pid, "/");
    assert!(server.alive(), "SIGHUP killed borgstore-server-rest");

    // borgstored: the same, on its rest listener.
    let (port, d) = tls_daemon(pki.path());
    check(&|| d.log_text(), port, d.child.id(), "/alpha/");
    let mut d = d;
    assert!(d.child.try_wait().unwrap().is_none(), "SIGHUP killed borgstored");
}

#[test]
fn startup_errors_name_the_setting() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let (a, b) = (ca.server("a"), ca.server("b"));
    let cert = write(pki.path(), "a.pem", &a.cert);
    let wrong_key = write(pki.path(), "b.key", &b.key);
    let missing = pki.path().join("missing.pem");
    let server = |args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let backend = format!("file://{}/store", dir.path().display());
        Command::new(binary("borgstore-server-rest"))
            .args(["--port", &free_port().to_string(), "--backend", &backend])
            .args(args)
            .output()
            .unwrap()
    };
    let daemon = |args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("alpha=file://{}/alpha", dir.path().display());
        let socket = dir.path().join("d.sock");
        let rest = format!("127.0.0.1:{}", free_port());
        Command::new(binary("borgstored"))
            .args(["--socket", s(&socket), "--store", &store, "--rest", &rest, "--public-on", "alpha=rest"])
            .args(args)
            .output()
            .unwrap()
    };
    let cases: [(&[&str], &str); 4] = [
        (&["--tls-cert", s(&cert)], "--tls-cert"),
        (&["--tls-cert", s(&cert), "--tls-key", s(&wrong_key)], "does not fit"),
        (&["--tls-cert", s(&missing), "--tls-key", s(&wrong_key)], "missing.pem"),
        (&["--tls-client-ca", s(&cert)], "--tls-client-ca"),
    ];
    for (args, want) in cases {
        for (which, out) in [("borgstore-server-rest", server(args)), ("borgstored", daemon(args))] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{which} {args:?}: {stderr}");
            assert!(stderr.contains(want) && !stderr.contains("panicked"), "{which} {args:?}: {stderr}");
        }
    }
}

#[test]
fn borg2_over_https() {
    let borg = workspace().join("target/venv-borg/bin/borg");
    assert!(borg.exists(), "borg 2 is not installed at {}: run tests/setup/borg.sh (tests/run does)", borg.display());
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let ca_file = write(pki.path(), "ca.pem", &ca.pem());
    let server = tls_server(pki.path(), &ca.server("server"), &[]);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(workspace().join("tests/python/borg_e2e.sh"))
        .arg(format!("https://client:secret@127.0.0.1:{}/", server.port))
        .arg(work.path())
        .env("REQUESTS_CA_BUNDLE", &ca_file)
        .output()
        .expect("run borg_e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("borg_e2e: PASSED"),
        "borg e2e over https failed:\n{stdout}\n--- stderr\n{}\n--- server log\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    assert!(server.store_path().join("config").is_dir(), "no repository in the store");
}

#[test]
fn a_client_certificate_names_its_principal_and_picks_its_rule() {
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let clients = Ca::new("client CA");
    let (cert, key) = install(pki.path(), &ca.server("server"));
    let ca_file = write(pki.path(), "clients.pem", &clients.pem());
    let port = free_port();
    let root = pki.path();
    let config = write(
        root,
        "borgstored.toml",
        &format!(
            r#"
rest = "127.0.0.1:{port}"
tls_cert = "{cert}"
tls_key = "{key}"
tls_client_ca = "{ca}"
[stores.main]
url = "file://{root}/main"
create = true
[[stores.main.rules]]
cert_cn = "backup-host"
permissions = "no-delete"
[[stores.main.rules]]
cert_cn = "admin-host"
"#,
            cert = cert.display(),
            key = key.display(),
            ca = ca_file.display(),
            root = root.display()
        ),
    );
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), &["--config", s(&config)], &[]);
    wait_port(port, "borgstored over TLS", &d.log);
    let as_ = |cn: &str| client_config(&ca.pem(), Some(&clients.client(cn)));
    // No password anywhere: the certificate is the principal.
    let mut backup = connect(port, &as_("backup-host")).unwrap();
    assert_eq!(send(&mut backup, "POST", "/main/data/0001", b"v1"), Ok(200));
    assert_eq!(send(&mut backup, "POST", "/main/data/0001", b"v2"), Ok(403), "no-delete cannot overwrite");
    assert_eq!(send(&mut backup, "DELETE", "/main/data/0001", b""), Ok(403), "no-delete cannot delete");
    assert_eq!(get(&mut backup, "/main/data/0001"), Ok(200));
    let mut admin = connect(port, &as_("admin-host")).unwrap();
    assert_eq!(send(&mut admin, "DELETE", "/main/data/0001", b""), Ok(200));
    // A certificate from the right CA whose name no rule has: refused.
    let mut stranger = connect(port, &as_("stranger")).unwrap();
    assert_eq!(get(&mut stranger, "/main/data/"), Ok(403));
    assert!(!root.join("main/data/0001").exists());
}
