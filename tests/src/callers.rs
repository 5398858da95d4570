//! Clients of a real daemon run as other local users: the `borgstore` CLI over the IPC
//! socket and curl over the REST Unix socket, as root, as the second (or third) user,
//! or as nobody; with a time limit so a hung child fails the test instead of hanging it.

use crate::daemon::{binary, Daemon};
use crate::rest::{Response, ACCEPT};
use crate::users::{as_user, as_user_without_groups, Account};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// How long any child process may take before the test gives up on it (no timing is
/// asserted; this only keeps a hung child from hanging the test).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Who runs a client process.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    /// The test's own uid (root), which is the daemon's uid.
    Root,
    /// The second user with its supplementary group.
    User(Account),
    /// The second user's uid and primary gid, no supplementary groups.
    UserWithoutGroups(Account),
    /// uid/gid 65534, granted nothing anywhere in these tests.
    Nobody,
}

impl Who {
    pub fn apply(self, cmd: &mut Command) {
        match self {
            Who::Root => {}
            Who::User(a) => {
                as_user(cmd, a);
            }
            Who::UserWithoutGroups(a) => {
                as_user_without_groups(cmd, a);
            }
            Who::Nobody => {
                cmd.uid(65534).gid(65534);
            }
        }
    }
}

/// Run `cmd` to its end (feeding `stdin`), or None when it did not end within `limit`
/// (it is then killed).
pub fn output_within(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Option<Output> {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out.expect("wait for child")),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv_timeout(Duration::from_secs(10));
            None
        }
    }
}

#[track_caller]
pub fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let shown = format!("{cmd:?}");
    output_within(cmd, stdin, PATIENCE).unwrap_or_else(|| panic!("{shown} did not finish within {PATIENCE:?}"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `borgstore --socket SOCK --store STORE ARGS...` run as `who`.
pub fn cli(d: &Daemon, who: Who, store: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(binary("borgstore"));
    cmd.arg("--socket").arg(&d.socket).args(["--store", store]).args(args);
    cmd.env_remove("BORGSTORE_SOCKET").env_remove("BORGSTORE_STORE");
    who.apply(&mut cmd);
    output(&mut cmd, stdin)
}

/// A CLI call that must succeed; its standard output.
#[track_caller]
pub fn cli_ok(d: &Daemon, who: Who, store: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let out = cli(d, who, store, args, stdin);
    assert!(out.status.success(), "{who:?}: borgstore --store {store} {args:?} failed: {}", stderr(&out));
    out.stdout
}

/// A CLI call that must be refused (exit 4, permission denied) and print nothing.
#[track_caller]
pub fn cli_refused(d: &Daemon, who: Who, store: &str, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = cli(d, who, store, args, stdin);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{who:?}: borgstore --store {store} {args:?} must be refused (exit 4); stdout {:?}, stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(out.stdout.is_empty(), "a refused command printed {:?}", String::from_utf8_lossy(&out.stdout));
    stderr(&out)
}

/// One REST request over a Unix socket with curl, run as `who`.
pub fn curl(
    sock: &Path,
    who: Who,
    method: &str,
    target: &str,
    auth: Option<(&str, &str)>,
    body: Option<&[u8]>,
) -> Response {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-i", "--max-time", "60", "--unix-socket"]).arg(sock);
    // `-X HEAD` would wait for the body its Content-Length announces; `-I` does not.
    if method == "HEAD" {
        cmd.arg("-I");
    } else {
        cmd.args(["-X", method]);
    }
    cmd.args(["-H", &format!("Accept: {ACCEPT}"), "-H", "Expect:"]);
    if let Some((u, p)) = auth {
        cmd.args(["-u", &format!("{u}:{p}")]);
    }
    if body.is_some() {
        cmd.args(["--data-binary", "@-", "-H", "Content-Type: application/octet-stream"]);
    }
    cmd.arg(format!("http://localhost{target}"));
    who.apply(&mut cmd);
    let mut probe = Command::new("curl");
    if probe.arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        panic!("curl is missing: install the Debian package curl (tests/run does)");
    }
    let out = output(&mut cmd, body);
    assert!(out.status.success(), "{who:?}: curl {method} {target} failed: {}", stderr(&out));
    let raw = out.stdout;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in curl output {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    Response { status, headers, body: raw[end + 4..].to_vec() }
}
