//! Store actors: one actix actor per store, the one place where that store's
//! commands are ordered and its engine lives.
//!
//! - [`ordering`]: the ordering rules (per item FIFO, exclusive commands), pure data.
//! - [`served`]: a store as the daemon serves it (the engine, open or not).
//! - [`store_actor`]: the actor that runs [`crate::commands`] under those rules.
//! - [`handle`]: [`StoreHandle`], the typed way in: `run(command) -> command's output`.
//! - [`registry`]: store names -> handles, their access grants, start and shutdown.
//! - [`system`]: the actix system (on a multi-thread tokio runtime) both binaries run.

pub mod handle;
pub mod ordering;
pub mod registry;
pub mod served;
pub mod store_actor;

pub use handle::{Pending, StoreHandle};
pub use registry::{Registry, StoreEntry};
pub use served::Served;

/// The actix system both binaries run in, on a multi-thread tokio runtime (the REST
/// front end and the backends' network I/O use its workers). An error, not a panic,
/// when the runtime cannot be built (e.g. no threads left).
pub fn system() -> std::io::Result<actix_rt::SystemRunner> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    Ok(actix_rt::System::with_tokio_rt(move || runtime))
}
