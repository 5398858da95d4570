//! The systemd units and the nginx config in `systemd/` (issue 7), exercised without
//! systemd as PID 1:
//!
//! - `systemd-analyze verify` accepts every unit, system and `--user`, with no warning.
//! - Each service's `ExecStart=` line, read from the shipped file, runs under Debian's
//!   `systemd-socket-activate` on the path of the matching `.socket` unit, with the
//!   environment systemd would give it (`Environment=`, `EnvironmentFile=`) and a
//!   `NOTIFY_SOCKET` the test binds: the process only starts on the first connection,
//!   adopts the socket and sends `READY=1` (and `STOPPING=1` on the way out).
//! - Real nginx with the shipped `nginx-borgstore.conf` routes `/repos/<name>/` to two
//!   socket-activated REST servers, and the Python borgstore REST client passes its round
//!   trip through it on each.
//! - With `BORGSTORE_REST_IDLE_TIMEOUT` set in the repository's env file, the REST server
//!   exits 0 once idle (never during a request), and the next connection, even one made
//!   while no server runs, starts it again with every stored value still there. The test
//!   plays PID 1's part here: it holds the listening socket across server runs and hands
//!   it to each `systemd-socket-activate` (which waits for a connection, then starts the
//!   server), as a `.socket` unit does.
//!
//! What the tests change in the shipped files, and nothing else: `/usr/bin/<binary>`
//! becomes the binary cargo built; `/srv/borgstore`, `/etc/borgstore` and
//! `/run/borgstore` become directories in a temp dir; specifiers (`%i`, `%t`) and
//! environment variables are resolved as systemd resolves them.

use borgstore_client::{BlockingClient, ClientOptions};
use borgstore_tests::daemon::binary;
use borgstore_tests::nginx::Nginx;
use borgstore_tests::python::{run_ok, workspace, Version};
use borgstore_tests::rest::request;
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";
const ANALYZE: &str = "/usr/bin/systemd-analyze";
const ACCEPT: &str = "application/vnd.x.borgstore.rest.v1";

/// A tool from Debian's systemd package; panics with what to install when missing.
fn tool(path: &str) -> &str {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: apt-get install systemd nginx-light (tests/run installs them)"
    );
    path
}

fn systemd_dir() -> PathBuf {
    workspace().join("systemd")
}

// ---------------------------------------------------------------------------------------
// Reading the shipped files the way systemd does (as far as these files need).

/// A unit file as (section, key, value) entries in file order.
struct Unit {
    file: String,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    /// `systemd/<rel>`. Comments, sections and `Key=Value`; the files use no line
    /// continuations (asserted, so the reader never misreads one).
    fn load(rel: &str) -> Unit {
        let text = std::fs::read_to_string(systemd_dir().join(rel)).unwrap_or_else(|e| panic!("systemd/{rel}: {e}"));
        let mut section = String::new();
        let mut entries = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            assert!(!line.ends_with('\\'), "systemd/{rel}: this reader does not handle continued lines: {line}");
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
                continue;
            }
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("systemd/{rel}: not Key=Value: {line}"));
            entries.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
        Unit { file: rel.to_string(), entries }
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.as_str()).collect()
    }

    /// The one value of `key`; panics when it is missing or repeated.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key)[..] {
            [v] => v,
            ref other => panic!("{}: [{section}] {key}= expected once, found {other:?}", self.file),
        }
    }
}

/// Resolve the specifiers these units use: `%i` (instance), `%t` (runtime directory),
/// `%%`. Any other specifier is a test failure (teach this function first).
fn specifiers(text: &str, instance: Option<&str>, runtime: Option<&Path>) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('i') => out.push_str(instance.unwrap_or_else(|| panic!("%i outside a template instance: {text}"))),
            Some('t') => out.push_str(&runtime.expect("%t needs a runtime directory").display().to_string()),
            other => panic!("specifier %{other:?} in {text:?} is not handled by this test"),
        }
    }
    out
}

/// A temp dir standing in for the root file system: `/srv/borgstore`, `/etc/borgstore`
/// and `/run/borgstore` live in it, and `/usr/bin/<ours>` is the built binary.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().expect("temp dir");
        for d in ["srv/borgstore", "etc/borgstore", "run/borgstore"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        Root { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `text` with the system paths moved into the temp dir.
    fn localize(&self, text: &str) -> String {
        let mut out = text.to_string();
        for name in ["borgstored", "borgstore-server-rest"] {
            out = out.replace(&format!("/usr/bin/{name}"), &binary(name).display().to_string());
        }
        for d in ["/srv/borgstore", "/etc/borgstore", "/run/borgstore"] {
            out = out.replace(d, &self.path(&d[1..]).display().to_string());
        }
        out
    }
}

/// The environment systemd gives a service: `Environment=` lines, then the files of
/// `EnvironmentFile=` (later settings win), each value as systemd reads it.
fn service_env(unit: &Unit, instance: Option<&str>, root: &Root) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for line in unit.all("Service", "Environment") {
        assert!(!line.contains(['"', '\'']), "{}: quoted Environment= is not handled here: {line}", unit.file);
        for assignment in line.split_whitespace() {
            let (k, v) = assignment.split_once('=').expect("Environment=NAME=VALUE");
            env.insert(k.to_string(), specifiers(v, instance, None));
        }
    }
    for file in unit.all("Service", "EnvironmentFile") {
        let (optional, file) = match file.strip_prefix('-') {
            Some(f) => (true, f),
            None => (false, file),
        };
        let path = root.localize(&specifiers(file, instance, None));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(_) if optional => continue,
            Err(e) => panic!("{}: EnvironmentFile {path}: {e}", unit.file),
        };
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{path}: not NAME=VALUE: {line}"));
            env.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    env
}

/// The `ExecStart=` command line of `unit`, split and expanded as systemd does:
/// `${NAME}` is one word, `$NAME` as a whole word splits at blanks (none when empty).
/// The binary must be installed in /usr/bin; it becomes the built one.
fn exec_start(
    unit: &Unit,
    env: &BTreeMap<String, String>,
    instance: Option<&str>,
    runtime: Option<&Path>,
    root: &Root,
) -> Vec<String> {
    let line = specifiers(unit.one("Service", "ExecStart"), instance, runtime);
    assert!(!line.contains(['"', '\'', '\\']), "{}: quoting in ExecStart= is not handled here: {line}", unit.file);
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            let value = env.get(name).unwrap_or_else(|| panic!("{}: ${name} is not set", unit.file));
            argv.extend(value.split_whitespace().map(String::from));
            continue;
        }
        let mut w = word.to_string();
        while let Some(start) = w.find("${") {
            let end = start + w[start..].find('}').expect("closing brace");
            let name = &w[start + 2..end];
            let value = env.get(name).unwrap_or_else(|| panic!("{}: ${{{name}}} is not set", unit.file));
            w = format!("{}{value}{}", &w[..start], &w[end + 1..]);
        }
        argv.push(w);
    }
    assert!(argv[0].starts_with("/usr/bin/"), "{}: ExecStart should run /usr/bin/...: {line}", unit.file);
    argv.iter().map(|a| root.localize(a)).collect()
}

// ---------------------------------------------------------------------------------------
// Running units the way systemd would.

/// The NOTIFY_SOCKET of a service: a datagram socket the test reads.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl Notify {
    fn bind(path: PathBuf) -> Notify {
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        // A service that runs as another user must be able to send.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        Notify { sock, path, seen: Vec::new() }
    }

    /// Wait for a message with a line that starts with `what`; returns every line seen so far.
    fn expect(&mut self, what: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.seen.iter().any(|l| l.starts_with(what)) {
                return self.seen.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {what} on NOTIFY_SOCKET within {timeout:?}; got {:?}", self.seen);
            self.sock.set_read_timeout(Some(left)).expect("timeout");
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.extend(text.lines().map(String::from));
            }
        }
    }

    /// Forget what was seen (to wait for a second READY=1).
    fn clear(&mut self) {
        self.drain();
        self.seen.clear();
    }

    fn drain(&mut self) {
        self.sock.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.seen.extend(String::from_utf8_lossy(&buf[..n]).lines().map(String::from));
        }
        self.sock.set_nonblocking(false).expect("blocking");
    }

    /// Nothing was sent so far.
    fn assert_silent(&mut self) {
        self.drain();
        assert!(self.seen.is_empty(), "notified before the first connection: {:?}", self.seen);
    }
}

/// Where `systemd-socket-activate` gets its listening socket.
enum Listen<'a> {
    /// It binds this path itself (`-l PATH`).
    Path(&'a Path),
    /// It inherits this socket (fd 3, `LISTEN_FDS=1`), as from a `.socket` unit.
    Held(&'a UnixListener),
}

/// A service started through `systemd-socket-activate`. Killed on drop.
struct Activated {
    child: Child,
    log: PathBuf,
}

impl Activated {
    /// `systemd-socket-activate [-l PATH] --fdname=FDNAME -E NAME=VALUE... ARGV...`.
    /// systemd-socket-activate passes on only PATH, HOME, USER, TERM and the `-E`
    /// variables, like a unit's clean environment. `user`: run as this (uid, gid).
    fn start(
        listen: Listen<'_>,
        fdname: &str,
        env: &BTreeMap<String, String>,
        argv: &[String],
        log: &Path,
        user: Option<(u32, u32)>,
    ) -> Activated {
        let logfile = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut flags = vec![format!("--fdname={fdname}")];
        for (k, v) in env {
            flags.push("-E".into());
            flags.push(format!("{k}={v}"));
        }
        let mut cmd = match listen {
            Listen::Path(path) => {
                let mut c = Command::new(tool(ACTIVATE));
                c.arg("-l").arg(path);
                c
            }
            Listen::Held(listener) => {
                // LISTEN_PID must be the pid of the process that reads it: the shell
                // execs systemd-socket-activate, which keeps its pid.
                let mut c = Command::new("/bin/sh");
                c.args(["-c", "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$@\"", "sh", tool(ACTIVATE)]);
                let fd: RawFd = listener.as_raw_fd();
                // SAFETY: dup2 and fcntl are async-signal-safe; nothing else runs here.
                unsafe {
                    c.pre_exec(move || {
                        if fd == 3 {
                            nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
                        } else {
                            nix::unistd::dup2(fd, 3)?;
                        }
                        Ok(())
                    });
                }
                c
            }
        };
        cmd.args(&flags).args(argv).stdin(Stdio::null()).stdout(logfile.try_clone().expect("log")).stderr(logfile);
        for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"] {
            cmd.env_remove(var);
        }
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().expect("start systemd-socket-activate");
        Activated { child, log: log.to_path_buf() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The program the process runs now (systemd-socket-activate until the first connection).
    fn exe(&self) -> PathBuf {
        std::fs::read_link(format!("/proc/{}/exe", self.pid())).expect("/proc/PID/exe")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still waiting for its first connection: not started yet.
    fn assert_waiting(&self) {
        assert!(
            self.exe().ends_with("systemd-socket-activate"),
            "started before any connection: {}; log:\n{}",
            self.exe().display(),
            self.log_text()
        );
    }

    fn assert_runs(&self, program: &Path) {
        assert_eq!(self.exe(), program, "log:\n{}", self.log_text());
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit within {timeout:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        self.wait_exit(Duration::from_secs(30))
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_path(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over a Unix socket with `Connection: close`: (status, body).
fn unix_http(sock: &Path, method: &str, target: &str, auth: Option<(&str, &str)>, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    send_request(&mut s, method, target, auth, body);
    read_response(&mut s)
}

fn send_request(s: &mut UnixStream, method: &str, target: &str, auth: Option<(&str, &str)>, body: &[u8]) {
    send_head(s, method, target, auth, body.len());
    s.write_all(body).expect("send body");
}

/// The head of a request whose body of `length` bytes follows.
fn send_head(s: &mut UnixStream, method: &str, target: &str, auth: Option<(&str, &str)>, length: usize) {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nAccept: {ACCEPT}\r\nConnection: close\r\n");
    if let Some((u, p)) = auth {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        head.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    s.write_all(head.as_bytes()).expect("send");
}

fn read_response(s: &mut UnixStream) -> (u16, Vec<u8>) {
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no response head: {raw:?}"));
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad head: {head}"));
    (status, raw[end + 4..].to_vec())
}

// ---------------------------------------------------------------------------------------

const SYSTEM_UNITS: [&str; 4] =
    ["borgstored.socket", "borgstored.service", "borgstore-rest@.socket", "borgstore-rest@.service"];
const USER_UNITS: [&str; 2] = ["user/borgstored.socket", "user/borgstored.service"];

/// Copies of the units in `dir`, ExecStart's /usr/bin binaries replaced by the built
/// ones; returns the paths to verify (template units as the instance `alpha`).
fn unit_copies(units: &[&str], dir: &Path, rewrite: bool) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut paths = Vec::new();
    for rel in units {
        let mut text = std::fs::read_to_string(systemd_dir().join(rel)).expect("read unit");
        if rewrite && rel.ends_with(".service") {
            let lines: Vec<String> = text
                .lines()
                .map(|l| match l.strip_prefix("ExecStart=").and_then(built_binary) {
                    Some(cmd) => format!("ExecStart={cmd}"),
                    None => l.to_string(),
                })
                .collect();
            let rewritten = lines.join("\n") + "\n";
            assert_ne!(text, rewritten, "{rel}: no ExecStart=/usr/bin/borgstore... line");
            text = rewritten;
        }
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        std::fs::write(dir.join(name), text).expect("write unit copy");
        paths.push(dir.join(name.replace("@.", "@alpha.")));
    }
    paths
}

/// `cmd` with its /usr/bin/<ours> binary replaced by the built one.
fn built_binary(cmd: &str) -> Option<String> {
    ["borgstored", "borgstore-server-rest"].iter().find_map(|name| {
        let installed = format!("/usr/bin/{name}");
        let args = cmd.strip_prefix(&installed).filter(|rest| rest.is_empty() || rest.starts_with(' '))?;
        Some(format!("{}{args}", binary(name).display()))
    })
}

/// `systemd-analyze [--user] verify --man=no PATHS`: (success, output lines).
fn analyze_verify(user: bool, paths: &[PathBuf], runtime: &Path) -> (bool, Vec<String>) {
    let mut cmd = Command::new(tool(ANALYZE));
    if user {
        cmd.arg("--user");
    }
    // A user manager needs a runtime directory; give it a private one, and keep the
    // checks off the machine's own user session.
    let out = cmd
        .args(["verify", "--man=no"])
        .args(paths)
        .env("XDG_RUNTIME_DIR", runtime)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.lines().map(String::from).collect())
}

/// Verify passes, and says nothing about our units. The unmodified units only draw the
/// complaint that their /usr/bin binaries are not installed here (proving the copies hide
/// nothing else), and a unit with a mistake is reported (proving the check can fail).
#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tmp.path().join("xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let about_us = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.contains("borgstore") || l.contains(&tmp.path().display().to_string()))
            .cloned()
            .collect()
    };
    for (user, units, sub) in [(false, &SYSTEM_UNITS[..], "system"), (true, &USER_UNITS[..], "user")] {
        let paths = unit_copies(units, &tmp.path().join(sub), true);
        let (ok, lines) = analyze_verify(user, &paths, &runtime);
        assert!(ok, "systemd-analyze verify failed for the {sub} units:\n{}", lines.join("\n"));
        assert!(about_us(&lines).is_empty(), "warnings about the {sub} units:\n{}", lines.join("\n"));

        let paths = unit_copies(units, &tmp.path().join(format!("{sub}-as-shipped")), false);
        let (_, lines) = analyze_verify(user, &paths, &runtime);
        for line in about_us(&lines) {
            let missing_binary = ["borgstored", "borgstore-server-rest"].iter().any(|b| {
                line.contains(&format!("Command /usr/bin/{b} is not executable"))
                    && !Path::new("/usr/bin").join(b).exists()
            });
            assert!(missing_binary, "{sub} units as shipped: unexpected diagnostic: {line}\n{}", lines.join("\n"));
        }
    }
    // The check is not blind: a misspelt key in a copy is reported.
    let broken = tmp.path().join("broken");
    let paths = unit_copies(&SYSTEM_UNITS, &broken, true);
    let service = broken.join("borgstored.service");
    let text = std::fs::read_to_string(&service).unwrap().replace("NoNewPrivileges=", "NoNewPrivilege=");
    std::fs::write(&service, text).unwrap();
    let (_, lines) = analyze_verify(false, &paths, &runtime);
    assert!(
        about_us(&lines).iter().any(|l| l.contains("NoNewPrivilege")),
        "a misspelt key went unnoticed:\n{}",
        lines.join("\n")
    );
}

/// The sysusers.d file creates the user and group the units run as (in a temp root).
#[test]
fn sysusers_file_creates_the_service_user() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    let out = Command::new(tool("/usr/bin/systemd-sysusers"))
        .arg(format!("--root={}", root.path().display()))
        .arg(systemd_dir().join("sysusers-borgstore.conf"))
        .output()
        .expect("run systemd-sysusers");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("borgstore:") && l.contains(":/srv/borgstore:")), "{passwd}");
    assert!(group.lines().any(|l| l.starts_with("borgstore:")), "{group}");
    for rel in ["borgstored.service", "borgstore-rest@.service"] {
        let u = Unit::load(rel);
        assert_eq!((u.one("Service", "User"), u.one("Service", "Group")), ("borgstore", "borgstore"), "{rel}");
    }
    assert_eq!(Unit::load("borgstored.socket").one("Socket", "SocketGroup"), "borgstore");
}

/// What the issue promises about the units, read from the files.
#[test]
fn units_declare_notify_hardening_and_their_sockets() {
    for rel in ["borgstored.service", "borgstore-rest@.service"] {
        let u = Unit::load(rel);
        assert_eq!(u.one("Service", "Type"), "notify", "{rel}");
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("ReadWritePaths", "/srv/borgstore"),
            ("RuntimeDirectory", "borgstore"),
            ("RuntimeDirectoryPreserve", "yes"),
        ] {
            assert_eq!(u.one("Service", key), value, "{rel}: {key}=");
        }
    }
    assert_eq!(Unit::load("borgstored.socket").one("Socket", "ListenStream"), "/run/borgstore/borgstored.sock");
    assert_eq!(Unit::load("borgstore-rest@.socket").one("Socket", "ListenStream"), "/run/borgstore/%i.sock");
    let rest = Unit::load("borgstore-rest@.service");
    assert_eq!(rest.one("Service", "EnvironmentFile"), "/etc/borgstore/%i.env");
    assert!(rest.one("Service", "ExecStart").contains("--socket-activation"));
    assert_eq!(Unit::load("user/borgstored.socket").one("Socket", "ListenStream"), "%t/borgstore/borgstored.sock");
    assert_eq!(Unit::load("user/borgstored.service").one("Service", "Type"), "notify");
}

/// borgstored.service's ExecStart with the shipped example config, on the path of
/// borgstored.socket: starts on the first client connection, serves the configured
/// store, notifies READY/STATUS, and on SIGTERM STOPPING and exit 0.
#[test]
fn borgstored_unit_starts_on_first_connect_and_notifies() {
    let root = Root::new();
    let config = std::fs::read_to_string(systemd_dir().join("borgstored.toml")).expect("systemd/borgstored.toml");
    std::fs::write(root.path("etc/borgstore/borgstored.toml"), root.localize(&config)).unwrap();
    let service = Unit::load("borgstored.service");
    let socket = Unit::load("borgstored.socket");
    assert_eq!(socket.one("Socket", "Service"), "borgstored.service");
    let env = service_env(&service, None, &root);
    let argv = exec_start(&service, &env, None, None, &root);
    assert_eq!(argv[1..], ["--config".to_string(), root.path("etc/borgstore/borgstored.toml").display().to_string()]);
    let sock = PathBuf::from(root.localize(socket.one("Socket", "ListenStream")));

    let mut notify = Notify::bind(root.path("notify.sock"));
    let mut env = env;
    env.insert("NOTIFY_SOCKET".into(), notify.path.display().to_string());
    env.insert("RUST_LOG".into(), "info".into());
    let mut d = Activated::start(Listen::Path(&sock), "borgstored.socket", &env, &argv, &root.path("log"), None);
    wait_for_path(&sock);
    std::thread::sleep(Duration::from_millis(300));
    d.assert_waiting();
    notify.assert_silent();

    // The first client connection starts the daemon, which adopts the socket.
    let client = BlockingClient::connect(ClientOptions::new("main").socket(&sock)).expect("connect");
    let key = "0123456789abcdef0123456789abcdef";
    client.store(&format!("data/{key}"), b"socket activated".to_vec()).expect("store");
    assert_eq!(client.load(&format!("data/{key}"), 0, None, false).unwrap(), b"socket activated");
    notify.expect("READY=1", Duration::from_secs(10));
    notify.expect("STATUS=serving 1 store", Duration::from_secs(5));
    d.assert_runs(&binary("borgstored"));
    assert!(root.path(&format!("srv/borgstore/main/data/01/23/{key}")).is_file(), "the example config's store");
    assert!(d.log_text().contains("socket from systemd (borgstored.socket)"), "{}", d.log_text());
    drop(client);

    assert!(d.terminate().success(), "exit status; log:\n{}", d.log_text());
    notify.expect("STOPPING=1", Duration::from_secs(5));
}

/// The per-user units: run as an unprivileged user (nobody, when the test runs as root)
/// with the user manager's XDG directories, the daemon serves the `default` store on
/// `%t/borgstore/borgstored.sock`, exactly where the `borgstore` CLI of that user looks.
#[test]
fn user_unit_serves_the_default_store_where_the_cli_looks() {
    let tmp = tempfile::tempdir().unwrap();
    let user = if nix::unistd::getuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").ok().flatten().expect("user nobody");
        std::os::unix::fs::chown(tmp.path(), Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
        Some((nobody.uid.as_raw(), nobody.gid.as_raw()))
    } else {
        None
    };
    if user.is_some() {
        // The unprivileged user must reach the built binaries.
        for b in ["borgstored", "borgstore"] {
            let path = binary(b);
            for p in path.ancestors().skip(1) {
                let mode = std::fs::metadata(p).unwrap().permissions().mode();
                assert!(mode & 0o001 != 0, "{} is not searchable by others; this test runs {b} as nobody", p.display());
            }
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert!(mode & 0o001 != 0, "{} is not executable by others", path.display());
        }
    }
    let runtime = tmp.path().join("xdg-runtime");
    let data = tmp.path().join("xdg-data");
    let home = tmp.path().join("home");
    for d in [&runtime, &data, &home] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(d, Some(uid), Some(gid)).unwrap();
        }
    }
    let root = Root::new();
    let service = Unit::load("user/borgstored.service");
    let socket = Unit::load("user/borgstored.socket");
    let sock = PathBuf::from(specifiers(socket.one("Socket", "ListenStream"), None, Some(&runtime)));
    // systemd makes the socket's directory (DirectoryMode=).
    let sock_dir = sock.parent().unwrap();
    std::fs::create_dir(sock_dir).unwrap();
    std::fs::set_permissions(sock_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(sock_dir, Some(uid), Some(gid)).unwrap();
    }
    let mut env = service_env(&service, None, &root);
    let argv = exec_start(&service, &env, None, Some(&runtime), &root);
    let mut notify = Notify::bind(tmp.path().join("notify.sock"));
    // What a user manager has in its environment.
    for (k, v) in [("XDG_RUNTIME_DIR", &runtime), ("XDG_DATA_HOME", &data), ("HOME", &home)] {
        env.insert(k.into(), v.display().to_string());
    }
    env.insert("NOTIFY_SOCKET".into(), notify.path.display().to_string());
    let log = tmp.path().join("log");
    let mut d = Activated::start(Listen::Path(&sock), "borgstored.socket", &env, &argv, &log, user);
    wait_for_path(&sock);
    d.assert_waiting();
    notify.assert_silent();

    let cli = |args: &[&str], input: Option<&Path>| {
        let mut c = Command::new(binary("borgstore"));
        c.args(args).env("XDG_RUNTIME_DIR", &runtime).env("HOME", &home);
        for var in ["BORGSTORE_SOCKET", "BORGSTORE_STORE"] {
            c.env_remove(var);
        }
        if let Some(f) = input {
            c.stdin(std::fs::File::open(f).unwrap());
        }
        if let Some((uid, gid)) = user {
            c.uid(uid).gid(gid);
        }
        let out = c.output().expect("run borgstore");
        assert!(
            out.status.success(),
            "borgstore {args:?}: {}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log_text()
        );
        out.stdout
    };
    cli(&["demo"], None);
    let value = tmp.path().join("value");
    std::fs::write(&value, b"per-user store").unwrap();
    cli(&["store", "config/greeting", "-"], Some(&value));
    assert_eq!(cli(&["load", "config/greeting"], None), b"per-user store");
    notify.expect("READY=1", Duration::from_secs(10));
    d.assert_runs(&binary("borgstored"));
    assert!(data.join("borgstore/default").is_dir(), "the default store lives under $XDG_DATA_HOME");
    assert!(d.terminate().success(), "log:\n{}", d.log_text());
    notify.expect("STOPPING=1", Duration::from_secs(5));
}

/// One repository of the REST template: its env file, its activated server.
struct Repo {
    name: String,
    user: String,
    password: String,
    server: Activated,
    notify: Notify,
}

/// Write /etc/borgstore/NAME.env and start borgstore-rest@NAME.service's ExecStart under
/// systemd-socket-activate on borgstore-rest@NAME.socket's path (or the held socket).
fn start_repo(root: &Root, name: &str, extra_env: &str, held: Option<&UnixListener>) -> Repo {
    let user = format!("{name}-user");
    let password = format!("{name}-secret-{}", std::process::id());
    std::fs::write(
        root.path(&format!("etc/borgstore/{name}.env")),
        format!("# test env file\nBORGSTORE_REST_USERNAME={user}\nBORGSTORE_REST_PASSWORD={password}\n{extra_env}"),
    )
    .unwrap();
    let notify = Notify::bind(root.path(&format!("{name}-notify.sock")));
    let server = activate_repo(root, name, &notify.path, held);
    Repo { name: name.to_string(), user, password, server, notify }
}

/// borgstore-rest@NAME.service's ExecStart with its environment under
/// systemd-socket-activate, on borgstore-rest@NAME.socket's path or on `held`.
fn activate_repo(root: &Root, name: &str, notify: &Path, held: Option<&UnixListener>) -> Activated {
    let service = Unit::load("borgstore-rest@.service");
    let socket = Unit::load("borgstore-rest@.socket");
    let mut env = service_env(&service, Some(name), root);
    let argv = exec_start(&service, &env, Some(name), None, root);
    let sock = PathBuf::from(root.localize(&specifiers(socket.one("Socket", "ListenStream"), Some(name), None)));
    assert_eq!(sock, root.path(&format!("run/borgstore/{name}.sock")));
    env.insert("NOTIFY_SOCKET".into(), notify.display().to_string());
    env.insert("RUST_LOG".into(), "info".into());
    let listen = match held {
        Some(l) => Listen::Held(l),
        None => Listen::Path(&sock),
    };
    let fdname = format!("borgstore-rest@{name}.socket");
    let server = Activated::start(listen, &fdname, &env, &argv, &root.path(&format!("{name}.log")), None);
    wait_for_path(&sock);
    server
}

/// Two repositories, each its own socket-activated server with credentials from its own
/// env file, behind real nginx running the shipped nginx-borgstore.conf: the Python
/// client's round trip passes on each, through `/repos/<name>/`.
#[test]
fn nginx_routes_two_repositories_to_their_activated_servers() {
    let root = Root::new();
    let mut repos = vec![start_repo(&root, "alpha", "", None), start_repo(&root, "beta", "", None)];
    for r in &mut repos {
        r.server.assert_waiting();
        r.notify.assert_silent();
    }
    let shipped = std::fs::read_to_string(systemd_dir().join("nginx-borgstore.conf")).expect("nginx-borgstore.conf");
    let config = root.localize(&shipped);
    assert!(shipped.contains("/run/borgstore/") && config != shipped, "the config routes to /run/borgstore/NAME.sock");
    let nginx = Nginx::start(&config);

    for r in &mut repos {
        let url = format!("http://{}:{}@127.0.0.1:{}/repos/{}/", r.user, r.password, nginx.port, r.name);
        let out = run_ok(Version::V070, "rest_client_suite.py", &["roundtrip", &url], &[]);
        assert!(out.lines().any(|l| l.starts_with("OK roundtrip ")), "no OK line:\n{out}");
        r.notify.expect("READY=1", Duration::from_secs(10));
        r.server.assert_runs(&binary("borgstore-server-rest"));
        assert!(root.path(&format!("srv/borgstore/{}/data", r.name)).is_dir(), "{} was created", r.name);
    }
    // The older client too, and each repository only takes its own credentials.
    let beta = &repos[1];
    let url = format!("http://{}:{}@127.0.0.1:{}/repos/beta/", beta.user, beta.password, nginx.port);
    run_ok(Version::V055, "rest_client_suite.py", &["roundtrip", &url], &[]);
    let alpha_auth = Some((repos[0].user.as_str(), repos[0].password.as_str()));
    assert_eq!(request(nginx.port, "HEAD", "/repos/alpha/", None, &[], b"").status, 401);
    assert_eq!(request(nginx.port, "HEAD", "/repos/beta/", alpha_auth, &[], b"").status, 401);
    assert_eq!(request(nginx.port, "HEAD", "/repos/alpha/", alpha_auth, &[], b"").status, 200);
    // A large value goes through unbuffered and unlimited.
    let big: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(request(nginx.port, "POST", "/repos/alpha/config/big", alpha_auth, &[], &big).status, 200);
    assert_eq!(std::fs::read(root.path("srv/borgstore/alpha/config/big")).unwrap(), big);
    assert!(!nginx.error_log().contains("[crit]"), "{}", nginx.error_log());
    // Names outside the location's pattern never reach a socket; a repository without a
    // socket is a bad gateway.
    assert_eq!(request(nginx.port, "HEAD", "/repos/Alpha/", alpha_auth, &[], b"").status, 404);
    assert_eq!(request(nginx.port, "HEAD", "/repos/al.pha/", alpha_auth, &[], b"").status, 404);
    assert_eq!(request(nginx.port, "HEAD", "/repos/gamma/", alpha_auth, &[], b"").status, 502);

    for r in &mut repos {
        assert!(r.server.terminate().success(), "{}: log:\n{}", r.name, r.server.log_text());
        r.notify.expect("STOPPING=1", Duration::from_secs(5));
    }
}

/// BORGSTORE_REST_IDLE_TIMEOUT from the env file: the server outlives a request that
/// takes longer than the timeout, exits 0 once idle, and the next connection, made while
/// no server runs, starts a new one that serves everything stored before.
#[test]
fn rest_unit_exits_when_idle_and_the_next_connection_starts_it_again() {
    let root = Root::new();
    let timeout = 2;
    // PID 1's part: the listening socket of borgstore-rest@gamma.socket, alive across runs.
    let sock = root.path("run/borgstore/gamma.sock");
    let listener = UnixListener::bind(&sock).expect("bind the unit's socket");
    let mut gamma = start_repo(&root, "gamma", &format!("BORGSTORE_REST_IDLE_TIMEOUT={timeout}\n"), Some(&listener));
    let auth = Some((gamma.user.clone(), gamma.password.clone()));
    let auth = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    std::thread::sleep(Duration::from_millis(300));
    gamma.server.assert_waiting();
    gamma.notify.assert_silent();

    assert_eq!(unix_http(&sock, "POST", "/?cmd=create", auth, b"").0, 200);
    assert_eq!(unix_http(&sock, "POST", "/config/x", auth, b"kept across restarts").0, 200);
    gamma.notify.expect("READY=1", Duration::from_secs(10));
    gamma.server.assert_runs(&binary("borgstore-server-rest"));
    let first_pid = gamma.server.pid();

    // An upload that trickles in for longer than the timeout is in flight all along.
    let slow: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    let started = Instant::now();
    let mut s = UnixStream::connect(&sock).unwrap();
    send_head(&mut s, "POST", "/config/slow", auth, slow.len());
    for (i, chunk) in slow.chunks(slow.len() / 16).enumerate() {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(chunk).unwrap();
        if i == 12 {
            // Past the timeout since the last request ended: still serving new connections.
            assert!(started.elapsed() > Duration::from_secs(timeout));
            assert_eq!(unix_http(&sock, "GET", "/config/x", auth, b""), (200, b"kept across restarts".to_vec()));
        }
    }
    assert_eq!(read_response(&mut s).0, 200);
    assert!(started.elapsed() > Duration::from_secs(timeout + 1), "the upload took {:?}", started.elapsed());
    assert!(
        gamma.server.child.try_wait().unwrap().is_none(),
        "exited during a request; log:\n{}",
        gamma.server.log_text()
    );

    // Idle now: it exits 0, not before the timeout.
    let last = Instant::now();
    let status = gamma.server.wait_exit(Duration::from_secs(timeout + 20));
    let quiet = last.elapsed();
    assert!(status.success(), "idle exit status {status:?}; log:\n{}", gamma.server.log_text());
    assert!(quiet >= Duration::from_millis(timeout * 1000 - 300), "exited after {quiet:?} without requests");
    gamma.notify.expect("STOPPING=1", Duration::from_secs(5));
    assert!(gamma.server.log_text().contains(&format!("no request for {timeout} s")), "{}", gamma.server.log_text());

    // A client connects while no server runs: the socket holds the connection...
    gamma.notify.clear();
    let mut pending = UnixStream::connect(&sock).expect("the socket still accepts connections");
    send_request(&mut pending, "GET", "/config/x", auth, b"");
    pending.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut byte = [0u8; 1];
    let err = pending.read(&mut byte).expect_err("an answer with no server running");
    assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
    // ... and the next activation (systemd watches the socket again) answers it.
    gamma.server = activate_repo(&root, "gamma", &gamma.notify.path, Some(&listener));
    let (status, body) = read_response(&mut pending);
    assert_eq!((status, body.as_slice()), (200, &b"kept across restarts"[..]));
    gamma.notify.expect("READY=1", Duration::from_secs(10));
    assert_ne!(gamma.server.pid(), first_pid, "a new server process");
    let (status, body) = unix_http(&sock, "GET", "/config/slow", auth, b"");
    assert_eq!((status, body), (200, slow));
    // It idles out again, cleanly.
    assert!(gamma.server.wait_exit(Duration::from_secs(timeout + 20)).success(), "{}", gamma.server.log_text());
}
