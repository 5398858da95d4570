//! borg 2 end to end with our `borgstore-server-rest` as its remote side (issue 11, points
//! 3 and 4), each time side by side with the reference, borg's own `borg serve --rest`.
//!
//! Over a real OpenSSH sshd on loopback ([`Sshd`]), borg 2.0.0b25 (target/venv-borg25, made
//! by tests/setup/borg25.sh) uses `ssh://root@127.0.0.1:PORT//abs/path` repositories: it
//! runs `BORG_REMOTE_PATH serve --rest --backend FILE:<path>` on the server and speaks HTTP
//! over the ssh pipe. The tests prove:
//! - with `BORG_REMOTE_PATH` = our binary, or unset with our binary on the server's PATH
//!   under the name `borg`: repo-create, two creates with a change in between, repo-list,
//!   list, extract (byte-identical), check --verify-data, and the store is on disk where
//!   the URL says, in borgstore's layout;
//! - an `authorized_keys` forced command with `--restrict-to-path` (and
//!   `--restrict-to-repository`) serves the allowed repositories and refuses others (also
//!   through a symlink, also when the client asks for a wider restriction itself) with
//!   borg's "Repository path not allowed", creating nothing there; `ssh://host/rel/path`
//!   lands below the login directory;
//! - `--permissions no-delete` (and `BORG_REPO_PERMISSIONS=no-delete` from `environment=`):
//!   backups work; `borg delete`, `borg compact` and a raw HTTP DELETE cannot remove data
//!   (the packs/ and archives/ files stay, the repository still checks), while the owner's
//!   full permissions do remove data; `write-only` lets a backup in and nothing out;
//! - borg 2.0.0b22 (target/venv-borg) over http:// to `borgstore-server-rest --permissions
//!   borgbackup-no-delete`: the same, against Python's server with borg's own letters;
//! - the refusals of `serve` itself (restrictions, missing --backend, bad
//!   BORG_REPO_PERMISSIONS) print and exit as `borg serve` does, whatever BORG_EXIT_CODES.
//!
//! The scenarios with refusals run twice, with our binary and with the reference (borg
//! 2.0.0b25's `borg serve`, or Python borgstore 0.7.0's server for http://), and every
//! step's outcome (ok, or exit code and borg's error message with paths and ids masked)
//! must be the same. borg's own state (home, base dir, cache, keys, temp files) stays in
//! temp directories. A missing borg or sshd is a panic saying what to run, never a skip.

use borgstore_tests::borg::{borg22, borg25, finish, server_binary, ssh_command, Borg, Out};
use borgstore_tests::rest::{Impl, RestServer};
use borgstore_tests::sshd::Sshd;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A raw HTTP/1.1 request of the borgstore REST protocol, as borg sends it over the pipe.
fn http_request(method: &str, target: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: stdio-backend\r\nAccept: {}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n",
        borgstore_tests::rest::ACCEPT
    )
    .into_bytes()
}

/// `ssh` to `sshd` with `key`, asking for `remote` (what a client that does not use borg
/// can send), `stdin` on its standard input.
fn ssh_raw(sshd: &Sshd, key: &Path, remote: &str, stdin: &[u8]) -> Out {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("stdin");
    fs::write(&input, stdin).unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let words: Vec<String> = ssh_command(sshd, key).split_whitespace().map(str::to_string).collect();
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]).arg(format!("{}@127.0.0.1", sshd.user())).arg(remote).env("HOME", dir.path());
    cmd.stdin(fs::File::open(&input).unwrap());
    cmd.stdout(fs::File::create(&out_path).unwrap()).stderr(fs::File::create(&err_path).unwrap());
    finish(cmd, format!("ssh … {remote:?}"), &out_path, &err_path)
}

/// `ssh://root@127.0.0.1:PORT//abs/path`: two slashes for an absolute path.
fn ssh_url(sshd: &Sshd, path: &Path) -> String {
    assert!(path.is_absolute());
    format!("ssh://{}@127.0.0.1:{}/{}", sshd.user(), sshd.port(), path.display())
}

/// A fresh directory next to the sshd's files (the server side, as root).
fn server_dir(sshd: &Sshd, name: &str) -> PathBuf {
    let p = sshd.dir().join(name);
    fs::create_dir_all(&p).expect("server dir");
    p.canonicalize().expect("canonical server dir")
}

/// A small tree: nested files (text, random, empty), a bigger random file, a symlink, an
/// empty directory, odd names and modes. Deterministic for `seed`.
fn make_tree(root: &Path, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let write = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    };
    for d in 0..3 {
        for i in 0..6 {
            let size = [0, 1, 100, 4096, 20_000, 70_001][i];
            if i % 2 == 0 {
                let mut data = vec![0u8; size];
                rng.fill_bytes(&mut data);
                write(&format!("dir{d}/file{i}.bin"), &data);
            } else {
                let text = format!("line {d}/{i} ").repeat(size / 8 + 1);
                write(&format!("dir{d}/sub/file{i}.txt"), &text.as_bytes()[..size]);
            }
        }
    }
    let mut big = vec![0u8; 600_000];
    rng.fill_bytes(&mut big);
    write("big.bin", &big);
    write("name with spaces & ünïcödé.txt", "unicode\n".as_bytes());
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::os::unix::fs::symlink("big.bin", root.join("link-to-big")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root.join("dir1/sub/file1.txt"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// Change the tree made by [`make_tree`]: append, rewrite, add, remove.
fn change_tree(root: &Path) {
    let mut rng = StdRng::seed_from_u64(99);
    let mut f = fs::OpenOptions::new().append(true).open(root.join("dir0/sub/file1.txt")).unwrap();
    std::io::Write::write_all(&mut f, b"appended for the second archive\n").unwrap();
    let mut data = vec![0u8; 300_000];
    rng.fill_bytes(&mut data);
    fs::write(root.join("dir2/file4.bin"), &data).unwrap();
    fs::write(root.join("new-in-two.txt"), b"new\n").unwrap();
    fs::remove_file(root.join("dir1/file2.bin")).unwrap();
}

/// Every path below `root` (relative, sorted), as borg lists them under `prefix`.
fn tree_paths(root: &Path, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::from([prefix.to_string()]);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(format!("{prefix}/{rel}"));
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Panic unless the trees have the same entries, types, symlink targets, modes and bytes.
fn assert_same_tree(expected: &Path, got: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let (a, b) = (tree_paths(expected, ""), tree_paths(got, ""));
    assert_eq!(a, b, "extracted tree {} has other entries than {}", got.display(), expected.display());
    for rel in a.iter().filter(|r| !r.is_empty()) {
        let (pa, pb) = (expected.join(&rel[1..]), got.join(&rel[1..]));
        let (ma, mb) = (fs::symlink_metadata(&pa).unwrap(), fs::symlink_metadata(&pb).unwrap());
        assert_eq!(ma.file_type(), mb.file_type(), "type of {rel}");
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap(), "symlink target of {rel}");
            continue;
        }
        assert_eq!(ma.permissions().mode(), mb.permissions().mode(), "mode of {rel}");
        if ma.is_file() {
            assert!(fs::read(&pa).unwrap() == fs::read(&pb).unwrap(), "contents of {rel} differ after extract");
        }
    }
}

/// Copy a tree as it is (for the state at the first archive).
fn copy_tree(from: &Path, to: &Path) {
    let out = Command::new("cp").arg("-a").arg(from).arg(to).output().expect("cp -a");
    assert!(out.status.success(), "cp -a: {}", String::from_utf8_lossy(&out.stderr));
}

/// Files (not directories) below `dir` of the store, relative to the store.
fn store_files(store: &Path, dir: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![store.join(dir)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path().strip_prefix(store).unwrap().display().to_string());
            }
        }
    }
    out
}

/// Archive names in `borg repo-list` output.
/// Take the one soft-deleted archive away by hand (as the server's admin could), so that
/// compact gets as far as the packs nothing refers to any more.
fn remove_the_soft_deleted_archive(store: &Path) {
    let soft_deleted: Vec<_> = store_files(store, "archives").into_iter().filter(|f| f.ends_with(".del")).collect();
    assert_eq!(soft_deleted.len(), 1, "one soft-deleted archive expected: {soft_deleted:?}");
    fs::remove_file(store.join(&soft_deleted[0])).unwrap();
}

fn archive_names(borg: &Borg, repo: &str) -> BTreeSet<String> {
    let out = borg.run(repo, &["repo-list", "--format", "{archive}{NL}"]).ok();
    out.stdout.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// What the full round trip does, for any way of reaching the repository: repo-create,
/// create (twice, the tree changed in between), repo-list, list, extract both archives
/// and compare, check --verify-data. `store` is where the repository must appear.
fn full_round_trip(borg: &Borg, repo: &str, store: &Path) {
    let work = borg.work();
    borg.run(repo, &["repo-create", "-e", "aes256-ocb"]).ok();
    for ns in ["config", "keys"] {
        assert!(store.join(ns).is_dir(), "no {ns}/ in {} after repo-create", store.display());
    }
    let src = work.join("src");
    make_tree(&src, 1);
    borg.run(repo, &["create", "one", "src"]).ok();
    copy_tree(&src, &work.join("src.one"));
    change_tree(&src);
    borg.run(repo, &["create", "--stats", "two", "src"]).ok();

    assert_eq!(archive_names(borg, repo), BTreeSet::from(["one".to_string(), "two".to_string()]));
    for (archive, tree) in [("one", work.join("src.one")), ("two", src.clone())] {
        let listed = borg.run(repo, &["list", "--format", "{path}{NL}", archive]).ok();
        let listed: BTreeSet<String> = listed.stdout.lines().map(str::to_string).collect();
        assert_eq!(listed, tree_paths(&tree, "src"), "borg list {archive} vs the source tree");
        let dest = work.join(format!("extract-{archive}"));
        fs::create_dir_all(&dest).unwrap();
        borg.run_in(&dest, repo, &["extract", archive]).ok();
        assert_same_tree(&tree, &dest.join("src"));
    }
    borg.run(repo, &["check", "--verify-data"]).ok();
    for ns in ["config", "keys", "archives", "packs"] {
        assert!(store.join(ns).is_dir(), "no {ns}/ in the store {}", store.display());
    }
    assert_eq!(store_files(store, "archives").len(), 2, "two archives in archives/");
}

#[test]
fn borg25_over_ssh_with_borg_remote_path_pointing_at_our_binary() {
    let exe = borg25();
    let sshd = Sshd::start();
    let store = server_dir(&sshd, "repos").join("main");
    let mut borg = Borg::over_ssh(exe, &sshd, &sshd.client_key());
    borg.set("BORG_REMOTE_PATH", &server_binary().display().to_string());
    full_round_trip(&borg, &ssh_url(&sshd, &store), &store);
}

#[test]
fn borg25_over_ssh_through_a_program_named_borg_on_the_server_path() {
    let exe = borg25();
    let sshd = Sshd::start();
    // The server's PATH holds only a symlink named borg to our binary (and the system
    // directories, which have no borg): BORG_REMOTE_PATH stays unset, borg runs `borg`.
    let bin = server_dir(&sshd, "bin");
    std::os::unix::fs::symlink(server_binary(), bin.join("borg")).unwrap();
    let key = sshd.authorize_key("path", &format!("environment=\"PATH={}:/usr/bin:/bin\"", bin.display()));
    let store = server_dir(&sshd, "repos").join("via-path");
    let borg = Borg::over_ssh(exe, &sshd, &key);
    assert!(!borg.env.iter().any(|(k, _)| k == "BORG_REMOTE_PATH"));
    full_round_trip(&borg, &ssh_url(&sshd, &store), &store);
}

/// Who serves on the server side of ssh://.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `borgstore-server-rest serve --rest …`
    Ours,
    /// borg 2.0.0b25's own `borg serve --rest …` (Python borgstore 0.7.0's server).
    Reference,
}

impl Side {
    /// The program for `BORG_REMOTE_PATH` and forced commands on `sshd`'s side. The
    /// reference is a wrapper that keeps borg's state (BORG_BASE_DIR) in the sshd's dir.
    fn program(self, sshd: &Sshd) -> PathBuf {
        match self {
            Side::Ours => server_binary(),
            Side::Reference => {
                let dir = server_dir(sshd, "reference");
                let wrapper = dir.join("borg");
                let script = format!(
                    "#!/bin/sh\n# borg's own borg serve, its state kept in the test's directory\n\
                     export BORG_BASE_DIR={}\nexec {} \"$@\"\n",
                    dir.join("base").display(),
                    borg25().display()
                );
                fs::write(&wrapper, script).unwrap();
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
                wrapper
            }
        }
    }
}

/// Each step of a scenario and its outcome, comparable between [`Side`]s: `ok`, or the
/// exit code and borg's error message, with the scenario's directories and 64-digit ids
/// (and the level directory of a nested id) masked and the traceback (which names local
/// paths and line numbers) left out.
#[derive(Default)]
struct Transcript {
    steps: Vec<String>,
    masks: Vec<(String, &'static str)>,
}

impl Transcript {
    fn mask(&mut self, path: &Path, name: &'static str) {
        self.masks.push((path.display().to_string(), name));
    }

    fn record(&mut self, step: &str, out: &Out) {
        let outcome = if out.success() {
            "ok".to_string()
        } else {
            let mut lines = Vec::new();
            for line in out.stderr.lines() {
                if line.starts_with("If reporting bugs") || line.starts_with("Traceback") {
                    break;
                }
                let noise = ["Local Exception", "Warning: The repository at location", "Do you want to continue?"];
                if !line.trim().is_empty() && !noise.iter().any(|n| line.starts_with(n)) {
                    lines.push(line.trim().to_string());
                }
            }
            format!("exit {:?}: {}", out.code, self.masked(&lines.join(" | ")))
        };
        self.steps.push(format!("{step}: {outcome}"));
    }

    /// A raw HTTP exchange over ssh: the status line's code (or the refusal).
    fn record_http(&mut self, step: &str, out: &Out) {
        let status = out.stdout.lines().next().and_then(|l| l.split_whitespace().nth(1)).unwrap_or("-").to_string();
        let err = self.masked(&out.stderr.lines().map(str::trim).collect::<Vec<_>>().join(" | "));
        self.steps.push(format!("{step}: exit {:?}, HTTP status {status}, stderr {err:?}", out.code));
    }

    fn masked(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (path, name) in &self.masks {
            t = t.replace(path, name);
        }
        let mut out = String::new();
        let mut run = String::new();
        for c in t.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_hexdigit() {
                run.push(c);
                continue;
            }
            out.push_str(if run.len() == 64 { "<ID>" } else { &run });
            run.clear();
            out.push(c);
        }
        out.pop();
        // Nested names (packs/56/<ID>): the level directory comes from the id.
        let mut parts: Vec<&str> = out.split('/').collect();
        for i in (1..parts.len()).rev() {
            if parts[i].starts_with("<ID>")
                && parts[i - 1].len() == 2
                && parts[i - 1].chars().all(|c| c.is_ascii_hexdigit())
            {
                parts.remove(i - 1);
            }
        }
        parts.join("/")
    }
}

/// Panic unless ours and the reference went through the same steps with the same outcomes.
fn assert_same_outcomes(ours: &Transcript, reference: &Transcript) {
    let mut report = String::new();
    let n = ours.steps.len().max(reference.steps.len());
    for i in 0..n {
        let (a, b) = (ours.steps.get(i), reference.steps.get(i));
        let mark = if a == b { " " } else { "!" };
        report.push_str(&format!("{mark} ours:      {}\n", a.map_or("-", |s| s.as_str())));
        if a != b {
            report.push_str(&format!("! reference: {}\n", b.map_or("-", |s| s.as_str())));
        }
    }
    assert!(ours.steps == reference.steps, "ours and borg's own server differ (lines marked !):\n{report}");
}

/// `borg repo-create` of `repo` is refused with borg's wording; nothing appears at `path`.
fn refused(t: &mut Transcript, step: &str, borg: &Borg, repo: &str, path: &Path) {
    let out = borg.run(repo, &["repo-create", "-e", "aes256-ocb"]).failed();
    assert!(out.stderr.contains("Repository path not allowed"), "borg's output does not say why: {}", out.text());
    assert!(!path.exists(), "{} was created although the path is not allowed", path.display());
    t.record(step, &out);
}

/// Forced commands with restrictions, served by `side`.
fn restricted_scenario(side: Side) -> Transcript {
    let exe = borg25();
    let sshd = Sshd::start();
    let program = side.program(&sshd);
    let mut t = Transcript::default();
    t.mask(&sshd.dir().canonicalize().unwrap(), "<DIR>");
    let allowed = server_dir(&sshd, "allowed");
    let elsewhere = server_dir(&sshd, "elsewhere");
    std::os::unix::fs::symlink(&elsewhere, allowed.join("link-out")).unwrap();
    let forced =
        format!("command=\"{} serve --rest --restrict-to-path {}\",restrict", program.display(), allowed.display());
    let key = sshd.authorize_key("restricted", &forced);
    let borg = Borg::over_ssh(exe.clone(), &sshd, &key);

    // Below the allowed path: a backup works.
    let repo = ssh_url(&sshd, &allowed.join("repo"));
    t.record("repo-create below the allowed path", &borg.run(&repo, &["repo-create", "-e", "aes256-ocb"]).ok());
    make_tree(&borg.work().join("src"), 2);
    t.record("create", &borg.run(&repo, &["create", "one", "src"]).ok());
    assert_eq!(archive_names(&borg, &repo), BTreeSet::from(["one".to_string()]));
    t.record("check", &borg.run(&repo, &["check"]).ok());
    assert!(allowed.join("repo/packs").is_dir());

    // Elsewhere, directly or through a symlink below the allowed path: refused, nothing made.
    let target = elsewhere.join("repo");
    refused(&mut t, "repo-create elsewhere", &borg, &ssh_url(&sshd, &target), &target);
    refused(&mut t, "repo-create through a symlink", &borg, &ssh_url(&sshd, &allowed.join("link-out/repo")), &target);
    // The client's own command line cannot widen the forced command's restriction.
    let asked = format!("borg serve --rest --restrict-to-path / --backend FILE:{}", target.display());
    let out = ssh_raw(&sshd, &key, &asked, &http_request("POST", "/?cmd=create"));
    assert!(out.stderr.contains("Repository path not allowed"), "{}", out.text());
    t.record_http("raw create elsewhere, the client asking for --restrict-to-path /", &out);
    assert!(!target.exists(), "a client-side --restrict-to-path widened access: {}", out.text());
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0, "something was written below {}", elsewhere.display());

    // --restrict-to-repository: that one repository only, not one below it or beside it.
    let only = allowed.join("only");
    let forced =
        format!("command=\"{} serve --rest --restrict-to-repository {}\",restrict", program.display(), only.display());
    let key = sshd.authorize_key("one-repo", &forced);
    let borg = Borg::over_ssh(exe, &sshd, &key);
    t.record(
        "repo-create of the one repository",
        &borg.run(&ssh_url(&sshd, &only), &["repo-create", "-e", "aes256-ocb"]).ok(),
    );
    t.record("repo-info", &borg.run(&ssh_url(&sshd, &only), &["repo-info"]).ok());
    refused(&mut t, "repo-create beside it", &borg, &ssh_url(&sshd, &allowed.join("beside")), &allowed.join("beside"));
    refused(&mut t, "repo-create below it", &borg, &ssh_url(&sshd, &only.join("below")), &only.join("below"));

    // ssh://host/rel/path (one slash): relative to the directory the login lands in (the
    // home directory; here the forced command changes to another one, to stay out of
    // root's real home), and restricted by where it really is.
    let home = server_dir(&sshd, "home");
    let forced = format!(
        "command=\"cd {} && exec {} serve --rest --restrict-to-path {}\",restrict",
        home.display(),
        program.display(),
        home.join("repos").display()
    );
    let key = sshd.authorize_key("relative", &forced);
    let borg = Borg::over_ssh(borg25(), &sshd, &key);
    let relative = |path: &str| format!("ssh://{}@127.0.0.1:{}/{path}", sshd.user(), sshd.port());
    t.record(
        "repo-create of a relative path",
        &borg.run(&relative("repos/rel"), &["repo-create", "-e", "aes256-ocb"]).ok(),
    );
    assert!(home.join("repos/rel/config").is_dir(), "the relative repository is not below the login directory");
    t.record("repo-info of the relative path", &borg.run(&relative("repos/rel"), &["repo-info"]).ok());
    refused(&mut t, "repo-create of a relative path outside", &borg, &relative("other"), &home.join("other"));
    t
}

#[test]
fn borg25_forced_command_restricted_to_a_path_refuses_other_repositories_as_borg_serve_does() {
    let ours = restricted_scenario(Side::Ours);
    let reference = restricted_scenario(Side::Reference);
    assert_same_outcomes(&ours, &reference);
}

/// The packs/ and archives/ files of a store.
fn data_files(store: &Path) -> BTreeSet<String> {
    let mut files = store_files(store, "packs");
    files.extend(store_files(store, "archives"));
    files
}

/// Run `args` with `borg`, which must not remove any packs/ or archives/ file of `store`
/// (borg may fail doing so, or report the refusal); record the outcome.
fn must_keep_data(t: &mut Transcript, step: &str, borg: &Borg, repo: &str, store: &Path, args: &[&str]) -> Out {
    let before = data_files(store);
    let out = borg.run(repo, args);
    let gone: Vec<_> = before.difference(&data_files(store)).cloned().collect();
    assert!(gone.is_empty(), "{step} removed data it may not: {gone:?}\n{}", out.text());
    let said = out.stderr.to_lowercase();
    assert!(
        !out.success() || said.contains("permission") || said.contains("denied"),
        "{step}: borg neither failed nor reported the refusal: {}",
        out.text()
    );
    t.record(step, &out);
    out
}

/// The owner (all permissions) creates a repository; clients with `no-delete` (from the
/// forced command and from BORG_REPO_PERMISSIONS) and `write-only` back up and try to
/// remove data. Served by `side`.
fn no_delete_scenario(side: Side) -> Transcript {
    let exe = borg25();
    let sshd = Sshd::start();
    let program = side.program(&sshd);
    let mut t = Transcript::default();
    t.mask(&sshd.dir().canonicalize().unwrap(), "<DIR>");
    let store = server_dir(&sshd, "repos").join("nd");
    let repo = ssh_url(&sshd, &store);
    let mut owner = Borg::over_ssh(exe.clone(), &sshd, &sshd.client_key());
    owner.set("BORG_REMOTE_PATH", &program.display().to_string());
    let forced = |mode: &str| format!("command=\"{} serve --rest --permissions {mode}\",restrict", program.display());
    let nd_key = sshd.authorize_key("no-delete", &forced("no-delete"));
    let nd = Borg::over_ssh(exe.clone(), &sshd, &nd_key);
    let env_key = sshd.authorize_key(
        "env-no-delete",
        &format!(
            "environment=\"BORG_REPO_PERMISSIONS=no-delete\",command=\"{} serve --rest\",restrict",
            program.display()
        ),
    );
    let by_env = Borg::over_ssh(exe.clone(), &sshd, &env_key);
    let wo = Borg::over_ssh(exe, &sshd, &sshd.authorize_key("write-only", &forced("write-only")));
    let names = |b: &Borg| archive_names(b, &repo);

    // The owner creates the repository (no-delete may not write keys/).
    t.record("owner: repo-create", &owner.run(&repo, &["repo-create", "-e", "aes256-ocb"]).ok());

    // Backups under no-delete: archive "one" has a file no later archive has.
    let src = nd.work().join("src");
    make_tree(&src, 3);
    let mut unique = vec![0u8; 500_000];
    StdRng::seed_from_u64(4).fill_bytes(&mut unique);
    fs::write(src.join("only-in-one.bin"), &unique).unwrap();
    t.record("no-delete: create one", &nd.run(&repo, &["create", "one", "src"]).ok());
    fs::remove_file(src.join("only-in-one.bin")).unwrap();
    change_tree(&src);
    t.record("no-delete: create two", &nd.run(&repo, &["create", "two", "src"]).ok());
    make_tree(&by_env.work().join("src"), 5);
    t.record("BORG_REPO_PERMISSIONS=no-delete: create three", &by_env.run(&repo, &["create", "three", "src"]).ok());
    assert_eq!(names(&nd), BTreeSet::from(["one".into(), "two".into(), "three".into()]));

    // Deleting an archive is refused, by either key.
    must_keep_data(&mut t, "no-delete: delete one", &nd, &repo, &store, &["delete", "one"]);
    must_keep_data(&mut t, "BORG_REPO_PERMISSIONS=no-delete: delete one", &by_env, &repo, &store, &["delete", "one"]);
    assert!(names(&owner).contains("one"), "archive one was deleted under no-delete");
    // Nor can the client ask for more on its own command line: a raw DELETE of a pack.
    let pack = data_files(&store).into_iter().find(|f| f.starts_with("packs/")).expect("a pack");
    let asked = format!("borg serve --rest --permissions all --backend FILE:{}", store.display());
    let out = ssh_raw(&sshd, &nd_key, &asked, &http_request("DELETE", &format!("/{pack}")));
    assert!(store.join(&pack).exists(), "{pack} was deleted under no-delete: {}", out.text());
    t.record_http("no-delete: raw DELETE of a pack, the client asking for --permissions all", &out);

    // The owner deletes "one" (soft: archives/ID.del); compact under no-delete may not
    // drop it, nor the packs only "one" used.
    t.record("owner: delete one", &owner.run(&repo, &["delete", "one"]).ok());
    must_keep_data(&mut t, "no-delete: compact", &nd, &repo, &store, &["compact", "--threshold", "0"]);
    must_keep_data(
        &mut t,
        "BORG_REPO_PERMISSIONS=no-delete: compact",
        &by_env,
        &repo,
        &store,
        &["compact", "--threshold", "0"],
    );
    remove_the_soft_deleted_archive(&store);
    must_keep_data(
        &mut t,
        "no-delete: compact with unused packs",
        &nd,
        &repo,
        &store,
        &["compact", "--threshold", "0"],
    );
    t.record("owner: check --verify-data", &owner.run(&repo, &["check", "--verify-data"]).ok());

    // Control: with all permissions the same compact does remove packs.
    let before = data_files(&store);
    let out = owner.run(&repo, &["compact", "--threshold", "0"]).ok();
    let gone = before.difference(&data_files(&store)).filter(|f| f.starts_with("packs/")).count();
    assert!(gone > 0, "compact with all permissions removed no pack, so the test proves nothing: {}", out.text());
    t.record("owner: compact", &out);
    t.record("owner: check --verify-data after compact", &owner.run(&repo, &["check", "--verify-data"]).ok());
    let dest = owner.work().join("extract");
    fs::create_dir_all(&dest).unwrap();
    t.record("owner: extract two", &owner.run_in(&dest, &repo, &["extract", "two"]).ok());
    assert_same_tree(&src, &dest.join("src"));

    // write-only: a backup goes in, nothing comes back out, nothing is deleted.
    make_tree(&wo.work().join("src"), 6);
    t.record("write-only: create four", &wo.run(&repo, &["create", "four", "src"]).ok());
    assert!(names(&owner).contains("four"));
    let dest = wo.work().join("extract");
    fs::create_dir_all(&dest).unwrap();
    let out = wo.run_in(&dest, &repo, &["extract", "four"]).failed();
    assert!(!dest.join("src").exists(), "write-only extracted data: {}", out.text());
    t.record("write-only: extract four", &out);
    must_keep_data(&mut t, "write-only: delete two", &wo, &repo, &store, &["delete", "two"]);
    t
}

#[test]
fn borg25_no_delete_and_write_only_keep_data_as_borg_serve_does() {
    let ours = no_delete_scenario(Side::Ours);
    let reference = no_delete_scenario(Side::Reference);
    assert_same_outcomes(&ours, &reference);
}

/// borg 2.0.0b22 over http:// to `which` server: the owner creates the repository with
/// all permissions, then `no_delete` (the server's --permissions) is in force for backups,
/// delete and compact.
fn http_no_delete_scenario(which: Impl, no_delete: &str) -> Transcript {
    let exe = borg22();
    let auth = Some(("backup", "pa55word"));
    let creds = ["--username", "backup", "--password", "pa55word"];
    let mut nd_args = creds.to_vec();
    nd_args.extend(["--permissions", no_delete]);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let backend = format!("file://{}", store.display());
    let mut t = Transcript::default();
    let borg = Borg::new(exe);
    let src = borg.work().join("src");
    // Start `which` on the store with `args` (after stopping the one before).
    let serve = |dir: tempfile::TempDir, args: &[&str]| RestServer::start_with_backend(which, dir, &backend, args);

    let owner = serve(dir, &creds);
    t.record("owner: repo-create", &borg.run(&owner.url(auth), &["repo-create", "-e", "aes256-ocb"]).ok());
    let server = serve(owner.stop(), &nd_args);
    let repo = server.url(auth);
    make_tree(&src, 7);
    let mut unique = vec![0u8; 500_000];
    StdRng::seed_from_u64(8).fill_bytes(&mut unique);
    fs::write(src.join("only-in-one.bin"), &unique).unwrap();
    t.record("no-delete: create one", &borg.run(&repo, &["create", "one", "src"]).ok());
    fs::remove_file(src.join("only-in-one.bin")).unwrap();
    change_tree(&src);
    t.record("no-delete: create two", &borg.run(&repo, &["create", "two", "src"]).ok());
    assert_eq!(archive_names(&borg, &repo), BTreeSet::from(["one".into(), "two".into()]));
    t.record("no-delete: check --verify-data", &borg.run(&repo, &["check", "--verify-data"]).ok());
    must_keep_data(&mut t, "no-delete: delete one", &borg, &repo, &store, &["delete", "one"]);
    assert!(archive_names(&borg, &repo).contains("one"), "archive one deleted under no-delete");

    // The owner deletes "one", then compact under no-delete.
    let owner = serve(server.stop(), &creds);
    t.record("owner: delete one", &borg.run(&owner.url(auth), &["delete", "one"]).ok());
    let server = serve(owner.stop(), &nd_args);
    let repo = server.url(auth);
    must_keep_data(&mut t, "no-delete: compact", &borg, &repo, &store, &["compact", "--threshold", "0"]);
    remove_the_soft_deleted_archive(&store);
    must_keep_data(
        &mut t,
        "no-delete: compact with unused packs",
        &borg,
        &repo,
        &store,
        &["compact", "--threshold", "0"],
    );
    t.record("no-delete: check --verify-data", &borg.run(&repo, &["check", "--verify-data"]).ok());
    let dest = borg.work().join("extract");
    fs::create_dir_all(&dest).unwrap();
    t.record("no-delete: extract two", &borg.run_in(&dest, &repo, &["extract", "two"]).ok());
    assert_same_tree(&src, &dest.join("src"));

    // Control: with full permissions the same compact removes packs.
    let owner = serve(server.stop(), &creds);
    let before = data_files(&store);
    let out = borg.run(&owner.url(auth), &["compact", "--threshold", "0"]).ok();
    let gone = before.difference(&data_files(&store)).filter(|f| f.starts_with("packs/")).count();
    assert!(gone > 0, "compact with all permissions removed no pack, so the test proves nothing: {}", out.text());
    t.record("owner: compact", &out);
    t.record("owner: check --verify-data", &borg.run(&owner.url(auth), &["check", "--verify-data"]).ok());
    t
}

#[test]
fn borg22_over_http_with_borgbackup_no_delete_keeps_data_as_pythons_server_does() {
    // Python's server (0.7.0) knows only the old layout under borgbackup-no-delete, so the
    // reference gets borg's own no-delete letters (borg_permissions in b22's repository.py).
    let borg_no_delete = r#"{"": "lr", "archives": "lrw", "cache": "lrwWD", "config": "lrW", "index": "lrwWD", "keys": "lr", "locks": "lrwD", "packs": "lrw"}"#;
    let ours = http_no_delete_scenario(Impl::Ours, "borgbackup-no-delete");
    let reference = http_no_delete_scenario(Impl::Python, borg_no_delete);
    assert_same_outcomes(&ours, &reference);
}

/// Run `program serve ARGS` locally (no ssh) with stdin closed and BORG_EXIT_CODES as
/// given; for the refusals that happen before anything is served.
fn serve_locally(program: &Path, args: &[&str], exit_codes: Option<&str>, env: &[(&str, &str)], dir: &Path) -> Out {
    let n = fs::read_dir(dir).unwrap().count();
    let (out_path, err_path) = (dir.join(format!("{n}.out")), dir.join(format!("{n}.err")));
    let mut cmd = Command::new(program);
    cmd.arg("serve").args(args).env_clear().env("PATH", "/usr/bin:/bin").env("HOME", dir);
    cmd.env("BORG_BASE_DIR", dir.join("base")).current_dir(dir).stdin(Stdio::null());
    if let Some(v) = exit_codes {
        cmd.env("BORG_EXIT_CODES", v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(fs::File::create(&out_path).unwrap()).stderr(fs::File::create(&err_path).unwrap());
    let shown = format!("BORG_EXIT_CODES={exit_codes:?} {env:?} {} serve {}", program.display(), args.join(" "));
    finish(cmd, shown, &out_path, &err_path)
}

#[test]
fn serve_refusals_print_and_exit_as_borg_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let (allowed, other) = (base.join("allowed"), base.join("other/repo"));
    fs::create_dir_all(&allowed).unwrap();
    let logs = base.join("logs");
    fs::create_dir_all(&logs).unwrap();
    let file = |p: &Path| format!("FILE:{}", p.display());
    let (allowed_s, other_s, only) = (allowed.display().to_string(), file(&other), allowed.join("only"));
    let only_s = only.display().to_string();
    /// What is refused, the arguments after `serve`, extra environment.
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        ("restrict-to-path", vec!["--rest", "--restrict-to-path", &allowed_s, "--backend", &other_s], vec![]),
        ("restrict-to-repository", vec!["--rest", "--restrict-to-repository", &only_s, "--backend", &other_s], vec![]),
        ("not a FILE: backend", vec!["--rest", "--restrict-to-path", &allowed_s, "--backend", "file:///srv/x"], vec![]),
        ("no --backend", vec!["--rest"], vec![]),
        (
            "bad BORG_REPO_PERMISSIONS",
            vec!["--rest", "--backend", &other_s],
            vec![("BORG_REPO_PERMISSIONS", "everything")],
        ),
    ];
    let mut differences = Vec::new();
    for (what, args, env) in &cases {
        for exit_codes in [None, Some("legacy"), Some("modern")] {
            let ours = serve_locally(&server_binary(), args, exit_codes, env, &logs);
            let reference = serve_locally(&borg25(), args, exit_codes, env, &logs);
            assert!(!other.exists(), "{what}: {} was created", other.display());
            assert!(ours.stdout.is_empty(), "{what}: our refusal wrote to stdout (the HTTP channel): {}", ours.text());
            let shown = |o: &Out| format!("exit {:?}, stderr {:?}", o.code, o.stderr);
            if shown(&ours) != shown(&reference) {
                differences.push(format!(
                    "{what}, BORG_EXIT_CODES={}:\n  ours:      {}\n  reference: {}",
                    exit_codes.unwrap_or("(unset)"),
                    shown(&ours),
                    shown(&reference)
                ));
            }
        }
    }
    assert!(differences.is_empty(), "serve refusals differ from borg serve's:\n{}", differences.join("\n"));
}
