//! # borgstore-tests
//!
//! Cross-crate tests and what they share:
//!
//! - [`conformance`]: one behaviour suite over the [`Backend`] trait. Every backend runs
//!   the same cases through one line: `borgstore_tests::conformance_suite!(name, factory);`
//!   (see `tests/conformance_posixfs.rs`), in the style of OpenDAL's behaviour tests.
//! - [`fixtures`]: factories that give each case a fresh, not yet created store location
//!   on a real backend (a temp directory for posixfs; real servers on loopback for the
//!   remote backends as they arrive).
//! - [`borg`]: borg 2 from the set-up venvs, run in a temp home.
//! - [`daemon`]: a real `borgstored` process on a temp socket.
//! - [`callers`]: the CLI and curl run as other local users against a daemon.
//! - [`disk`]: a small tmpfs for full-disk tests, unmounted on drop.
//! - [`memory`]: a server process's resident size and its peak, for memory-bound tests.
//! - [`nginx`]: a real nginx on a spare port with a config the test writes.
//! - [`rest`]: REST servers (ours and Python's) on spare ports, and a raw HTTP client.
//! - [`scenario`]: the interop scenario and dump shared by the posixfs, sftp and s3 interop tests.
//! - [`users`]: a second local user and group (created when missing) to run clients as.
//! - [`python`]: the real Python borgstore venvs (0.7.0, 0.5.5) and scripts in `tests/python/`.
//! - `tests/*.rs`: engine semantics, name properties, Python interop.
//! - `run`: the one test command (installs what is missing, then fmt, clippy, all tests).
//!
//! [`Backend`]: borgstore_daemon::Backend

pub mod borg;
pub mod callers;
pub mod conformance;
pub mod daemon;
pub mod differential;
pub mod disk;
pub mod fixtures;
pub mod garage;
pub mod memory;
pub mod moto;
pub mod nginx;
pub mod python;
pub mod rest;
pub mod scenario;
pub mod sshd;
pub mod users;
pub mod write_behind;
