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
/// `command!(Load -> Bytes, access |c| item(&c.name), apply |c, served| served.open().await?.load(..).await);`
///
/// `c` is the command (by reference in `access`, by value in `apply`) and `served` the
/// [`Served`] store it runs on. Every command has this one shape; the macro keeps each
/// to what differs: its output type, its ordering, its call.
macro_rules! command {
    ($cmd:ident -> $out:ty, access |$a:tt| $access:expr, apply |$c:ident, $served:ident| $apply:expr $(,)?) => {
        impl $crate::commands::Command for $cmd {
            type Output = $out;
            fn access(&self) -> $crate::actor::ordering::Access {
                #[allow(unused_variables)]
                let $a = self;
                $access
            }
            async fn apply(self, $served: &$crate::actor::Served) -> borgstore_ipc::Result<$out> {
                #[allow(unused_variables)]
                let $c = self;
                $apply
            }
        }
    };
}

pub mod items;
pub mod lifecycle;
pub mod nested;
pub mod ranges;

use crate::actor::ordering::Access;
use crate::actor::Served;
use borgstore_ipc::Result;
use std::future::Future;

/// One operation on a served store.
pub trait Command: Send + 'static {
    /// What the command answers with.
    type Output: Send + 'static;

    /// How the store actor orders it against other commands on the same store.
    fn access(&self) -> Access;

    /// Run it. The actor calls this once the ordering rules let the command start.
    fn apply(self, served: &Served) -> impl Future<Output = Result<Self::Output>> + Send;
}

/// The ordering key of an item: its name without the soft-delete distinction, so all
/// commands on one item (live or deleted, any level) are ordered.
pub(crate) fn item(name: &str) -> Access {
    Access::Item(name.to_string())
}
