//! The backend conformance suite over posixfs (`file://`).

borgstore_tests::conformance_suite!(posixfs, borgstore_tests::fixtures::posixfs);
