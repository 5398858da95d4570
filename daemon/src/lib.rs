#![warn(missing_docs)]
//! # borgstore-daemon
//!
//! The storage side of borgstore-rs. Read it from the bottom up:
//!
//! - [`names`]: the name rules every entry point applies first, and nesting (a name
//!   at its namespace's levels: `ns/01/23/0123...`).
//! - [`hashing`]: the digest algorithms of `hash` and `defrag`.
//! - [`backends`]: one [`backends::Backend`] trait and one module per storage kind
//!   (posixfs, sftp, s3, rclone, rest_client; the remote ones behind cargo features),
//!   plus [`backends::url`] to pick one from a store URL.
//! - [`store`]: the engine over any backend: namespaces and nesting levels, soft
//!   delete, recursive listing, hash/gather/defrag, the shared cache, stats, latency
//!   emulation.
//!
//! The daemon builds on these:
//!
//! - [`access`]: the one access decision every door (IPC, REST socket, REST TCP) asks:
//!   who is calling, and may they use this store.
//! - [`limits`]: the daemon-wide and per-connection budgets of request bytes in memory;
//!   [`memory`]: freed memory given back to the system after a burst.
//! - [`policy`]: what a principal may do once let in (permission letters, quota share,
//!   delete quarantine), checked by the store actor before each command.
//! - [`commands`]: every operation on a store as a type that says how it is ordered
//!   and applies itself; its output type is its reply.
//! - [`actor`]: one actix actor per store (ordering, the engine, cache sweeps), the
//!   typed [`actor::StoreHandle`] to it, and the registry of named stores with their
//!   grants.
//! - [`ipc_server`]: the Unix socket, peer credentials, the bincode protocol of
//!   `borgstore-ipc` (framing, handshake, reader, writer), pipelining and streamed
//!   lists.
//! - [`rest`]: the REST protocol v1 over actix-web, for `borgstored --rest` and
//!   `borgstore-server-rest`; requests go through the same store actors.
//! - [`audit`]: the per-store audit log (JSON Lines, one writer thread, group commit,
//!   rotation, crash repair) the store actors record mutating commands in.
//! - [`reload`]: what SIGHUP reloads in both binaries.
//! - [`config`]: the TOML file and flags; [`systemd`]: notify and socket activation.

pub mod access;
pub mod actor;
pub mod audit;
pub mod backends;
pub mod commands;
pub mod config;
pub mod flow;
pub mod hashing;
pub mod ipc_server;
pub mod limits;
pub mod memory;
pub mod names;
pub mod policy;
pub mod reload;
pub mod rest;
pub mod store;
pub mod systemd;

pub use backends::Backend;
pub use store::Store;
