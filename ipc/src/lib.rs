#![warn(missing_docs)]
//! # borgstore-ipc
//!
//! The vocabulary shared by `borgstored` and its clients. It holds no I/O policy and
//! has light dependencies, so the client library and the daemon agree on it cheaply.
//!
//! - [`error`]: the error kinds of the store API (DESIGN.md section 3), used unchanged
//!   by the engine, the backends, the IPC wire and the client.
//! - [`types`]: item metadata, quota and byte-range sources.
//! - [`protocol`]: IPC protocol v1 messages (DESIGN.md section 5): handshake, requests
//!   with ids for pipelining, replies, streamed listing.
//! - [`paths`]: the default socket location shared by daemon and clients.
//! - [`audit`]: the JSON shape of one line of a store's audit log, written by the
//!   daemon and read by `borgstore audit`.
//! - [`codec`]: frames (u32 little-endian length + bincode body) with a size limit,
//!   decoded without panics whatever the input.

pub mod audit;
pub mod codec;
pub mod error;
pub mod paths;
pub mod protocol;
pub mod types;

pub use error::{Error, ErrorKind, Result};
pub use types::{ItemInfo, Quota, Source, StatValue, Stats};
