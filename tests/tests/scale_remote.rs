//! Scale on the REST client and rclone backends (issue 5 point 8): a directory of 10,000
//! items lists completely and in order, and a 256 MiB value goes through store, info and
//! load intact. The 10,000 items are written straight into the local directory behind
//! the backend (what is measured is listing, not 10,000 uploads); the big value goes
//! through the backend, and the test holds one copy at a time (it keeps only a hash).

use borgstore_tests::fixtures::{self, Fixture};
use bytes::Bytes;
use sha2::{Digest, Sha256};

async fn scale(f: Fixture) {
    let be = f.backend.clone();
    be.create().await.unwrap();
    be.open().await.unwrap();
    let root = f.root.clone().expect("a local root behind the backend");
    std::fs::create_dir_all(root.join("many")).unwrap();
    for i in 0..10_000u32 {
        std::fs::write(root.join("many").join(format!("{i:08x}")), i.to_le_bytes()).unwrap();
    }
    let items = be.list("many").await.unwrap();
    assert_eq!(items.len(), 10_000);
    assert!(items.windows(2).all(|w| w[0].name < w[1].name), "sorted");
    assert!(items.iter().all(|i| i.size == 4 && !i.directory));

    let big: Vec<u8> = (0..256u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let digest = Sha256::digest(&big);
    be.store("big/value", Bytes::from(big)).await.unwrap();
    assert_eq!(be.info("big/value").await.unwrap().size, 256 << 20);
    let back = be.load("big/value", 0, None).await.unwrap();
    assert_eq!(back.len(), 256 << 20);
    assert_eq!(Sha256::digest(&back), digest);
    drop(back);
    let tail = be.load("big/value", -4096, None).await.unwrap();
    assert_eq!(tail.len(), 4096);
    be.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_client_against_our_server() {
    scale(fixtures::rest_ours().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_local_remote() {
    scale(fixtures::rclone().await).await;
}
