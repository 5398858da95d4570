//! What every S3 request shares: the options ([`S3Options`]), the SDK client and how it is
//! set up (credentials, region, endpoint, the SDK's retry strategy, timeouts), the time
//! budget of one request, the store's keys, and the mapping of SDK errors to store errors.
//!
//! It lives apart from the reader, writer, lister and deleter so that each of those holds
//! only what its requests do; all of them are methods on [`S3Core`].

use crate::names::shown;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use borgstore_ipc::{Error, ErrorKind, Result};
use std::time::Duration;

use super::journal::Journal;
use super::url::{Auth, Endpoint, Flavor, S3Url};
use crate::backends::parts::PartOptions;

/// Keys per `ListObjectsV2` page and per `DeleteObjects` call (the S3 maximum).
pub const PAGE: i32 = 1000;

/// Retry and timeout settings of an S3 backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Attempts per request, the first included (1: no retries).
    pub max_attempts: u32,
    /// First backoff between attempts (doubles, with jitter, up to `max_backoff`).
    pub initial_backoff: Duration,
    /// Longest backoff between attempts.
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
    /// Time budget of one attempt of a server-side copy (`move`, a part of a copy) or of
    /// completing a multipart upload, whose duration we do not know.
    pub copy_timeout: Duration,
    /// Largest object `move` copies with one `CopyObject` ([`S3_COPY_LIMIT`], where S3
    /// refuses larger ones); larger ones are copied in parts. Below the default, `move`
    /// first asks the object's size with a HEAD; at the default it tries the single copy
    /// and copies in parts only when S3 refuses it as too large.
    pub max_copy_size: u64,
}

/// The largest object S3 copies with one `CopyObject` (5 GiB).
pub const S3_COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

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
            max_copy_size: S3_COPY_LIMIT,
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

    /// The SDK's timeouts for requests whose attempts each get `attempt`.
    pub(super) fn timeouts(&self, attempt: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(attempt)
            .operation_timeout(self.operation_timeout(attempt))
            .build()
    }
}

/// One store in a bucket: its URL, key prefix, options, client and open state.
pub struct S3Core {
    /// The parsed URL.
    pub url: S3Url,
    /// `path/`: every key of the store starts with it.
    pub prefix: String,
    /// Retry and timeout settings.
    pub options: S3Options,
    /// Part size and parts in flight of large values, age of abandoned uploads.
    pub parts: PartOptions,
    /// Our multipart uploads in flight, on disk (None: not journaled).
    pub journal: Option<Journal>,
    /// Built on first use: loading the SDK config is async and reads profile files.
    client: tokio::sync::OnceCell<Client>,
    /// Whether the backend is open.
    pub opened: crate::backends::open_state::OpenState,
}

/// The last path component of a name.
pub fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// A size S3 reports (None or negative: 0).
pub fn to_u64(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// A modification time S3 reports, in seconds (none or nonsense: 0).
pub fn mtime(t: Option<&aws_sdk_s3::primitives::DateTime>) -> f64 {
    t.map(|t| t.as_secs_f64()).filter(|t| t.is_finite() && *t > 0.0).unwrap_or(0.0)
}

/// An error and its sources, `: `-separated (without the Debug dump that
/// `DisplayErrorContext` appends).
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
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
pub fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// The S3 error code of a service error (`NoSuchUpload`, `InvalidRequest`...), if any.
pub fn code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    }
}

impl S3Core {
    /// The store at the parsed `url` (nothing is contacted until it is used).
    pub fn new(url: S3Url, options: S3Options, parts: PartOptions, journal: Option<Journal>) -> Self {
        let prefix = url.prefix();
        S3Core {
            url,
            prefix,
            options,
            parts,
            journal,
            client: tokio::sync::OnceCell::new(),
            opened: Default::default(),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.url.bucket
    }

    /// The custom endpoint of the URL, if any (`http(s)://host:port`).
    pub fn endpoint(&self) -> Option<String> {
        self.url.endpoint.as_ref().map(Endpoint::url)
    }

    /// The object key of item `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The key prefix of the directory `name` (`""`: the store root).
    pub fn dir_prefix(&self, name: &str) -> String {
        if name.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{name}/", self.prefix)
        }
    }

    /// The SDK client, built on first use.
    pub async fn client(&self) -> Result<&Client> {
        self.client.get_or_try_init(|| build_client(&self.url, &self.options)).await
    }

    /// Per-request config: the time budget of an attempt moving `bytes` bytes.
    pub fn budget(&self, bytes: u64) -> aws_sdk_s3::config::Builder {
        let o = &self.options;
        aws_sdk_s3::config::Builder::default().timeout_config(o.timeouts(o.attempt_timeout(bytes)))
    }

    /// Per-request config of work the server does on its own, for a time we cannot tell
    /// from what we send (a copy, completing a multipart upload): `copy_timeout` per attempt.
    pub fn server_budget(&self) -> aws_sdk_s3::config::Builder {
        let o = &self.options;
        aws_sdk_s3::config::Builder::default().timeout_config(o.timeouts(o.copy_timeout))
    }

    /// Map an SDK error of operation `op` on `name` to a store error.
    pub fn error<E>(&self, op: &str, name: &str, err: SdkError<E, HttpResponse>) -> Error
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
}

/// Build the SDK client for `url` (see the module docs of `s3` for where settings come from).
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
}
