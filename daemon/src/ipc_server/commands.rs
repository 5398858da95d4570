//! From a decoded [`Request`] to a typed [`crate::commands`] command and back to the
//! wire's [`Reply`]: the IPC protocol's side of the command table.
//!
//! Before anything reaches a store, the caller is judged ([`crate::access`], door
//! `socket`): the store must exist and grant the peer; only the daemon's own user may
//! configure a cache. Arguments given as text on the wire (hash algorithm, cache mode)
//! are parsed here, so a bad one is refused before the store sees the command.

use super::writer::Answer;
use crate::access::{Caller, Door, LocalPeer, Refusal};
use crate::actor::{Pending, Registry, StoreHandle};
use crate::backends::value::Value;
use crate::commands::{items, lifecycle, ranges, Command};
use crate::limits::Room;
use crate::store::{DefragName, Lister, MoveAction};
use borgstore_ipc::protocol::{CacheNamespace, MoveAction as WireMove, Op, Reply, Request, StoreSummary};
use borgstore_ipc::{Error, ErrorKind, Result};
use futures::future::BoxFuture;

/// What a request turns into.
pub enum Dispatched {
    /// Answered at once (ping, stores, refusals, bad arguments).
    Now(Reply),
    /// One answer, once the store has run the command.
    Later(BoxFuture<'static, Answer>),
    /// A listing: a cursor to stream in chunks, once the store has opened it.
    Listing(Pending<Lister>),
}

/// Judge `request` and hand its command to the store; `room` goes with the command and
/// is given back when it is done.
pub async fn dispatch(registry: &Registry, peer: &LocalPeer, request: Request, room: Room) -> Dispatched {
    let caller = Caller { door: Door::Socket, peer: Some(peer), authorization: None, client_cert: None };
    match request.op {
        Op::Ping => return Dispatched::Now(Reply::Pong),
        Op::Stores => {
            let stores = registry
                .granted(&caller)
                .map(|e| StoreSummary { name: e.name.clone(), url_scheme: e.scheme().to_string() })
                .collect();
            return Dispatched::Now(Reply::Stores(stores));
        }
        _ => {}
    }
    let not_here = || {
        Dispatched::Now(Reply::Err(Error::new(
            ErrorKind::BackendDoesNotExist,
            format!("no store named {} is served here", crate::names::shown(&request.store)),
        )))
    };
    let Some(entry) = registry.get(&request.store) else {
        return not_here();
    };
    match entry.decide(&caller) {
        Ok(_) => {}
        Err(Refusal::NotServedHere) => return not_here(),
        Err(refusal) => {
            let why = match refusal {
                Refusal::NotGranted(why) => why,
                _ => format!("store {} needs credentials", entry.name),
            };
            tracing::warn!(store = %entry.name, uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "refused a client without a grant: {why}");
            return Dispatched::Now(Reply::Err(Error::new(ErrorKind::PermissionDenied, why)));
        }
    }
    if matches!(request.op, Op::ConfigureCache { .. }) && peer.uid != crate::config::current_uid() {
        // The cache URL makes the daemon write where it says: only its own user may.
        tracing::warn!(store = %entry.name, uid = peer.uid, "refused a cache configuration from another user");
        return Dispatched::Now(Reply::Err(Error::new(
            ErrorKind::PermissionDenied,
            "only the daemon's own user may configure a store's cache",
        )));
    }
    match submit(entry.handle(), request.op, room).await {
        Ok(dispatched) => dispatched,
        Err(e) => Dispatched::Now(Reply::Err(e)),
    }
}

/// The command of `op`, submitted; its output becomes the reply.
async fn submit(store: &StoreHandle, op: Op, room: Room) -> Result<Dispatched> {
    let ok = |()| Reply::Ok;
    let room = Some(room);
    Ok(match op {
        Op::Create => later(store, lifecycle::Create, room, ok).await?,
        Op::Destroy => later(store, lifecycle::Destroy, room, ok).await?,
        Op::Open | Op::Close => later(store, lifecycle::Open, room, ok).await?,
        Op::Stats => later(store, lifecycle::GetStats, room, Reply::Stats).await?,
        Op::Quota => later(store, lifecycle::GetQuota, room, Reply::Quota).await?,
        Op::Info { name, deleted } => later(store, items::Info { name, deleted }, room, Reply::Info).await?,
        Op::Load { name, offset, size, deleted } => {
            let load = items::Load { name, offset, size, deleted };
            later(store, load, room, |value| match value {
                Value::Bytes(data) => Answer::Reply(Reply::Data(data.into())),
                Value::File(range) => Answer::File(range),
            })
            .await?
        }
        Op::Store { name, value } => later(store, items::Store { name, value }, room, ok).await?,
        Op::Delete { name, deleted } => later(store, items::Delete { name, deleted }, room, ok).await?,
        Op::Move { name, action } => later(store, items::Move { name, action: move_action(action) }, room, ok).await?,
        Op::List { name, deleted } => Dispatched::Listing(store.submit(items::List { name, deleted }, room).await?),
        Op::Hash { name, algorithm, deleted } => {
            let hash = items::Hash { name, algorithm: algorithm.parse()?, deleted };
            later(store, hash, room, Reply::Text).await?
        }
        Op::Gather { sources, namespace, deleted } => {
            let gather = ranges::Gather { sources, namespace, deleted };
            later(store, gather, room, |data| Reply::Data(data.into())).await?
        }
        Op::Defrag { sources, target, algorithm, namespace, deleted } => {
            let target = match (target, algorithm) {
                (Some(t), _) => DefragName::Given(t),
                (None, Some(a)) => DefragName::Hash(a.parse()?),
                (None, None) => return Err(Error::invalid("defrag needs a target name or a hash algorithm")),
            };
            later(store, ranges::Defrag { sources, target, namespace, deleted }, room, Reply::Text).await?
        }
        Op::CacheInvalidate { name, deleted } => {
            later(store, lifecycle::CacheInvalidate { name, deleted }, room, ok).await?
        }
        Op::ConfigureCache { url, namespaces } => {
            let cache = configured_cache(&url, &namespaces)?;
            later(store, lifecycle::ConfigureCache { cache }, room, ok).await?
        }
        // Answered before a store was looked up.
        Op::Ping => Dispatched::Now(Reply::Pong),
        Op::Stores => Dispatched::Now(Reply::Err(Error::backend("internal: stores asked of one store"))),
    })
}

/// Submit `command`; once it is done, `reply` makes its output the answer.
async fn later<C: Command, A: Into<Answer> + 'static>(
    store: &StoreHandle,
    command: C,
    room: Option<Room>,
    reply: fn(C::Output) -> A,
) -> Result<Dispatched> {
    let pending = store.submit(command, room).await?;
    Ok(Dispatched::Later(Box::pin(async move {
        match pending.await {
            Ok(output) => reply(output).into(),
            Err(e) => Answer::Reply(Reply::Err(e)),
        }
    })))
}

fn move_action(action: WireMove) -> MoveAction {
    match action {
        WireMove::Delete => MoveAction::Delete,
        WireMove::Undelete => MoveAction::Undelete,
        WireMove::ChangeLevel { deleted } => MoveAction::ChangeLevel { deleted },
        WireMove::Rename { new_name, deleted } => MoveAction::Rename { new_name, deleted },
    }
}

/// The cache a client asks for (None: no namespace is cached).
fn configured_cache(url: &str, namespaces: &[CacheNamespace]) -> Result<Option<crate::store::cache::Cache>> {
    use crate::store::cache::{Cache, CacheMode, CachePolicy};
    let mut policies = Vec::new();
    for n in namespaces {
        let mode: CacheMode = n.mode.parse()?;
        crate::names::validate_name(n.namespace.trim_end_matches('/'))?;
        policies.push((
            n.namespace.clone(),
            CachePolicy { mode, max_age: n.max_age_ms.map(|ms| ms as f64 / 1000.0), size: n.size },
        ));
    }
    if policies.iter().all(|(_, p)| !p.on()) {
        return Ok(None);
    }
    let backend = crate::backends::url::backend_from_url(url, crate::backends::url::BackendOptions::daemon())
        .map_err(|e| Error::new(e.kind, format!("cache URL: {}", e.message)))?;
    Ok(Some(Cache::new(backend, policies)))
}
