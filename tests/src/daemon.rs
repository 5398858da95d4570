//! A real `borgstored` process for tests: started from the workspace's built binary on
//! a socket in a temp directory, stopped (SIGTERM) or killed on drop.

use borgstore_client::{Client, ClientOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A workspace binary (`borgstored`, `borgstore`, ...), next to the test executable's
/// directory. Panics with a hint when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // A test runs from target/<profile>/deps/, the bench binary from target/<profile>/.
    let mut dir = exe.parent().expect("target dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().expect("target dir");
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `cargo build --workspace --bins` (tests/run does it)", path.display());
    path
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Start `borgstored --socket DIR/borgstored.sock ARGS...` and wait until it accepts.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_in(tempfile::tempdir().expect("temp dir"), args, &[])
    }

    /// Like [`Daemon::start`] in a given directory with extra environment variables.
    pub fn start_in(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let socket = dir.path().join("borgstored.sock");
        let log = dir.path().join("borgstored.log");
        let child = Self::spawn(&socket, &log, args, env);
        let d = Daemon { child, dir, socket, log };
        d.wait_ready();
        d
    }

    fn spawn(socket: &Path, log: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
        let logfile = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        let mut cmd = Command::new(binary("borgstored"));
        cmd.arg("--socket").arg(socket).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(logfile);
        cmd.env("RUST_LOG", "info").env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("start borgstored")
    }

    /// Start again on the same socket and directory (after a stop).
    pub fn restart(&mut self, args: &[&str]) {
        self.child = Self::spawn(&self.socket, &self.log, args, &[]);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("borgstored did not start; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A path inside the daemon's temp directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `file://` URL of a directory inside the temp directory.
    pub fn url(&self, rel: &str) -> String {
        format!("file://{}", self.path(rel).display())
    }

    pub fn options(&self, store: &str) -> ClientOptions {
        ClientOptions::new(store).socket(&self.socket)
    }

    pub async fn client(&self, store: &str) -> Client {
        Client::connect(self.options(store)).await.expect("connect to borgstored")
    }

    /// Send SIGTERM and wait for the exit status (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("borgstored did not exit within {timeout:?} after SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
