//! The backend conformance suite over the s3 backend, against a real moto_server on loopback.

borgstore_tests::conformance_suite!(s3, borgstore_tests::moto::fixture);
