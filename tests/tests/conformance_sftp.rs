//! The backend conformance suite over sftp, against a real OpenSSH sshd on loopback.

borgstore_tests::conformance_suite!(sftp, borgstore_tests::sshd::fixture);
