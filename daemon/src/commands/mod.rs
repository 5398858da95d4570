//! Commands: every operation a client can ask of a store, one type each.
//!
//! A command is a plain struct holding its arguments. It says how the store actor must
//! order it ([`Command::access`], see [`crate::actor::ordering`]) and applies itself to
//! the served store ([`Command::apply`]); its [`Command::Output`] is the one type it
//! can answer with, so a door cannot receive (or have to handle) a reply that does not
//! belong to its request. The doors only translate:
//!
//! - the IPC server ([`crate::ipc_server`]) turns each wire `Op` into one of these and
//!   its output into the wire `Reply`;
//! - the REST front end ([`crate::rest`]) turns each HTTP request into one of the
//!   [`nested`] commands (REST clients address nested names) or a lifecycle command;
//! - in-process users run them through a [`crate::actor::StoreHandle`] too, or call the
//!   engine ([`crate::store::Store`]) directly, whose methods these commands wrap one to
//!   one.
//!
//! Where they live: [`items`] (one item: info, load, store, delete, move, hash, list),
//! [`ranges`] (many items: gather, defrag), [`lifecycle`] (the store as a whole:
//! create, destroy, open, stats, quota, cache), [`nested`] (the backend-level view REST
//! speaks).
//!
//! Adding an operation: a method on [`crate::store::Store`] (the engine), a struct here
//! with its `Command` impl, then the doors that offer it: an `Op` variant in
//! `borgstore-ipc` mapped in `ipc_server::commands`, and/or a route in `rest::commands`.

/// `impl Command` for a command struct in one line:
///
/// `command!(Load -> Bytes, access |c| item(&c.name), need |c| Need::letters("r", ..), apply |c, served| ..);`
///
/// `c` is the command (by reference in `access`, `need` and the optional `audit` and
/// `sent`, by value in `apply`) and `served` the [`Served`] store it runs on. Every
/// command has this one shape; the macro keeps each to what differs: its output type,
/// its ordering, what it needs from the caller's profile, its call, and for commands
/// that change the store what the audit log says of them (`audit |c| ..`) and for
/// commands that send values how many bytes they sent (`sent |out| ..`).
macro_rules! command {
    ($cmd:ident -> $out:ty,
     access |$a:tt| $access:expr,
     need |$n:tt| $need:expr,
     apply |$c:ident, $served:ident| $apply:expr
     $(, audit |$au:tt| $audit:expr)?
     $(, sent |$o:tt| $sent:expr)? $(,)?) => {
        impl $crate::commands::Command for $cmd {
            type Output = $out;
            fn access(&self) -> $crate::actor::ordering::Access {
                #[allow(unused_variables)]
                let $a = self;
                $access
            }
            fn need(&self) -> $crate::policy::Need<'_> {
                #[allow(unused_variables)]
                let $n = self;
                $need
            }
            async fn apply(self, $served: &$crate::actor::Served) -> borgstore_ipc::Result<$out> {
                #[allow(unused_variables)]
                let $c = self;
                $apply
            }
            $(fn audited(&self) -> Option<$crate::commands::Audited> {
                let $au = self;
                Some($audit)
            })?
            $(fn sent($o: &$out) -> u64 {
                $sent
            })?
        }
    };
}

pub mod items;
pub mod lifecycle;
pub mod nested;
pub mod ranges;

use crate::actor::ordering::Access;
use crate::actor::Served;
use crate::policy::Need;
use borgstore_ipc::Result;
use std::future::Future;

/// One operation on a served store.
pub trait Command: Send + 'static {
    /// What the command answers with.
    type Output: Send + 'static;

    /// How the store actor orders it against other commands on the same store.
    fn access(&self) -> Access;

    /// What it needs from the caller's profile ([`crate::policy::admit`] checks it
    /// right before `apply`).
    fn need(&self) -> Need<'_>;

    /// Run it. The actor calls this once the ordering rules let the command start.
    fn apply(self, served: &Served) -> impl Future<Output = Result<Self::Output>> + Send;

    /// What the audit log says of it: None for commands that change nothing.
    fn audited(&self) -> Option<Audited> {
        None
    }

    /// Value bytes its output sends to the caller (per-principal stats).
    fn sent(_output: &Self::Output) -> u64 {
        0
    }
}

/// A command that changes the store, as the audit log records it (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    /// The operation (`store`, `delete`, `quarantine`, ...).
    pub op: &'static str,
    /// The names it touches.
    pub names: Vec<String>,
    /// The value bytes it writes, if it writes one.
    pub size: Option<u64>,
}

impl Audited {
    /// `op` on `names`, writing `size` bytes.
    pub fn new(op: &'static str, names: &[&str], size: Option<u64>) -> Self {
        Audited { op, names: names.iter().map(|n| n.to_string()).collect(), size }
    }
}

/// The ordering key of an item: its name without the soft-delete distinction, so all
/// commands on one item (live or deleted, any level) are ordered.
pub(crate) fn item(name: &str) -> Access {
    Access::Item(name.to_string())
}

/// The ordering of a command that only reads an item (see [`item`]): it runs together
/// with reads of the item that came right before it.
pub(crate) fn read(name: &str) -> Access {
    Access::Read(name.to_string())
}
