//! # borgstore-client
//!
//! Use the stores of a running `borgstored` from Rust, and the `borgstore` CLI.
//!
//! - [`Client`]: async, one store per client, calls pipelined on one connection,
//!   reconnects after a daemon restart.
//! - [`BlockingClient`]: the same API for code without an async runtime.
//! - [`audit`]: reading a store's audit log file (last lines, following, columns) for
//!   `borgstore audit`.
//! - `connection` (private): handshake, framing, routing responses by request id.
//! - `src/bin/borgstore.rs`: the CLI, built on [`Client`].
//!
//! Errors are [`Error`]s whose [`ErrorKind`] is the daemon's, unchanged.
//!
//! ```no_run
//! use borgstore_client::{BlockingClient, ClientOptions};
//!
//! # fn main() -> Result<(), borgstore_client::Error> {
//! // The "default" store of the daemon on the default socket ($BORGSTORE_SOCKET to override).
//! let store = BlockingClient::connect(ClientOptions::new("default"))?;
//! store.store("config/greeting", b"hello".to_vec())?;
//! assert_eq!(store.load("config/greeting", 0, None, false)?, b"hello");
//! for item in store.list("config", false)? {
//!     println!("{}", item?.name);
//! }
//! store.delete("config/greeting", false)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod audit;
mod blocking;
mod client;
mod connection;

pub use blocking::{BlockingClient, BlockingList};
pub use borgstore_ipc::protocol::{MoveAction, StoreSummary};
pub use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source, StatValue, Stats};
pub use client::{default_socket, CacheNamespace, CacheOptions, Client, ClientOptions, ListStream};
