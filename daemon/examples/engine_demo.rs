//! A round trip through the store engine on a local `file://` store.
//!
//! `cargo run -p borgstore-daemon --example engine_demo [file:///abs/path]`
//!
//! Without an argument it uses a fresh temporary directory and removes it at the end.
//! With a URL, the store there is created, used and destroyed (it must not exist yet).

use borgstore_daemon::backends::url::{backend_from_url, BackendOptions};
use borgstore_daemon::hashing::HashAlgorithm;
use borgstore_daemon::store::config::namespaces;
use borgstore_daemon::store::{MoveAction, Store};
use bytes::Bytes;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let url = match std::env::args().nth(1) {
        Some(u) => u,
        None => format!("file://{}/store", tmp.path().display()),
    };
    let backend = backend_from_url(&url, BackendOptions::default())?;
    let store = Store::new(backend, namespaces(&[("config/", &[0]), ("data/", &[2])])?)?;
    println!("store: {url}");
    store.create().await?;
    store.open().await?;

    store.store("config/settings", Bytes::from_static(b"answer = 42")).await?;
    let mut keys = Vec::new();
    for text in ["some arbitrary binary data.", "more arbitrary binary data."] {
        let key = format!("data/{}", HashAlgorithm::Sha256.hex_digest(text.as_bytes()));
        store.store(&key, Bytes::from(text)).await?;
        keys.push(key);
    }
    println!("stored config/settings and {} data items", keys.len());
    let value = store.load("config/settings", 0, None, false).await?;
    println!("loaded config/settings: {}", String::from_utf8_lossy(&value));
    store.move_(&keys[1], MoveAction::Delete).await?;
    println!("soft-deleted {}", keys[1]);
    for (what, deleted) in [("live", false), ("soft-deleted", true)] {
        for item in store.list("data", deleted)?.collect().await? {
            println!("  {what}: data/{} ({} bytes)", item.name, item.size);
        }
    }
    let digest = store.hash(&keys[0], HashAlgorithm::Sha256, false).await?;
    println!("hash of {} is {digest} (it names itself)", keys[0]);
    let calls: Vec<String> = ["store_calls", "load_calls", "list_calls", "move_calls"]
        .iter()
        .map(|k| format!("{k}={}", store.stats()[*k].as_f64()))
        .collect();
    println!("stats: {}", calls.join(" "));
    store.close().await?;
    store.destroy().await?;
    println!("round trip ok; store destroyed");
    Ok(())
}
