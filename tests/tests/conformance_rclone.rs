//! The backend conformance suite over the rclone backend (Debian's rclone, local remote).

borgstore_tests::conformance_suite!(rclone, borgstore_tests::fixtures::rclone);
