//! The backend conformance suite over the REST client backend: against our
//! `borgstore-server-rest` over TCP and over `--stdio`, and against Python's server.

borgstore_tests::conformance_suite!(rest_ours, borgstore_tests::fixtures::rest_ours);
borgstore_tests::conformance_suite!(rest_python, borgstore_tests::fixtures::rest_python);
borgstore_tests::conformance_suite!(rest_stdio, borgstore_tests::fixtures::rest_stdio);
