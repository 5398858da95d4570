//! Section `cache`: loads of 64 KiB values from a primary with 10 ms emulated latency
//! per call, without a cache and from a warm writethrough cache, in one run: what the
//! cache saves a client of a slow remote store.

use crate::common::{keys, Mode};
use borgstore_daemon::backends::posixfs::{PosixFs, PosixFsOptions};
use borgstore_daemon::store::cache::{Cache, CacheMode, CachePolicy};
use borgstore_daemon::store::config::namespaces;
use borgstore_daemon::store::{Emulator, Store};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Instant;

pub async fn section(mode: Mode) {
    let n = mode.pick(5, 50, 200);
    println!("== cache: load of {n} x 64 KiB, primary with 10 ms latency per call\n");
    let dir = tempfile::tempdir().unwrap();
    let slow = || Emulator { latency: std::time::Duration::from_millis(10), bandwidth: 0.0 };
    let primary = Arc::new(PosixFs::new(dir.path().join("p"), PosixFsOptions::default()).unwrap());
    let ns = || namespaces(&[("data/", &[2]), ("", &[0])]).unwrap();
    let plain = Store::with_emulator(primary.clone(), ns(), slow());
    plain.create().await.unwrap();
    plain.open().await.unwrap();
    let ks = keys(n);
    let value = Bytes::from(vec![7u8; 64 * 1024]);
    for k in &ks {
        plain.store(k, value.clone()).await.unwrap();
    }
    let t = Instant::now();
    for k in &ks {
        plain.load(k, 0, None, false).await.unwrap();
    }
    let uncached = n as f64 / t.elapsed().as_secs_f64();
    plain.close().await.unwrap();
    let cache_be = Arc::new(PosixFs::new(dir.path().join("c"), PosixFsOptions::default()).unwrap());
    let policy = CachePolicy { mode: CacheMode::Writethrough, max_age: None, size: None };
    let cached = Store::build(primary, ns(), slow(), Some(Cache::new(cache_be, vec![("data/".into(), policy)])));
    cached.open().await.unwrap();
    for k in &ks {
        cached.load(k, 0, None, false).await.unwrap(); // warm up: misses fill the cache
    }
    let t = Instant::now();
    for k in &ks {
        cached.load(k, 0, None, false).await.unwrap();
    }
    let warm = n as f64 / t.elapsed().as_secs_f64();
    cached.close().await.unwrap();
    println!("{:<22} {:>10.0} ops/s", "primary (no cache)", uncached);
    println!("{:<22} {:>10.0} ops/s   ratio {:.1}\n", "warm writethrough cache", warm, warm / uncached);
}
