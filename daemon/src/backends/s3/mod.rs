//! `s3:` and `b2:` URLs: a store as objects under a key prefix in an S3 bucket, over
//! aws-sdk-s3. Behaves like Python borgstore 0.7.0's `backends/s3.py`, so a store written
//! by one implementation is read by the other (tested against moto in
//! `tests/tests/s3.rs`).
//!
//! What lives where (split like Apache OpenDAL's services, so each file holds one kind of
//! request):
//!
//! - [`url`]: the URL grammar `(s3|b2):[profile@|key:secret@][http(s)://host[:port]]/bucket/path`.
//! - `core`: the SDK client and its set-up, [`S3Options`] (retry and timeout knobs), time
//!   budgets, keys, and the mapping of SDK errors to store errors.
//! - `reader`: HEAD and GET (`info`, `load` in parallel byte ranges, `hash`); `writer`: PUT
//!   and copy (`store`, markers, `move`); `multipart`: multipart uploads and copies in
//!   parts, aborted on any failure; `lister`: `ListObjectsV2` (`list`, existence checks);
//!   `deleter`: `delete`, `rmdir`, `destroy`.
//! - `journal`: our multipart uploads in flight, in local files; `orphans`: what `open`
//!   aborts (uploads the journal still lists after a crash, and abandoned ones).
//! - here: [`S3`], the [`Backend`], which checks names and the open state and hands each
//!   call to those parts; [`from_url`].
//!
//! Layout, as in Python:
//!
//! - An item `ns/01/0123..` is the object `path/ns/01/0123..`; there are no temp objects,
//!   because storing is atomic on S3 (readers see the old or the new object): a value of
//!   up to `part_size` bytes (8 MiB by default) is one PUT, a larger one a multipart upload,
//!   whose object appears only when the upload is completed. Python always sends one PUT,
//!   which S3 caps at 5 GiB; either side reads what the other wrote.
//! - Directories are key prefixes. `create` writes the empty marker object `path/`,
//!   `mkdir` writes `path/dir/` markers (we also write the parents' markers, so an emptied
//!   directory keeps existing like on a file system; Python's list and info read them
//!   fine). Storing an item writes no markers: its directories exist through its key.
//! - `list` is one `ListObjectsV2` walk with delimiter `/` over all pages; the marker of
//!   the listed directory itself and invalid names (`.tmp`, foreign keys) are skipped;
//!   common prefixes are directories.
//! - `info` is a HEAD of the key; when that is 404, the name is a directory if any key
//!   lies below `name/` (Python only checks for a marker; we also see directories that
//!   exist only through their items, as posixfs would).
//! - `move` is a server-side copy plus a delete (not atomic, as in Python; the target is
//!   never partial). `delete` is a HEAD (for ObjectNotFound) plus a delete.
//!
//! Where we differ from Python, on purpose: `open` checks that the store exists (Python
//! opens anything), `create` accepts an existing store that holds nothing but its marker
//! (posixfs accepts an empty directory too), `rmdir` of a missing directory is
//! ObjectNotFound, and a load of zero bytes does not send an invalid Range header.
//!
//! Backblaze B2 (`b2:`) takes the same code with the client tweaks Python applies: request
//! checksums and response checksum validation only where an operation requires them, and
//! `destroy` deletes objects one by one instead of with `DeleteObjects`, the one operation
//! that requires a checksum header (Python strips those headers before signing; the Rust
//! SDK adds them after any client interceptor could). Without a configured region, a B2
//! endpoint `s3.<region>.backblazeb2.com` gives the signing region.
//!
//! Client: credentials from the URL (static keys), a named profile, or the SDK's default
//! chain; region from `AWS_REGION`/`AWS_DEFAULT_REGION` or the profile, else `us-east-1`
//! (like boto3, never from the EC2 metadata service, which would stall a start off EC2).
//! A custom endpoint (from the URL, `AWS_ENDPOINT_URL` or the profile) uses path-style
//! addressing; a server that ignores `Range` still gives the right bytes.
//!
//! Failures: throttling, 5xx and connection errors are retried by the SDK's standard
//! retry strategy with exponential backoff ([`S3Options`]); every attempt has a time
//! budget that grows with the bytes it moves, and stalled transfers are cut by the SDK's
//! stalled stream protection, so no call hangs. What is left is ConnectionLost (no
//! connection, timeouts, cut-off responses), ObjectNotFound (404), BackendDoesNotExist
//! (no such bucket), PermissionDenied (401/403) or Backend (anything else, with the S3
//! error code). Errors name the item (never the store's prefix); only bucket errors
//! name the bucket.
//!
//! Concurrency: one SDK client per store, shared by all operations without a lock; each
//! request takes an HTTP connection of its own from the SDK's connection pool (hyper, no
//! limit per host), so concurrent operations are concurrent requests to the endpoint. A
//! large value moves as up to `part_concurrency` requests of its own (parts or ranges).
//!
//! Uploads left behind: a failed or cancelled multipart upload is aborted at once. One cut
//! off by a crash is in the upload journal the daemon gives each store
//! (`state_dir/s3-uploads/<store>/`) and is aborted when the store is next opened; so are
//! uploads under the prefix older than `abandoned_upload_age`, whoever started them (see
//! `orphans`). A backend without a journal (tests, [`S3::new`]) only has the latter.

pub mod url;

mod core;
mod deleter;
mod journal;
mod lister;
mod multipart;
mod orphans;
mod reader;
mod writer;

use self::core::S3Core;
pub use self::core::{S3Options, S3_COPY_LIMIT};
use self::journal::Journal;
use super::parts::PartOptions;
use super::Backend;
use crate::hashing::HashAlgorithm;
use crate::names::{validate_item_name, validate_name};
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Result};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
pub use url::{Auth, Endpoint, Flavor, S3Url};

/// A backend for `url` with default retry options, the part settings `parts`, and its
/// upload journal in `journal` (None: none).
pub fn from_url(url: &str, parts: PartOptions, journal: Option<PathBuf>) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(S3::new_with(S3Url::parse(url)?, S3Options::default(), parts, journal)))
}

/// A store in an S3 bucket (see the module docs).
#[derive(Clone)]
pub struct S3 {
    core: Arc<S3Core>,
}

impl S3 {
    /// A backend for the parsed `url` with the default part settings and no upload
    /// journal (nothing is contacted until it is used).
    pub fn new(url: S3Url, options: S3Options) -> Self {
        Self::new_with(url, options, PartOptions::default(), None)
    }

    /// A backend for the parsed `url` with part settings `parts`, journaling its uploads
    /// in the directory `journal` (see the module docs).
    pub fn new_with(url: S3Url, options: S3Options, parts: PartOptions, journal: Option<PathBuf>) -> Self {
        S3 { core: Arc::new(S3Core::new(url, options, parts, journal.map(Journal::new))) }
    }

    /// Parse `url` and make a backend with `options`.
    pub fn from_url_with(url: &str, options: S3Options) -> Result<Self> {
        Ok(S3::new(S3Url::parse(url)?, options))
    }

    /// Parse `url` and make a backend with `options`, `parts` and the upload journal in
    /// `journal`.
    pub fn from_url_with_parts(
        url: &str,
        options: S3Options,
        parts: PartOptions,
        journal: Option<PathBuf>,
    ) -> Result<Self> {
        Ok(S3::new_with(S3Url::parse(url)?, options, parts, journal))
    }

    /// The parsed URL.
    pub fn url(&self) -> &S3Url {
        &self.core.url
    }

    fn must_be_open(&self) -> Result<()> {
        self.core.opened.must_be_open()
    }

    fn must_not_be_open(&self) -> Result<()> {
        self.core.opened.must_not_be_open()
    }
}

#[async_trait]
impl Backend for S3 {
    async fn create(&self) -> Result<()> {
        self.must_not_be_open()?;
        let prefix = &self.core.prefix;
        let keys = self.core.first_keys("create", "", prefix, 2).await?;
        if keys.iter().any(|k| k != prefix) {
            return Err(Error::new(
                ErrorKind::BackendAlreadyExists,
                "the store already exists (its prefix holds objects)",
            ));
        }
        self.core.put_marker("create", "", prefix.clone()).await
    }

    async fn destroy(&self) -> Result<()> {
        self.must_not_be_open()?;
        self.core.destroy().await
    }

    async fn open(&self) -> Result<()> {
        self.must_not_be_open()?;
        if self.core.first_keys("open", "", &self.core.prefix, 1).await?.is_empty() {
            return Err(Error::new(ErrorKind::BackendDoesNotExist, "the store does not exist"));
        }
        self.core.abort_leftovers().await;
        self.core.opened.open()
    }

    async fn close(&self) -> Result<()> {
        self.core.opened.close()
    }

    async fn mkdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.mkdir(name).await
    }

    async fn rmdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.rmdir(name).await
    }

    async fn info(&self, name: &str) -> Result<ItemInfo> {
        self.must_be_open()?;
        validate_name(name)?;
        self.core.info(name).await
    }

    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.load(name, offset, size).await
    }

    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.put(name, value).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.delete(name).await
    }

    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(current)?;
        validate_item_name(new)?;
        self.core.copy(current, new).await?;
        self.core.delete_key("move", current, self.core.key(current)).await
    }

    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        self.must_be_open()?;
        validate_name(name)?;
        self.core.list(name).await
    }

    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.core.hash(name, algorithm).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn from_url_refuses_bad_urls_without_network() {
        let from_url = |url| from_url(url, PartOptions::default(), None);
        assert_eq!(from_url("s3:/bucket").err().unwrap().kind, ErrorKind::InvalidArgument);
        assert!(from_url("s3:k:s@http://127.0.0.1:1/bucket/path").is_ok());
        let be = S3::from_url_with("b2:p@/b/x/y/", S3Options::default()).unwrap();
        assert_eq!(be.core.prefix, "x/y/");
        assert_eq!(be.core.key("data/00/0011"), "x/y/data/00/0011");
        assert_eq!(be.core.dir_prefix(""), "x/y/");
        assert_eq!(be.core.dir_prefix("data/00"), "x/y/data/00/");
    }

    #[tokio::test]
    async fn closed_backend_refuses_without_network() {
        // Port 1 on loopback: nothing is contacted before open, and open fails fast.
        let options = S3Options { max_attempts: 1, connect_timeout: Duration::from_secs(2), ..S3Options::default() };
        let be = S3::from_url_with("s3:k:s@http://127.0.0.1:1/bucket/path", options).unwrap();
        assert_eq!(be.store("a", Bytes::new()).await.unwrap_err().kind, ErrorKind::BackendMustBeOpen);
        assert_eq!(be.list("").await.unwrap_err().kind, ErrorKind::BackendMustBeOpen);
        assert_eq!(be.close().await.unwrap_err().kind, ErrorKind::BackendMustBeOpen);
        let started = std::time::Instant::now();
        let e = be.open().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!e.message.contains("path/"), "no store prefix in {e}");
    }
}
