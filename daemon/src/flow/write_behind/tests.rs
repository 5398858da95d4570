//! Unit tests of the spool (replay, ordering, bound, sync) and of the layer over a real
//! posixfs primary.

use super::spool::{Spool, Writer};
use super::*;
use crate::backends::url::backend_from_url;
use std::time::Duration;

/// Write and acknowledge one entry the way the layer does.
async fn put(spool: &Spool, name: &str, value: &[u8]) {
    let len = value.len() as u64;
    let seq = spool.reserve(len).await.unwrap();
    let mut w = Writer::create(spool.dir(), seq, name, len).unwrap();
    w.write(value).unwrap();
    w.commit().unwrap();
    if let Some(old) = spool.acknowledge(name, seq, len) {
        std::fs::remove_file(old).unwrap();
    }
}

fn entry_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn replay_keeps_the_newest_entry_per_name_and_drops_temp_and_corrupt_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let spool = Spool::new("data/", dir.clone(), 1 << 20);
    spool.open().await.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    put(&spool, "data/00/aa", b"one").await;
    put(&spool, "data/00/bb", b"two").await;
    // An older entry of a name left behind (as after a crash between the new entry's
    // rename and the old one's removal): written by hand with a lower seq.
    let mut w = Writer::create(&dir, 0x10, "data/00/cc", 3).unwrap();
    w.write(b"old").unwrap();
    w.commit().unwrap();
    let mut w = Writer::create(&dir, 0x20, "data/00/cc", 3).unwrap();
    w.write(b"new").unwrap();
    w.commit().unwrap();
    // A write cut short by a crash, a corrupt entry, a foreign file name.
    std::fs::write(dir.join("0000000000000030.wb.tmp"), b"partial").unwrap();
    std::fs::write(dir.join("0000000000000031.wb"), b"garbage that is no entry").unwrap();
    let mut w = Writer::create(&dir, 0x32, "data/00/dd", 5).unwrap();
    w.write(b"fives").unwrap();
    w.commit().unwrap();
    let bad = dir.join("0000000000000032.wb");
    let mut bytes = std::fs::read(&bad).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 0xff; // a flipped bit in the value
    std::fs::write(&bad, bytes).unwrap();
    spool.close();

    let again = Spool::new("data/", dir.clone(), 1 << 20);
    again.open().await.unwrap();
    let names: Vec<String> = again.children("data/00").into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["aa", "bb", "cc"]);
    let (cc, path) = again.lookup("data/00/cc").unwrap();
    assert_eq!(cc.seq, 0x20);
    assert_eq!(spool::read_range(&path, "data/00/cc", 0, 3).unwrap(), "new");
    assert_eq!(
        entry_files(&dir),
        ["0000000000000000.wb", "0000000000000001.wb", "0000000000000020.wb", "corrupt"],
        "temp and superseded files removed, corrupt ones set aside"
    );
    assert_eq!(entry_files(&dir.join("corrupt")), ["0000000000000031.wb", "0000000000000032.wb"]);
    assert_eq!(again.stats().pending_items, 3);
    // New entries continue after the highest sequence number found.
    put(&again, "data/00/ee", b"e").await;
    assert!(again.lookup("data/00/ee").unwrap().0.seq > 0x32);
}

#[tokio::test]
async fn one_upload_per_name_and_a_newer_value_waits_for_the_older_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::new("", tmp.path().join("s"), 1 << 20);
    spool.open().await.unwrap();
    put(&spool, "a", b"1").await;
    let first = spool.next_job().await.unwrap();
    assert_eq!((first.name.as_str(), first.seq), ("a", 0));
    put(&spool, "a", b"2").await;
    put(&spool, "a", b"3").await;
    // "a" is in flight: no second job for it, even though a newer value is there.
    assert!(tokio::time::timeout(Duration::from_millis(100), spool.next_job()).await.is_err());
    // The newest value is what loads see; the one that replaced "2" stands for it.
    assert_eq!(spool.lookup("a").unwrap().0.seq, 2);
    spool.uploaded(&first).await;
    let second = spool.next_job().await.unwrap();
    assert_eq!((second.name.as_str(), second.seq), ("a", 2), "value 2 never goes up: 3 replaced it");
    spool.uploaded(&second).await;
    assert!(spool.lookup("a").is_none());
    assert_eq!(spool.stats().pending_bytes, 0);
    assert_eq!(entry_files(&tmp.path().join("s")), Vec::<String>::new());
}

#[tokio::test]
async fn writers_wait_while_the_spool_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::new("", tmp.path().join("s"), 10));
    spool.open().await.unwrap();
    // Larger than the bound: taken, because nothing else is held.
    put(&spool, "big", &[7u8; 25]).await;
    let s2 = spool.clone();
    let writer = tokio::spawn(async move { put(&s2, "small", b"xy").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!writer.is_finished(), "a writer must wait while the spool is full");
    let job = spool.next_job().await.unwrap();
    spool.uploaded(&job).await;
    tokio::time::timeout(Duration::from_secs(10), writer).await.unwrap().unwrap();
    assert!(spool.lookup("small").is_some());
}

#[tokio::test]
async fn sync_waits_for_what_was_acknowledged_before_it_and_for_what_replaced_that() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::new("", tmp.path().join("s"), 1 << 20));
    spool.open().await.unwrap();
    put(&spool, "a", b"1").await;
    let s2 = spool.clone();
    let sync = tokio::spawn(async move { s2.sync().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Replaced before its upload began: the newer value carries the older one's place.
    put(&spool, "a", b"2").await;
    put(&spool, "b", b"after the sync began").await;
    let job = spool.next_job().await.unwrap();
    assert_eq!(job.name, "a");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!sync.is_finished());
    spool.uploaded(&job).await;
    tokio::time::timeout(Duration::from_secs(10), sync).await.unwrap().unwrap().unwrap();
    assert!(spool.lookup("b").is_some(), "b came after the sync and does not hold it up");
}

async fn layer(tmp: &std::path::Path, max_bytes: u64) -> (Arc<dyn Backend>, WriteBehind) {
    let primary = backend_from_url(&format!("file://{}", tmp.join("primary").display()), Default::default()).unwrap();
    primary.create().await.unwrap();
    let wb = WriteBehind::new(
        primary.clone(),
        ["", "data/"],
        &[SpoolConfig { namespace: "data/".into(), dir: tmp.join("spool"), max_bytes }],
    );
    wb.open().await.unwrap();
    (primary, wb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_serves_spooled_items_and_sync_puts_them_on_the_primary() {
    let tmp = tempfile::tempdir().unwrap();
    let (primary, wb) = layer(tmp.path(), 1 << 20).await;
    wb.store("config/x", Bytes::from_static(b"direct")).await.unwrap();
    assert_eq!(primary.load("config/x", 0, None).await.unwrap(), "direct", "other namespaces are not spooled");
    for i in 0..50u32 {
        let name = format!("data/{:02x}/{:02x}/item{i}", i % 3, i % 5);
        for round in 0..3u32 {
            wb.store(&name, Bytes::from(format!("{i}-{round}"))).await.unwrap();
        }
        assert_eq!(wb.load(&name, 0, None).await.unwrap(), format!("{i}-2"));
        assert_eq!(wb.load(&name, -1, None).await.unwrap(), "2");
        let info = wb.info(&name).await.unwrap();
        assert!(info.exists && !info.directory && info.size == format!("{i}-2").len() as u64);
    }
    let top: Vec<String> = wb.list("data").await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(top, ["00", "01", "02"]);
    assert!(wb.info("data/01/04").await.unwrap().directory);
    wb.sync().await.unwrap();
    for i in 0..50u32 {
        let name = format!("data/{:02x}/{:02x}/item{i}", i % 3, i % 5);
        assert_eq!(primary.load(&name, 0, None).await.unwrap(), format!("{i}-2"), "{name}");
    }
    assert_eq!(wb.stats().pending_items, 0);
    // Delete and move after pending uploads land on the primary, in order.
    wb.store("data/00/00/moved", Bytes::from_static(b"m")).await.unwrap();
    wb.move_("data/00/00/moved", "data/00/00/moved.del").await.unwrap();
    assert!(!primary.info("data/00/00/moved").await.unwrap().exists);
    assert_eq!(primary.load("data/00/00/moved.del", 0, None).await.unwrap(), "m");
    wb.store("data/00/00/gone", Bytes::from_static(b"g")).await.unwrap();
    wb.delete("data/00/00/gone").await.unwrap();
    wb.sync().await.unwrap();
    assert!(!wb.info("data/00/00/gone").await.unwrap().exists);
    wb.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_replays_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    // Entries left by an earlier run (as after a crash), then an open.
    let spool = Spool::new("data/", tmp.path().join("spool"), 1 << 20);
    spool.open().await.unwrap();
    put(&spool, "data/aa", b"left behind").await;
    spool.close();
    let (primary, wb) = layer(tmp.path(), 1 << 20).await;
    assert_eq!(wb.load("data/aa", 0, None).await.unwrap(), "left behind");
    wb.sync().await.unwrap();
    assert_eq!(primary.load("data/aa", 0, None).await.unwrap(), "left behind");
    wb.close().await.unwrap();
}
