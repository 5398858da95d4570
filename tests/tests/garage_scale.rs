//! Scale on a distributed object store (issue 16, point 4): 100,000 items of 4 KiB go
//! through two `borgstored` ("hosts") in parallel into one store on a 3-node Garage
//! cluster, are listed completely through one host and loaded back, byte for byte,
//! through the other.
//!
//! It also prints the rates (items/s): the same writes through one daemon, and straight
//! into Garage from this process with the same number of requests in flight (the limit
//! the daemons work against), so the ratios of one run are in the log. Nothing is
//! asserted about them: the machines are shared and noisy.
//!
//! `BORGSTORE_SCALE_ITEMS` sets the item count (default 100000).

use borgstore_client::{Client, ClientOptions};
use borgstore_daemon::backends::url::backend_from_url;
use borgstore_tests::daemon::Daemon;
use borgstore_tests::garage::Garage;
use bytes::Bytes;
use futures::StreamExt;
use std::path::Path;
use std::time::Instant;

/// Requests each writer or reader keeps in flight.
const IN_FLIGHT: usize = 32;
const SIZE: usize = 4096;

fn value(i: u32) -> Vec<u8> {
    let mut v = vec![0u8; SIZE];
    for (j, b) in v.iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(31).wrapping_add(j * 7) as u8;
    }
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// Item `i`'s name: 32 hex digits, spread over `data/`'s 256 directories.
fn name(i: u32) -> String {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("data/{h:016x}{i:016x}")
}

fn daemon(root: &Path, url: &str) -> Daemon {
    std::fs::create_dir_all(root).unwrap();
    let config = root.join("borgstored.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{root}/state\"\n[stores.site]\nurl = \"{url}\"\ncreate = true\nmax_concurrency = {IN_FLIGHT}\n\
             [stores.site.namespaces.\"data/\"]\nlevels = [1]\n[stores.site.namespaces.\"\"]\nlevels = [0]\n",
            root = root.display()
        ),
    )
    .unwrap();
    Daemon::start(&["--config", config.to_str().unwrap()])
}

async fn client(d: &Daemon) -> Client {
    let c = Client::connect(ClientOptions::new("site").socket(&d.socket)).await.unwrap();
    c.open().await.unwrap();
    c
}

/// Store items `range` through `c`, IN_FLIGHT at a time.
async fn write(c: &Client, range: std::ops::Range<u32>) {
    futures::stream::iter(range)
        .map(|i| {
            let c = c.clone();
            async move { c.store(&name(i), value(i)).await.map_err(|e| format!("store {i}: {e}")) }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| async move { r.unwrap() })
        .await;
}

fn rate(n: u32, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_write_list_and_load_100k_items_on_garage() {
    let n: u32 = std::env::var("BORGSTORE_SCALE_ITEMS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let probe = (n / 20).max(1000);
    let garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let root = tempfile::tempdir().unwrap();

    // The limit: the same writes straight into Garage from this process (one S3 client,
    // as many requests in flight as both daemons together), through node 0.
    let direct_path = borgstore_tests::moto::unique_path();
    let direct = backend_from_url(&garage.url(0, &direct_path), Default::default()).unwrap();
    direct.create().await.unwrap();
    direct.open().await.unwrap();
    let started = Instant::now();
    futures::stream::iter(0..probe)
        .map(|i| {
            let be = direct.clone();
            async move {
                let nested = format!("data/{}/{}", &name(i)[5..7], &name(i)[5..]);
                be.store(&nested, Bytes::from(value(i))).await
            }
        })
        .buffer_unordered(2 * IN_FLIGHT)
        .for_each(|r| async move { r.unwrap() })
        .await;
    let limit = rate(probe, started);
    direct.close().await.unwrap();

    // One daemon alone, on a store of its own.
    let path = borgstore_tests::moto::unique_path();
    let solo_path = borgstore_tests::moto::unique_path();
    let solo = daemon(&root.path().join("solo"), &garage.url(0, &solo_path));
    let c = client(&solo).await;
    let started = Instant::now();
    write(&c, 0..probe).await;
    let one = rate(probe, started);
    drop(c);
    drop(solo);

    // Two daemons, each through its own Garage node, write half of the items each into
    // one store.
    let a = daemon(&root.path().join("a"), &garage.url(0, &path));
    let b = daemon(&root.path().join("b"), &garage.url(1, &path));
    let (ca, cb) = (client(&a).await, client(&b).await);
    let started = Instant::now();
    tokio::join!(write(&ca, 0..n / 2), write(&cb, n / 2..n));
    let two = rate(n, started);

    // Everything is listed through A, in order ...
    let started = Instant::now();
    let items = ca.list("data", false).await.unwrap().collect().await.unwrap();
    let listed = rate(n, started);
    assert_eq!(items.len(), n as usize, "the listing through A lacks items");
    assert!(items.windows(2).all(|w| w[0].name < w[1].name), "sorted");
    assert!(items.iter().all(|i| i.size == SIZE as u64 && !i.directory));

    // ... and loaded back through B, byte for byte.
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let c = cb.clone();
            async move { (i, c.load(&name(i), 0, None, false).await) }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|(i, r)| async move {
            assert!(r.map_err(|e| e.to_string()).unwrap() == value(i), "item {i} came back different through B");
        })
        .await;
    let loaded = rate(n, started);

    println!(
        "garage scale ({n} x 4 KiB, {IN_FLIGHT} in flight per writer, 3 nodes on this machine):\n  \
         straight into Garage (limit, {} in flight): {limit:.0} items/s ({probe} items)\n  \
         one daemon: {one:.0} items/s ({probe} items), {:.2} of the limit\n  \
         two daemons in parallel: {two:.0} items/s ({n} items), {:.2} of one daemon, {:.2} of the limit\n  \
         list through one daemon: {listed:.0} items/s\n  load back through the other: {loaded:.0} items/s",
        2 * IN_FLIGHT,
        one / limit,
        two / one,
        two / limit,
    );
}
