//! Whether a backend is open, with the state errors of the [`super::Backend`] API
//! (BackendMustBeOpen / BackendMustNotBeOpen), shared by the remote backends.

use borgstore_ipc::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// The open flag of one backend; starts closed.
#[derive(Debug, Default)]
pub struct OpenState(AtomicBool);

impl OpenState {
    /// Is the backend open now?
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Ok when open; BackendMustBeOpen when not.
    pub fn must_be_open(&self) -> Result<()> {
        if self.is_open() {
            Ok(())
        } else {
            Err(Error::must_be_open())
        }
    }

    /// Ok when closed; BackendMustNotBeOpen when open.
    pub fn must_not_be_open(&self) -> Result<()> {
        if self.is_open() {
            Err(Error::must_not_be_open())
        } else {
            Ok(())
        }
    }

    /// Closed -> open; BackendMustNotBeOpen when it already was.
    pub fn open(&self) -> Result<()> {
        self.0
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(|_| Error::must_not_be_open())
    }

    /// Open -> closed; BackendMustBeOpen when it was not.
    pub fn close(&self) -> Result<()> {
        self.0
            .compare_exchange(true, false, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(|_| Error::must_be_open())
    }
}
