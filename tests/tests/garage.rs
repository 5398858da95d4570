//! The Garage fixture itself (issue 16): a 3-node cluster on loopback with replication
//! factor 3 serves one bucket through every node, and keeps serving with one node down.

use borgstore_daemon::backends::url::backend_from_url;
use borgstore_tests::garage::Garage;
use bytes::Bytes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_one_bucket_and_survive_one_down() {
    let mut garage = tokio::task::spawn_blocking(Garage::start).await.unwrap();
    let path = borgstore_tests::moto::unique_path();
    let a = backend_from_url(&garage.url(0, &path), Default::default()).unwrap();
    a.create().await.unwrap();
    a.open().await.unwrap();
    a.store("config", Bytes::from_static(b"written through node 0")).await.unwrap();
    // The same store through another node sees it.
    let b = backend_from_url(&garage.url(1, &path), Default::default()).unwrap();
    b.open().await.unwrap();
    assert_eq!(b.load("config", 0, None).await.unwrap(), "written through node 0");
    // One of three down: reads and writes still reach a quorum of two.
    garage.kill(2);
    b.store("after", Bytes::from_static(b"with node 2 down")).await.unwrap();
    assert_eq!(a.load("after", 0, None).await.unwrap(), "with node 2 down");
    assert_eq!(a.list("").await.unwrap().iter().filter(|i| !i.directory).count(), 2);
    garage.restart(2);
    let c = backend_from_url(&garage.url(2, &path), Default::default()).unwrap();
    c.open().await.unwrap();
    assert_eq!(c.load("after", 0, None).await.unwrap(), "with node 2 down");
    for be in [&a, &b, &c] {
        be.close().await.unwrap();
    }
}
