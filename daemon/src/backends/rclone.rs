//! The rclone backend: `rclone:remote:path`, any of rclone's many storage systems.
//!
//! As in Python borgstore 0.7.0, opening the backend starts `rclone rcd` on a random
//! loopback port with a random password (passed by environment, not on the command
//! line) and every operation is a call to its rc HTTP API: `operations/stat`, `/list`,
//! `/uploadfile`, `/movefile`, `/deletefile`, `/mkdir`, `/rmdir`, `/purge`, and plain
//! GETs (with Range) for loads. Closing the backend ends the process; so does dropping
//! it (kill on drop). `RCLONE_BINARY` picks the rclone binary; it must be >= 1.57.
//! rclone reports no storage-side times, so atime and mtime are 0, as in Python.
//!
//! Retries (under the common policy of `backends::retry`): loads and stores that rclone
//! answers with a 500 other than "not found" are tried three times in all, and a load
//! that finds no object looks again a few times (a racing move, see `load`); an rcd that
//! does not answer is not retried.
//!
//! Concurrency: each operation is an HTTP request of its own (reqwest's pool, no limit
//! per host; the lock on the rcd is only held to copy its address, never across a
//! request), and rcd (Go's HTTP server) serves each request in a goroutine of its own.

use super::retry::{Failure, Retry};
use super::Backend;
use crate::names::{validate_item_name, validate_name, TMP_SUFFIX};
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// Loads and stores are tried three times in all, right away, when rclone answers 500.
const SERVER_ERROR_RETRY: Retry = Retry::Every { wait: Duration::ZERO, retries: 2 };
/// The pauses before a load looks again for an object it did not find.
const LOOK_AGAIN: Retry = Retry::Pauses(&[
    Duration::from_millis(10),
    Duration::from_millis(30),
    Duration::from_millis(90),
    Duration::from_millis(270),
]);
const RC_USER: &str = "borg";

/// Make an rclone backend for `rclone:REMOTE:PATH` (passed to rclone as it is).
pub fn from_url(url: &str) -> Result<Arc<dyn Backend>> {
    let path = url.strip_prefix("rclone:").ok_or_else(|| Error::invalid("rclone URLs start with rclone:"))?;
    if path.is_empty() {
        return Err(Error::invalid("rclone: URL needs a remote, e.g. rclone:myremote:path"));
    }
    Ok(Arc::new(Rclone::new(path)))
}

/// The rclone binary: `RCLONE_BINARY` or `rclone` on PATH.
pub fn binary() -> String {
    std::env::var("RCLONE_BINARY").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "rclone".into())
}

struct Rcd {
    child: Child,
    url: String,
    password: String,
    /// Connections to this rcd only: a pooled connection must never outlive its rcd and
    /// be reused for a later rcd that happens to get the same port.
    http: reqwest::Client,
}

/// A store below `remote:path` of rclone, through an `rclone rcd` of its own while open.
pub struct Rclone {
    /// The rclone fs string: `remote:path/`.
    fs: String,
    rcd: Mutex<Option<Rcd>>,
}

fn must_be_open() -> Error {
    Error::new(ErrorKind::BackendMustBeOpen, "the backend must be open")
}

impl Rclone {
    /// A backend for rclone's `remote:path` (nothing runs until it is opened).
    pub fn new(path: &str) -> Self {
        let fs = if path.ends_with(':') || path.ends_with('/') { path.to_string() } else { format!("{path}/") };
        Rclone { fs, rcd: Mutex::new(None) }
    }

    /// rclone's version must be at least 1.57 (`rclone version` without a config).
    async fn check_version() -> Result<()> {
        let out = Command::new(binary())
            .args(["rc", "--loopback", "core/version"])
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| Error::new(ErrorKind::BackendDoesNotExist, format!("cannot run {}: {e}", binary())))?;
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|_| {
            Error::new(ErrorKind::BackendDoesNotExist, format!("{} rc core/version did not answer", binary()))
        })?;
        let parts: Vec<u64> =
            v["decomposed"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
        if parts.as_slice() < [1, 57, 0].as_slice() {
            return Err(Error::new(
                ErrorKind::BackendDoesNotExist,
                format!("rclone must be at least v1.57.0, found {}", v["version"].as_str().unwrap_or("unknown")),
            ));
        }
        Ok(())
    }

    async fn start() -> Result<Rcd> {
        Self::check_version().await?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| Error::backend(format!("cannot set up an HTTP client for rclone: {e}")))?;
        let password = hex::encode(rand::random::<[u8; 24]>());
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| Error::backend(format!("no free port for rclone rcd: {e}")))?
                .port();
            let mut child = Command::new(binary())
                .args(["rcd", "--rc-user", RC_USER, "--rc-addr", &format!("127.0.0.1:{port}")])
                .args(["--rc-serve", "--use-server-modtime"])
                .env("RCLONE_RC_PASS", &password)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::backend(format!("cannot start {} rcd: {e}", binary())))?;
            let url = format!("http://127.0.0.1:{port}/");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                // Ready means: our rcd answers with our random password. A bare TCP
                // connect is not enough: between picking the port and rcd binding it,
                // another process (another store's rcd) may have taken the port, and we
                // would talk to a stranger that goes away with its owner.
                let probe = http.post(format!("{url}rc/noop")).basic_auth(RC_USER, Some(&password)).send().await;
                if probe.is_ok_and(|r| r.status().is_success()) {
                    return Ok(Rcd { child, url, password, http });
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // e.g. the port was taken meanwhile: try another
                }
                if Instant::now() > deadline {
                    let _ = child.kill().await;
                    return Err(Error::backend("rclone rcd did not start listening within 30 s"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(Error::backend("rclone rcd failed to start (5 attempts)"))
    }

    async fn endpoint(&self) -> Result<(reqwest::Client, String, String)> {
        let guard = self.rcd.lock().await;
        let rcd = guard.as_ref().ok_or_else(must_be_open)?;
        Ok((rcd.http.clone(), rcd.url.clone(), rcd.password.clone()))
    }

    /// Send a request built by `make` under `policy`, which retries the 500s that are not
    /// "not found" answers (rclone's failures that may pass); an unreachable rcd is final.
    async fn send(
        &self,
        policy: Retry,
        make: impl Fn(&reqwest::Client, &str, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let (http, url, password) = self.endpoint().await?;
        let (http, url, password, make) = (&http, url.as_str(), password.as_str(), &make);
        let answer = policy.run("rclone request", |_| async move {
            let r = make(http, url, password).send().await.map_err(|e| {
                Failure::fatal(Error::new(ErrorKind::ConnectionLost, format!("rclone rcd not reachable: {e}")))
            })?;
            let status = r.status().as_u16();
            if status == 200 || status == 206 {
                return Ok(r);
            }
            Err(answer_failure(status, &r.text().await.unwrap_or_default()))
        });
        Ok(answer.await?)
    }

    async fn rpc(&self, command: &str, input: Value) -> Result<Value> {
        let body = input.to_string();
        let r = self
            .send(Retry::NONE, |http, url, pw| {
                http.post(format!("{url}{command}"))
                    .basic_auth(RC_USER, Some(pw))
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await?;
        let bytes = r.bytes().await.map_err(|e| Error::new(ErrorKind::ConnectionLost, format!("rclone: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::backend(format!("rclone sent invalid JSON: {e}")))
    }

    async fn is_open(&self) -> bool {
        self.rcd.lock().await.is_some()
    }

    fn item(name: &str, v: &Value) -> ItemInfo {
        ItemInfo {
            name: v["Name"].as_str().unwrap_or(name).to_string(),
            exists: true,
            size: v["Size"].as_i64().unwrap_or(0).max(0) as u64,
            directory: v["IsDir"].as_bool().unwrap_or(false),
            atime: 0.0,
            mtime: 0.0,
        }
    }

    /// Start rclone rcd (the backend is open from here on).
    async fn start_rcd(&self) -> Result<()> {
        let mut guard = self.rcd.lock().await;
        if guard.is_some() {
            return Err(not_open_error());
        }
        // start() returns only once our rcd answered an authenticated request.
        *guard = Some(Self::start().await?);
        Ok(())
    }

    /// Run `f` with rcd running just for it (create and destroy).
    async fn with_open<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.start_rcd().await?;
        let result = f.await;
        let closed = self.close().await;
        let value = result?;
        closed?;
        Ok(value)
    }
}

/// rclone answers "not found" conditions of operations (not of GETs) with 500 and a
/// message; tell those apart from real failures.
fn classify(status: u16, text: &str) -> ErrorKind {
    let t = text.to_ascii_lowercase();
    if status == 404
        || t.contains("object not found")
        || t.contains("directory not found")
        || t.contains("no such file or directory")
        || t.contains("not a directory")
    {
        ErrorKind::ObjectNotFound
    } else {
        ErrorKind::Backend
    }
}

/// An rc answer other than 200/206 as a failed attempt: a 500 that is not a "not found"
/// (a failure of rclone's that may pass) is worth another attempt, anything else is final.
fn answer_failure(status: u16, text: &str) -> Failure {
    let kind = classify(status, text);
    let error = Error::new(kind, format!("rclone: error {status}: {}", short(text)));
    if status == 500 && kind == ErrorKind::Backend {
        Failure::transient(error)
    } else {
        Failure::fatal(error)
    }
}

/// The error text of an rc answer without the echoed input (which holds local paths).
fn short(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(v) => v["error"].as_str().unwrap_or("unknown error").to_string(),
        Err(_) => text.trim().chars().take(300).collect(),
    }
}

fn not_open_error() -> Error {
    Error::new(ErrorKind::BackendMustNotBeOpen, "the backend must not be open")
}

/// Listing options: one level, and no per-object metadata reads rclone would need for
/// times and MIME types.
fn list_opt() -> Value {
    json!({"recurse": false, "noModTime": true, "noMimeType": true})
}

#[async_trait]
impl Backend for Rclone {
    async fn create(&self) -> Result<()> {
        if self.is_open().await {
            return Err(not_open_error());
        }
        self.with_open(async {
            match self.list("").await {
                Ok(items) if !items.is_empty() => {
                    return Err(Error::new(
                        ErrorKind::BackendAlreadyExists,
                        "the rclone storage path exists and is not empty",
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind == ErrorKind::ObjectNotFound => {}
                Err(e) => return Err(e),
            }
            self.mkdir("").await
        })
        .await
    }

    async fn destroy(&self) -> Result<()> {
        if self.is_open().await {
            return Err(not_open_error());
        }
        self.with_open(async {
            if !self.info("").await?.exists {
                return Err(Error::new(ErrorKind::BackendDoesNotExist, "the rclone storage path does not exist"));
            }
            self.rpc("operations/purge", json!({"fs": self.fs, "remote": ""})).await.map(|_| ())
        })
        .await
    }

    async fn open(&self) -> Result<()> {
        self.start_rcd().await?;
        match self.info("").await {
            Ok(i) if i.exists && i.directory => Ok(()),
            Ok(_) => {
                let _ = self.close().await;
                Err(Error::new(ErrorKind::BackendDoesNotExist, "the rclone storage path does not exist"))
            }
            Err(e) => {
                let _ = self.close().await;
                Err(e)
            }
        }
    }

    async fn close(&self) -> Result<()> {
        let rcd = self.rcd.lock().await.take().ok_or_else(must_be_open)?;
        let mut child = rcd.child;
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
        Ok(())
    }

    async fn mkdir(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        self.rpc("operations/mkdir", json!({"fs": self.fs, "remote": name})).await.map(|_| ())
    }

    async fn rmdir(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        self.rpc("operations/rmdir", json!({"fs": self.fs, "remote": name})).await.map(|_| ())
    }

    async fn info(&self, name: &str) -> Result<ItemInfo> {
        validate_name(name)?;
        let r = self.rpc("operations/stat", json!({"fs": self.fs, "remote": name, "opt": list_opt()})).await;
        match r {
            Ok(v) if v["item"].is_object() => Ok(Self::item(name, &v["item"])),
            Ok(_) => Ok(ItemInfo::missing(name)),
            Err(e) if e.kind == ErrorKind::ObjectNotFound => Ok(ItemInfo::missing(name)),
            Err(e) => Err(e),
        }
    }

    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        validate_item_name(name)?;
        if size == Some(0) {
            return match self.info(name).await? {
                i if i.exists => Ok(Bytes::new()),
                _ => Err(Error::new(ErrorKind::ObjectNotFound, format!("{} not found", crate::names::shown(name)))),
            };
        }
        let range = super::http_range(offset, size);
        let path = format!("[{}]/{name}", self.fs);
        let get = || {
            self.send(SERVER_ERROR_RETRY, |http, url, pw| {
                let mut rb = http.get(format!("{url}{path}")).basic_auth(RC_USER, Some(pw));
                if let Some(r) = &range {
                    rb = rb.header("range", r);
                }
                rb
            })
        };
        // rclone's server-side move deletes an existing target before it renames, so a
        // load racing with an overwrite (our stores end in such a move) can find no
        // object for a moment; look again a few times (0.4 s in all) before calling it missing.
        let missing_is_transient =
            |e: Error| if e.kind == ErrorKind::ObjectNotFound { Failure::transient(e) } else { Failure::fatal(e) };
        let r = LOOK_AGAIN.run("rclone load", |_| async { get().await.map_err(missing_is_transient) }).await?;
        let mut data =
            r.bytes().await.map_err(|e| Error::new(ErrorKind::ConnectionLost, format!("rclone: load cut off: {e}")))?;
        crate::backends::cut_tail(&mut data, offset, size);
        Ok(data)
    }

    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        validate_item_name(name)?;
        // Upload under a temp name (hidden from list) and rename: rclone writes uploads
        // in place on some remotes (local among them), and a reader must never see half
        // a value.
        let (dir, leaf) = name.rsplit_once('/').unwrap_or(("", name));
        let query = serde_urlencoded::to_string([("fs", self.fs.as_str()), ("remote", dir)]).unwrap_or_default();
        let temp_leaf = format!("{leaf}.{}{TMP_SUFFIX}", hex::encode(rand::random::<[u8; 6]>()));
        let temp = if dir.is_empty() { temp_leaf.clone() } else { format!("{dir}/{temp_leaf}") };
        let leaf = temp_leaf;
        self.send(SERVER_ERROR_RETRY, |http, url, pw| {
            let part = reqwest::multipart::Part::stream(value.clone())
                .file_name(leaf.clone())
                .mime_str("application/octet-stream")
                .unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
            let form = reqwest::multipart::Form::new().part("file", part);
            http.post(format!("{url}operations/uploadfile?{query}")).basic_auth(RC_USER, Some(pw)).multipart(form)
        })
        .await?;
        let input = json!({"srcFs": self.fs, "srcRemote": temp, "dstFs": self.fs, "dstRemote": name});
        if let Err(e) = self.rpc("operations/movefile", input).await {
            let _ = self.rpc("operations/deletefile", json!({"fs": self.fs, "remote": temp})).await;
            return Err(e);
        }
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        validate_item_name(name)?;
        self.rpc("operations/deletefile", json!({"fs": self.fs, "remote": name})).await.map(|_| ())
    }

    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        validate_item_name(current)?;
        validate_item_name(new)?;
        let input = json!({"srcFs": self.fs, "srcRemote": current, "dstFs": self.fs, "dstRemote": new});
        self.rpc("operations/movefile", input).await.map(|_| ())
    }

    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        validate_name(name)?;
        let v = self.rpc("operations/list", json!({"fs": self.fs, "remote": name, "opt": list_opt()})).await?;
        let mut items: Vec<ItemInfo> =
            v["list"].as_array().map(|a| a.iter().map(|i| Self::item("", i)).collect()).unwrap_or_default();
        // Skip what is not ours or still uploading.
        items.retain(|i| !i.name.ends_with(TMP_SUFFIX) && validate_name(&i.name).is_ok() && !i.name.contains('/'));
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_errors_that_may_pass_are_retried() {
        let e = answer_failure(500, r#"{"error":"couldn't upload: boom","input":{"fs":"/secret/path"}}"#);
        assert!(e.retriable);
        assert_eq!(e.error, Error::backend("rclone: error 500: couldn't upload: boom"), "no echoed input");
        let e = answer_failure(500, r#"{"error":"object not found"}"#);
        assert_eq!((e.error.kind, e.retriable), (ErrorKind::ObjectNotFound, false));
        let e = answer_failure(404, "not here");
        assert_eq!((e.error.kind, e.retriable), (ErrorKind::ObjectNotFound, false));
        assert!(!answer_failure(400, "bad request").retriable);
        assert!(!answer_failure(503, "busy").retriable, "only 500s, as before");
    }
}
