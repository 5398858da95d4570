//! IPC protocol v1 messages (DESIGN.md section 5).
//!
//! A connection starts with [`Hello`] from the client and a [`HandshakeReply`] from the
//! daemon. Then the client sends [`Request`]s, each with its own `id` and the name of
//! the store it addresses, and may send many before the first answer arrives
//! (pipelining). The daemon answers each with [`Response`]s carrying the same id, in
//! completion order. It keeps a bounded number of a connection's requests in flight
//! (1024 in borgstored) and stops reading while that many are unanswered, so a client
//! that pipelines must also read its replies. A `list` is answered by zero or more [`Reply::ListChunk`] and one
//! [`Reply::ListEnd`] (or a [`Reply::Err`]), so any listing streams in bounded memory.
//!
//! Every message travels as one frame, see [`crate::codec`].

use crate::error::Error;
use crate::types::{ItemInfo, Quota, Source, Stats};
use serde::{Deserialize, Serialize};

/// First bytes of every [`Hello`]: tells a borgstore client from anything else.
pub const MAGIC: [u8; 8] = *b"BORGSTR1";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Default limit of one frame's body: 256 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 256 * 1024 * 1024;
/// Items per [`Reply::ListChunk`].
pub const LIST_CHUNK: usize = 1000;

/// Client -> daemon, once, first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`]; the daemon refuses anything else.
    pub magic: [u8; 8],
    /// The protocol version the client speaks; the daemon refuses one it does not.
    pub version: u32,
    /// Free text for logs, e.g. `borgstore-cli 0.1.0`.
    pub client_name: String,
}

impl Hello {
    /// The hello of this crate's protocol version, naming the client as `client_name`.
    pub fn new(client_name: impl Into<String>) -> Self {
        Hello { magic: MAGIC, version: PROTOCOL_VERSION, client_name: client_name.into() }
    }
}

/// What the daemon tells an accepted client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version of this connection: the one the client asked for.
    pub version: u32,
    /// Free text naming the daemon, e.g. `borgstored 0.1.0`; clients show it, nothing more.
    pub server_name: String,
    /// Largest frame body the daemon accepts and sends, in bytes; the client encodes and
    /// reads with this limit from then on.
    pub max_frame: u32,
}

/// Daemon -> client, once, answering [`Hello`]. A refused client (bad magic, unknown
/// version) gets the reason and the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeReply {
    /// The client may send requests now.
    Accepted(Welcome),
    /// Why the client is turned away: bad magic or version ([`InvalidArgument`]), or no
    /// store granted to its uid ([`PermissionDenied`]).
    ///
    /// [`InvalidArgument`]: crate::error::ErrorKind::InvalidArgument
    /// [`PermissionDenied`]: crate::error::ErrorKind::PermissionDenied
    Refused(Error),
}

/// How `move` changes an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveAction {
    /// Soft delete: the item becomes `NAME.del` and is only seen with `deleted`.
    Delete,
    /// Reverse a soft delete.
    Undelete,
    /// Move the item (the soft-deleted one with `deleted`) to the namespace's last level.
    ChangeLevel {
        /// Move the soft-deleted item instead of the live one.
        deleted: bool,
    },
    /// Rename to `new_name`, replacing it; `deleted` addresses soft-deleted items.
    Rename {
        /// The full new name (`namespace/key`).
        new_name: String,
        /// Rename the soft-deleted item, to a soft-deleted `new_name`.
        deleted: bool,
    },
}

/// One operation of the store API. Names are `namespace/key`; `deleted: true` addresses
/// the soft-deleted item of that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create the store (fails if it exists).
    Create,
    /// Remove the store and everything in it.
    Destroy,
    /// Check that the store exists (the daemon keeps served stores open).
    Open,
    /// Counterpart of `Open`; the store stays open for other clients.
    Close,
    /// Metadata of an item; a missing item gives `exists: false`.
    Info {
        /// The item, `namespace/key`.
        name: String,
        /// Ask about the soft-deleted item.
        deleted: bool,
    },
    /// `size` bytes (None: to the end) from `offset` (negative: counted from the end).
    Load {
        /// The item, `namespace/key`.
        name: String,
        /// First byte; negative counts back from the end of the item.
        offset: i64,
        /// Bytes wanted; None reads to the end. A shorter item gives fewer bytes.
        size: Option<u64>,
        /// Load the soft-deleted item.
        deleted: bool,
    },
    /// Store a value atomically, replacing an existing one.
    Store {
        /// The item, `namespace/key`.
        name: String,
        /// The whole new content (on the wire as bytes, like `Vec<u8>` with
        /// `serde_bytes`; `Bytes` so that the daemon can take a large value as a slice of
        /// its frame, see [`crate::codec::store_request_of`]).
        value: bytes::Bytes,
    },
    /// Delete an item for good.
    Delete {
        /// The item, `namespace/key`.
        name: String,
        /// Delete the soft-deleted item.
        deleted: bool,
    },
    /// Soft delete, undelete, change nesting level or rename an item.
    Move {
        /// The item, `namespace/key`.
        name: String,
        /// What to do with it.
        action: MoveAction,
    },
    /// All items of a namespace, recursively, sorted; streamed.
    List {
        /// The namespace, e.g. `data`.
        name: String,
        /// List only the soft-deleted items (names without `.del`) instead of the live ones.
        deleted: bool,
    },
    /// Hex digest of an item's content (`sha256`, `blake3`, ... see DESIGN.md).
    Hash {
        /// The item, `namespace/key`.
        name: String,
        /// Algorithm name, case-insensitive; an unknown one is refused before the store sees it.
        algorithm: String,
        /// Hash the soft-deleted item.
        deleted: bool,
    },
    /// New item from byte ranges of items in `namespace` (source names without it);
    /// named `target`, or the hex digest by `algorithm` when `target` is None.
    Defrag {
        /// The ranges, in order, that make up the new item; the sources stay in place.
        sources: Vec<Source>,
        /// Name of the new item (no `/`); wins over `algorithm` when both are given.
        target: Option<String>,
        /// Hash algorithm whose hex digest names the new item when `target` is None;
        /// with neither, the request is an invalid argument.
        algorithm: Option<String>,
        /// Namespace of sources and target; None for the top level.
        namespace: Option<String>,
        /// The sources (and a given target) are soft-deleted items.
        deleted: bool,
    },
    /// The bytes of many ranges, concatenated in order.
    Gather {
        /// The ranges, each read in full or the request fails with `ReadRangeError`.
        sources: Vec<Source>,
        /// Namespace of the sources (their names are without it); None for the top level.
        namespace: Option<String>,
        /// Read soft-deleted items.
        deleted: bool,
    },
    /// Quota limit and usage of the store.
    Quota,
    /// The store's operation statistics, with the Python borgstore key names.
    Stats,
    /// Drop cached copies: of one item, of a namespace, or (`""`) of everything.
    CacheInvalidate {
        /// An item (`namespace/key`), a namespace, or `""` for everything.
        name: String,
        /// For an item: drop the soft-deleted item's copy.
        deleted: bool,
    },
    /// The stores this client may use (the store field is ignored).
    Stores,
    /// Liveness check (the store field is ignored).
    Ping,
    /// Give the store a cache (or, with no namespaces, none): the cache backend URL and
    /// the policy of each cached namespace. Only the daemon's own uid may do this.
    ConfigureCache {
        /// Store URL of the cache backend, e.g. `file:///var/cache/borgstore/repo`.
        url: String,
        /// The cached namespaces; none, or all `off`, removes the cache.
        namespaces: Vec<CacheNamespace>,
    },
    /// Delete for good the items of the store's delete quarantine whose window has
    /// passed; needs `D` at the store's root.
    Purge,
    /// Counters per principal: every principal's for the daemon's own user, the
    /// caller's own for anyone else.
    PrincipalStats,
    /// The write-behind barrier: answered ([`Reply::Ok`]) once every value acknowledged
    /// before it is on the primary backend; at once for a store without write-behind.
    /// (Last, so the bincode tags of the variants above stay.)
    Sync,
}

/// The counters of one principal (a rule's label) on one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalCounters {
    /// The rule's label (`owner`, `uid:1001`, `rest:alice`, or the name given).
    pub principal: String,
    /// Commands run, refused ones included.
    pub calls: u64,
    /// Value bytes received.
    pub bytes_in: u64,
    /// Value bytes sent.
    pub bytes_out: u64,
    /// Commands refused by the principal's profile.
    pub refusals: u64,
}

/// What a purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Items deleted for good.
    pub purged: u64,
    /// Items still inside their window.
    pub kept: u64,
    /// Entries whose item was gone (restored or deleted meanwhile).
    pub gone: u64,
    /// Items whose delete failed (tried again next time).
    pub failed: u64,
}

/// The cache policy of one namespace, as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheNamespace {
    /// e.g. `data/`
    pub namespace: String,
    /// `off`, `mirror` or `writethrough`
    pub mode: String,
    /// Items unused for this many milliseconds are evicted; None: no age limit.
    pub max_age_ms: Option<u64>,
    /// Budget of the namespace's cached items in bytes; None: no size limit.
    pub size: Option<u64>,
}

/// Client -> daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, echoed in every response to this request.
    pub id: u64,
    /// The store's name as configured in the daemon.
    pub store: String,
    /// What to do; `ping` and `stores` ignore `store`.
    pub op: Op,
}

/// A store the daemon serves; the URL's path is not disclosed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSummary {
    /// The name to put in [`Request::store`].
    pub name: String,
    /// The scheme of the store's URL (`file`, `sftp`, `s3`, ...), without the rest.
    pub url_scheme: String,
}

/// The body of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Done, nothing to return (create, destroy, open, close, store, delete, move, cache
    /// operations).
    Ok,
    /// Answers `info`; a missing item has `exists: false`.
    Info(ItemInfo),
    /// Answers `load` and `gather`: the bytes read.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The next at most [`LIST_CHUNK`] items of a `list`, in sorted order, leaf names.
    ListChunk(Vec<ItemInfo>),
    /// The `list` is complete; no more responses carry its id.
    ListEnd,
    /// A hash digest or a defrag target name.
    Text(String),
    /// Answers `quota`.
    Quota(Quota),
    /// Answers `stats`.
    Stats(Stats),
    /// Answers `stores`: the stores this client is granted.
    Stores(Vec<StoreSummary>),
    /// Answers `ping`.
    Pong,
    /// The request failed; for a `list`, this ends it (no [`Reply::ListEnd`] follows).
    Err(Error),
    /// The answer to [`Op::Purge`].
    Purged(PurgeReport),
    /// The answer to [`Op::PrincipalStats`].
    Principals(Vec<PrincipalCounters>),
}

/// Daemon -> client. Id 0 answers a request that could not be decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The [`Request::id`] this answers; the client matches responses by it.
    pub id: u64,
    /// The answer.
    pub body: Reply,
}
