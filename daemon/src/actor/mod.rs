//! Store actors: one actix actor per store, the one place where that store's
//! operations are ordered and its engine lives.
//!
//! - [`ordering`]: the ordering rules (per item FIFO, exclusive operations), pure data.
//! - [`store_actor`]: the actor that applies them to a [`crate::store::Store`].
//! - [`registry`]: store names -> actors, access grants, start and shutdown.

pub mod ordering;
pub mod registry;
pub mod store_actor;

pub use registry::{Peer, Registry, StoreEntry};
pub use store_actor::Outcome;
