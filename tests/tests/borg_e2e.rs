//! borg 2 end to end against our `borgstore-server-rest` (issue 4 point 4):
//! repo-create, two creates, repo-list, list, extract (byte-identical), check
//! --verify-data, prune, compact, extract again, check. The steps and their assertions
//! live in `tests/python/borg_e2e.sh`; borg comes from `target/venv-borg`, which
//! `tests/setup/borg.sh` (run by tests/run) builds.

use borgstore_tests::python::workspace;
use borgstore_tests::rest::{Impl, RestServer};
use std::process::Command;

#[test]
fn borg2_backs_up_and_restores_through_our_rest_server() {
    let borg = workspace().join("target/venv-borg/bin/borg");
    assert!(borg.exists(), "borg 2 is not installed at {}: run tests/setup/borg.sh (tests/run does)", borg.display());
    let server = RestServer::start(Impl::Ours, &["--username", "backup", "--password", "pa55word"]);
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(workspace().join("tests/python/borg_e2e.sh"))
        .arg(server.url(Some(("backup", "pa55word"))))
        .arg(work.path())
        .output()
        .expect("run borg_e2e.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("borg_e2e: PASSED"),
        "borg e2e failed:\n{stdout}\n--- stderr\n{}\n--- server log\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    // The repository really is on our side, in borgstore's layout.
    let store = server.store_path();
    for ns in ["config", "keys", "archives", "packs"] {
        assert!(store.join(ns).is_dir(), "no {ns}/ in the store");
    }
}
