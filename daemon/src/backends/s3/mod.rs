//! `s3:` and `b2:` URLs: a store as objects under a key prefix in an S3 bucket, over
//! aws-sdk-s3. Behaves like Python borgstore 0.7.0's `backends/s3.py`, so a store written
//! by one implementation is read by the other (tested against moto in
//! `tests/tests/s3.rs`).
//!
//! What lives here:
//!
//! - [`url`]: the URL grammar `(s3|b2):[profile@|key:secret@][http(s)://host[:port]]/bucket/path`.
//! - [`S3`]: the [`Backend`]; [`S3Options`]: its retry and timeout knobs; [`from_url`].
//!
//! Layout, as in Python:
//!
//! - An item `ns/01/0123..` is the object `path/ns/01/0123..`; there are no temp objects,
//!   because a single PUT is atomic on S3 (readers see the old or the new object).
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

pub mod url;

use super::Backend;
use crate::hashing::HashAlgorithm;
use crate::names::{shown, validate_item_name, validate_name};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::{ByteStream, ByteStreamError};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Result};
use bytes::Bytes;
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::sync::Arc;
use std::time::Duration;
pub use url::{Auth, Endpoint, Flavor, S3Url};

/// Keys per `ListObjectsV2` page and per `DeleteObjects` call (the S3 maximum).
const PAGE: i32 = 1000;
/// With a negative offset and a size, fetch the whole tail when it is at most this many
/// bytes longer than wanted (saves a HEAD), as Python does.
const TAIL_SLACK: u64 = 1024;
/// Concurrent single-object deletes in a B2 `destroy`.
const B2_DELETE_CONCURRENCY: usize = 16;

/// Retry and timeout settings of an S3 backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Attempts per request, the first included (1: no retries).
    pub max_attempts: u32,
    /// First backoff between attempts (doubles, with jitter, up to `max_backoff`).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Time budget of one attempt of a request that moves no bulk data.
    pub request_timeout: Duration,
    /// The slowest transfer rate [bytes/s] we wait for: an attempt that moves `n` bytes
    /// gets `request_timeout + n / min_throughput`.
    pub min_throughput: u64,
    /// A body transfer that makes no progress for this long fails (stalled stream protection).
    pub stall_timeout: Duration,
    /// Time budget of one attempt of a server-side copy (`move`), whose size we do not know.
    pub copy_timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            min_throughput: 128 * 1024,
            stall_timeout: Duration::from_secs(30),
            copy_timeout: Duration::from_secs(300),
        }
    }
}

impl S3Options {
    /// Budget of one attempt that moves `bytes` bytes.
    pub fn attempt_timeout(&self, bytes: u64) -> Duration {
        let transfer = bytes as f64 / self.min_throughput.max(1) as f64;
        self.request_timeout.saturating_add(Duration::from_secs_f64(transfer.min(1e9)))
    }

    /// Budget of a whole operation (all attempts and the backoffs between them).
    pub fn operation_timeout(&self, attempt: Duration) -> Duration {
        let attempts = self.max_attempts.max(1);
        attempt.saturating_mul(attempts).saturating_add(self.max_backoff.saturating_mul(attempts - 1))
    }

    fn timeouts(&self, attempt: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(attempt)
            .operation_timeout(self.operation_timeout(attempt))
            .build()
    }
}

/// A backend for `url` with default options.
pub fn from_url(url: &str) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(S3::new(S3Url::parse(url)?, S3Options::default())))
}

/// A store in an S3 bucket (see the module docs).
#[derive(Clone)]
pub struct S3 {
    inner: Arc<Inner>,
}

struct Inner {
    url: S3Url,
    /// `path/`: every key of the store starts with it.
    prefix: String,
    options: S3Options,
    /// Built on first use: loading the SDK config is async and reads profile files.
    client: tokio::sync::OnceCell<Client>,
    opened: super::open_state::OpenState,
}

/// Characters kept as they are in the `x-amz-copy-source` header.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn to_u64(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

fn mtime(t: Option<&aws_sdk_s3::primitives::DateTime>) -> f64 {
    t.map(|t| t.as_secs_f64()).filter(|t| t.is_finite() && *t > 0.0).unwrap_or(0.0)
}

/// The part of a whole object `data` that `load(offset, size)` wants.
fn local_range(data: Bytes, offset: i64, size: Option<u64>) -> Bytes {
    let len = data.len() as u64;
    let start = if offset >= 0 { (offset as u64).min(len) } else { len.saturating_sub(offset.unsigned_abs()) };
    let want = size.unwrap_or(u64::MAX).min(len - start);
    data.slice(start as usize..(start + want) as usize)
}

/// An error and its sources, `: `-separated (without the Debug dump that
/// `DisplayErrorContext` appends).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// The HTTP status of a service error, if the server answered.
fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

impl S3 {
    /// A backend for the parsed `url` (nothing is contacted until it is used).
    pub fn new(url: S3Url, options: S3Options) -> Self {
        let prefix = url.prefix();
        S3 {
            inner: Arc::new(Inner {
                url,
                prefix,
                options,
                client: tokio::sync::OnceCell::new(),
                opened: Default::default(),
            }),
        }
    }

    /// Parse `url` and make a backend with `options`.
    pub fn from_url_with(url: &str, options: S3Options) -> Result<Self> {
        Ok(S3::new(S3Url::parse(url)?, options))
    }

    /// The parsed URL.
    pub fn url(&self) -> &S3Url {
        &self.inner.url
    }

    fn bucket(&self) -> &str {
        &self.inner.url.bucket
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.prefix)
    }

    /// The key prefix of the directory `name` (`""`: the store root).
    fn dir_prefix(&self, name: &str) -> String {
        if name.is_empty() {
            self.inner.prefix.clone()
        } else {
            format!("{}{name}/", self.inner.prefix)
        }
    }

    fn must_be_open(&self) -> Result<()> {
        self.inner.opened.must_be_open()
    }

    fn must_not_be_open(&self) -> Result<()> {
        self.inner.opened.must_not_be_open()
    }

    async fn client(&self) -> Result<&Client> {
        self.inner.client.get_or_try_init(|| build_client(&self.inner.url, &self.inner.options)).await
    }

    /// Per-request config: the time budget of an attempt moving `bytes` bytes.
    fn budget(&self, bytes: u64) -> aws_sdk_s3::config::Builder {
        let o = &self.inner.options;
        aws_sdk_s3::config::Builder::default().timeout_config(o.timeouts(o.attempt_timeout(bytes)))
    }

    /// Map an SDK error of operation `op` on `name` to a store error.
    fn error<E>(&self, op: &str, name: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let what = if name.is_empty() { format!("S3 {op}") } else { format!("S3 {op} {}", shown(name)) };
        match &err {
            SdkError::ServiceError(se) => {
                let code = se.err().code().unwrap_or("");
                let message = se.err().message().unwrap_or("");
                let status = se.raw().status().as_u16();
                let detail = format!("{code} (HTTP {status}){}", if message.is_empty() { "" } else { ": " }) + message;
                match (code, status) {
                    ("NoSuchBucket", _) => Error::new(
                        ErrorKind::BackendDoesNotExist,
                        format!("S3 bucket {} does not exist", shown(self.bucket())),
                    ),
                    ("NoSuchKey" | "NotFound", _) | (_, 404) => Error::not_found(name),
                    ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AllAccessDisabled", _)
                    | (_, 401 | 403) => {
                        Error::new(ErrorKind::PermissionDenied, format!("{what}: access denied: {detail}"))
                    }
                    ("InvalidRange", _) | (_, 416) => {
                        Error::new(ErrorKind::ReadRangeError, format!("{what}: invalid range: {detail}"))
                    }
                    _ => Error::backend(format!("{what} failed: {detail}")),
                }
            }
            SdkError::TimeoutError(_) => Error::new(
                ErrorKind::ConnectionLost,
                format!("{what}: no answer from the S3 endpoint in time (after retries)"),
            ),
            SdkError::DispatchFailure(df) if df.is_io() || df.is_timeout() => Error::new(
                ErrorKind::ConnectionLost,
                format!("{what}: connection to the S3 endpoint failed: {}", chain(&err)),
            ),
            SdkError::ResponseError(_) => Error::new(
                ErrorKind::ConnectionLost,
                format!("{what}: the S3 response was cut off or malformed: {}", chain(&err)),
            ),
            _ => Error::backend(format!("{what} failed: {}", chain(&err))),
        }
    }

    /// One `ListObjectsV2` page below `prefix`.
    async fn list_page(
        &self,
        op: &str,
        name: &str,
        prefix: &str,
        delimiter: bool,
        max_keys: i32,
        token: Option<String>,
    ) -> Result<ListObjectsV2Output> {
        let mut req = self
            .client()
            .await?
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .max_keys(max_keys)
            .set_continuation_token(token);
        if delimiter {
            req = req.delimiter("/");
        }
        req.customize().config_override(self.budget(0)).send().await.map_err(|e| self.error(op, name, e))
    }

    /// The first (up to `n`) keys below `prefix`, recursively.
    async fn first_keys(&self, op: &str, name: &str, prefix: &str, n: i32) -> Result<Vec<String>> {
        let page = self.list_page(op, name, prefix, false, n, None).await?;
        Ok(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect())
    }

    /// HEAD of `name`'s object; `None` when there is none.
    async fn head(&self, op: &str, name: &str) -> Result<Option<HeadObjectOutput>> {
        let res = self
            .client()
            .await?
            .head_object()
            .bucket(self.bucket())
            .key(self.key(name))
            .customize()
            .config_override(self.budget(0))
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(out)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.error(op, name, e)),
        }
    }

    /// An empty marker object (`key` ends with `/`).
    async fn put_marker(&self, op: &str, name: &str, key: String) -> Result<()> {
        self.client()
            .await?
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .body(ByteStream::from(Bytes::new()))
            .customize()
            .config_override(self.budget(0))
            .send()
            .await
            .map_err(|e| self.error(op, name, e))?;
        Ok(())
    }

    async fn delete_key(&self, op: &str, name: &str, key: String) -> Result<()> {
        self.client()
            .await?
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .customize()
            .config_override(self.budget(0))
            .send()
            .await
            .map_err(|e| self.error(op, name, e))?;
        Ok(())
    }

    /// Delete `keys` (at most [`PAGE`]).
    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if self.inner.url.flavor == Flavor::B2 {
            let mut results = futures::stream::iter(keys.into_iter().map(|k| self.delete_key("destroy", "", k)))
                .buffer_unordered(B2_DELETE_CONCURRENCY);
            while let Some(r) = results.next().await {
                r?;
            }
            return Ok(());
        }
        let objects = keys
            .into_iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::backend(format!("S3 destroy: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| Error::backend(format!("S3 destroy: {e}")))?;
        let out = self
            .client()
            .await?
            .delete_objects()
            .bucket(self.bucket())
            .delete(delete)
            .customize()
            .config_override(self.budget(0))
            .send()
            .await
            .map_err(|e| self.error("destroy", "", e))?;
        if let Some(first) = out.errors().first() {
            return Err(Error::backend(format!(
                "S3 destroy: {} objects could not be deleted, e.g. one with {}: {}",
                out.errors().len(),
                first.code().unwrap_or("an unknown error"),
                first.message().unwrap_or("")
            )));
        }
        Ok(())
    }

    /// GET `name` (or the byte range `range` of it) into `sink`. The SDK retries a request
    /// that fails; a body that breaks off after the answer started is fetched again here,
    /// up to `max_attempts` times. Returns whether the server honoured the range (sent a
    /// `Content-Range`) rather than the whole object; a range starting at or after the end
    /// leaves the sink empty.
    async fn fetch(&self, op: &str, name: &str, range: Option<String>, expected: u64, sink: &mut Sink) -> Result<bool> {
        let o = &self.inner.options;
        let mut attempt = 0;
        loop {
            attempt += 1;
            sink.reset();
            let res = self
                .client()
                .await?
                .get_object()
                .bucket(self.bucket())
                .key(self.key(name))
                .set_range(range.clone())
                .customize()
                .config_override(self.budget(expected))
                .send()
                .await;
            let out = match res {
                Ok(out) => out,
                Err(e) if status(&e) == Some(416) => return Ok(true),
                Err(e) => return Err(self.error(op, name, e)),
            };
            let ranged = out.content_range().is_some();
            let len = to_u64(out.content_length());
            let budget = o.attempt_timeout(len);
            let mut body = out.body;
            let read = async {
                while let Some(chunk) = body.try_next().await? {
                    sink.push(chunk);
                }
                Ok::<(), ByteStreamError>(())
            };
            let failure = match tokio::time::timeout(budget, read).await {
                Ok(Ok(())) => return Ok(ranged),
                Ok(Err(e)) => format!("reading the object failed: {}", chain(&e)),
                Err(_) => format!("reading {len} bytes took longer than {budget:?}"),
            };
            if attempt >= o.max_attempts.max(1) {
                return Err(Error::new(
                    ErrorKind::ConnectionLost,
                    format!("S3 {op} {}: {failure} (after {attempt} attempts)", shown(name)),
                ));
            }
            tracing::debug!("S3 {op} {}: {failure}; trying again", shown(name));
            let backoff = o.initial_backoff.saturating_mul(1 << (attempt - 1).min(16)).min(o.max_backoff);
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Where [`S3::fetch`] puts a body.
enum Sink {
    Chunks(Vec<Bytes>),
    Hash(HashAlgorithm, crate::hashing::Hasher),
}

impl Sink {
    fn reset(&mut self) {
        match self {
            Sink::Chunks(chunks) => chunks.clear(),
            Sink::Hash(algorithm, hasher) => *hasher = algorithm.hasher(),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        match self {
            Sink::Chunks(chunks) => chunks.push(chunk),
            Sink::Hash(_, hasher) => hasher.update(&chunk),
        }
    }

    /// All chunks as one buffer (no copy for a single chunk).
    fn into_bytes(self) -> Bytes {
        match self {
            Sink::Chunks(mut chunks) if chunks.len() == 1 => chunks.pop().unwrap_or_default(),
            Sink::Chunks(chunks) => {
                let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
                for c in &chunks {
                    out.extend_from_slice(c);
                }
                Bytes::from(out)
            }
            Sink::Hash(..) => Bytes::new(),
        }
    }
}

/// Build the SDK client for `url` (see the module docs for where settings come from).
async fn build_client(url: &S3Url, o: &S3Options) -> Result<Client> {
    use aws_config::environment::region::EnvironmentVariableRegionProvider;
    use aws_config::meta::region::RegionProviderChain;
    use aws_config::profile::ProfileFileRegionProvider;

    let fallback_region = url.endpoint.as_ref().and_then(Endpoint::b2_region).unwrap_or("us-east-1").to_string();
    let mut profile_region = ProfileFileRegionProvider::builder();
    if let Auth::Profile(p) = &url.auth {
        profile_region = profile_region.profile_name(p);
    }
    let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(profile_region.build())
        .or_else(Region::new(fallback_region));
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
    match &url.auth {
        Auth::Default => {}
        Auth::Profile(p) => loader = loader.profile_name(p),
        Auth::Keys { access_key_id, secret_access_key } => {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "borgstore-url",
            ))
        }
    }
    let sdk = loader.load().await;
    let retry = RetryConfig::standard()
        .with_max_attempts(o.max_attempts.max(1))
        .with_initial_backoff(o.initial_backoff)
        .with_max_backoff(o.max_backoff);
    let mut config = aws_sdk_s3::config::Builder::from(&sdk)
        .retry_config(retry)
        .timeout_config(o.timeouts(o.attempt_timeout(0)))
        .stalled_stream_protection(StalledStreamProtectionConfig::enabled().grace_period(o.stall_timeout).build());
    if let Some(endpoint) = &url.endpoint {
        config = config.endpoint_url(endpoint.url()).force_path_style(true);
    } else if sdk.endpoint_url().is_some() {
        // An endpoint from AWS_ENDPOINT_URL(_S3) or the profile is a custom one, too.
        config = config.force_path_style(true);
    }
    if url.flavor == Flavor::B2 {
        config = config
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Ok(Client::from_conf(config.build()))
}

#[async_trait]
impl Backend for S3 {
    async fn create(&self) -> Result<()> {
        self.must_not_be_open()?;
        let prefix = &self.inner.prefix;
        let keys = self.first_keys("create", "", prefix, 2).await?;
        if keys.iter().any(|k| k != prefix) {
            return Err(Error::new(
                ErrorKind::BackendAlreadyExists,
                "the store already exists (its prefix holds objects)",
            ));
        }
        self.put_marker("create", "", prefix.clone()).await
    }

    async fn destroy(&self) -> Result<()> {
        self.must_not_be_open()?;
        let prefix = self.inner.prefix.clone();
        let mut page = self.list_page("destroy", "", &prefix, false, PAGE, None).await?;
        if page.contents().is_empty() {
            return Err(Error::new(ErrorKind::BackendDoesNotExist, "the store does not exist"));
        }
        loop {
            let keys: Vec<String> = page.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
            self.delete_keys(keys).await?;
            let token = match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => t.to_string(),
                (Some(true), None) => return Err(Error::backend("S3 destroy: truncated listing without continuation")),
                _ => return Ok(()),
            };
            page = self.list_page("destroy", "", &prefix, false, PAGE, Some(token)).await?;
        }
    }

    async fn open(&self) -> Result<()> {
        self.must_not_be_open()?;
        if self.first_keys("open", "", &self.inner.prefix, 1).await?.is_empty() {
            return Err(Error::new(ErrorKind::BackendDoesNotExist, "the store does not exist"));
        }
        self.inner.opened.open()
    }

    async fn close(&self) -> Result<()> {
        self.inner.opened.close()
    }

    async fn mkdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        // Parents first, so a directory never exists without its parents' markers.
        let mut end = 0;
        for part in name.split('/') {
            end += part.len();
            self.put_marker("mkdir", name, self.dir_prefix(&name[..end])).await?;
            end += 1;
        }
        Ok(())
    }

    async fn rmdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        let marker = self.dir_prefix(name);
        let keys = self.first_keys("rmdir", name, &marker, 2).await?;
        if keys.is_empty() {
            return Err(Error::not_found(name));
        }
        if keys.iter().any(|k| *k != marker) {
            return Err(Error::backend(format!("S3 rmdir {}: directory not empty", shown(name))));
        }
        self.delete_key("rmdir", name, marker).await
    }

    async fn info(&self, name: &str) -> Result<ItemInfo> {
        self.must_be_open()?;
        validate_name(name)?;
        if !name.is_empty() {
            if let Some(head) = self.head("info", name).await? {
                return Ok(ItemInfo {
                    name: leaf(name).to_string(),
                    exists: true,
                    size: to_u64(head.content_length()),
                    directory: false,
                    atime: 0.0,
                    mtime: mtime(head.last_modified()),
                });
            }
        }
        if self.first_keys("info", name, &self.dir_prefix(name), 1).await?.is_empty() {
            Ok(ItemInfo::missing(leaf(name)))
        } else {
            Ok(ItemInfo { directory: true, exists: true, ..ItemInfo::missing(leaf(name)) })
        }
    }

    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        self.must_be_open()?;
        validate_item_name(name)?;
        let tail = offset.unsigned_abs();
        let (range, expected, keep) = match (offset, size) {
            (_, Some(0)) => {
                // Nothing to read (an empty Range is invalid), but a missing item is still an error.
                return match self.head("load", name).await? {
                    Some(_) => Ok(Bytes::new()),
                    None => Err(Error::not_found(name)),
                };
            }
            (0, None) => (None, 0, None),
            (o, None) if o > 0 => (Some(format!("bytes={o}-")), 0, None),
            (_, None) => (Some(format!("bytes=-{tail}")), tail, None),
            (o, Some(s)) if o >= 0 => {
                let last = (o as u64).saturating_add(s - 1);
                (Some(format!("bytes={o}-{last}")), s, None)
            }
            (_, Some(s)) if tail.saturating_sub(s) <= TAIL_SLACK => (Some(format!("bytes=-{tail}")), tail, Some(s)),
            (_, Some(s)) => {
                let Some(head) = self.head("load", name).await? else {
                    return Err(Error::not_found(name));
                };
                let total = to_u64(head.content_length());
                let start = total.saturating_sub(tail);
                let want = s.min(total - start);
                if want == 0 {
                    return Ok(Bytes::new());
                }
                (Some(format!("bytes={start}-{}", start + want - 1)), want, None)
            }
        };
        let asked = range.is_some();
        let mut sink = Sink::Chunks(Vec::new());
        let ranged = self.fetch("load", name, range, expected, &mut sink).await?;
        let data = sink.into_bytes();
        if asked && !ranged {
            // The server ignored the Range header and sent the whole object.
            return Ok(local_range(data, offset, size));
        }
        Ok(match keep {
            Some(s) if (data.len() as u64) > s => data.slice(..s as usize),
            _ => data,
        })
    }

    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        let len = value.len() as u64;
        self.client()
            .await?
            .put_object()
            .bucket(self.bucket())
            .key(self.key(name))
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(ByteStream::from(value))
            .customize()
            .config_override(self.budget(len))
            .send()
            .await
            .map_err(|e| self.error("store", name, e))?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        if self.head("delete", name).await?.is_none() {
            return Err(Error::not_found(name));
        }
        self.delete_key("delete", name, self.key(name)).await
    }

    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(current)?;
        validate_item_name(new)?;
        let source = format!("{}/{}", self.bucket(), utf8_percent_encode(&self.key(current), COPY_SOURCE));
        let o = &self.inner.options;
        let budget = aws_sdk_s3::config::Builder::default().timeout_config(o.timeouts(o.copy_timeout));
        self.client()
            .await?
            .copy_object()
            .bucket(self.bucket())
            .copy_source(source)
            .key(self.key(new))
            .customize()
            .config_override(budget)
            .send()
            .await
            .map_err(|e| self.error("move", current, e))?;
        self.delete_key("move", current, self.key(current)).await
    }

    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        self.must_be_open()?;
        validate_name(name)?;
        let prefix = self.dir_prefix(name);
        let mut out = Vec::new();
        let mut seen_any = false;
        let mut token = None;
        loop {
            let page = self.list_page("list", name, &prefix, true, PAGE, token.take()).await?;
            seen_any |= !page.contents().is_empty() || !page.common_prefixes().is_empty();
            for object in page.contents() {
                let Some(leaf) = object.key().and_then(|k| k.strip_prefix(prefix.as_str())) else {
                    continue;
                };
                // The directory's own marker, an upload in progress or a foreign key: skip.
                if leaf.is_empty() || leaf.contains('/') || validate_item_name(leaf).is_err() {
                    continue;
                }
                out.push(ItemInfo {
                    name: leaf.to_string(),
                    exists: true,
                    size: to_u64(object.size()),
                    directory: false,
                    atime: 0.0,
                    mtime: mtime(object.last_modified()),
                });
            }
            for common in page.common_prefixes() {
                let Some(dir) = common.prefix().and_then(|p| p.strip_prefix(prefix.as_str())) else {
                    continue;
                };
                let dir = dir.strip_suffix('/').unwrap_or(dir);
                if dir.is_empty() || dir.contains('/') || validate_item_name(dir).is_err() {
                    continue;
                }
                out.push(ItemInfo { directory: true, exists: true, ..ItemInfo::missing(dir) });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                (Some(true), None) => {
                    return Err(Error::backend(format!(
                        "S3 list {}: truncated listing without continuation",
                        shown(name)
                    )))
                }
                _ => break,
            }
        }
        if !seen_any {
            return Err(Error::not_found(name));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.directory.cmp(&b.directory)));
        Ok(out)
    }

    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        self.must_be_open()?;
        validate_item_name(name)?;
        // Streamed: the object is hashed as it arrives, never held in memory.
        let mut sink = Sink::Hash(algorithm, algorithm.hasher());
        self.fetch("hash", name, None, 0, &mut sink).await?;
        match sink {
            Sink::Hash(_, hasher) => Ok(hasher.finalize_hex()),
            Sink::Chunks(_) => Err(Error::backend("S3 hash: internal error")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_grow_with_size_and_stay_bounded() {
        let o = S3Options::default();
        assert_eq!(o.attempt_timeout(0), o.request_timeout);
        assert_eq!(o.attempt_timeout(128 * 1024 * 10), o.request_timeout + Duration::from_secs(10));
        assert!(o.attempt_timeout(u64::MAX) > Duration::from_secs(1_000_000));
        let op = o.operation_timeout(Duration::from_secs(60));
        assert_eq!(op, Duration::from_secs(4 * 60 + 3 * 5));
        assert_eq!(o.operation_timeout(o.attempt_timeout(0)), Duration::from_secs(4 * 30 + 3 * 5));
        let zero = S3Options { max_attempts: 0, min_throughput: 0, ..o };
        assert!(zero.operation_timeout(Duration::from_secs(1)) >= Duration::from_secs(1));
        let _ = zero.attempt_timeout(u64::MAX);
    }

    #[test]
    fn from_url_refuses_bad_urls_without_network() {
        assert_eq!(from_url("s3:/bucket").err().unwrap().kind, ErrorKind::InvalidArgument);
        assert!(from_url("s3:k:s@http://127.0.0.1:1/bucket/path").is_ok());
        let be = S3::from_url_with("b2:p@/b/x/y/", S3Options::default()).unwrap();
        assert_eq!(be.inner.prefix, "x/y/");
        assert_eq!(be.key("data/00/0011"), "x/y/data/00/0011");
        assert_eq!(be.dir_prefix(""), "x/y/");
        assert_eq!(be.dir_prefix("data/00"), "x/y/data/00/");
    }

    #[test]
    fn local_ranges_like_posixfs() {
        let d = Bytes::from_static(b"0123456789");
        let cases: [(i64, Option<u64>, &[u8]); 9] = [
            (0, None, b"0123456789"),
            (0, Some(3), b"012"),
            (4, Some(2), b"45"),
            (8, Some(10), b"89"),
            (10, None, b""),
            (99, Some(1), b""),
            (-3, None, b"789"),
            (-4, Some(2), b"67"),
            (i64::MIN, Some(u64::MAX), b"0123456789"),
        ];
        for (offset, size, want) in cases {
            assert_eq!(&local_range(d.clone(), offset, size)[..], want, "{offset} {size:?}");
        }
    }

    #[test]
    fn copy_source_is_encoded() {
        let key = "a b/ä+x/data/00/0011.del";
        assert_eq!(utf8_percent_encode(key, COPY_SOURCE).to_string(), "a%20b/%C3%A4%2Bx/data/00/0011.del");
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
