//! The async [`Client`]: the store API of one store served by `borgstored`.

use crate::connection::{Connection, Progress};
pub use borgstore_ipc::protocol::CacheNamespace;
use borgstore_ipc::protocol::{MoveAction, Op, PrincipalCounters, PurgeReport, Reply, Request, StoreSummary};
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source, Stats};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Mutex};

/// Where and what to connect to.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The store to use, by its name in the daemon's configuration.
    pub store: String,
    /// Shown in the daemon's log.
    pub client_name: String,
    /// A cache to give the store when connecting (the daemon's own user only).
    pub cache: Option<CacheOptions>,
}

/// The cache a client asks the daemon to keep for its store: a cache backend URL
/// (usually `file://`) and a policy per namespace. The cache is the store's, so every
/// client of the store shares it; it is set again after a reconnect.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheOptions {
    /// The cache backend's URL, e.g. `file:///var/cache/borgstore/default`.
    pub url: String,
    /// The policy of each cached namespace (see [`CacheOptions::namespace`]); an empty
    /// list gives the store no cache.
    pub namespaces: Vec<CacheNamespace>,
}

impl CacheOptions {
    /// A cache at `url` with no namespaces yet (add them with [`CacheOptions::namespace`]).
    pub fn new(url: impl Into<String>) -> Self {
        CacheOptions { url: url.into(), namespaces: Vec::new() }
    }

    /// Cache `namespace` (e.g. `data/`) with `mode` (`mirror` or `writethrough`),
    /// evicting items unused for `max_age` and keeping at most `size` bytes.
    pub fn namespace(
        mut self,
        namespace: impl Into<String>,
        mode: impl Into<String>,
        max_age: Option<std::time::Duration>,
        size: Option<u64>,
    ) -> Self {
        self.namespaces.push(CacheNamespace {
            namespace: namespace.into(),
            mode: mode.into(),
            max_age_ms: max_age.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            size,
        });
        self
    }
}

impl ClientOptions {
    /// The default socket (`$BORGSTORE_SOCKET`, else the daemon's default) and `store`.
    pub fn new(store: impl Into<String>) -> Self {
        ClientOptions {
            socket: default_socket(),
            store: store.into(),
            client_name: format!("borgstore-client {}", env!("CARGO_PKG_VERSION")),
            cache: None,
        }
    }

    /// Connect to the daemon at `socket` instead of the default one.
    pub fn socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.socket = socket.into();
        self
    }

    /// Give the store this cache when connecting.
    pub fn cache(mut self, cache: CacheOptions) -> Self {
        self.cache = Some(cache);
        self
    }
}

/// `$BORGSTORE_SOCKET`, else where `borgstored` listens by default.
pub fn default_socket() -> PathBuf {
    if let Some(s) = std::env::var_os(borgstore_ipc::paths::SOCKET_ENV).filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    borgstore_ipc::paths::default_socket_for(nix::unistd::getuid().as_raw(), runtime.as_deref())
}

/// A client of one store. Cheap to clone; clones share one connection, and calls made
/// concurrently are pipelined on it.
///
/// When the daemon restarts, the next call connects again. A call that was in flight
/// when the connection broke fails with `ConnectionLost` (it may or may not have taken
/// effect); a call that could not be sent at all is sent again on the new connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    options: ClientOptions,
    conn: Mutex<Option<Arc<Connection>>>,
    next_id: AtomicU64,
}

impl Client {
    /// Connect now (so a missing daemon is reported here, not at the first call).
    pub async fn connect(options: ClientOptions) -> Result<Client> {
        let client = Client { inner: Arc::new(Inner { options, conn: Mutex::new(None), next_id: AtomicU64::new(1) }) };
        client.connection().await?;
        Ok(client)
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    async fn connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let c = Arc::new(Connection::connect(&self.inner.options.socket, &self.inner.options.client_name).await?);
        if let Some(cache) = &self.inner.options.cache {
            let op = Op::ConfigureCache { url: cache.url.clone(), namespaces: cache.namespaces.clone() };
            match c.call(self.request(op), &|_, _| {}).await? {
                Some(Reply::Ok) => {}
                Some(Reply::Err(e)) => return Err(e),
                Some(other) => return Err(unexpected(other)),
                None => return Err(Error::new(ErrorKind::ConnectionLost, "the daemon closed the connection")),
            }
        }
        *slot = Some(c.clone());
        Ok(c)
    }

    fn request(&self, op: Op) -> Request {
        Request { id: self.inner.next_id.fetch_add(1, Ordering::Relaxed), store: self.inner.options.store.clone(), op }
    }

    async fn call_with(&self, op: Op, sent: &(dyn Fn(u64, u64) + Sync)) -> Result<Reply> {
        for _ in 0..2 {
            let conn = self.connection().await?;
            if let Some(reply) = conn.call(self.request(op.clone()), sent).await? {
                return Ok(reply);
            }
        }
        Err(Error::new(ErrorKind::ConnectionLost, "the daemon closed every connection attempt"))
    }

    async fn call(&self, op: Op) -> Result<Reply> {
        self.call_with(op, &|_, _| {}).await
    }

    /// The daemon's name and version, as it introduced itself.
    pub async fn server_name(&self) -> Result<String> {
        Ok(self.connection().await?.server_name.clone())
    }

    /// Progress of the reply frame currently being received on this client's connection,
    /// as (bytes received, frame size), for progress bars. It starts at (0, 0) and only
    /// frames over 1 MiB update it; the frame is whichever reply is arriving (clones and
    /// pipelined calls share the connection), and it covers the reply's encoding too, so
    /// the size is a little more than the value's. After a reconnect, a receiver taken
    /// before it sees no more updates: ask again.
    pub async fn receive_progress(&self) -> Result<watch::Receiver<Progress>> {
        Ok(self.connection().await?.progress())
    }

    async fn ok(&self, op: Op) -> Result<()> {
        match self.call(op).await? {
            Reply::Ok | Reply::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn text(&self, op: Op) -> Result<String> {
        match self.call(op).await? {
            Reply::Text(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    async fn data(&self, op: Op) -> Result<Vec<u8>> {
        match self.call(op).await? {
            Reply::Data(d) => Ok(d),
            other => Err(unexpected(other)),
        }
    }

    /// Create the store. Creating over an existing store that is still empty is fine; over
    /// one with items in it, it fails with `BackendAlreadyExists`.
    pub async fn create(&self) -> Result<()> {
        self.ok(Op::Create).await
    }
    /// Delete the store and everything in it.
    pub async fn destroy(&self) -> Result<()> {
        self.ok(Op::Destroy).await
    }
    /// Check that the store exists (the daemon keeps it open for everyone).
    pub async fn open(&self) -> Result<()> {
        self.ok(Op::Open).await
    }
    /// Counterpart of [`Client::open`]; the store stays open for other clients.
    pub async fn close(&self) -> Result<()> {
        self.ok(Op::Close).await
    }
    /// Check that the daemon answers (no store needed).
    pub async fn ping(&self) -> Result<()> {
        self.ok(Op::Ping).await
    }

    /// An item's metadata (its soft-deleted version with `deleted`). A missing item is not
    /// an error: it comes back with `exists: false`.
    pub async fn info(&self, name: &str, deleted: bool) -> Result<ItemInfo> {
        match self.call(Op::Info { name: name.into(), deleted }).await? {
            Reply::Info(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// `size` bytes (None: to the end) from `offset` (negative: from the end) of an item
    /// (its soft-deleted version with `deleted`); `ObjectNotFound` if there is none. The
    /// whole reply is held in memory; [`Client::receive_progress`] follows its arrival.
    pub async fn load(&self, name: &str, offset: i64, size: Option<u64>, deleted: bool) -> Result<Vec<u8>> {
        self.data(Op::Load { name: name.into(), offset, size, deleted }).await
    }

    /// Store `value` under `name`, atomically replacing an existing value. Fails with
    /// `QuotaExceeded` when the store's quota does not allow it, `InvalidArgument` for a
    /// bad name or a value too large for one IPC frame.
    pub async fn store(&self, name: &str, value: Vec<u8>) -> Result<()> {
        self.store_with_progress(name, value, &|_, _| {}).await
    }

    /// Store, calling `sent(bytes_sent, total)` while the request is written.
    pub async fn store_with_progress(
        &self,
        name: &str,
        value: Vec<u8>,
        sent: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<()> {
        match self.call_with(Op::Store { name: name.into(), value: value.into() }, sent).await? {
            Reply::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Delete an item for good (its soft-deleted version with `deleted`); `ObjectNotFound`
    /// if there is none. For a soft delete use [`Client::move_`] with [`MoveAction::Delete`].
    pub async fn delete(&self, name: &str, deleted: bool) -> Result<()> {
        self.ok(Op::Delete { name: name.into(), deleted }).await
    }

    /// Soft delete, undelete, change level or rename (see [`MoveAction`]).
    pub async fn move_(&self, name: &str, action: MoveAction) -> Result<()> {
        self.ok(Op::Move { name: name.into(), action }).await
    }

    /// All items of namespace `name`, sorted, streamed in chunks.
    pub async fn list(&self, name: &str, deleted: bool) -> Result<ListStream> {
        for _ in 0..2 {
            let conn = self.connection().await?;
            if let Some(rx) = conn.call_stream(self.request(Op::List { name: name.into(), deleted })).await? {
                return Ok(ListStream { rx, buffer: Vec::new().into_iter(), done: false });
            }
        }
        Err(Error::new(ErrorKind::ConnectionLost, "the daemon closed every connection attempt"))
    }

    /// Hex digest of an item's content by `algorithm` (`sha256`, `blake3`, ...);
    /// `InvalidArgument` for an unknown algorithm.
    pub async fn hash(&self, name: &str, algorithm: &str, deleted: bool) -> Result<String> {
        self.text(Op::Hash { name: name.into(), algorithm: algorithm.into(), deleted }).await
    }

    /// New item in `namespace` from ranges of items there; named `target`, or by the
    /// hex digest of `algorithm`. Returns the new item's name (without namespace).
    pub async fn defrag(
        &self,
        sources: Vec<Source>,
        target: Option<String>,
        algorithm: Option<String>,
        namespace: Option<String>,
        deleted: bool,
    ) -> Result<String> {
        self.text(Op::Defrag { sources, target, algorithm, namespace, deleted }).await
    }

    /// The bytes of `sources` (ranges of items in `namespace`), concatenated in order.
    pub async fn gather(&self, sources: Vec<Source>, namespace: Option<String>, deleted: bool) -> Result<Vec<u8>> {
        self.data(Op::Gather { sources, namespace, deleted }).await
    }

    /// The write-behind barrier: returns once every value the daemon acknowledged before
    /// this call is on the store's primary backend (for a store with write-behind
    /// namespaces; at once otherwise). May wait as long as the primary is unreachable.
    pub async fn sync(&self) -> Result<()> {
        self.ok(Op::Sync).await
    }

    /// The store's quota limit and usage in bytes (limit -1: no quota).
    pub async fn quota(&self) -> Result<Quota> {
        match self.call(Op::Quota).await? {
            Reply::Quota(q) => Ok(q),
            other => Err(unexpected(other)),
        }
    }

    /// The store's operation statistics, keyed as in Python borgstore (`load_calls`,
    /// `load_time`, `cache_hits`, ...). They are the store's, summed over all its clients.
    pub async fn stats(&self) -> Result<Stats> {
        match self.call(Op::Stats).await? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Delete for good the items of the store's delete quarantine whose window has passed
    /// (needs `D` at the store's root).
    pub async fn purge(&self) -> Result<PurgeReport> {
        match self.call(Op::Purge).await? {
            Reply::Purged(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Counters per principal: every principal's for the daemon's own user, the
    /// caller's own for anyone else.
    pub async fn principal_stats(&self) -> Result<Vec<PrincipalCounters>> {
        match self.call(Op::PrincipalStats).await? {
            Reply::Principals(p) => Ok(p),
            other => Err(unexpected(other)),
        }
    }

    /// Drop cached copies of an item, a namespace, or (`""`) everything.
    pub async fn cache_invalidate(&self, name: &str, deleted: bool) -> Result<()> {
        self.ok(Op::CacheInvalidate { name: name.into(), deleted }).await
    }

    /// The stores the daemon lets this client use.
    pub async fn stores(&self) -> Result<Vec<StoreSummary>> {
        match self.call(Op::Stores).await? {
            Reply::Stores(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: Reply) -> Error {
    let what = format!("{reply:?}");
    Error::backend(format!("unexpected reply from the daemon: {}", what.chars().take(80).collect::<String>()))
}

/// A listing in progress.
pub struct ListStream {
    rx: mpsc::Receiver<Result<Reply>>,
    buffer: std::vec::IntoIter<ItemInfo>,
    done: bool,
}

impl ListStream {
    /// The next item, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<ItemInfo>> {
        loop {
            if let Some(item) = self.buffer.next() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            match self.rx.recv().await {
                Some(Ok(Reply::ListChunk(items))) => self.buffer = items.into_iter(),
                Some(Ok(Reply::ListEnd)) => self.done = true,
                Some(Ok(other)) => return Err(unexpected(other)),
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                None => {
                    self.done = true;
                    return Err(Error::new(ErrorKind::ConnectionLost, "the listing ended without its end marker"));
                }
            }
        }
    }

    /// Everything that is left.
    pub async fn collect(mut self) -> Result<Vec<ItemInfo>> {
        let mut out = Vec::new();
        while let Some(i) = self.next().await? {
            out.push(i);
        }
        Ok(out)
    }
}
