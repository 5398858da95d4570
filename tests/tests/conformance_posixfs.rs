//! The backend conformance suite over posixfs (`file://`), as an in-process user runs
//! it (µs-scale calls on the calling thread) and as the daemon does (every call off the
//! thread but those the kernel's caches answer).

borgstore_tests::conformance_suite!(posixfs, borgstore_tests::fixtures::posixfs);
borgstore_tests::conformance_suite!(posixfs_off_thread, borgstore_tests::fixtures::posixfs_off_thread);
