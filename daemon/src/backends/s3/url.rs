//! The `s3:` / `b2:` URL grammar of Python borgstore 0.7.0:
//!
//! ```text
//! (s3|b2):[profile@ | access_key_id:secret@][scheme://host[:port]]/bucket/path
//! ```
//!
//! - `profile@`: a named profile from the AWS config/credentials files (no `:` in it).
//! - `access_key_id:secret@`: static credentials, percent-decoded (write `@` as `%40`);
//!   the secret may contain `:` and `/`.
//! - `scheme://host[:port]`: a custom endpoint (MinIO, moto, Backblaze B2, ...); `http` or
//!   `https`. Without it the SDK's endpoint resolution applies (AWS, or `AWS_ENDPOINT_URL`).
//! - `/bucket/path`: the bucket (taken as is) and the store's key prefix inside it
//!   (percent-decoded, trailing `/` dropped). Python requires a non-empty path, so a store
//!   always lives under a prefix, never at the bucket root; so do we.
//!
//! The parse follows the Python regular expression, including its one ambiguity: the text
//! before the first `@` is taken as credentials only when the rest then parses as a
//! location; otherwise the whole URL is parsed without credentials (so an `@` inside the
//! store path works). On top of Python we refuse what could only fail later or do harm:
//! endpoint schemes other than http/https, bad ports, bucket names with characters S3
//! never allows, empty, `.` or `..` path components and control characters.

use borgstore_ipc::{Error, Result};
use percent_encoding::percent_decode_str;
use std::fmt;

/// Longest accepted store path (S3 keys are at most 1024 bytes; names take up to 101 more).
pub const MAX_PATH_LENGTH: usize = 900;

/// Plain S3 or Backblaze B2 (which needs a few client tweaks, see the module docs of `s3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Amazon S3 or any S3-compatible service (`s3:`).
    S3,
    /// Backblaze B2 through its S3 API (`b2:`).
    B2,
}

impl Flavor {
    /// The URL prefix without its colon: `s3` or `b2`.
    pub fn scheme(self) -> &'static str {
        match self {
            Flavor::S3 => "s3",
            Flavor::B2 => "b2",
        }
    }
}

/// Where the credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// The SDK's default chain: environment, profile files, web identity, container, IMDS.
    Default,
    /// A named profile from `~/.aws/config` / `~/.aws/credentials`.
    Profile(String),
    /// Static credentials from the URL.
    Keys {
        /// The access key ID, percent-decoded.
        access_key_id: String,
        /// The secret, percent-decoded; `Debug` shows it as `***`.
        secret_access_key: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Default => f.write_str("Default"),
            Auth::Profile(p) => f.debug_tuple("Profile").field(p).finish(),
            Auth::Keys { access_key_id, .. } => {
                f.debug_struct("Keys").field("access_key_id", access_key_id).field("secret_access_key", &"***").finish()
            }
        }
    }
}

/// A custom endpoint: `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https` (lowercase).
    pub scheme: String,
    /// Host name or IPv4 address.
    pub host: String,
    /// None: the scheme's default port.
    pub port: Option<u16>,
}

impl Endpoint {
    /// The endpoint URL for the SDK.
    pub fn url(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// The region a Backblaze B2 endpoint names (`s3.<region>.backblazeb2.com`).
    pub fn b2_region(&self) -> Option<&str> {
        let region = self.host.strip_prefix("s3.")?.strip_suffix(".backblazeb2.com")?;
        (!region.is_empty() && !region.contains('.')).then_some(region)
    }
}

/// A parsed `s3:` / `b2:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// Which prefix the URL had.
    pub flavor: Flavor,
    /// Where the credentials come from.
    pub auth: Auth,
    /// None: the SDK's endpoint resolution (AWS, or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<Endpoint>,
    /// The bucket name, as in the URL.
    pub bucket: String,
    /// The store's key prefix in the bucket, percent-decoded, without trailing `/`.
    pub path: String,
}

impl S3Url {
    /// Parse `url`; every problem is an InvalidArgument error that says what is wrong.
    pub fn parse(url: &str) -> Result<S3Url> {
        let (flavor, rest) = if let Some(r) = url.strip_prefix("s3:") {
            (Flavor::S3, r)
        } else if let Some(r) = url.strip_prefix("b2:") {
            (Flavor::B2, r)
        } else {
            return Err(bad("it must start with s3: or b2:"));
        };
        if url.chars().any(|c| c.is_control()) {
            return Err(bad("it contains a control character"));
        }
        // Credentials end at the first '@', if the rest then is a valid location.
        let mut auth_problem = None;
        if let Some((auth, after)) = rest.split_once('@') {
            match parse_auth(auth) {
                Ok(auth) => match parse_location(after) {
                    Ok((endpoint, bucket, path)) => return Ok(S3Url { flavor, auth, endpoint, bucket, path }),
                    Err(e) => auth_problem = Some(e),
                },
                Err(e) => auth_problem = Some(e),
            }
        }
        match parse_location(rest) {
            Ok((endpoint, bucket, path)) => Ok(S3Url { flavor, auth: Auth::Default, endpoint, bucket, path }),
            Err(e) => Err(auth_problem.unwrap_or(e)),
        }
    }

    /// The key prefix of everything in the store: `path/`.
    pub fn prefix(&self) -> String {
        format!("{}/", self.path)
    }

    /// The URL without the secret, for logs and messages.
    pub fn redacted(&self) -> String {
        let auth = match &self.auth {
            Auth::Default => String::new(),
            Auth::Profile(p) => format!("{p}@"),
            Auth::Keys { access_key_id, .. } => format!("{access_key_id}:***@"),
        };
        let endpoint = self.endpoint.as_ref().map(Endpoint::url).unwrap_or_default();
        format!("{}:{auth}{endpoint}/{}/{}", self.flavor.scheme(), self.bucket, self.path)
    }
}

const GRAMMAR: &str = "(s3|b2):[profile@|access_key_id:secret@][http(s)://host[:port]]/bucket/path";

fn bad(why: &str) -> Error {
    Error::invalid(format!("invalid S3 URL: {why} (expected {GRAMMAR})"))
}

fn decode(s: &str, what: &str) -> Result<String> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| bad(&format!("the {what} is not valid UTF-8 after percent-decoding")))
}

/// `profile` or `access_key_id:secret` (the part before the first `@`).
fn parse_auth(auth: &str) -> Result<Auth> {
    match auth.split_once(':') {
        Some((id, secret)) => {
            if id.is_empty() || secret.is_empty() {
                return Err(bad("credentials must be access_key_id:secret@ with both parts non-empty"));
            }
            let access_key_id = decode(id, "access key id")?;
            let secret_access_key = decode(secret, "secret")?;
            if access_key_id.chars().chain(secret_access_key.chars()).any(|c| c.is_control()) {
                return Err(bad("the credentials contain a control character"));
            }
            Ok(Auth::Keys { access_key_id, secret_access_key })
        }
        None if auth.is_empty() => Err(bad("empty profile name before '@'")),
        None => Ok(Auth::Profile(auth.to_string())),
    }
}

/// `[scheme://host[:port]]/bucket/path`.
fn parse_location(s: &str) -> Result<(Option<Endpoint>, String, String)> {
    if s.starts_with("//") {
        return Err(bad("write s3:/bucket/path (one slash), or s3:scheme://host/bucket/path for an endpoint"));
    }
    let (endpoint, rest) = if s.starts_with('/') {
        (None, s)
    } else {
        let Some((scheme, after)) = s.split_once("://") else {
            return Err(bad("expected /bucket/path or scheme://host[:port]/bucket/path after the prefix"));
        };
        if scheme.is_empty() || scheme.contains([':', '/', '@']) {
            return Err(bad("malformed endpoint"));
        }
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad(&format!("the endpoint scheme must be http or https, not {scheme:?}")));
        }
        let host_end = after.find([':', '/']).unwrap_or(after.len());
        let host = &after[..host_end];
        if host.is_empty() {
            return Err(bad("the endpoint has no host name"));
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
            return Err(bad(&format!("the endpoint host {host:?} is not a valid host name or IPv4 address")));
        }
        let mut rest = &after[host_end..];
        let mut port = None;
        if let Some(p) = rest.strip_prefix(':') {
            let digits = p.find('/').unwrap_or(p.len());
            let number = &p[..digits];
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("the endpoint port must be a number"));
            }
            match number.parse::<u16>() {
                Ok(n) if n > 0 => port = Some(n),
                _ => return Err(bad(&format!("the endpoint port {number} is out of range (1-65535)"))),
            }
            rest = &p[digits..];
        }
        (Some(Endpoint { scheme, host: host.to_ascii_lowercase(), port }), rest)
    };
    let Some(rest) = rest.strip_prefix('/') else {
        return Err(bad("the endpoint must be followed by /bucket/path"));
    };
    let Some((bucket, path)) = rest.split_once('/') else {
        return Err(bad("a store needs a path inside the bucket: /bucket/path"));
    };
    if bucket.is_empty() {
        return Err(bad("the bucket name is empty"));
    }
    if bucket.len() > 255 || !bucket.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(bad(&format!("{bucket:?} is not a valid bucket name")));
    }
    let path = decode(path, "path")?;
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Err(bad("a store needs a path inside the bucket: /bucket/path"));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(bad("the path contains a control character"));
    }
    if path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(bad("the path has an empty, '.' or '..' component"));
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(bad(&format!("the path is longer than {MAX_PATH_LENGTH} bytes")));
    }
    Ok((endpoint, bucket.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use borgstore_ipc::ErrorKind;

    fn keys(id: &str, secret: &str) -> Auth {
        Auth::Keys { access_key_id: id.into(), secret_access_key: secret.into() }
    }

    fn ep(scheme: &str, host: &str, port: Option<u16>) -> Option<Endpoint> {
        Some(Endpoint { scheme: scheme.into(), host: host.into(), port })
    }

    fn url(flavor: Flavor, auth: Auth, endpoint: Option<Endpoint>, bucket: &str, path: &str) -> S3Url {
        S3Url { flavor, auth, endpoint, bucket: bucket.into(), path: path.into() }
    }

    #[test]
    fn good_urls() {
        use Flavor::*;
        let cases = [
            ("s3:/bucket/path", url(S3, Auth::Default, None, "bucket", "path")),
            ("s3:/bucket/path/", url(S3, Auth::Default, None, "bucket", "path")),
            ("s3:/bucket/a/b/c", url(S3, Auth::Default, None, "bucket", "a/b/c")),
            ("s3:/my.bucket-1/repo", url(S3, Auth::Default, None, "my.bucket-1", "repo")),
            ("s3:prof@/bucket/path", url(S3, Auth::Profile("prof".into()), None, "bucket", "path")),
            ("s3:key:secret@/bucket/path", url(S3, keys("key", "secret"), None, "bucket", "path")),
            // The secret may contain ':' and '/', and percent-escapes are decoded.
            ("s3:AKIA:ab/c:d%40e@/b/p", url(S3, keys("AKIA", "ab/c:d@e"), None, "b", "p")),
            ("s3:k%3Ax:s@/b/p", url(S3, keys("k:x", "s"), None, "b", "p")),
            (
                "s3:http://127.0.0.1:9000/bucket/path",
                url(S3, Auth::Default, ep("http", "127.0.0.1", Some(9000)), "bucket", "path"),
            ),
            (
                "s3:https://minio.example.org/b/p",
                url(S3, Auth::Default, ep("https", "minio.example.org", None), "b", "p"),
            ),
            (
                "s3:testing:testing@http://localhost:5000/bucket/deep/er/path",
                url(S3, keys("testing", "testing"), ep("http", "localhost", Some(5000)), "bucket", "deep/er/path"),
            ),
            (
                "s3:work@https://s3.eu-central-1.amazonaws.com/b/p",
                url(S3, Auth::Profile("work".into()), ep("https", "s3.eu-central-1.amazonaws.com", None), "b", "p"),
            ),
            (
                "b2:keyid:appkey@https://s3.us-west-004.backblazeb2.com/bucket/borg",
                url(B2, keys("keyid", "appkey"), ep("https", "s3.us-west-004.backblazeb2.com", None), "bucket", "borg"),
            ),
            ("b2:/bucket/path", url(B2, Auth::Default, None, "bucket", "path")),
            ("b2:p@/bucket/path", url(B2, Auth::Profile("p".into()), None, "bucket", "path")),
            // An '@' in the path: not credentials, because the rest would not parse.
            ("s3:/bucket/pa@th", url(S3, Auth::Default, None, "bucket", "pa@th")),
            ("s3:http://h:1/b/x@y", url(S3, Auth::Default, ep("http", "h", Some(1)), "b", "x@y")),
            // Percent-decoded path (Python unquotes it too).
            ("s3:/b/with%20space/%C3%A4", url(S3, Auth::Default, None, "b", "with space/ä")),
            ("s3:HTTP://Host:80/b/p", url(S3, Auth::Default, ep("http", "host", Some(80)), "b", "p")),
        ];
        for (text, want) in cases {
            assert_eq!(S3Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}")), want, "{text}");
        }
    }

    #[test]
    fn prefix_and_endpoint_url() {
        let u = S3Url::parse("s3:k:s@http://127.0.0.1:9000/bucket/a/b/").unwrap();
        assert_eq!(u.prefix(), "a/b/");
        assert_eq!(u.endpoint.as_ref().unwrap().url(), "http://127.0.0.1:9000");
        let u = S3Url::parse("b2:https://s3.us-west-004.backblazeb2.com/b/p").unwrap();
        assert_eq!(u.endpoint.as_ref().unwrap().b2_region(), Some("us-west-004"));
        assert_eq!(u.endpoint.as_ref().unwrap().url(), "https://s3.us-west-004.backblazeb2.com");
        assert_eq!(S3Url::parse("s3:https://s3.x.example/b/p").unwrap().endpoint.unwrap().b2_region(), None);
    }

    #[test]
    fn secrets_are_not_shown() {
        let u = S3Url::parse("s3:AKIAX:verysecret@http://h:9/b/p").unwrap();
        assert!(!format!("{u:?}").contains("verysecret"));
        assert!(!u.redacted().contains("verysecret"));
        assert_eq!(u.redacted(), "s3:AKIAX:***@http://h:9/b/p");
        assert_eq!(S3Url::parse("b2:pr@/b/p").unwrap().redacted(), "b2:pr@/b/p");
    }

    #[test]
    fn bad_urls() {
        let long_path = format!("s3:/b/{}", "x".repeat(MAX_PATH_LENGTH + 1));
        let cases = [
            ("", "must start with s3: or b2:"),
            ("s3", "must start with s3: or b2:"),
            ("gs:/b/p", "must start with s3: or b2:"),
            ("s3:", "expected /bucket/path"),
            ("s3://bucket/path", "one slash"),
            ("s3:bucket/path", "expected /bucket/path"),
            ("s3:/bucket", "needs a path inside the bucket"),
            ("s3:/bucket/", "needs a path inside the bucket"),
            ("s3:/bucket//", "needs a path inside the bucket"),
            ("s3://", "one slash"),
            ("s3:http:///b/p", "no host name"),
            ("s3:/", "needs a path inside the bucket"),
            ("s3://p", "one slash"),
            ("s3:/b//p", "empty, '.' or '..' component"),
            ("s3:/b/a/../c", "empty, '.' or '..' component"),
            ("s3:/b/./c", "empty, '.' or '..' component"),
            ("s3:/b/%2e%2e/c", "empty, '.' or '..' component"),
            ("s3:/b/a%00b", "control character"),
            ("s3:/b/a\nb", "control character"),
            ("s3:/b/%ff", "not valid UTF-8"),
            ("s3:/b a/p", "not a valid bucket name"),
            ("s3:/b%20a/p", "not a valid bucket name"),
            ("s3:ftp://host/b/p", "must be http or https"),
            ("s3:http://host:abc/b/p", "port must be a number"),
            ("s3:http://host:/b/p", "port must be a number"),
            ("s3:http://host:0/b/p", "out of range"),
            ("s3:http://host:65536/b/p", "out of range"),
            ("s3:http://host:99999999999999999999/b/p", "out of range"),
            ("s3:http://host", "followed by /bucket/path"),
            ("s3:http://host:9000", "followed by /bucket/path"),
            ("s3:http://host:9000/bucket", "needs a path inside the bucket"),
            ("s3:http://ho%20st/b/p", "not a valid host name"),
            ("s3:http://[::1]:9000/b/p", "not a valid host name"),
            ("s3:@/b/p", "empty profile name"),
            ("s3::secret@/b/p", "both parts non-empty"),
            ("s3:key:@/b/p", "both parts non-empty"),
            ("s3:k:s@bucket/path", "expected /bucket/path"),
            ("s3:k:s@http://h/b", "needs a path inside the bucket"),
            ("s3:k:%ff@/b/p", "not valid UTF-8"),
            ("s3:k:a%0ab@/b/p", "control character"),
            (long_path.as_str(), "longer than"),
        ];
        for (text, why) in cases {
            let e = S3Url::parse(text).expect_err(text);
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{text}");
            assert!(e.message.contains(why), "{text:?}: {:?} should say {why:?}", e.message);
            assert!(e.message.contains("expected (s3|b2):"), "{text:?}: the message shows the grammar");
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        let pieces = ["s3:", "b2:", "@", ":", "/", "//", "http://", "h", "%", "%4", "%40", "9", "ä", "\0", "..", " "];
        // Every sequence of up to 4 pieces.
        let mut stack: Vec<String> = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for s in &stack {
                for p in pieces {
                    let t = format!("{s}{p}");
                    let _ = S3Url::parse(&t);
                    next.push(t);
                }
            }
            stack = next;
        }
    }
}
