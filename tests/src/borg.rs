//! borg 2 for end-to-end tests: the set-up venvs' borg (checked to be the version the
//! tests are for), run with its state in a temp directory and a fixed environment, its
//! output kept in files; `over_ssh` for `ssh://` repositories of the test sshd.

use crate::daemon::binary;
use crate::python::workspace;
use crate::sshd::Sshd;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Only against hangs: one borg command on a shared 2-core machine takes seconds.
pub const BORG_TIMEOUT: Duration = Duration::from_secs(600);
pub const PASSPHRASE: &str = "borg-serve-test-passphrase";

/// A borg from one of the set-up venvs, checked to be the version the tests are for.
pub fn borg_exe(venv: &str, version: &str, script: &str) -> PathBuf {
    let exe = workspace().join("target").join(venv).join("bin/borg");
    assert!(exe.exists(), "{} is missing: run tests/setup/{script} (tests/run does it)", exe.display());
    let out = Command::new(&exe).arg("--version").output().expect("run borg --version");
    let shown = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(shown, format!("borg {version}"), "{} is not borg {version}: run tests/setup/{script}", exe.display());
    exe
}

pub fn borg25() -> PathBuf {
    borg_exe("venv-borg25", "2.0.0b25", "borg25.sh")
}

pub fn borg22() -> PathBuf {
    borg_exe("venv-borg", "2.0.0b22", "borg.sh")
}

pub fn server_binary() -> PathBuf {
    binary("borgstore-server-rest")
}

/// One borg command's result.
pub struct Out {
    pub cmd: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn text(&self) -> String {
        format!("{}\n--- stdout\n{}--- stderr\n{}", self.cmd, self.stdout, self.stderr)
    }

    /// Panic with the whole output unless borg exited 0.
    pub fn ok(self) -> Out {
        assert!(self.success(), "borg failed (exit {:?}): {}", self.code, self.text());
        self
    }

    /// Panic unless borg failed.
    pub fn failed(self) -> Out {
        assert!(!self.success(), "borg should have failed: {}", self.text());
        self
    }
}

/// borg with its state in a temp directory and a fixed environment (nothing inherited but
/// PATH).
pub struct Borg {
    pub exe: PathBuf,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    runs: std::cell::Cell<u32>,
}

impl Borg {
    pub fn new(exe: PathBuf) -> Borg {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for sub in ["home", "base", "tmp", "logs", "work"] {
            fs::create_dir_all(d.join(sub)).expect("borg dirs");
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let env = [
            ("PATH", path.as_str()),
            ("HOME", &d.join("home").display().to_string()),
            ("BORG_BASE_DIR", &d.join("base").display().to_string()),
            ("TMPDIR", &d.join("tmp").display().to_string()),
            ("BORG_PASSPHRASE", PASSPHRASE),
            ("BORG_DISPLAY_PASSPHRASE", "no"),
            ("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK", "yes"),
            ("BORG_RELOCATED_REPO_ACCESS_IS_OK", "yes"),
            // Small packs, so that compact has whole packs to drop.
            ("BORG_PACK_MAX_SIZE", "100000"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C.UTF-8"),
            ("TZ", "UTC"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Borg { exe, dir, env, runs: std::cell::Cell::new(0) }
    }

    /// borg for ssh:// repositories of `sshd`, logging in with `key`.
    pub fn over_ssh(exe: PathBuf, sshd: &Sshd, key: &Path) -> Borg {
        let mut b = Borg::new(exe);
        b.set("BORG_RSH", &ssh_command(sshd, key));
        b
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The working directory of borg commands (where `src/` is backed up from).
    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// Run `borg ARGS` in `cwd` with the repository `repo`; stdout and stderr go to files
    /// (kept in the temp dir) so that a chatty borg cannot block on a pipe.
    pub fn run_in(&self, cwd: &Path, repo: &str, args: &[&str]) -> Out {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let logs = self.dir.path().join("logs");
        let (out_path, err_path) = (logs.join(format!("{n}.out")), logs.join(format!("{n}.err")));
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).current_dir(cwd).env_clear().env("BORG_REPO", repo).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(fs::File::create(&out_path).expect("stdout file"));
        cmd.stderr(fs::File::create(&err_path).expect("stderr file"));
        let shown = format!("BORG_REPO={repo} borg {}", args.join(" "));
        finish(cmd, shown, &out_path, &err_path)
    }

    pub fn run(&self, repo: &str, args: &[&str]) -> Out {
        self.run_in(&self.work(), repo, args)
    }
}

/// `BORG_RSH` for `sshd` with `key`: nothing from ~/.ssh, the agent or /etc/ssh. borgstore
/// uses a custom remote shell verbatim (it adds only `user@host`, not the URL's port), so
/// the port is given here too.
pub fn ssh_command(sshd: &Sshd, key: &Path) -> String {
    format!(
        "ssh -F /dev/null -p {} -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
         -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o LogLevel=ERROR",
        sshd.port(),
        key.display(),
        sshd.known_hosts().display()
    )
}

/// Run `cmd` (its stdout and stderr already going to the two files) to its end; kill it
/// and panic after [`BORG_TIMEOUT`] (only against hangs).
pub fn finish(mut cmd: Command, shown: String, out_path: &Path, err_path: &Path) -> Out {
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let deadline = Instant::now() + BORG_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Out {
        cmd: shown,
        code: status.and_then(|s| s.code()),
        stdout: fs::read_to_string(out_path).unwrap_or_default(),
        stderr: fs::read_to_string(err_path).unwrap_or_default(),
    };
    assert!(status.is_some(), "hung for {} s and was killed: {}", BORG_TIMEOUT.as_secs(), out.text());
    out
}

/// Write `len` random bytes to `path`, so that every file's chunks are its own.
pub fn random_file(path: &Path, len: usize) {
    use rand::RngCore;
    let mut data = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut data);
    fs::write(path, data).expect("write a random file");
}
