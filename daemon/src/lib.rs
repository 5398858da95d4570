//! # borgstore-daemon
//!
//! The storage side of borgstore-rs. Read it from the bottom up:
//!
//! - [`names`]: the name rules every entry point applies first.
//! - [`hashing`]: the digest algorithms of `hash` and `defrag`.
//! - [`backends`]: one [`backends::Backend`] trait and one module per storage kind
//!   (`posixfs` so far), plus [`backends::url`] to pick one from a store URL.
//! - [`store`]: the engine over any backend: namespaces and nesting levels, soft
//!   delete, recursive listing, hash/gather/defrag, stats, latency emulation.
//!
//! The daemon parts of DESIGN.md section 2 (store actors, the IPC server, the REST front
//! end, config, systemd integration) build on these and arrive with their issues.

pub mod actor;
pub mod backends;
pub mod config;
pub mod hashing;
pub mod ipc_server;
pub mod names;
pub mod rest;
pub mod store;
pub mod systemd;

pub use backends::Backend;
pub use store::Store;
