//! Error kinds -> HTTP status codes (REST-API.md, "Errors -> status").

use actix_web::http::StatusCode;
use borgstore_ipc::ErrorKind;

/// The HTTP status of an error of `kind` (e.g. 404 for ObjectNotFound, 507 for QuotaExceeded).
pub fn of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::ObjectNotFound => StatusCode::NOT_FOUND,
        ErrorKind::BackendDoesNotExist => StatusCode::GONE,
        ErrorKind::BackendAlreadyExists => StatusCode::CONFLICT,
        ErrorKind::BackendMustBeOpen | ErrorKind::BackendMustNotBeOpen => StatusCode::PRECONDITION_FAILED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::ReadRangeError => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::ConnectionLost | ErrorKind::Backend => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The text a 412 must contain for the Python client to tell the two states apart.
pub fn message(kind: ErrorKind, message: &str) -> String {
    match kind {
        ErrorKind::BackendMustBeOpen if !message.contains("must be open") => format!("backend must be open: {message}"),
        ErrorKind::BackendMustNotBeOpen if !message.contains("must not be open") => {
            format!("backend must not be open: {message}")
        }
        _ => message.to_string(),
    }
}
