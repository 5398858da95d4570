//! The real Python borgstore, from the venvs `tests/run` creates under `target/`.
//!
//! A missing venv is a test failure that says how to make it, never a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// Which Python borgstore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 0.7.0, the behavioural reference (`target/venv`, or `BORGSTORE_TEST_PYTHON`).
    V070,
    /// 0.5.5, an older REST client still in the field (`target/venv-055`).
    V055,
}

impl Version {
    fn venv(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Version::V070 => ("BORGSTORE_TEST_PYTHON", "target/venv", "borgstore==0.7.0"),
            Version::V055 => ("BORGSTORE_TEST_PYTHON_055", "target/venv-055", "borgstore==0.5.5"),
        }
    }
}

/// The venv's python for `version`; panics with install instructions when missing.
pub fn python(version: Version) -> PathBuf {
    let (env, dir, pkg) = version.venv();
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| workspace().join(dir).join("bin/python"));
    assert!(
        p.exists(),
        "Python with {pkg} not found at {}: run tests/run (it creates the venvs), or \
         python3 -m venv {dir} && {dir}/bin/pip install {pkg} requests blake3",
        p.display()
    );
    p
}

/// The venv's `bin/` directory (for PATH, and for `borgstore-server-rest`).
pub fn bin_dir(version: Version) -> PathBuf {
    python(version).parent().expect("venv bin dir").to_path_buf()
}

/// Run `tests/python/<script> args...` with `version`'s python.
pub fn run_script(version: Version, script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(python(version));
    cmd.arg(workspace().join("tests/python").join(script)).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run python")
}

/// Like [`run_script`], panicking with the script's output when it fails.
pub fn run_ok(version: Version, script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run_script(version, script, args, env);
    assert!(
        out.status.success(),
        "{script} {args:?} with Python borgstore {version:?} failed:\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
