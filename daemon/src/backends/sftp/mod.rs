//! `sftp://[user@]host[:port]/rel/path` and `sftp://[user@]host[:port]//abs/path`: items as
//! files below a directory on an SFTP server, over russh + russh-sftp. Behaves like Python
//! borgstore 0.7.0's sftp backend and lays out the same tree, so either implementation
//! reads what the other wrote.
//!
//! - [`url`]: the URL grammar; [`config`]: options from the environment and ssh_config
//!   (documented there: `BORGSTORE_SFTP_KEY`, `BORGSTORE_SFTP_KNOWN_HOSTS`, timeouts);
//!   [`known_hosts`]: host key checking; [`conn`]: one SSH connection and its requests;
//!   [`pool`]: the connections of an open store.
//! - Authentication: public keys only, in paramiko's order: configured keys
//!   (`BORGSTORE_SFTP_KEY`, then ssh_config `IdentityFile`), ssh-agent (`SSH_AUTH_SOCK`),
//!   then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
//! - Host keys: must be listed in a known_hosts file (`~/.ssh/known_hosts`,
//!   `/etc/ssh/ssh_known_hosts`, `BORGSTORE_SFTP_KNOWN_HOSTS`, ssh_config
//!   `UserKnownHostsFile`); unknown hosts and changed keys are refused with a clear error.
//!   There is no opt-in to trust unknown hosts, as in Python borgstore.
//! - Store: write `<12 random letters>.tmp` in the item's directory (creating missing
//!   directories on demand), then rename it over the item with `posix-rename@openssh.com`
//!   (atomic; servers without it get remove + rename, which has a short window without
//!   the item). With the store's `fsync` on (`always` or `batch`, the default) the file
//!   is flushed on the server with `fsync@openssh.com` before the rename, where the
//!   server offers it (OpenSSH does); directories cannot be flushed over sftp. A failed
//!   store removes its temp file (after a lost connection: once reconnected). Reads and writes are pipelined; `list` skips `.tmp` files and other
//!   invalid names.
//! - Hash: the server computes it where it announces a `check-file` extension (as Python
//!   asks paramiko to); OpenSSH does not, so the file is streamed and hashed locally.
//! - Lost connections: while open, an operation that fails because the connection is
//!   gone (closed, reset, a request timed out) reconnects and runs again, up to
//!   `reconnect_tries` times `reconnect_wait` apart (the common policy of
//!   `backends::retry`); then it fails with ConnectionLost.
//!   One that finds the connection already gone connects first, without waiting.
//! - Concurrency: an open store holds up to `connections` SSH connections (the store's
//!   config key, default 4, 1 to 64; [`pool`]), each with its own sftp session. Each
//!   operation runs on the connection with the fewest operations in flight; a further
//!   connection is opened only when every open one is busy, so a store used one
//!   operation at a time keeps one connection. Within a connection requests are
//!   multiplexed (many in flight). Each connection is replaced on its own when lost
//!   (concurrent operations on it share that one reconnect); the temp files of stores it
//!   cut off are removed once any connection is up again.
//!   Removals (delete, move) that find their object gone on a retry count as done, as in
//!   Python. Every network wait is bounded: connect (`connect_timeout`, whole handshake),
//!   each sftp request (`request_timeout`), SSH keepalives for idle connections.
//! - Everything is async (russh on tokio); key, config and known_hosts files are read in
//!   `spawn_blocking`. Error messages name items, never the store's path on the server.

pub mod config;
pub mod conn;
pub mod known_hosts;
pub mod pool;
pub mod url;

use super::retry::{Failure, Retry};
use super::Backend;
use crate::hashing::HashAlgorithm;
use crate::names::{shown, validate_item_name, validate_name};
use async_trait::async_trait;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Result};
use bytes::Bytes;
pub use config::SftpOptions;
use conn::{is_lost, is_no_such_file, lost, Conn};
use futures::stream::{self, StreamExt, TryStreamExt};
use pool::{Pool, MAX_CONNECTIONS};
use rand::Rng;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, StatusCode};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
pub use url::SftpUrl;

/// A backend for an `sftp:` URL, configured from the environment (see [`config`]), with
/// up to `connections` SSH connections while open.
pub fn from_url(
    url: &str,
    fsync: crate::backends::durability::FsyncMode,
    connections: usize,
) -> Result<Arc<dyn Backend>> {
    let mut options = SftpOptions::from_env()?;
    options.fsync = fsync.durable();
    options.connections = connections;
    Ok(Arc::new(Sftp::with_options(url, options)?))
}

/// Ok when `n` is a valid number of connections per store.
pub fn check_connections(n: usize) -> Result<()> {
    if (1..=MAX_CONNECTIONS).contains(&n) {
        Ok(())
    } else {
        Err(Error::invalid(format!("sftp: connections must be between 1 and {MAX_CONNECTIONS}, not {n}")))
    }
}

/// A store in a directory on an SFTP server.
#[derive(Clone)]
pub struct Sftp {
    inner: Arc<Inner>,
}

struct Inner {
    url: SftpUrl,
    options: SftpOptions,
    opened: super::open_state::OpenState,
    /// The connections while open.
    pool: Pool,
    /// Held (shared) while a connection is put in place, (exclusively) by open and close:
    /// no connection is put in place once closed.
    lifecycle: tokio::sync::RwLock<()>,
    next_id: AtomicU64,
    /// Temp files of stores cut off by a lost connection, removed after the reconnect.
    stale_temps: Mutex<Vec<String>>,
    /// Cleared when the server's check-file extension did not give a usable digest.
    server_hash: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The last path component of a name.
fn leaf(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The directory part of a name (`""` for a top-level name).
fn dir_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(d, _)| d)
}

/// Map an sftp error about `name` to a store error. Never includes server paths.
fn sftp_error(op: &str, name: &str, e: SftpError) -> Error {
    if is_lost(&e) {
        let why = match &e {
            SftpError::Timeout => "the server did not answer in time".to_string(),
            SftpError::UnexpectedBehavior(m)
                if ["sender dropped", "session closed", "SendError", "RecvError"].iter().any(|s| m.contains(s)) =>
            {
                "the connection was closed".to_string()
            }
            other => other.to_string(),
        };
        return lost(format!("sftp: {op} {}: connection lost: {why}", shown(name)));
    }
    match e {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => Error::not_found(name),
            StatusCode::PermissionDenied => Error::new(
                ErrorKind::PermissionDenied,
                format!("sftp: {op} {}: permission denied by the server", shown(name)),
            ),
            code => {
                // Server messages are usually strerror texts; one with a path is left out.
                let detail = if s.error_message.contains('/') || s.error_message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", s.error_message.chars().take(200).collect::<String>())
                };
                Error::backend(format!("sftp: {op} {} failed ({code}){detail}", shown(name)))
            }
        },
        other => Error::backend(format!("sftp: {op} {} failed: {other}", shown(name))),
    }
}

fn item_info(name: &str, attrs: &FileAttributes) -> ItemInfo {
    ItemInfo {
        name: name.to_string(),
        exists: true,
        size: attrs.size.unwrap_or(0),
        directory: attrs.is_dir(),
        atime: attrs.atime.map_or(0.0, f64::from),
        mtime: attrs.mtime.map_or(0.0, f64::from),
    }
}

fn temp_leaf() -> String {
    let mut rng = rand::thread_rng();
    let letters: String = (0..12).map(|_| char::from(b'a' + rng.gen_range(0..26u8))).collect();
    format!("{letters}{}", crate::names::TMP_SUFFIX)
}

impl Sftp {
    /// A backend for `url` with `options` (nothing is contacted until used); a number
    /// of connections outside 1..=64 is taken as the nearest of those.
    pub fn new(url: SftpUrl, options: SftpOptions) -> Self {
        Sftp {
            inner: Arc::new(Inner {
                url,
                pool: Pool::new(options.connections),
                options,
                opened: Default::default(),
                lifecycle: tokio::sync::RwLock::new(()),
                next_id: AtomicU64::new(1),
                stale_temps: Mutex::new(Vec::new()),
                server_hash: AtomicBool::new(true),
            }),
        }
    }

    /// Parse `url` and use `options` instead of the environment's.
    pub fn with_options(url: &str, options: SftpOptions) -> Result<Self> {
        check_connections(options.connections)?;
        Ok(Sftp::new(url::parse(url)?, options))
    }

    /// SSH connections up now (at most the configured `connections`).
    pub fn connected(&self) -> usize {
        self.inner.pool.connected()
    }

    /// The parsed URL.
    pub fn url(&self) -> &SftpUrl {
        &self.inner.url
    }

    fn must_be_open(&self) -> Result<()> {
        self.inner.opened.must_be_open()
    }

    fn must_not_be_open(&self) -> Result<()> {
        self.inner.opened.must_not_be_open()
    }

    /// A new connection. With `resolve`, its base is the store directory's real path
    /// (what Python's `chdir` does); else the path as in the URL.
    async fn connect(&self, resolve: bool) -> Result<Conn> {
        let (url, options) = (self.inner.url.clone(), self.inner.options.clone());
        let prepared = tokio::task::spawn_blocking(move || conn::prepare(config::resolve(&url, &options), &options))
            .await
            .map_err(|e| Error::backend(format!("sftp: preparing the connection failed: {e}")))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::SeqCst);
        let mut c = Conn::connect(prepared, &self.inner.options, id).await?;
        if resolve {
            match c.realpath(&c.base).await {
                Ok(real) => c.base = real,
                Err(e) => {
                    c.disconnect().await;
                    return Err(if is_no_such_file(&e) {
                        Error::new(ErrorKind::BackendDoesNotExist, "sftp storage base path does not exist")
                    } else {
                        sftp_error("resolving", "", e)
                    });
                }
            }
        }
        Ok(c)
    }

    /// Replace the connection `failed` of slot `index` (None: it has none) with a new
    /// one, unless another operation on that slot already did.
    async fn reconnect(&self, index: usize, failed: Option<u64>) -> Result<Arc<Conn>> {
        let slot = self.inner.pool.slot(index);
        let _one_at_a_time = slot.reconnecting.lock().await;
        let current = slot.current();
        if let Some(c) = &current {
            if Some(c.id) != failed && !c.is_closed() {
                return Ok(c.clone());
            }
        }
        if index > 0 && !slot.connected_once() && index >= self.inner.pool.usable() {
            // Capped while this one waited: the server gives no more connections.
            return Err(lost("sftp: no further connection"));
        }
        if let Some(old) = slot.replace(None) {
            tokio::spawn(async move { old.disconnect().await });
        }
        self.must_be_open()?;
        let c = Arc::new(self.connect(true).await?);
        {
            let _not_closing = self.inner.lifecycle.read().await;
            if let Err(e) = self.must_be_open() {
                drop(_not_closing);
                c.disconnect().await;
                return Err(e);
            }
            slot.replace(Some(c.clone()));
        }
        if failed.is_some() || index > 0 {
            tracing::debug!("sftp: connection {} of {} up", index + 1, self.inner.pool.size());
        }
        self.remove_stale_temps(&c);
        Ok(c)
    }

    /// Remove the temp files of stores cut off by a lost connection, over `c` (one that
    /// works), in the background. Called after each reconnect and after each operation
    /// that succeeded, so a cut-off store's temp file goes soon, whichever connection
    /// comes back first.
    fn remove_stale_temps(&self, c: &Arc<Conn>) {
        let stale: Vec<String> = {
            let mut list = lock(&self.inner.stale_temps);
            if list.is_empty() {
                return;
            }
            std::mem::take(&mut *list)
        };
        let cleaner = c.clone();
        tokio::spawn(async move {
            for tmp in stale {
                let _ = cleaner.sftp.remove(tmp).await;
            }
        });
    }

    /// Run `op` on the connection; when the connection turns out lost, reconnect and
    /// run it again (Python's `with_reconnect`), under the common retry policy: up to
    /// `reconnect_tries` retries, `reconnect_wait` apart, retrying lost connections only.
    /// With `gone_is_done`, ObjectNotFound on a retry means an earlier attempt already
    /// did the work.
    async fn run<T, F, Fut>(&self, what: &str, gone_is_done: Option<T>, op: F) -> Result<T>
    where
        F: Fn(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.must_be_open()?;
        let mut gone_is_done = gone_is_done;
        let options = &self.inner.options;
        let label = format!("sftp: {what}");
        let mut tries = Retry::Every { wait: options.reconnect_wait, retries: options.reconnect_tries }.start(&label);
        // The connection to run on (see `pool`), for this operation's every attempt.
        let mut lease = self.inner.pool.pick();
        // A connection known to be gone (closed, or an earlier reconnect failed) is
        // replaced right away: that is this operation's first attempt, not a retry; so
        // is a connection not opened yet.
        let current = lease.slot().current();
        let mut failed = current.as_ref().map(|c| c.id);
        let mut usable = current.filter(|c| !c.is_closed());
        loop {
            let retry = tries.attempt() > 0;
            let conn = match usable.take() {
                Some(c) => Ok(c),
                None => self.reconnect(lease.index(), failed).await,
            };
            // A further connection the server would not give: do with those it gave.
            if let Err(e) = &conn {
                // Only while others are up (with the server gone, all fail alike), or
                // when the pool was capped meanwhile.
                let pool = &self.inner.pool;
                let further = lease.index() > 0
                    && !lease.slot().connected_once()
                    && (pool.connected() > 0 || lease.index() >= pool.usable());
                if further && e.kind != ErrorKind::BackendMustBeOpen {
                    if self.inner.pool.cap(lease.index()) {
                        tracing::warn!(
                            "sftp: {}: no further connection ({}); going on with {} of {}",
                            self.target(),
                            e.message.strip_prefix("sftp: ").unwrap_or(&e.message),
                            self.inner.pool.usable(),
                            self.inner.pool.size()
                        );
                    }
                    lease = self.inner.pool.pick();
                    let current = lease.slot().current();
                    failed = current.as_ref().map(|c| c.id);
                    usable = current.filter(|c| !c.is_closed());
                    continue;
                }
            }
            let result = match conn {
                Ok(c) => {
                    failed = Some(c.id);
                    let done = op(c.clone()).await;
                    if done.is_ok() {
                        self.remove_stale_temps(&c);
                    }
                    done
                }
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(v) => {
                    if retry {
                        tracing::info!("sftp: {what}: done after reconnecting (attempt {})", tries.attempt());
                    }
                    return Ok(v);
                }
                Err(e) if retry && e.kind == ErrorKind::ObjectNotFound && gone_is_done.is_some() => {
                    tracing::info!("sftp: {what}: already done before the connection was lost");
                    return gone_is_done.take().ok_or(e);
                }
                Err(e) => e,
            };
            let last = error.clone();
            match tries.after(Failure::if_lost(error)).await {
                Err(Failure { error, retriable: true }) => return Err(self.gave_up(what, &error)),
                Err(failure) => return Err(failure.error),
                // Closed meanwhile: reconnecting would open a closed backend again.
                Ok(()) if !self.inner.opened.is_open() => return Err(self.gave_up(what, &last)),
                Ok(()) => {}
            }
        }
    }

    /// `host[:port]` for messages.
    fn target(&self) -> String {
        let url = &self.inner.url;
        format!("{}{}", url.host, url.port.map(|p| format!(":{p}")).unwrap_or_default())
    }

    /// The error of an operation whose connection stayed lost through all retries.
    fn gave_up(&self, what: &str, last: &Error) -> Error {
        let target = self.target();
        lost(format!(
            "sftp: {what} failed: the connection to {target} was lost and could not be re-established \
             (reconnect attempts: {}; last error: {})",
            self.inner.options.reconnect_tries,
            last.message.strip_prefix("sftp: ").unwrap_or(&last.message)
        ))
    }

    async fn store_once(&self, c: &Conn, name: &str, value: &[u8]) -> Result<()> {
        let dir = dir_of(name);
        let tmp = conn::join(&c.path(dir), &temp_leaf());
        let fsync = self.inner.options.fsync;
        let first = c.write_file(&tmp, value, fsync).await;
        let written = match first {
            Err(e) if is_no_such_file(&e) => match c.mkdir_p(&c.path(dir)).await {
                Ok(()) => c.write_file(&tmp, value, fsync).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        let result = match written {
            Ok(()) => c.rename(&tmp, &c.path(name)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if is_lost(&e) => {
                lock(&self.inner.stale_temps).push(tmp);
                Err(sftp_error("store", name, e))
            }
            Err(e) => {
                let _ = c.sftp.remove(tmp).await;
                Err(sftp_error("store", name, e))
            }
        }
    }

    async fn load_once(&self, c: &Conn, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        let handle = c.open_read(&c.path(name)).await.map_err(|e| sftp_error("load", name, e))?;
        let result = async {
            // A range from the start needs no size query (one round trip less); the
            // requested size is then only a hint for the buffer, which the file may not fill.
            let (start, want, known) = if offset >= 0 && size.is_some() {
                (offset as u64, size, false)
            } else {
                let len = c.size(&handle).await?;
                let start = if offset >= 0 { offset as u64 } else { len.saturating_sub(offset.unsigned_abs()) };
                let rest = len.saturating_sub(start);
                (start, Some(size.map_or(rest, |s| s.min(rest))), true)
            };
            let cap = if known { 1 << 30 } else { 8 << 20 };
            let mut buf = Vec::with_capacity(usize::try_from(want.unwrap_or(0)).unwrap_or(0).min(cap));
            if want != Some(0) {
                c.read_into(&handle, start, want, |d| buf.extend_from_slice(d)).await?;
            }
            Ok::<_, SftpError>(buf)
        }
        .await;
        c.close_read(handle);
        result.map(Bytes::from).map_err(|e| sftp_error("load", name, e))
    }

    async fn hash_once(&self, c: &Conn, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        let path = c.path(name);
        if self.inner.server_hash.load(Ordering::Relaxed) && c.check_file.is_some() {
            match c.server_hash(&path, algorithm).await {
                Ok(Some(digest)) => return Ok(digest),
                Ok(None) => {}
                Err(e) if is_no_such_file(&e) || is_lost(&e) => return Err(sftp_error("hash", name, e)),
                // Not offered after all: hash locally from now on (as Python does).
                Err(_) => self.inner.server_hash.store(false, Ordering::Relaxed),
            }
        }
        let handle = c.open_read(&path).await.map_err(|e| sftp_error("hash", name, e))?;
        let mut hasher = algorithm.hasher();
        let result = c.read_into(&handle, 0, None, |d| hasher.update(d)).await;
        c.close_read(handle);
        result.map_err(|e| sftp_error("hash", name, e))?;
        Ok(hasher.finalize_hex())
    }

    async fn move_once(&self, c: &Conn, current: &str, new: &str) -> Result<()> {
        let (from, to) = (c.path(current), c.path(new));
        match c.rename(&from, &to).await {
            Ok(()) => Ok(()),
            Err(e) if is_no_such_file(&e) => {
                // Maybe the target's directory is missing (not precreated, or lost).
                c.mkdir_p(&c.path(dir_of(new))).await.map_err(|e| sftp_error("mkdir for", new, e))?;
                c.rename(&from, &to).await.map_err(|e| sftp_error("move", current, e))
            }
            Err(e) => Err(sftp_error("move", current, e)),
        }
    }

    async fn list_once(&self, c: &Conn, name: &str) -> Result<Vec<ItemInfo>> {
        let entries = c.read_dir(&c.path(name)).await.map_err(|e| sftp_error("list", name, e))?;
        let mut out: Vec<ItemInfo> = entries
            .into_iter()
            // Not ours, an upload in progress or hidden: skip, as Python does.
            .filter(|(leaf, _)| !leaf.contains('/') && validate_item_name(leaf).is_ok())
            .map(|(leaf, attrs)| item_info(&leaf, &attrs))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Remove everything below `path`, then `path` itself (unless it is the store root,
    /// which may belong to someone else: then failing to remove it is fine).
    async fn remove_tree(&self, c: &Conn, path: String, is_root: bool) -> Result<()> {
        let entries = c.read_dir(&path).await.map_err(|e| sftp_error("destroy: listing", "", e))?;
        let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(_, a)| a.is_dir());
        stream::iter(files.into_iter().map(|(leaf, _)| {
            let p = conn::join(&path, &leaf);
            async move { c.sftp.remove(p).await.map(|_| ()).map_err(|e| sftp_error("destroy: removing", &leaf, e)) }
        }))
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
        for (leaf, _) in dirs {
            Box::pin(self.remove_tree(c, conn::join(&path, &leaf), false)).await?;
        }
        match c.sftp.rmdir(path.as_str()).await {
            Ok(_) => Ok(()),
            Err(_) if is_root => Ok(()),
            Err(e) => Err(sftp_error("destroy: removing a directory", "", e)),
        }
    }
}

#[async_trait]
impl Backend for Sftp {
    async fn create(&self) -> Result<()> {
        self.must_not_be_open()?;
        let c = self.connect(false).await?;
        let result = async {
            // An existing empty directory is fine, missing parents are created (hosters
            // may only offer access through borgstore).
            c.mkdir_p(&c.base).await.map_err(|e| sftp_error("creating", "", e))?;
            let entries = c.read_dir(&c.base).await.map_err(|e| sftp_error("creating", "", e))?;
            if !entries.is_empty() {
                return Err(Error::new(ErrorKind::BackendAlreadyExists, "sftp storage base path is not empty"));
            }
            Ok(())
        }
        .await;
        c.disconnect().await;
        result
    }

    async fn destroy(&self) -> Result<()> {
        self.must_not_be_open()?;
        let c = self.connect(false).await?;
        let result = async {
            match c.stat(&c.base).await {
                Ok(_) => {}
                Err(e) if is_no_such_file(&e) => {
                    return Err(Error::new(ErrorKind::BackendDoesNotExist, "sftp storage base path does not exist"))
                }
                Err(e) => return Err(sftp_error("destroy", "", e)),
            }
            self.remove_tree(&c, c.base.clone(), true).await
        }
        .await;
        c.disconnect().await;
        result
    }

    async fn open(&self) -> Result<()> {
        self.must_not_be_open()?;
        let mut c = self.connect(false).await?;
        let checked = async {
            match c.stat(&c.base).await {
                Ok(a) if a.is_dir() => {}
                Ok(_) => {
                    return Err(Error::new(ErrorKind::BackendDoesNotExist, "sftp storage base path is not a directory"))
                }
                Err(e) if is_no_such_file(&e) => {
                    return Err(Error::new(ErrorKind::BackendDoesNotExist, "sftp storage base path does not exist"))
                }
                Err(e) => return Err(sftp_error("open", "", e)),
            }
            c.realpath(&c.base).await.map_err(|e| sftp_error("open", "", e))
        }
        .await;
        match checked {
            Ok(real) => c.base = real,
            Err(e) => {
                c.disconnect().await;
                return Err(e);
            }
        }
        let _guard = self.inner.lifecycle.write().await;
        if let Err(e) = self.inner.opened.open() {
            c.disconnect().await;
            return Err(e);
        }
        // The first connection; the others open when concurrent operations need them.
        self.inner.pool.slot(0).replace(Some(Arc::new(c)));
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        let conns = {
            let _guard = self.inner.lifecycle.write().await;
            self.inner.opened.close()?;
            self.inner.pool.take_all()
        };
        futures::future::join_all(conns.iter().map(|c| c.disconnect())).await;
        Ok(())
    }

    async fn mkdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.run(
            "mkdir",
            None,
            |c| async move { c.mkdir_p(&c.path(name)).await.map_err(|e| sftp_error("mkdir", name, e)) },
        )
        .await
    }

    async fn rmdir(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.run("rmdir", None, |c| async move {
            c.sftp.rmdir(c.path(name)).await.map(|_| ()).map_err(|e| sftp_error("rmdir", name, e))
        })
        .await
    }

    async fn info(&self, name: &str) -> Result<ItemInfo> {
        self.must_be_open()?;
        validate_name(name)?;
        self.run("info", None, |c| async move {
            match c.stat(&c.path(name)).await {
                Ok(attrs) => Ok(item_info(leaf(name), &attrs)),
                Err(e) if is_no_such_file(&e) => Ok(ItemInfo::missing(leaf(name))),
                Err(e) => Err(sftp_error("info", name, e)),
            }
        })
        .await
    }

    async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.run("load", None, |c| async move { self.load_once(&c, name, offset, size).await }).await
    }

    async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        let value = &value;
        self.run("store", None, |c| async move { self.store_once(&c, name, value).await }).await
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.run("delete", Some(()), |c| async move {
            c.sftp.remove(c.path(name)).await.map(|_| ()).map_err(|e| sftp_error("delete", name, e))
        })
        .await
    }

    async fn move_(&self, current: &str, new: &str) -> Result<()> {
        self.must_be_open()?;
        validate_item_name(current)?;
        validate_item_name(new)?;
        self.run("move", Some(()), |c| async move { self.move_once(&c, current, new).await }).await
    }

    async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        self.must_be_open()?;
        validate_name(name)?;
        self.run("list", None, |c| async move { self.list_once(&c, name).await }).await
    }

    async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        self.must_be_open()?;
        validate_item_name(name)?;
        self.run("hash", None, |c| async move { self.hash_once(&c, name, algorithm).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(leaf("a/b/c"), "c");
        assert_eq!(dir_of("a/b/c"), "a/b");
        assert_eq!(dir_of("c"), "");
        let t = temp_leaf();
        assert!(t.ends_with(".tmp") && t.len() == 16 && validate_item_name(&t).is_err());
    }

    #[tokio::test]
    async fn closed_backend_and_bad_urls() {
        let be = Sftp::with_options("sftp://nobody@127.0.0.1:1/x", SftpOptions::isolated()).unwrap();
        assert_eq!(be.load("a", 0, None).await.unwrap_err().kind, ErrorKind::BackendMustBeOpen);
        assert_eq!(be.close().await.unwrap_err().kind, ErrorKind::BackendMustBeOpen);
        // Nothing listens on port 1: a connection error, quickly, not a hang.
        let e = be.open().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConnectionLost, "{e}");
        assert!(Sftp::with_options("sftp://h", SftpOptions::isolated()).is_err());
        assert_eq!(
            from_url("sftp:/bad", Default::default(), 4).err().map(|e| e.kind),
            Some(ErrorKind::InvalidArgument)
        );
        let e = from_url("sftp://h/x", Default::default(), 0).err().expect("0 connections");
        assert!(e.message.contains("connections must be between 1 and 64"), "{e}");
    }

    #[test]
    fn errors_never_show_server_paths() {
        use russh_sftp::protocol::Status;
        let st = |code, msg: &str| {
            SftpError::Status(Status {
                id: 1,
                status_code: code,
                error_message: msg.into(),
                language_tag: String::new(),
            })
        };
        let e = sftp_error("load", "data/x", st(StatusCode::Failure, "cannot open /srv/secret/data/x"));
        assert_eq!(e.kind, ErrorKind::Backend);
        assert!(!e.message.contains("/srv"), "{e}");
        let e = sftp_error("load", "data/x", st(StatusCode::Failure, "Disk full"));
        assert!(e.message.contains("Disk full"), "{e}");
        assert_eq!(sftp_error("load", "x", st(StatusCode::NoSuchFile, "")).kind, ErrorKind::ObjectNotFound);
        assert_eq!(sftp_error("load", "x", st(StatusCode::PermissionDenied, "")).kind, ErrorKind::PermissionDenied);
        assert_eq!(sftp_error("load", "x", SftpError::Timeout).kind, ErrorKind::ConnectionLost);
    }
}
