//! A real OpenSSH `sshd` on a spare loopback port, for the sftp backend's tests.
//!
//! Each [`Sshd`] lives in its own temp directory: a fresh ed25519 host key, a fresh client
//! key listed in `authorized_keys`, a `known_hosts` file for the client, the config, pid
//! file and log. It runs `/usr/sbin/sshd -D -e -f CONFIG` as the current user (root here:
//! `PermitRootLogin yes`), listens on 127.0.0.1 only, and serves sftp with `internal-sftp`
//! whose start directory is `root/` in the temp directory, so relative `sftp://` paths
//! land there. [`Sshd::authorize_key`] adds client keys with `authorized_keys` options
//! (forced commands; `environment=` is accepted for `BORG_*` and `PATH`). Every test
//! gets fresh store URLs ([`Sshd::url`], [`Sshd::abs_url`]) and
//! client settings ([`Sshd::options`] for code, [`Sshd::env`] for processes, including a
//! `HOME` whose `~/.ssh` makes Python's paramiko trust and log in to this server).
//!
//! Fault tests use [`Sshd::kill`] (the listener and every session process: connections
//! break like a crashed server), [`Sshd::start_again`], [`Sshd::restart`] and
//! [`Sshd::pause`]/[`Sshd::resume`] (a hung server), or break one connection with
//! [`Sshd::kill_session`] (of [`Sshd::sessions`]). Dropping it kills everything.
//! [`Sshd::logins`] and [`Sshd::established`] count connections (pooling tests).
//!
//! A missing sshd or ssh-keygen is a panic that says what to install, never a skip.

use crate::fixtures::Fixture;
use crate::rest::free_port;
use borgstore_daemon::backends::sftp::{Sftp, SftpOptions};
use borgstore_daemon::Backend;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd and everything a client needs to use it.
pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    child: Mutex<Option<Child>>,
    counter: AtomicU32,
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "borgstore-test", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("ssh-keygen not runnable ({e}): apt-get install openssh-client"));
    assert!(out.status.success(), "ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `type base64` of an OpenSSH public key file.
fn public_key(path: &Path) -> String {
    read(path).split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// All descendants of `pid` (children first found, then theirs), from /proc.
fn descendants(pid: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else { continue };
            // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parents {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// The processes whose parent is `pid`, from /proc.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else { continue };
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out.sort_unstable();
    out
}

impl Sshd {
    /// Generate keys and config in a temp directory and start sshd.
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: the sftp tests need a real OpenSSH server: apt-get install openssh-server \
             (tests/run installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        keygen(&d.join("host_ed25519"));
        keygen(&d.join("client_ed25519"));
        fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys")).expect("authorized_keys");
        fs::create_dir_all(d.join("root")).expect("sftp start dir");
        fs::create_dir_all(d.join("home/.ssh")).expect("home dir");
        // Running as root, sshd wants its privilege separation directory (the package
        // creates it at boot via tmpfiles; containers may not have it yet).
        if nix::unistd::geteuid().is_root() && !Path::new("/run/sshd").exists() {
            let _ = fs::create_dir_all("/run/sshd");
        }
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .expect("current user name");
        let sshd = Sshd { dir, port: 0, user, child: Mutex::new(None), counter: AtomicU32::new(0) };
        sshd.launch_on_a_free_port()
    }

    fn launch_on_a_free_port(mut self) -> Sshd {
        for _ in 0..5 {
            self.port = free_port();
            self.write_config();
            match self.spawn() {
                Ok(()) => return self,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("sshd did not start; log:\n{log}"),
            }
        }
        panic!("sshd found no free port in 5 tries");
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {d}/host_ed25519\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UseDNS no\n\
             X11Forwarding no\n\
             AllowTcpForwarding no\n\
             AllowAgentForwarding no\n\
             PrintMotd no\n\
             MaxStartups 100\n\
             MaxSessions 100\n\
             LogLevel VERBOSE\n\
             PermitUserEnvironment BORG_*,PATH\n\
             Subsystem sftp internal-sftp -d {d}/root\n",
            port = self.port,
            d = d.display()
        );
        fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let known = format!("[127.0.0.1]:{} {}\n", self.port, public_key(&d.join("host_ed25519.pub")));
        fs::write(d.join("known_hosts"), &known).expect("known_hosts");
        // What Python's paramiko reads: ~/.ssh/known_hosts and ~/.ssh/config.
        fs::write(d.join("home/.ssh/known_hosts"), &known).expect("python known_hosts");
        let ssh_config = format!(
            "Host 127.0.0.1\n    User {}\n    IdentityFile {}\n",
            self.user,
            d.join("client_ed25519").display()
        );
        fs::write(d.join("home/.ssh/config"), ssh_config).expect("python ssh config");
    }

    /// Start the sshd process; Err(log) when it exits instead of listening.
    fn spawn(&self) -> Result<(), String> {
        let d = self.dir.path();
        let log_path = d.join("sshd.log");
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("sshd log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SSHD} ({e}): apt-get install openssh-server"));
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            let exited = self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() {
                *self.child.lock().unwrap() = None;
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!("sshd did not listen on port {} within 20 s\n{}", self.port, self.log()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login name (the current user).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// internal-sftp's start directory: where relative URL paths are.
    pub fn start_dir(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The client's private key (listed in the server's authorized_keys).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// Another client key, listed in `authorized_keys` with `options` in front (e.g.
    /// `command="…",restrict` for a forced command, `environment="NAME=value"`: the config
    /// accepts `BORG_*` and `PATH`); `name` names the key file. Returns the private key.
    pub fn authorize_key(&self, name: &str, options: &str) -> PathBuf {
        let d = self.dir.path();
        let key = d.join(format!("client_{name}_ed25519"));
        keygen(&key);
        let line = format!("{options} {}\n", public_key(&key.with_extension("pub")));
        fs::OpenOptions::new()
            .append(true)
            .open(d.join("authorized_keys"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()))
            .expect("append to authorized_keys");
        key
    }

    /// A known_hosts file that lists this server (`[127.0.0.1]:PORT ssh-ed25519 ...`).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// A HOME for other processes (Python): `.ssh/config` and `.ssh/known_hosts` for this server.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The temp directory (for tests that want to put files next to the server's).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn next_name(&self) -> String {
        format!("stores/s{}", self.counter.fetch_add(1, Ordering::SeqCst))
    }

    /// A fresh store URL with a path relative to the start directory (not created).
    pub fn url(&self) -> String {
        format!("sftp://{}@127.0.0.1:{}/{}", self.user, self.port, self.next_name())
    }

    /// A fresh store URL with an absolute path (`sftp://user@host:port//abs/path`).
    pub fn abs_url(&self) -> String {
        format!("sftp://{}@127.0.0.1:{}/{}", self.user, self.port, self.start_dir().join(self.next_name()).display())
    }

    /// Where the store of `url` (one of ours) lives on the local disk.
    pub fn local_path(&self, url: &str) -> PathBuf {
        let path = borgstore_daemon::backends::sftp::url::parse(url).expect("sftp URL").path;
        if path.starts_with('/') {
            PathBuf::from(path)
        } else {
            self.start_dir().join(path)
        }
    }

    /// Client options for this server only: its key and known_hosts, no agent, no
    /// ssh_config, nothing from the environment; short timeouts and reconnect waits.
    pub fn options(&self) -> SftpOptions {
        let mut o = SftpOptions::isolated();
        o.identity_files = vec![self.client_key()];
        o.known_hosts = vec![self.known_hosts()];
        o.connect_timeout = Duration::from_secs(10);
        o.request_timeout = Duration::from_secs(10);
        o.reconnect_tries = 3;
        o.reconnect_wait = Duration::from_millis(300);
        o
    }

    /// A backend for `url` with [`Sshd::options`].
    pub fn backend(&self, url: &str) -> Arc<dyn Backend> {
        self.backend_with(url, self.options())
    }

    pub fn backend_with(&self, url: &str, options: SftpOptions) -> Arc<dyn Backend> {
        Arc::new(Sftp::with_options(url, options).expect("sftp URL"))
    }

    /// Environment for processes that use this server through `from_url` (ours) or
    /// paramiko (Python): key, known_hosts, HOME; no agent.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BORGSTORE_SFTP_KEY".into(), self.client_key().display().to_string()),
            ("BORGSTORE_SFTP_KNOWN_HOSTS".into(), self.known_hosts().display().to_string()),
            ("HOME".into(), self.home().display().to_string()),
            ("SSH_AUTH_SOCK".into(), String::new()),
        ]
    }

    fn listener_pid(&self) -> Option<i32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id() as i32)
    }

    /// Send `signal` to the listener and all its session processes.
    fn signal_all(&self, signal: Signal) {
        if let Some(pid) = self.listener_pid() {
            for p in descendants(pid) {
                let _ = kill(Pid::from_raw(p), signal);
            }
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// The session process of each SSH connection open now (the listener's children),
    /// oldest first (by pid).
    pub fn sessions(&self) -> Vec<i32> {
        self.listener_pid().map(children).unwrap_or_default()
    }

    /// Break one connection as if its server process crashed: kill session `pid` (one of
    /// [`Sshd::sessions`]) and its children. The listener and other connections stay.
    pub fn kill_session(&self, pid: i32) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        for p in descendants(pid) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }

    /// Logins the server accepted so far: one per SSH connection that authenticated.
    pub fn logins(&self) -> usize {
        self.log().lines().filter(|l| l.contains("Accepted publickey for")).count()
    }

    /// TCP connections to this server established now (counted at the client ends, from
    /// /proc/net/tcp: both ends are on this machine).
    pub fn established(&self) -> usize {
        let port = format!(":{:04X}", self.port);
        fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // sl local_address rem_address st ...; 01 is ESTABLISHED.
                f.len() > 3 && f[2].ends_with(&port) && f[3] == "01"
            })
            .count()
    }

    /// Kill the server like a crash: the listener and every session process, so open
    /// connections break. Idempotent.
    pub fn kill(&self) {
        let Some(pid) = self.listener_pid() else { return };
        // Stop the listener first so it forks no new sessions while we collect them.
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        for _ in 0..3 {
            for p in descendants(pid) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        let child = self.child.lock().unwrap().take();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the server again on the same port with the same keys (after [`Sshd::kill`]).
    pub fn start_again(&self) {
        assert!(self.listener_pid().is_none(), "sshd is still running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The old listener's socket may linger for a moment.
                Err(log) if log.contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(log) => panic!("sshd did not start again on port {}; log:\n{log}", self.port),
            }
        }
    }

    /// Kill, then start again.
    pub fn restart(&self) {
        self.kill();
        self.start_again();
    }

    /// Freeze the server (listener and sessions): connections stay up but nothing answers.
    pub fn pause(&self) {
        self.signal_all(Signal::SIGSTOP);
    }

    /// Undo [`Sshd::pause`].
    pub fn resume(&self) {
        self.signal_all(Signal::SIGCONT);
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// A fresh sftp store (relative URL) on its own sshd, for the conformance suite.
pub async fn fixture() -> Fixture {
    let sshd = tokio::task::spawn_blocking(Sshd::start).await.expect("start sshd");
    let url = sshd.url();
    let root = sshd.local_path(&url);
    Fixture::new(sshd.backend(&url), Some(root), sshd)
}
