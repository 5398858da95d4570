//! `borgstored --rest-metrics`: `GET /-/metrics` on the REST listener gives every
//! store's stats in the Prometheus text format, counting exactly what IPC and REST
//! clients did per store, with no credentials and no paths; without the flag the path
//! is just a request for a store named "-".

use borgstore_tests::rest::{daemon_with_rest, free_port, raw_request, request, Response};
use std::collections::BTreeMap;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const KEY2: &str = "fedcba9876543210fedcba9876543210";
const KEY3: &str = "00112233445566778899aabbccddeeff";

/// A plain GET as a Prometheus scraper sends it: no Accept header, no credentials.
fn scrape(port: u16) -> Response {
    let req = "GET /-/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    raw_request(port, req.as_bytes()).expect("an answer to GET /-/metrics")
}

fn is_counter(metric: &str) -> bool {
    ["_calls", "_volume", "_time", "_hits", "_misses", "_errors"].iter().any(|s| metric.ends_with(s))
}

/// The samples of an exposition text, by (metric, store); checks the shape on the way:
/// one `# TYPE` line right before each metric's samples, sorted by metric then store.
fn parse(text: &str) -> BTreeMap<(String, String), f64> {
    let mut samples = BTreeMap::new();
    let mut types: Vec<String> = Vec::new();
    let mut last: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert_eq!(kind, if is_counter(name) { "counter" } else { "gauge" }, "{line}");
            if let Some(prev) = types.last() {
                assert!(prev.as_str() < name, "metrics out of order or TYPE twice at {name}");
            }
            types.push(name.to_string());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let (name, labels) = series.split_once('{').unwrap_or_else(|| panic!("no labels in {line:?}"));
        assert_eq!(Some(&name.to_string()), types.last(), "sample without its TYPE line: {line}");
        assert!(name.starts_with("borgstore_") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let labels = labels
            .strip_prefix("store=\"")
            .and_then(|l| l.strip_suffix("\"}"))
            .unwrap_or_else(|| panic!("no store label in {line:?}"));
        // Per-principal counters have a second label: keyed "store/principal".
        let store = match labels.split_once("\",principal=\"") {
            Some((store, principal)) => {
                assert!(name.starts_with("borgstore_principal_"), "a principal label on {line}");
                format!("{store}/{principal}")
            }
            None => labels.to_string(),
        };
        let key = (name.to_string(), store);
        if let Some(prev) = &last {
            assert!(*prev < key, "samples out of order at {line}");
        }
        last = Some(key.clone());
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(key, value);
    }
    samples
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_exactly_what_clients_did_per_store() {
    let port = free_port();
    let d = daemon_with_rest(port, &["--rest-metrics"]);
    let alice = Some(("alice", "wonderland"));
    let main = d.client("main").await;
    let other = d.client("other").await;
    main.create().await.unwrap();
    other.create().await.unwrap();

    // Nothing done yet: every counter of both stores is 0.
    let before = scrape(port);
    assert_eq!(before.status, 200, "{}", before.text());
    let before = parse(&before.text());
    for store in ["main", "other"] {
        for key in ["store_calls", "load_calls", "info_calls", "delete_calls", "store_volume", "backend_store_calls"] {
            assert_eq!(before[&(format!("borgstore_{key}"), store.to_string())], 0.0, "{key} of {store}");
        }
    }

    // On main: 2 IPC stores + 1 REST store, 1 IPC load + 1 REST load, 1 REST info (HEAD),
    // 1 IPC delete. Nothing on other.
    main.store(&format!("data/{KEY}"), b"ipc one".to_vec()).await.unwrap();
    main.store(&format!("data/{KEY3}"), b"ipc two!".to_vec()).await.unwrap();
    let nested = format!("/main/data/fe/dc/{KEY2}");
    assert_eq!(request(port, "POST", &nested, alice, &[], b"from rest").status, 200);
    assert_eq!(main.load(&format!("data/{KEY}"), 0, None, false).await.unwrap(), b"ipc one");
    assert_eq!(request(port, "GET", &nested, alice, &[], b"").body, b"from rest");
    assert_eq!(request(port, "HEAD", &nested, alice, &[], b"").status, 200);
    main.delete(&format!("data/{KEY3}"), false).await.unwrap();

    let r = scrape(port);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.text();
    let m = parse(&text);
    let get = |key: &str, store: &str| {
        *m.get(&(format!("borgstore_{key}"), store.to_string()))
            .unwrap_or_else(|| panic!("no borgstore_{key} for {store}:\n{text}"))
    };
    let volume = ("ipc one".len() + "ipc two!".len() + "from rest".len()) as f64;
    for (key, want) in [
        ("store_calls", 3.0),
        ("store_volume", volume),
        ("backend_store_calls", 3.0),
        ("backend_store_volume", volume),
        ("load_calls", 2.0),
        ("load_volume", ("ipc one".len() + "from rest".len()) as f64),
        ("info_calls", 1.0),
        ("delete_calls", 1.0),
        ("move_calls", 0.0),
        ("list_calls", 0.0),
    ] {
        assert_eq!(get(key, "main"), want, "{key} of main:\n{text}");
    }
    assert!(get("store_time", "main") > 0.0 && get("load_throughput", "main") > 0.0, "{text}");
    // Every counter of other is still 0 (calls, volumes, times): nothing touched it.
    let other_counters: Vec<_> = m.iter().filter(|((k, s), _)| s == "other" && is_counter(k)).collect();
    assert!(other_counters.len() > 20, "{text}");
    assert!(other_counters.iter().all(|(_, v)| **v == 0.0), "{text}");
    assert!(m.keys().all(|(_, s)| matches!(s.split('/').next(), Some("main" | "other"))));
    // Per principal: the calls on main were counted for the principals that made them,
    // at least as many as the store counted.
    let by_principal: f64 =
        m.iter().filter(|((k, s), _)| k == "borgstore_principal_calls" && s.starts_with("main/")).map(|(_, v)| v).sum();
    assert!(by_principal >= get("store_calls", "main") + get("delete_calls", "main"), "{text}");
    // On other, the owner's one call: its create.
    let other_calls = m.get(&("borgstore_principal_calls".to_string(), "other/owner".to_string()));
    assert_eq!(other_calls, Some(&1.0), "{text}");

    // The same numbers as the stats over IPC.
    let ipc = main.stats().await.unwrap();
    for key in ["store_calls", "load_calls", "info_calls", "delete_calls", "store_volume"] {
        assert_eq!(get(key, "main"), ipc[key].as_f64(), "{key}");
    }

    // Scraping is not an operation of any store.
    let again = parse(&scrape(port).text());
    assert_eq!(again[&("borgstore_store_calls".into(), "main".into())], 3.0);
    assert_eq!(again[&("borgstore_info_calls".into(), "main".into())], 1.0);

    // No URL, path or directory of any store leaks (store names and stat keys only).
    let dir = d.dir.path().to_str().unwrap();
    assert!(!text.contains(dir) && !text.contains("file:") && !text.contains('/'), "{text}");

    // Credentialed stores do not make the metrics need credentials; the REST Accept
    // header is fine too.
    assert_eq!(request(port, "GET", "/-/metrics", None, &[], b"").status, 200);
    assert_eq!(request(port, "GET", "/main/", None, &[], b"").status, 401);
    // Only GET; other paths under /-/ stay what they were.
    let post = request(port, "POST", "/-/metrics", None, &[], b"");
    assert_eq!((post.status, post.header("allow")), (405, Some("GET")));
    assert_eq!(request(port, "GET", "/-/metrics/", None, &[], b"").status, 404);
    assert_eq!(request(port, "GET", "/-/other", None, &[], b"").status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_flag_the_path_is_a_store_name() {
    let port = free_port();
    let _d = daemon_with_rest(port, &[]);
    let r = request(port, "GET", "/-/metrics", None, &[], b"");
    assert_eq!((r.status, r.text().as_str()), (404, "no such store"));
    // As for any store path: no Accept header, no answer but 406.
    assert_eq!(scrape(port).status, 406);
}
