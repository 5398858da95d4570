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
    pub magic: [u8; 8],
    pub version: u32,
    /// Free text for logs, e.g. `borgstore-cli 0.1.0`.
    pub client_name: String,
}

impl Hello {
    pub fn new(client_name: impl Into<String>) -> Self {
        Hello { magic: MAGIC, version: PROTOCOL_VERSION, client_name: client_name.into() }
    }
}

/// What the daemon tells an accepted client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub server_name: String,
    /// Largest frame body the daemon accepts and sends.
    pub max_frame: u32,
}

/// Daemon -> client, once, answering [`Hello`]. A refused client (bad magic, unknown
/// version) gets the reason and the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeReply {
    Accepted(Welcome),
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
    ChangeLevel { deleted: bool },
    /// Rename to `new_name`, replacing it; `deleted` addresses soft-deleted items.
    Rename { new_name: String, deleted: bool },
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
        name: String,
        deleted: bool,
    },
    /// `size` bytes (None: to the end) from `offset` (negative: counted from the end).
    Load {
        name: String,
        offset: i64,
        size: Option<u64>,
        deleted: bool,
    },
    /// Store a value atomically, replacing an existing one.
    Store {
        name: String,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete an item for good.
    Delete {
        name: String,
        deleted: bool,
    },
    Move {
        name: String,
        action: MoveAction,
    },
    /// All items of a namespace, recursively, sorted; streamed.
    List {
        name: String,
        deleted: bool,
    },
    /// Hex digest of an item's content (`sha256`, `blake3`, ... see DESIGN.md).
    Hash {
        name: String,
        algorithm: String,
        deleted: bool,
    },
    /// New item from byte ranges of items in `namespace` (source names without it);
    /// named `target`, or the hex digest by `algorithm` when `target` is None.
    Defrag {
        sources: Vec<Source>,
        target: Option<String>,
        algorithm: Option<String>,
        namespace: Option<String>,
        deleted: bool,
    },
    /// The bytes of many ranges, concatenated in order.
    Gather {
        sources: Vec<Source>,
        namespace: Option<String>,
        deleted: bool,
    },
    Quota,
    Stats,
    /// Drop cached copies: of one item, of a namespace, or (`""`) of everything.
    CacheInvalidate {
        name: String,
        deleted: bool,
    },
    /// The stores this client may use (the store field is ignored).
    Stores,
    /// Liveness check (the store field is ignored).
    Ping,
    /// Give the store a cache (or, with no namespaces, none): the cache backend URL and
    /// the policy of each cached namespace. Only the daemon's own uid may do this.
    ConfigureCache {
        url: String,
        namespaces: Vec<CacheNamespace>,
    },
}

/// The cache policy of one namespace, as a client asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheNamespace {
    /// e.g. `data/`
    pub namespace: String,
    /// `off`, `mirror` or `writethrough`
    pub mode: String,
    /// Items unused this long are evicted [ms].
    pub max_age_ms: Option<u64>,
    /// Budget of the namespace's cached items [bytes].
    pub size: Option<u64>,
}

/// Client -> daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the client, echoed in every response to this request.
    pub id: u64,
    /// The store's name as configured in the daemon.
    pub store: String,
    pub op: Op,
}

/// A store the daemon serves; the URL's path is not disclosed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSummary {
    pub name: String,
    pub url_scheme: String,
}

/// The body of a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    Info(ItemInfo),
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    ListChunk(Vec<ItemInfo>),
    ListEnd,
    /// A hash digest or a defrag target name.
    Text(String),
    Quota(Quota),
    Stats(Stats),
    Stores(Vec<StoreSummary>),
    Pong,
    Err(Error),
}

/// Daemon -> client. Id 0 answers a request that could not be decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    pub body: Reply,
}
