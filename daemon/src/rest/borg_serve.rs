//! `borgstore-server-rest serve --rest --backend FILE:<path>`: the command line of
//! `borg serve --rest`, so that our server can be borg 2's remote side of an `ssh://`
//! repository (borg runs `BORG_REMOTE_PATH serve --rest --backend FILE:<path>` over ssh,
//! `BORG_REMOTE_PATH` defaulting to `borg`).
//!
//! What borg documents for `borg serve --rest`, and this module does the same way:
//! - `--permissions all|no-delete|write-only|read-only` (else `BORG_REPO_PERMISSIONS`,
//!   else `all`), mapped to letters for both repository layouts
//!   ([`crate::backends::posixfs::permissions::borg_mode`]);
//! - `--restrict-to-path P` (the repository must lie below one of them) and
//!   `--restrict-to-repository R` (it must be one of them), checked on the real path
//!   (`~` expanded, symlinks resolved) before the store is touched, with borg's wording
//!   ("Repository path not allowed: …") and exit codes (83, or 2 with
//!   `BORG_EXIT_CODES=legacy`: borg 2 defaults to the specific codes);
//! - an `authorized_keys` forced command (`command="… serve --rest --restrict-to-path …"`)
//!   pins everything but the repository: from the client's command (`SSH_ORIGINAL_COMMAND`)
//!   only `--backend` and logging/lock options are taken, never restrictions or
//!   permissions;
//! - `FILE:` paths are relative to the working directory (the home directory over ssh).
//!
//! Without `--rest` borg serves the legacy borg 1.x RPC protocol, which we do not speak:
//! that is a clear error.

use crate::backends::posixfs::permissions::{borg_mode, BORG_MODES};
use clap::Parser;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// borg's exit code for an error (legacy exit codes).
pub const EXIT_ERROR: i32 = 2;
/// borg's exit code of PathNotAllowed (its default, modern exit codes).
pub const EXIT_PATH_NOT_ALLOWED: i32 = 83;

/// The arguments of `borg serve` that matter here (and the common borg options a client or
/// a forced command may add, accepted and ignored where they mean nothing to us).
#[derive(Parser, Debug, Clone, Default)]
#[command(name = "borg serve", about = "Serve a borg 2 repository over stdio (the server side of ssh:// repositories)")]
pub struct ServeArgs {
    /// Serve a current (non-legacy) repository: HTTP over stdio (required).
    #[arg(long)]
    pub rest: bool,
    /// The repository: FILE:PATH (relative to the working directory; ~ expanded).
    #[arg(long, value_name = "BACKEND_URL")]
    pub backend: Option<String>,
    /// Allow only repositories below PATH (repeatable).
    #[arg(long = "restrict-to-path", value_name = "PATH")]
    pub restrict_to_paths: Vec<PathBuf>,
    /// Allow only the repository at PATH (repeatable).
    #[arg(long = "restrict-to-repository", value_name = "PATH")]
    pub restrict_to_repositories: Vec<PathBuf>,
    /// Permission mode [default: $BORG_REPO_PERMISSIONS, else all].
    #[arg(long, value_parser = BORG_MODES)]
    pub permissions: Option<String>,
    /// Log at debug level.
    #[arg(long)]
    pub debug: bool,
    /// Log at info level.
    #[arg(long, short = 'v', visible_alias = "verbose")]
    pub info: bool,
    /// borg's `--warning`: accepted; warnings are logged anyway.
    #[arg(long, hide = true)]
    pub warning: bool,
    /// borg's `--error`: accepted and ignored (the level stays at warnings).
    #[arg(long, hide = true)]
    pub error: bool,
    /// borg's `--critical`: accepted and ignored (the level stays at warnings).
    #[arg(long, hide = true)]
    pub critical: bool,
    /// borg's `--log-json`: accepted and ignored.
    #[arg(long, hide = true)]
    pub log_json: bool,
    /// borg's `--show-rc`: accepted and ignored.
    #[arg(long, hide = true)]
    pub show_rc: bool,
    /// borg's `--lock-wait`: accepted (also from the client's command) and ignored.
    #[arg(long, hide = true, value_name = "SECONDS")]
    pub lock_wait: Option<u64>,
    /// borg's `--debug-topic`: accepted (also from the client's command) and ignored.
    #[arg(long = "debug-topic", hide = true, value_name = "TOPIC")]
    pub debug_topics: Vec<String>,
    /// borg's `--umask`: accepted and ignored.
    #[arg(long, hide = true, value_name = "M")]
    pub umask: Option<String>,
}

/// Why `serve` stops before serving: the message borg would print, and its exit codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeError {
    /// The command line does not parse (clap's message, exit 2).
    Usage(String),
    /// One of borg's generic errors: printed as `Error: …` (exit 2).
    Error(String),
    /// A restriction refused the repository (exit 83, or 2 with legacy exit codes).
    PathNotAllowed(String),
    /// `--help` was asked for: the text, for standard output (exit 0).
    Help(String),
}

impl ServeError {
    /// What to print as borg would: the help on standard output, the others on standard
    /// error.
    pub fn message(&self) -> String {
        match self {
            ServeError::Usage(m) => m.clone(),
            ServeError::Error(m) => format!("Error: {m}"),
            ServeError::PathNotAllowed(p) => format!("Repository path not allowed: {p}."),
            ServeError::Help(h) => h.clone(),
        }
    }

    /// The exit code, as borg picks it: the specific one unless `BORG_EXIT_CODES` asks for
    /// legacy codes (borg 2's default is modern).
    pub fn exit_code(&self, modern: bool) -> i32 {
        match self {
            ServeError::PathNotAllowed(_) if modern => EXIT_PATH_NOT_ALLOWED,
            ServeError::Help(_) => 0,
            _ => EXIT_ERROR,
        }
    }
}

/// What to serve, once everything is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serve {
    /// `FILE:<path>` (or another backend URL when nothing is restricted).
    pub backend: String,
    /// Permission letters (None: all).
    pub permissions: Option<BTreeMap<String, String>>,
    /// More verbose logging was asked for (`--info`/`--debug`).
    pub log_filter: &'static str,
}

/// Parse `serve …` (`args` starts with the word `serve`), apply a forced command's rules
/// when `original_command` (`SSH_ORIGINAL_COMMAND`) is set, check the restrictions and
/// resolve the permissions (`env_permissions`: `BORG_REPO_PERMISSIONS`).
pub fn prepare(
    args: &[String],
    original_command: Option<&str>,
    env_permissions: Option<&str>,
) -> Result<Serve, ServeError> {
    let mut forced = ServeArgs::try_parse_from(args).map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp => ServeError::Help(e.to_string()),
        _ => ServeError::Usage(e.to_string()),
    })?;
    if let Some(cmd) = original_command {
        if let Some(client) = client_serve_args(cmd)? {
            // The client picks the repository (and logging); the forced command keeps
            // the mode, the restrictions and the permissions.
            forced.backend = client.backend;
            forced.lock_wait = client.lock_wait;
            forced.debug_topics = client.debug_topics;
            forced.debug = client.debug;
            forced.info = client.info;
        }
    }
    if !forced.rest {
        return Err(ServeError::Error(
            "this server only serves current (borg 2) repositories: use borg serve --rest (the legacy borg 1.x \
             protocol of plain borg serve is not supported)"
                .into(),
        ));
    }
    let Some(backend) = forced.backend.clone() else {
        return Err(ServeError::Error("borg serve --rest requires --backend FILE:<path>.".into()));
    };
    check_restrictions(&backend, &forced.restrict_to_paths, &forced.restrict_to_repositories)?;
    let mode = match (&forced.permissions, env_permissions) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => p.to_string(),
        (None, None) => "all".to_string(),
    };
    let permissions = match BORG_MODES.contains(&mode.as_str()).then(|| borg_mode(&mode)).flatten() {
        Some(p) => p,
        None => {
            return Err(ServeError::Error(format!(
                "Invalid BORG_REPO_PERMISSIONS value: {mode}, should be one of: all, no-delete, write-only, read-only."
            )))
        }
    };
    let log_filter = if forced.debug {
        "debug"
    } else if forced.info {
        "info"
    } else {
        "warn"
    };
    Ok(Serve { backend, permissions, log_filter })
}

/// The client's `serve` arguments from its command line, if it asked for `serve` at all
/// (leading `VAR=value` words are dropped, not interpreted, as borg does).
fn client_serve_args(cmd: &str) -> Result<Option<ServeArgs>, ServeError> {
    let words = shlex::split(cmd).ok_or_else(|| ServeError::Usage("cannot parse SSH_ORIGINAL_COMMAND".into()))?;
    let mut words = words.into_iter().skip_while(|w| w.contains('=')).skip(1).peekable();
    if words.peek().map(String::as_str) != Some("serve") {
        return Ok(None);
    }
    ServeArgs::try_parse_from(words).map(Some).map_err(|e| ServeError::Usage(e.to_string()))
}

/// borg's restriction rules on the real path of a `FILE:` backend.
pub fn check_restrictions(backend: &str, paths: &[PathBuf], repositories: &[PathBuf]) -> Result<(), ServeError> {
    if paths.is_empty() && repositories.is_empty() {
        return Ok(());
    }
    let Some(file) = backend.strip_prefix("FILE:") else {
        return Err(ServeError::PathNotAllowed("only FILE: backends can be restricted".into()));
    };
    let path = real_path(&expand_user(file));
    let with_sep = |p: &Path| format!("{}/", p.display().to_string().trim_end_matches('/'));
    let wanted = with_sep(&path);
    let shown = path.display().to_string();
    if !paths.is_empty() && !paths.iter().any(|p| wanted.starts_with(&with_sep(&real_path(p)))) {
        return Err(ServeError::PathNotAllowed(shown));
    }
    if !repositories.is_empty() && !repositories.iter().any(|r| with_sep(&real_path(r)) == wanted) {
        return Err(ServeError::PathNotAllowed(shown));
    }
    Ok(())
}

/// `~` and `~user` at the start of a path, as the shell (and Python) expand them.
pub fn expand_user(path: &str) -> PathBuf {
    let Some(rest) = path.strip_prefix('~') else {
        return PathBuf::from(path);
    };
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let home = if user.is_empty() {
        std::env::var_os("HOME").map(PathBuf::from)
    } else {
        nix::unistd::User::from_name(user).ok().flatten().map(|u| u.dir)
    };
    match home {
        Some(h) => h.join(tail),
        None => PathBuf::from(path),
    }
}

/// The absolute path with symlinks resolved as far as it exists, the rest (which may
/// not exist yet) appended with `.` and `..` resolved lexically: Python's
/// `os.path.realpath` without `strict`.
pub fn real_path(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    let mut pending: Vec<Component> = absolute.components().collect();
    pending.reverse();
    while let Some(c) = pending.pop() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => {
                out.push(other);
                if let Ok(resolved) = std::fs::canonicalize(&out) {
                    out = resolved;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn plain_serve_rest_with_permissions_from_the_flag_or_the_environment() {
        let s = prepare(&argv("serve --rest --backend FILE:/srv/r"), None, None).unwrap();
        assert_eq!((s.backend.as_str(), s.permissions.is_none(), s.log_filter), ("FILE:/srv/r", true, "warn"));
        let s = prepare(&argv("serve --rest --backend FILE:r --permissions no-delete"), None, Some("all")).unwrap();
        assert_eq!(s.permissions, borg_mode("no-delete").unwrap());
        let s = prepare(&argv("serve --rest --backend FILE:r"), None, Some("read-only")).unwrap();
        assert_eq!(s.permissions, borg_mode("read-only").unwrap());
        let e = prepare(&argv("serve --rest --backend FILE:r"), None, Some("borgbackup-all")).unwrap_err();
        assert_eq!(
            e.message(),
            "Error: Invalid BORG_REPO_PERMISSIONS value: borgbackup-all, should be one of: all, no-delete, write-only, read-only."
        );
        assert!(prepare(&argv("serve --rest --backend FILE:r --permissions nope"), None, None).is_err());
        let e = prepare(&argv("serve --rest"), None, None).unwrap_err();
        assert_eq!(e.message(), "Error: borg serve --rest requires --backend FILE:<path>.");
        assert_eq!(e.exit_code(true), EXIT_ERROR);
        assert!(prepare(&argv("serve --backend FILE:r"), None, None).unwrap_err().message().contains("--rest"));
        let help = prepare(&argv("serve --help"), None, None).unwrap_err();
        assert!(help.message().contains("--restrict-to-path") && help.exit_code(false) == 0);
        let s = prepare(&argv("serve --rest --backend FILE:r --info --lock-wait 5 --umask 077"), None, None).unwrap();
        assert_eq!(s.log_filter, "info");
    }

    #[test]
    fn restrictions_follow_borg() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("repos/a")).unwrap();
        std::os::unix::fs::symlink(base.join("repos"), base.join("link")).unwrap();
        let paths = [base.join("repos")];
        let ok = |b: &str| check_restrictions(b, &paths, &[]);
        assert!(ok(&format!("FILE:{}/repos/a", base.display())).is_ok());
        assert!(ok(&format!("FILE:{}/repos/new/deeper", base.display())).is_ok(), "need not exist yet");
        assert!(ok(&format!("FILE:{}/link/a", base.display())).is_ok(), "symlinks are resolved");
        let e = ok(&format!("FILE:{}/repos/../other", base.display())).unwrap_err();
        assert_eq!(e.message(), format!("Repository path not allowed: {}/other.", base.display()));
        assert_eq!((e.exit_code(false), e.exit_code(true)), (EXIT_ERROR, EXIT_PATH_NOT_ALLOWED));
        assert!(ok(&format!("FILE:{}/reposx", base.display())).is_err(), "a sibling with the same prefix");
        assert!(ok("file:///x").unwrap_err().message().contains("only FILE: backends can be restricted"));
        let repos = [base.join("repos/a")];
        assert!(check_restrictions(&format!("FILE:{}/repos/a/", base.display()), &[], &repos).is_ok());
        assert!(check_restrictions(&format!("FILE:{}/repos/a/sub", base.display()), &[], &repos).is_err());
        assert!(check_restrictions("file:///anything", &[], &[]).is_ok(), "nothing restricted");
    }

    #[test]
    fn a_forced_command_pins_everything_but_the_repository() {
        let forced = argv("serve --rest --restrict-to-repository /srv/a --permissions read-only");
        // The client's restrictions and permissions are ignored; its backend is used.
        let client = "BORG_X=1 borg serve --rest --backend FILE:/srv/a --permissions all --restrict-to-path /";
        let s = prepare(&forced, Some(client), None).unwrap();
        assert_eq!(s.backend, "FILE:/srv/a");
        assert_eq!(s.permissions, borg_mode("read-only").unwrap());
        let e = prepare(&forced, Some("borg serve --rest --backend FILE:/srv/b"), None).unwrap_err();
        assert_eq!(e, ServeError::PathNotAllowed("/srv/b".into()));
        // A client asking for something else than serve gets the forced command as it is.
        let e = prepare(&forced, Some("borg create ::x /etc"), None).unwrap_err();
        assert!(e.message().contains("requires --backend"), "{e:?}");
        // The mode stays the forced command's: a client cannot switch --rest on or off.
        let legacy = argv("serve --restrict-to-path /srv");
        let e = prepare(&legacy, Some("borg serve --rest --backend FILE:/srv/a"), None).unwrap_err();
        assert!(e.message().contains("legacy"), "{e:?}");
    }

    #[test]
    fn real_paths_resolve_dots_and_home() {
        assert_eq!(real_path(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        let home = std::env::var("HOME").unwrap_or_default();
        if !home.is_empty() {
            assert_eq!(expand_user("~/r"), PathBuf::from(&home).join("r"));
        }
        assert_eq!(expand_user("~no-such-user-here/r"), PathBuf::from("~no-such-user-here/r"));
    }
}
