//! borg 2 with a quarantining profile (issue 14, point 3): the backup client's REST user
//! has borg's `no-delete` letters and the store keeps deletes 30 days. Its `borg prune`
//! and `borg compact` succeed, yet nothing leaves the disk: every pack and archive is
//! still there, live or as its `.del` twin. The admin (another REST user) restores
//! everything, drops borg's chunk index fragments (compact rewrote them without the
//! restored packs) and borg finds the pruned archive again, byte for byte; once the window
//! has passed (the daemon's clock shifted, not slept), `borgstore purge` removes what
//! was quarantined and the repository still checks.

use borgstore_tests::borg::{borg22, random_file, Borg};
use borgstore_tests::daemon::{binary, Daemon};
use borgstore_tests::rest::{free_port, request, wait_port};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const BACKUP: (&str, &str) = ("backup", "backup-pw");
const ADMIN: (&str, &str) = ("admin", "admin-pw");

/// Every file below `dir` in the namespaces borg keeps its data in, relative to `dir`.
fn files(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    for ns in ["packs", "archives"] {
        walk(dir, &dir.join(ns), &mut out);
    }
    out
}

fn quarantined(dir: &Path) -> Vec<String> {
    files(dir).into_iter().filter(|f| f.ends_with(".del")).collect()
}

fn archives(borg: &Borg, repo: &str) -> BTreeSet<String> {
    let out = borg.run(repo, &["repo-list", "--format", "{archive}{NL}"]).ok();
    out.stdout.lines().map(str::to_string).collect()
}

fn purge(d: &Daemon) -> serde_json::Value {
    let out = Command::new(binary("borgstore"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--store", "laptop", "purge", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "purge failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn borg_prune_and_compact_by_a_no_delete_client_lose_nothing_until_the_window_passes() {
    let borg = Borg::new(borg22());
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let htpasswd = root.join("users.htpasswd");
    for (i, (user, pw)) in [BACKUP, ADMIN].iter().enumerate() {
        let mut cmd = Command::new("htpasswd");
        cmd.args(["-B", "-b", "-C", "5"]);
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd.arg(&htpasswd).args([user, pw]).output().expect("htpasswd: install apache2-utils");
        assert!(out.status.success());
    }
    let port = free_port();
    let clock = root.join("clock");
    std::fs::write(&clock, "0").unwrap();
    let config = root.join("borgstored.toml");
    std::fs::write(
        &config,
        format!(
            r#"
rest = "127.0.0.1:{port}"
state_dir = "{root}/state"
[stores.laptop]
url = "file://{root}/laptop"
create = true
quarantine_days = 30
htpasswd = "{htpasswd}"
[[stores.laptop.rules]]
name = "backup"
rest_user = "backup"
permissions = "no-delete"
[[stores.laptop.rules]]
name = "admin"
rest_user = "admin"
permissions = "all"
"#,
            root = root.display(),
            htpasswd = htpasswd.display()
        ),
    )
    .unwrap();
    let clock_env = clock.display().to_string();
    let d = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &["--config", config.to_str().unwrap()],
        &[("BORGSTORED_TEST_CLOCK_FILE", &clock_env)],
    );
    wait_port(port, "borgstored REST", &d.log);
    let store: PathBuf = root.join("laptop");
    let url = |(u, p): (&str, &str)| format!("http://{u}:{p}@127.0.0.1:{port}/laptop/");
    let (client, admin) = (url(BACKUP), url(ADMIN));

    // Two archives; the files only the first has are big and random, so pruning it
    // leaves whole packs unused.
    let src = borg.work().join("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("kept"), 150_000);
    for i in 0..3 {
        random_file(&src.join(format!("gone-{i}")), 200_000);
    }
    let first: Vec<(String, Vec<u8>)> = ["kept", "gone-0", "gone-1", "gone-2"]
        .iter()
        .map(|n| (n.to_string(), std::fs::read(src.join(n)).unwrap()))
        .collect();
    // The admin makes the repository (no-delete cannot write its keys).
    borg.run(&admin, &["repo-create", "-e", "aes256-ocb"]).ok();
    borg.run(&client, &["create", "one", "src"]).ok();
    for i in 0..3 {
        std::fs::remove_file(src.join(format!("gone-{i}"))).unwrap();
    }
    borg.run(&client, &["create", "two", "src"]).ok();
    let before = files(&store);
    assert!(before.iter().filter(|f| f.starts_with("packs/")).count() >= 3, "{before:?}");

    // The backup client prunes and compacts: borg succeeds and sees one archive ...
    borg.run(&client, &["prune", "--keep", "1"]).ok();
    borg.run(&client, &["compact"]).ok();
    assert_eq!(archives(&borg, &client), BTreeSet::from(["two".to_string()]));
    // ... but every pack and archive is still on disk, live or in quarantine.
    let after = files(&store);
    for f in &before {
        assert!(after.contains(f) || after.contains(&format!("{f}.del")), "{f} was lost: {after:?}");
    }
    let held = quarantined(&store);
    assert!(held.iter().any(|f| f.starts_with("packs/")), "compact quarantined no pack: {held:?}");
    assert!(held.iter().any(|f| f.starts_with("archives/")), "prune quarantined no archive: {held:?}");

    // The admin restores everything; borg finds the first archive again, whole.
    for f in &held {
        let live = f.strip_suffix(".del").unwrap();
        let target = format!("/laptop/?cmd=move&current={f}&new={live}");
        let r = request(port, "POST", &target, Some(ADMIN), &[], b"");
        assert_eq!(r.status, 200, "restore {f}: {:?}", r.text());
    }
    assert!(quarantined(&store).is_empty());
    // borg's chunk index (fragments in index/) was rewritten without the restored packs'
    // chunks: the admin drops it and borg rebuilds it from the packs.
    for e in std::fs::read_dir(store.join("index")).unwrap().flatten() {
        let name = format!("index/{}", e.file_name().to_string_lossy());
        let r = request(port, "DELETE", &format!("/laptop/{name}"), Some(ADMIN), &[], b"");
        assert_eq!(r.status, 200, "delete {name}: {:?}", r.text());
    }
    assert_eq!(archives(&borg, &admin), BTreeSet::from(["one".to_string(), "two".to_string()]));
    borg.run(&admin, &["check", "--verify-data"]).ok();
    let dest = borg.work().join("restored");
    std::fs::create_dir_all(&dest).unwrap();
    borg.run_in(&dest, &admin, &["extract", "one"]).ok();
    for (name, data) in &first {
        assert_eq!(&std::fs::read(dest.join("src").join(name)).unwrap(), data, "{name} differs after the restore");
    }

    // Pruned again; inside the window a purge keeps everything, past it the quarantine
    // goes and what borg still uses checks.
    borg.run(&client, &["prune", "--keep", "1"]).ok();
    borg.run(&client, &["compact"]).ok();
    let held = quarantined(&store);
    assert!(!held.is_empty());
    std::fs::write(&clock, (29 * 86_400).to_string()).unwrap();
    assert_eq!(purge(&d)["purged"], 0);
    assert_eq!(quarantined(&store), held);
    std::fs::write(&clock, (31 * 86_400).to_string()).unwrap();
    let p = purge(&d);
    assert_eq!(p["purged"].as_u64(), Some(held.len() as u64), "{p}");
    assert!(quarantined(&store).is_empty());
    assert_eq!(archives(&borg, &client), BTreeSet::from(["two".to_string()]));
    borg.run(&admin, &["check", "--verify-data"]).ok();
}
