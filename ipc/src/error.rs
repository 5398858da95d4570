//! The error kinds of DESIGN.md section 3.
//!
//! One [`ErrorKind`] per failure class, kept apart on every wire (IPC, REST, CLI exit
//! codes). The engine, the backends and the daemon all use [`Error`] directly, so a kind
//! never has to be guessed back from a message.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What went wrong, as a client needs to tell it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The item (or directory) does not exist.
    ObjectNotFound,
    /// `create` on a store that already exists (e.g. a non-empty directory).
    BackendAlreadyExists,
    /// The store does not exist (`open`/`destroy` of a missing store).
    BackendDoesNotExist,
    /// The operation needs an open store.
    BackendMustBeOpen,
    /// The operation needs a closed store (create, destroy, a second open).
    BackendMustNotBeOpen,
    /// The permissions configured for the store refuse the operation.
    PermissionDenied,
    /// Storing would exceed the store's quota.
    QuotaExceeded,
    /// A requested byte range could not be read in full.
    ReadRangeError,
    /// Bad input: name, range, algorithm, URL, configuration.
    InvalidArgument,
    /// The connection to a remote backend (or to the daemon) was lost.
    ConnectionLost,
    /// Anything else. The message never contains an absolute storage path.
    Backend,
}

impl ErrorKind {
    /// Every kind, for tests and tables.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::ObjectNotFound,
        ErrorKind::BackendAlreadyExists,
        ErrorKind::BackendDoesNotExist,
        ErrorKind::BackendMustBeOpen,
        ErrorKind::BackendMustNotBeOpen,
        ErrorKind::PermissionDenied,
        ErrorKind::QuotaExceeded,
        ErrorKind::ReadRangeError,
        ErrorKind::InvalidArgument,
        ErrorKind::ConnectionLost,
        ErrorKind::Backend,
    ];

    /// The name used in messages and JSON output (same as the Python exception names
    /// where Python has one).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ObjectNotFound => "ObjectNotFound",
            ErrorKind::BackendAlreadyExists => "BackendAlreadyExists",
            ErrorKind::BackendDoesNotExist => "BackendDoesNotExist",
            ErrorKind::BackendMustBeOpen => "BackendMustBeOpen",
            ErrorKind::BackendMustNotBeOpen => "BackendMustNotBeOpen",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::QuotaExceeded => "QuotaExceeded",
            ErrorKind::ReadRangeError => "ReadRangeError",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::ConnectionLost => "ConnectionLost",
            ErrorKind::Backend => "Backend",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with its kind and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    /// The failure class the client acts on.
    pub kind: ErrorKind,
    /// Detail for humans (an item name, a reason); never an absolute storage path.
    pub message: String,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }
    /// [`ErrorKind::ObjectNotFound`], with the missing name as the message.
    pub fn not_found(name: &str) -> Self {
        Error::new(ErrorKind::ObjectNotFound, name)
    }
    /// [`ErrorKind::InvalidArgument`] with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }
    /// [`ErrorKind::Backend`] with `message`, for failures no other kind describes.
    pub fn backend(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Backend, message)
    }
    /// [`ErrorKind::BackendMustBeOpen`]: the store was used before `open` or after `close`.
    pub fn must_be_open() -> Self {
        Error::new(ErrorKind::BackendMustBeOpen, "backend must be open")
    }
    /// [`ErrorKind::BackendMustNotBeOpen`]: create, destroy or a second open on an open store.
    pub fn must_not_be_open() -> Self {
        Error::new(ErrorKind::BackendMustNotBeOpen, "backend must not be open")
    }
    /// The failure class, the same as the `kind` field.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
