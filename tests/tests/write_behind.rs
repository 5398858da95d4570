//! Write-behind (issue 15 point 4) through a real `borgstored` whose store `wb` writes
//! `data/` behind to a local spool over a remote primary (`borgstore-server-rest` on
//! loopback) that the tests stop, restart and make refuse writes. Every check of "on the
//! primary" reads the primary's files directly.

use borgstore_client::MoveAction;
use borgstore_tests::rest::request;
use borgstore_tests::write_behind::WriteBehindSetup;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// A 64-hex key.
fn key(i: u32) -> String {
    hex::encode(Sha256::digest(i.to_be_bytes()))
}

/// Its nested name at 2 levels.
fn nested(k: &str) -> String {
    format!("data/{}/{}/{k}", &k[..2], &k[2..4])
}

fn value(i: u32, round: u32) -> Vec<u8> {
    format!("value {i} round {round} ").repeat((i as usize % 7) + 1).into_bytes()
}

/// Long enough for a retrying upload to reach a primary that is back (uploads retry at
/// least every 200 ms; the REST client's own retries take a few seconds).
const PATIENCE: Duration = Duration::from_secs(120);

/// Does `fut` stay pending for a while? (A wait that must not end, not a speed.)
async fn stays_pending<T>(handle: &tokio::task::JoinHandle<T>) -> bool {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    !handle.is_finished()
}

async fn stat(c: &borgstore_client::Client, k: &str) -> f64 {
    c.stats().await.unwrap().get(k).map(|v| v.as_f64()).unwrap_or(-1.0)
}

/// (a) After `sync` returns, every value acknowledged before it is on the primary, the
/// latest of each name; stores outside `data/` go straight to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_returns_once_every_acknowledged_value_is_on_the_primary() {
    let setup = WriteBehindSetup::start(None, false);
    let c = setup.daemon.client("wb").await;
    c.create().await.unwrap();
    c.store("config/x", b"direct".to_vec()).await.unwrap();
    assert_eq!(std::fs::read(setup.primary_store().join("config/x")).unwrap(), b"direct");
    let mut want = BTreeMap::new();
    for round in 0..3 {
        for i in 0..60 {
            c.store(&format!("data/{}", key(i)), value(i, round)).await.unwrap();
            want.insert(nested(&key(i)), value(i, round));
        }
    }
    c.sync().await.unwrap();
    assert_eq!(setup.primary_data(), want, "after sync the primary holds the latest value of every item");
    assert_eq!(stat(&c, "write_behind_pending_items").await, 0.0);
    assert!(stat(&c, "write_behind_uploads").await >= 60.0);
    assert!(setup.spool_files().is_empty(), "uploaded entries leave the spool: {:?}", setup.spool_files());
    // A soft delete and a delete right after a store land on the primary in order.
    let k = key(1000);
    c.store(&format!("data/{k}"), b"soon deleted".to_vec()).await.unwrap();
    c.move_(&format!("data/{k}"), MoveAction::Delete).await.unwrap();
    c.sync().await.unwrap();
    let data = setup.primary_data();
    assert!(!data.contains_key(&nested(&k)));
    assert_eq!(data[&format!("{}.del", nested(&k))], b"soon deleted");
    c.delete(&format!("data/{k}"), true).await.unwrap();
    assert!(!setup.primary_data().contains_key(&format!("{}.del", nested(&k))));
}

/// (b) The primary down for a while: stores are acknowledged, loads and infos see them,
/// `sync` waits; the primary back, `sync` completes and the primary holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_down_for_a_while_delays_uploads_and_loses_nothing() {
    let mut setup = WriteBehindSetup::start(None, false);
    let c = setup.daemon.client("wb").await;
    c.create().await.unwrap();
    setup.stop_primary();
    let mut want = BTreeMap::new();
    for i in 0..40 {
        c.store(&format!("data/{}", key(i)), value(i, 0)).await.unwrap();
        want.insert(nested(&key(i)), value(i, 0));
    }
    for i in 0..40 {
        let name = format!("data/{}", key(i));
        assert_eq!(c.load(&name, 0, None, false).await.unwrap(), value(i, 0));
        assert_eq!(c.load(&name, 6, Some(3), false).await.unwrap(), &value(i, 0)[6..9]);
        let info = c.info(&name, false).await.unwrap();
        assert!(info.exists && info.size == value(i, 0).len() as u64);
    }
    assert_eq!(stat(&c, "write_behind_pending_items").await, 40.0);
    let c2 = setup.daemon.client("wb").await;
    let sync = tokio::spawn(async move { c2.sync().await });
    assert!(stays_pending(&sync).await, "sync must wait while the primary is down");
    setup.start_primary(&[]);
    tokio::time::timeout(PATIENCE, sync).await.expect("sync ends once the primary is back").unwrap().unwrap();
    assert_eq!(setup.primary_data(), want);
    assert_eq!(stat(&c, "write_behind_pending_items").await, 0.0);
}

/// (c) kill -9 of the daemon while uploads fail (the primary refuses writes), restart:
/// everything acknowledged before the kill ends up on the primary, the latest value of
/// each name, no partial item anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_uploads_loses_nothing_acknowledged() {
    let mut setup = WriteBehindSetup::start(None, false);
    let c = setup.daemon.client("wb").await;
    c.create().await.unwrap();
    let mut want = BTreeMap::new();
    // Some values are up before the trouble starts.
    for i in 0..10 {
        c.store(&format!("data/{}", key(i)), value(i, 0)).await.unwrap();
        want.insert(nested(&key(i)), value(i, 0));
    }
    c.sync().await.unwrap();
    setup.start_primary(&["--permissions", "borgbackup-read-only"]);
    for round in 1..3 {
        for i in 0..30 {
            c.store(&format!("data/{}", key(i)), value(i, round)).await.unwrap();
            want.insert(nested(&key(i)), value(i, round));
        }
    }
    // Uploads are being tried and refused now; a write cut short by the kill would leave
    // a temp file like this one.
    std::fs::write(setup.spool().join("00000000000fffff.wb.tmp"), b"half an entry").unwrap();
    drop(c);
    setup.kill_daemon();
    setup.start_primary(&[]);
    setup.restart_daemon();
    let c = setup.daemon.client("wb").await;
    // Served from the replayed spool or the primary: the latest values either way.
    for i in 0..30 {
        assert_eq!(c.load(&format!("data/{}", key(i)), 0, None, false).await.unwrap(), value(i, 2));
    }
    tokio::time::timeout(PATIENCE, c.sync()).await.expect("sync after the restart").unwrap();
    assert_eq!(setup.primary_data(), want, "every acknowledged value, the latest of each");
    assert!(setup.spool_files().is_empty(), "spool left: {:?}", setup.spool_files());
    let temp = setup.primary_data().keys().filter(|n| n.ends_with(".tmp")).count();
    assert_eq!(temp, 0, "no partial items on the primary");
}

/// (d) While items are spooled (the primary refuses writes but lists), a recursive
/// list of the nested namespace equals what a plain store lists after the same calls,
/// and so does it after the uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_merge_spooled_items_like_a_plain_store() {
    let mut setup = WriteBehindSetup::start(None, false);
    let wb = setup.daemon.client("wb").await;
    let plain = setup.daemon.client("plain").await;
    wb.create().await.unwrap();
    for c in [&wb, &plain] {
        for i in 0..20 {
            c.store(&format!("data/{}", key(i)), value(i, 0)).await.unwrap();
        }
    }
    wb.sync().await.unwrap();
    setup.start_primary(&["--permissions", "borgbackup-read-only"]);
    for c in [&wb, &plain] {
        // New items (new nesting directories) and replaced items of another size.
        for i in 10..40 {
            c.store(&format!("data/{}", key(i)), value(i, 1)).await.unwrap();
        }
    }
    let shape = |items: Vec<borgstore_client::ItemInfo>| -> Vec<(String, u64, bool)> {
        items.into_iter().map(|i| (i.name, i.size, i.directory)).collect()
    };
    let listed = shape(wb.list("data", false).await.unwrap().collect().await.unwrap());
    let reference = shape(plain.list("data", false).await.unwrap().collect().await.unwrap());
    assert_eq!(listed.len(), 40);
    assert_eq!(listed, reference, "write-behind list while spooled");
    assert!(stat(&wb, "write_behind_pending_items").await >= 20.0, "the items were still spooled");
    setup.start_primary(&[]);
    tokio::time::timeout(PATIENCE, wb.sync()).await.expect("sync").unwrap();
    let listed = shape(wb.list("data", false).await.unwrap().collect().await.unwrap());
    assert_eq!(listed, reference, "write-behind list after the uploads");
    assert_eq!(setup.primary_data().len(), 40);
}

/// (e) The bound: with the primary down and the spool full, a writer waits until
/// uploads free room; then it completes and everything reaches the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_makes_writers_wait_for_uploads() {
    let mut setup = WriteBehindSetup::start(Some(1000), false);
    let c = setup.daemon.client("wb").await;
    c.create().await.unwrap();
    setup.stop_primary();
    c.store(&format!("data/{}", key(1)), vec![1u8; 600]).await.unwrap();
    let c2 = setup.daemon.client("wb").await;
    let k2 = key(2);
    let writer = tokio::spawn(async move { c2.store(&format!("data/{k2}"), vec![2u8; 600]).await });
    assert!(stays_pending(&writer).await, "a store must wait while the spool would exceed its bound");
    // Other items are not held up by the waiting writer's item.
    assert_eq!(c.load(&format!("data/{}", key(1)), 0, None, false).await.unwrap(), vec![1u8; 600]);
    setup.start_primary(&[]);
    tokio::time::timeout(PATIENCE, writer).await.expect("the writer gets room").unwrap().unwrap();
    tokio::time::timeout(PATIENCE, c.sync()).await.unwrap().unwrap();
    let data = setup.primary_data();
    assert_eq!(data[&nested(&key(1))], vec![1u8; 600]);
    assert_eq!(data[&nested(&key(2))], vec![2u8; 600]);
}

/// (f) The doors: REST `POST /STORE/?cmd=sync` (our extension) and `borgstore sync`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_cli_sync() {
    let mut setup = WriteBehindSetup::start(None, true);
    let port = setup.rest_port.unwrap();
    assert_eq!(request(port, "POST", "/wb/?cmd=create", None, &[], b"").status, 200);
    // A store without write-behind answers at once.
    assert_eq!(request(port, "POST", "/plain/?cmd=sync", None, &[], b"").status, 200);
    setup.stop_primary();
    let k = key(7);
    assert_eq!(request(port, "POST", &format!("/wb/{}", nested(&k)), None, &[], b"over rest").status, 200);
    assert_eq!(request(port, "GET", &format!("/wb/{}", nested(&k)), None, &[], b"").body, b"over rest");
    let sync = tokio::task::spawn_blocking(move || request(port, "POST", "/wb/?cmd=sync", None, &[], b"").status);
    assert!(stays_pending(&sync).await, "REST sync waits while the primary is down");
    setup.start_primary(&[]);
    assert_eq!(tokio::time::timeout(PATIENCE, sync).await.unwrap().unwrap(), 200);
    assert_eq!(setup.primary_data()[&nested(&k)], b"over rest");

    // The CLI: stored over IPC with the primary down, `borgstore sync` returns once it
    // is up and the value is there.
    setup.stop_primary();
    let c = setup.daemon.client("wb").await;
    c.store(&format!("data/{}", key(8)), b"over ipc".to_vec()).await.unwrap();
    let socket = setup.daemon.socket.clone();
    let cli = tokio::task::spawn_blocking(move || {
        std::process::Command::new(borgstore_tests::daemon::binary("borgstore"))
            .arg("--socket")
            .arg(&socket)
            .args(["--store", "wb", "sync"])
            .output()
            .unwrap()
    });
    assert!(stays_pending(&cli).await, "borgstore sync waits while the primary is down");
    setup.start_primary(&[]);
    let out = tokio::time::timeout(PATIENCE, cli).await.unwrap().unwrap();
    assert!(out.status.success(), "borgstore sync: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(setup.primary_data()[&nested(&key(8))], b"over ipc");
    let help = std::process::Command::new(borgstore_tests::daemon::binary("borgstore"))
        .args(["sync", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("write-behind") && help.contains("primary"), "{help}");
}

/// A full spool disk: a store that does not fit is refused with an error (never
/// acknowledged), leaves no partial file in the spool, and what was acknowledged before
/// still reaches the primary; once uploads free the disk, stores are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_refuses_the_store_and_loses_nothing_acknowledged() {
    let (mut setup, _disk) = WriteBehindSetup::start_on_small_spool("1m", Some(64 << 20));
    let c = setup.daemon.client("wb").await;
    c.create().await.unwrap();
    // Nothing leaves the spool while the primary is down.
    setup.stop_primary();
    let first = vec![1u8; 600 * 1024];
    c.store(&format!("data/{}", key(1)), first.clone()).await.unwrap();
    let refused = c.store(&format!("data/{}", key(2)), vec![2u8; 600 * 1024]).await;
    assert!(refused.is_err(), "a store the spool disk cannot hold must not be acknowledged");
    assert!(
        setup.spool_files().iter().all(|f| !f.ends_with(".tmp")) && setup.spool_files().len() == 1,
        "only the acknowledged entry is in the spool: {:?}",
        setup.spool_files()
    );
    assert_eq!(c.load(&format!("data/{}", key(1)), 0, None, false).await.unwrap(), first);
    setup.start_primary(&[]);
    tokio::time::timeout(PATIENCE, c.sync()).await.expect("sync within patience").unwrap();
    let data = setup.primary_data();
    assert_eq!(data.get(&nested(&key(1))), Some(&first));
    assert!(!data.contains_key(&nested(&key(2))), "the refused store is nowhere");
    // The uploaded entry left the disk: the same store fits now.
    c.store(&format!("data/{}", key(2)), vec![2u8; 600 * 1024]).await.unwrap();
    tokio::time::timeout(PATIENCE, c.sync()).await.expect("sync within patience").unwrap();
    assert_eq!(setup.primary_data().get(&nested(&key(2))).map(Vec::len), Some(600 * 1024));
}
