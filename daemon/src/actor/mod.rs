//! Store actors: one actix actor per store, the one place where that store's
//! operations are ordered and its engine lives.
//!
//! - [`ordering`]: the ordering rules (per item FIFO, exclusive operations), pure data.
//! - [`store_actor`]: the actor that applies them to a [`crate::store::Store`].
//! - [`registry`]: store names -> actors, their access grants, start and shutdown.
//! - [`system`]: the actix system (on a multi-thread tokio runtime) both binaries run.

pub mod ordering;
pub mod registry;
pub mod store_actor;

pub use registry::{Registry, StoreEntry};
pub use store_actor::Outcome;

/// The actix system both binaries run in, on a multi-thread tokio runtime (the REST
/// front end and the backends' network I/O use its workers). An error, not a panic,
/// when the runtime cannot be built (e.g. no threads left).
pub fn system() -> std::io::Result<actix_rt::SystemRunner> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    Ok(actix_rt::System::with_tokio_rt(move || runtime))
}
