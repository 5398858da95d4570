//! borgstored end to end: the real binary, the client library, several stores.

use borgstore_client::{Client, ErrorKind, MoveAction, Source, StatValue};
use borgstore_tests::daemon::{binary, Daemon};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn store_arg(d_dir: &std::path::Path, name: &str) -> String {
    format!("{name}=file://{}/{name}", d_dir.display())
}

fn start_with(stores: &[&str], extra: &[&str]) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = Vec::new();
    for s in stores {
        args.push("--store".into());
        args.push(store_arg(dir.path(), s));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start_in(dir, &refs, &[])
}

#[tokio::test]
async fn full_api_round_trip() {
    let d = start_with(&["main"], &["--levels", "main:data/=2", "--levels", "main:=0", "--quota", "main=100000"]);
    let c = d.client("main").await;
    assert_eq!(c.open().await.unwrap_err().kind, ErrorKind::BackendDoesNotExist);
    c.create().await.unwrap();
    // As in Python: creating over a store that is still empty is fine; over one with an
    // item in it, not.
    c.create().await.unwrap();
    let key = "0123456789abcdef";
    c.store(&format!("data/{key}"), b"hello world".to_vec()).await.unwrap();
    assert_eq!(c.create().await.unwrap_err().kind, ErrorKind::BackendAlreadyExists);
    c.store("config/c", b"cfg".to_vec()).await.unwrap();
    assert!(d.path(&format!("main/data/01/23/{key}")).is_file(), "nesting from --levels");
    assert_eq!(c.load(&format!("data/{key}"), -5, None, false).await.unwrap(), b"world");
    assert_eq!(c.load(&format!("data/{key}"), 0, Some(5), false).await.unwrap(), b"hello");
    let info = c.info(&format!("data/{key}"), false).await.unwrap();
    assert!(info.exists && info.size == 11);
    assert_eq!(
        c.hash(&format!("data/{key}"), "sha256", false).await.unwrap(),
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    );
    assert_eq!(c.hash(&format!("data/{key}"), "nope", false).await.unwrap_err().kind, ErrorKind::InvalidArgument);
    let g = c.gather(vec![Source::new(key, 6, 5), Source::new(key, 0, 1)], Some("data".into()), false).await.unwrap();
    assert_eq!(g, b"worldh");
    let made =
        c.defrag(vec![Source::new(key, 0, 5)], None, Some("sha256".into()), Some("data".into()), false).await.unwrap();
    assert_eq!(c.load(&format!("data/{made}"), 0, None, false).await.unwrap(), b"hello");
    c.move_(&format!("data/{key}"), MoveAction::Delete).await.unwrap();
    let live: Vec<String> =
        c.list("data", false).await.unwrap().collect().await.unwrap().into_iter().map(|i| i.name).collect();
    let dead: Vec<String> =
        c.list("data", true).await.unwrap().collect().await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!((live, dead), (vec![made.clone()], vec![key.to_string()]));
    c.move_(&format!("data/{key}"), MoveAction::Undelete).await.unwrap();
    c.move_("config/c", MoveAction::Rename { new_name: "config/d".into(), deleted: false }).await.unwrap();
    assert_eq!(c.load("config/d", 0, None, false).await.unwrap(), b"cfg");
    c.delete("config/d", false).await.unwrap();
    assert_eq!(c.delete("config/d", false).await.unwrap_err().kind, ErrorKind::ObjectNotFound);
    let q = c.quota().await.unwrap();
    assert_eq!((q.limit, q.usage), (100000, 16));
    assert_eq!(c.store("data/ffffffff", vec![0; 200_000]).await.unwrap_err().kind, ErrorKind::QuotaExceeded);
    assert_eq!(c.store("Bad/Name", vec![]).await.unwrap_err().kind, ErrorKind::InvalidArgument);
    let st = c.stats().await.unwrap();
    assert_eq!(st["store_calls"], StatValue::Int(2), "failed calls are not counted");
    c.cache_invalidate("", false).await.unwrap();
    let stores = c.stores().await.unwrap();
    assert_eq!(stores.len(), 1);
    assert_eq!((stores[0].name.as_str(), stores[0].url_scheme.as_str()), ("main", "file"));
    c.destroy().await.unwrap();
    assert_eq!(c.load("config/x", 0, None, false).await.unwrap_err().kind, ErrorKind::BackendDoesNotExist);
}

#[tokio::test]
async fn unknown_store_is_refused_others_keep_working() {
    let d = start_with(&["a"], &[]);
    let bad = d.client("nosuchstore").await;
    let e = bad.load("x", 0, None, false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BackendDoesNotExist);
    assert!(e.message.contains("nosuchstore"));
    let a = d.client("a").await;
    a.create().await.unwrap();
    a.store("k", b"v".to_vec()).await.unwrap();
    assert_eq!(a.load("k", 0, None, false).await.unwrap(), b"v");
}

#[tokio::test]
async fn a_slow_store_never_stalls_another() {
    // Store "slow" waits 1.5 s per backend call; "fast" has no delay.
    let d = start_with(&["slow", "fast"], &["--latency", "slow=1500000"]);
    let slow = d.client("slow").await;
    let fast = d.client("fast").await;
    slow.create().await.unwrap();
    fast.create().await.unwrap();
    slow.store("x", b"1".to_vec()).await.unwrap();
    let slow_done = Arc::new(Mutex::new(false));
    let flag = slow_done.clone();
    let pending = tokio::spawn(async move {
        // Two ops on the same slow item: 3 s in all.
        slow.load("x", 0, None, false).await.unwrap();
        slow.load("x", 0, None, false).await.unwrap();
        *flag.lock().unwrap() = true;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..50 {
        fast.store(&format!("k{i}"), vec![i as u8; 100]).await.unwrap();
        assert_eq!(fast.load(&format!("k{i}"), 0, None, false).await.unwrap(), vec![i as u8; 100]);
    }
    assert!(!*slow_done.lock().unwrap(), "100 operations on the fast store finished while the slow one was busy");
    pending.await.unwrap();
}

fn value(client: u32, seq: u32) -> Vec<u8> {
    // Self-checking: a header and a body derived from it, so torn values are detected.
    let mut v = format!("{client:04}:{seq:06}:").into_bytes();
    let fill = (client * 31 + seq) as u8;
    v.extend(std::iter::repeat_n(fill, 3000 + (seq as usize % 7) * 1000));
    v
}

fn check_value(v: &[u8]) -> (u32, u32) {
    let header = std::str::from_utf8(&v[..12]).expect("header");
    let client: u32 = header[..4].parse().expect("client");
    let seq: u32 = header[5..11].parse().expect("seq");
    let fill = (client * 31 + seq) as u8;
    assert_eq!(v.len(), 12 + 3000 + (seq as usize % 7) * 1000, "torn value {header}");
    assert!(v[12..].iter().all(|b| *b == fill), "torn value {header}");
    (client, seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_overlapping_keys_are_linearizable() {
    let d = start_with(&["s"], &[]);
    d.client("s").await.create().await.unwrap();
    let stored: Arc<Mutex<HashSet<(u32, u32)>>> = Arc::default();
    let mut tasks = Vec::new();
    for client in 0..16u32 {
        let c = Client::connect(d.options("s")).await.unwrap();
        let stored = stored.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine: HashMap<String, (u32, u32)> = HashMap::new();
            for seq in 0..60u32 {
                let shared = format!("shared/k{}", (seq + client) % 5);
                let private = format!("private/c{client}-k{}", seq % 3);
                match seq % 4 {
                    0 | 1 => {
                        stored.lock().unwrap().insert((client, seq));
                        c.store(&shared, value(client, seq)).await.unwrap();
                    }
                    2 => match c.load(&shared, 0, None, false).await {
                        Ok(v) => {
                            let id = check_value(&v);
                            assert!(stored.lock().unwrap().contains(&id), "loaded a value nobody stored: {id:?}");
                        }
                        Err(e) => assert_eq!(e.kind, ErrorKind::ObjectNotFound),
                    },
                    _ => match c.delete(&shared, false).await {
                        Ok(()) => {}
                        Err(e) => assert_eq!(e.kind, ErrorKind::ObjectNotFound),
                    },
                }
                stored.lock().unwrap().insert((client, 10_000 + seq));
                c.store(&private, value(client, 10_000 + seq)).await.unwrap();
                mine.insert(private, (client, 10_000 + seq));
            }
            (c, mine)
        }));
    }
    for t in tasks {
        let (c, mine) = t.await.unwrap();
        for (name, id) in mine {
            let v = c.load(&name, 0, None, false).await.unwrap();
            assert_eq!(check_value(&v), id, "{name}: the last acknowledged store is what is there");
        }
    }
    let c = d.client("s").await;
    for item in c.list("shared", false).await.unwrap().collect().await.unwrap() {
        let v = c.load(&format!("shared/{}", item.name), 0, None, false).await.unwrap();
        assert!(stored.lock().unwrap().contains(&check_value(&v)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_requests_on_one_connection_keep_their_order() {
    let d = start_with(&["p"], &[]);
    let c = d.client("p").await;
    c.create().await.unwrap();
    // Many concurrent calls on ONE client share one connection; per item they are
    // sent in order, so each load sees its own preceding store.
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("k{}", i % 10);
            c.store(&name, i.to_le_bytes().to_vec()).await.unwrap();
            c.info(&name, false).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().exists);
    }
    let n = c.list("", false).await.unwrap().collect().await.unwrap().len();
    assert_eq!(n, 10);
}

#[tokio::test]
async fn list_of_many_items_streams_in_chunks() {
    let d = start_with(&["l"], &["--levels", "l:data/=1", "--levels", "l:=0"]);
    let c = d.client("l").await;
    c.create().await.unwrap();
    let mut names = Vec::new();
    for i in 0..2500u32 {
        let k = format!("{:08x}", i.wrapping_mul(2654435761));
        c.store(&format!("data/{k}"), vec![]).await.unwrap();
        names.push(k);
    }
    names.sort();
    let mut stream = c.list("data", false).await.unwrap();
    let mut got = Vec::new();
    while let Some(i) = stream.next().await.unwrap() {
        got.push(i.name);
    }
    assert_eq!(got, names);
}

#[tokio::test]
async fn client_reconnects_after_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let arg = store_arg(dir.path(), "r");
    let mut d = Daemon::start_in(dir, &["--store", &arg], &[]);
    let c = d.client("r").await;
    c.create().await.unwrap();
    c.store("before", b"1".to_vec()).await.unwrap();
    assert!(d.terminate(Duration::from_secs(10)).success());
    let e = c.load("before", 0, None, false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
    d.restart(&["--store", &arg]);
    assert_eq!(c.load("before", 0, None, false).await.unwrap(), b"1", "the same client works again");
}

#[tokio::test]
async fn socket_is_created_with_mode_0660() {
    use std::os::unix::fs::PermissionsExt;
    let d = start_with(&["m"], &[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let d2 = start_with(&["m"], &["--socket-mode", "0600"]);
    assert_eq!(std::fs::metadata(&d2.socket).unwrap().permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_is_refused() {
    let d = start_with(&["x"], &[]);
    let out = std::process::Command::new(borgstore_tests::daemon::binary("borgstored"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--store", &format!("x={}", d.url("x"))])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another daemon"));
    d.client("x").await.ping().await.unwrap();
}

/// Listing a namespace of 64-hex-digit names (as borg's `data/`) works at every size: a
/// listing chunk decodes to more bytes than it encodes to, and chunks of about 42..48
/// such names once failed with "malformed frame: LimitExceeded" in the client.
#[tokio::test]
async fn listing_a_namespace_of_long_names_works_whatever_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("s=file://{}/s", dir.path().display());
    let d = Daemon::start_in(dir, &["--store", &store, "--levels", "s:data/=2"], &[]);
    let c = d.client("s").await;
    c.create().await.unwrap();
    let mut failed = Vec::new();
    for i in 0..64u32 {
        let key = format!("{:032x}{:032x}", (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834), i);
        c.store(&format!("data/{key}"), b"x".to_vec()).await.unwrap();
        let n = i as usize + 1;
        match c.list("data", false).await.unwrap().collect().await {
            Ok(items) => assert_eq!(items.len(), n),
            Err(e) => failed.push(format!("{n} items: {e}")),
        }
    }
    assert!(failed.is_empty(), "listing data/ failed:\n{}", failed.join("\n"));
}

/// `borgstore load` into a pipe or a file is one round trip: it used to ask `info` first
/// to size a progress bar nobody sees (costly on a remote store; issue 12).
#[tokio::test]
async fn cli_load_into_a_pipe_or_a_file_makes_no_info_call() {
    let d = start_with(&["c"], &[]);
    let c = d.client("c").await;
    c.create().await.unwrap();
    c.store("config/v", b"value".to_vec()).await.unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(binary("borgstore"))
            .arg("--socket")
            .arg(&d.socket)
            .args(["--store", "c"])
            .args(args)
            .output()
            .unwrap()
    };
    let piped = cli(&["load", "config/v"]);
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    assert_eq!(piped.stdout, b"value");
    let file = d.path("loaded");
    let to_file = cli(&["load", "config/v", "--offset", "-3", "--output", file.to_str().unwrap()]);
    assert!(to_file.status.success(), "{}", String::from_utf8_lossy(&to_file.stderr));
    assert_eq!(std::fs::read(&file).unwrap(), b"lue");
    let missing = cli(&["load", "config/none"]);
    assert_eq!(missing.status.code(), Some(3), "{}", String::from_utf8_lossy(&missing.stderr));
    let st = c.stats().await.unwrap();
    assert_eq!(st["info_calls"], StatValue::Int(0), "no info before a load");
    assert_eq!(st["load_calls"], StatValue::Int(2));
}

/// Values over a MiB come back byte for byte through the client's direct path (a large
/// `Data` reply read straight into its own buffer): whole, as ranges, and gathered.
#[tokio::test]
async fn large_values_round_trip_whole_in_ranges_and_gathered() {
    let d = start_with(&["big"], &[]);
    let c = d.client("big").await;
    c.create().await.unwrap();
    let value: Vec<u8> = (0..(3 << 20) + 17).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    c.store("v", value.clone()).await.unwrap();
    assert!(c.load("v", 0, None, false).await.unwrap() == value, "whole value differs");
    let tail = c.load("v", -((2 << 20) + 5), None, false).await.unwrap();
    assert!(tail == value[value.len() - (2 << 20) - 5..], "tail range differs");
    let middle = c.load("v", 12345, Some((1 << 20) + 3), false).await.unwrap();
    assert!(middle == value[12345..12345 + (1 << 20) + 3], "middle range differs");
    let sources = vec![Source::new("v", 7, 1 << 20), Source::new("v", -(1 << 20), 1 << 20)];
    let gathered = c.gather(sources, None, false).await.unwrap();
    let mut expected = value[7..7 + (1 << 20)].to_vec();
    expected.extend_from_slice(&value[value.len() - (1 << 20)..]);
    assert!(gathered == expected, "gathered ranges differ");
    // The connection is still in step after the large frames.
    assert_eq!(c.info("v", false).await.unwrap().size, value.len() as u64);
}
