//! The backend conformance suite over the s3 backend, against a real 3-node Garage
//! cluster on loopback (replication factor 3), as on a distributed object store.

borgstore_tests::conformance_suite!(garage, borgstore_tests::garage::fixture);
