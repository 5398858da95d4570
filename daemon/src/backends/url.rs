//! Store URLs -> backends (DESIGN.md section 7).
//!
//! `file:` is always built in; `sftp:`, `s3:`/`b2:`, `rclone:` and `http(s):`/`rest:`
//! each come with their cargo feature. A URL for a backend whose feature was left out
//! gets an error naming the feature, not "invalid URL".

use super::parts::PartOptions;
use super::posixfs::{PosixFs, PosixFsOptions};
use super::Backend;
use borgstore_ipc::{Error, Result};
use percent_encoding::percent_decode_str;
use std::path::PathBuf;
use std::sync::Arc;

/// Connections per store of the backends that open several (sftp, `rest://`), unless
/// configured.
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Most connections per store a config may ask for.
pub const MAX_CONNECTIONS: usize = 64;

/// Options only some backends accept.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Permissions, quota and fsync of `file:` stores.
    pub posixfs: PosixFsOptions,
    /// Durability of acknowledged writes, for backends that can flush (sftp).
    pub fsync: super::durability::FsyncMode,
    /// Most connections an open store holds, where the protocol needs several to carry
    /// concurrent operations (sftp: SSH connections; `rest://`: stdio server processes;
    /// 1 to 64). The others ignore it: S3, `http(s)://` REST and rclone run each request
    /// on a pooled HTTP connection of its own.
    pub connections: usize,
    /// Part size and parts in flight of large values, and the age of abandoned uploads
    /// (S3 and B2; the others ignore it).
    pub parts: PartOptions,
    /// A directory of this store's own where the S3 backends journal their multipart
    /// uploads in flight, so that uploads cut off by a crash are aborted at the next
    /// open (the others ignore it). None: no journal.
    pub upload_journal: Option<PathBuf>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        BackendOptions {
            posixfs: PosixFsOptions::default(),
            fsync: Default::default(),
            connections: DEFAULT_CONNECTIONS,
            parts: PartOptions::default(),
            upload_journal: None,
        }
    }
}

impl BackendOptions {
    /// What the daemon's backends get unless a store says more: file system calls never
    /// on the calling thread ([`PosixFsOptions::off_thread`]).
    pub fn daemon() -> Self {
        BackendOptions { posixfs: PosixFsOptions { off_thread: true, ..Default::default() }, ..Default::default() }
    }
}

/// The local path of a `file:///abs/path` URL (percent-decoded), or None for other schemes.
pub fn file_url_path(url: &str) -> Result<Option<PathBuf>> {
    let Some(rest) = url.strip_prefix("file://") else {
        return Ok(None);
    };
    if !rest.starts_with('/') {
        return Err(Error::invalid("file: URLs need an absolute path and no host: file:///abs/path (three slashes)"));
    }
    let decoded = percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| Error::invalid("file: URL path is not valid UTF-8 after percent-decoding"))?;
    if decoded.contains('\0') {
        return Err(Error::invalid("file: URL path contains NUL"));
    }
    Ok(Some(PathBuf::from(decoded.into_owned())))
}

/// Make a backend for `url`.
pub fn backend_from_url(url: &str, options: BackendOptions) -> Result<Arc<dyn Backend>> {
    if let Some(path) = file_url_path(url)? {
        return Ok(Arc::new(PosixFs::new(path, options.posixfs)?));
    }
    let restricted = !options.posixfs.permissions.is_unrestricted() || options.posixfs.quota.is_some();
    if restricted {
        return Err(Error::invalid("permissions and quota are only supported for file: URLs"));
    }
    let scheme = url.split(':').next().unwrap_or("");
    let missing = |feature: &str| -> Result<Arc<dyn Backend>> {
        Err(Error::invalid(format!(
            "the {scheme}: backend is not in this build of borgstore-rs: rebuild with the cargo feature {feature:?}"
        )))
    };
    match scheme {
        "sftp" => {
            #[cfg(feature = "sftp")]
            return super::sftp::from_url(url, options.fsync, options.connections);
            #[cfg(not(feature = "sftp"))]
            return missing("sftp");
        }
        "s3" | "b2" => {
            #[cfg(feature = "s3")]
            return super::s3::from_url(url, options.parts, options.upload_journal);
            #[cfg(not(feature = "s3"))]
            return missing("s3");
        }
        "rclone" => {
            #[cfg(feature = "rclone")]
            return super::rclone::from_url(url);
            #[cfg(not(feature = "rclone"))]
            return missing("rclone");
        }
        "http" | "https" | "rest" => {
            #[cfg(feature = "rest-client")]
            return super::rest_client::from_url(url, options.connections);
            #[cfg(not(feature = "rest-client"))]
            return missing("rest-client");
        }
        _ => {
            let _ = missing;
            Err(Error::invalid(format!(
                "invalid or unsupported store URL {} (expected file:///abs/path, sftp://, s3:, b2:, rclone:, \
                 http(s):// or rest://)",
                crate::names::shown(url)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        assert_eq!(file_url_path("file:///tmp/a%20b").unwrap(), Some(PathBuf::from("/tmp/a b")));
        assert!(file_url_path("file://host/x").is_err());
        assert!(file_url_path("file:///x%00y").is_err());
        assert_eq!(file_url_path("sftp://x/y").unwrap(), None);
        assert!(backend_from_url("gopher://x", BackendOptions::default()).is_err());
        assert_eq!(BackendOptions::default().connections, DEFAULT_CONNECTIONS);
        assert_eq!(BackendOptions::daemon().connections, DEFAULT_CONNECTIONS);
    }
}
