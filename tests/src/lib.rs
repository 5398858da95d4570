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
//! - [`daemon`]: a real `borgstored` process on a temp socket.
//! - `tests/*.rs`: engine semantics, name properties, Python interop.
//! - `run`: the one test command (installs what is missing, then fmt, clippy, all tests).
//!
//! [`Backend`]: borgstore_daemon::Backend

pub mod conformance;
pub mod daemon;
pub mod fixtures;
