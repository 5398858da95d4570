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
use crate::policy::Who;
use crate::store::{DefragName, Lister, MoveAction};
use borgstore_ipc::protocol::{
    CacheNamespace, MoveAction as WireMove, Op, PrincipalCounters, PurgeReport, Reply, Request, StoreSummary,
};
use borgstore_ipc::{Error, ErrorKind, Result};
use futures::future::BoxFuture;
use std::sync::Arc;

/// What a request turns into.
pub enum Dispatched {
    /// Answered at once (ping, stores, refusals, bad arguments).
    Now(Reply),
    /// One answer, once the store has run the command.
    Later(BoxFuture<'static, Answer>),
    /// A listing: a cursor to stream in chunks, once the store has opened it.
    Listing(Pending<Lister>),
}

/// The principals already decided on one connection, per store: the peer cannot change
/// during a connection, so the decision holds while the store's grants stay the same (a
/// reload replaces them, and the next request decides again).
#[derive(Default)]
pub struct Decided {
    entries: Vec<(Arc<crate::access::Grants>, Arc<Who>)>,
}

impl Decided {
    /// At most this many stores are remembered per connection.
    const MAX: usize = 16;

    fn get(&self, grants: &Arc<crate::access::Grants>) -> Option<Arc<Who>> {
        self.entries.iter().find(|(g, _)| Arc::ptr_eq(g, grants)).map(|(_, w)| w.clone())
    }

    fn remember(&mut self, grants: Arc<crate::access::Grants>, who: Arc<Who>) {
        self.entries.retain(|(g, _)| g.store != grants.store);
        if self.entries.len() >= Self::MAX {
            self.entries.remove(0);
        }
        self.entries.push((grants, who));
    }
}

/// Judge `request` and hand its command to the store; `room` goes with the command and
/// is given back when it is done. `decided` keeps this connection's principals.
pub async fn dispatch(
    registry: &Registry,
    peer: &LocalPeer,
    decided: &mut Decided,
    request: Request,
    room: Room,
) -> Dispatched {
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
    let grants = entry.grants();
    let who = match decided.get(&grants) {
        Some(who) => Ok(who),
        None => grants.decide(&caller).map(|p| {
            let who = p.who(Door::Socket);
            decided.remember(grants.clone(), who.clone());
            who
        }),
    };
    let who = match who {
        Ok(w) => w,
        Err(Refusal::NotServedHere) => return not_here(),
        Err(refusal) => {
            let why = match refusal {
                Refusal::NotGranted(why) => why,
                _ => format!("store {} needs credentials", entry.name),
            };
            tracing::warn!(store = %entry.name, uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "refused a client without a grant: {why}");
            return Dispatched::Now(Reply::Err(Error::new(ErrorKind::PermissionDenied, why)));
        }
    };
    if matches!(request.op, Op::ConfigureCache { .. }) && peer.uid != crate::config::current_uid() {
        // The cache URL makes the daemon write where it says: only its own user may.
        tracing::warn!(store = %entry.name, uid = peer.uid, "refused a cache configuration from another user");
        return Dispatched::Now(Reply::Err(Error::new(
            ErrorKind::PermissionDenied,
            "only the daemon's own user may configure a store's cache",
        )));
    }
    if matches!(request.op, Op::PrincipalStats) {
        return Dispatched::Now(principal_stats(entry, &who).await);
    }
    match submit(entry.handle(), request.op, room, who).await {
        Ok(dispatched) => dispatched,
        Err(e) => Dispatched::Now(Reply::Err(e)),
    }
}

/// The counters per principal of the store: all of them for the daemon's own user,
/// the caller's own otherwise.
async fn principal_stats(entry: &crate::actor::StoreEntry, who: &Who) -> Reply {
    let all = entry.principal_stats().await;
    let counters = all
        .into_iter()
        .filter(|(name, _)| who.profile.owner || *name == who.profile.name)
        .map(|(principal, s)| PrincipalCounters {
            principal,
            calls: s.calls,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            refusals: s.refusals,
        })
        .collect();
    Reply::Principals(counters)
}

/// The command of `op`, submitted for `who`; its output becomes the reply.
async fn submit(store: &StoreHandle, op: Op, room: Room, who: Arc<Who>) -> Result<Dispatched> {
    let ok = |()| Reply::Ok;
    let room = Some(room);
    // A delete the caller's profile quarantines becomes a soft delete kept for the
    // store's window (borg's own soft delete of such an item too).
    let quarantined = match &op {
        Op::Delete { name, deleted } => {
            let letters = crate::policy::Item::engine(name, *deleted).letters_name();
            who.profile.quarantines(&letters).then(|| (name.clone(), *deleted))
        }
        Op::Move { name, action: WireMove::Delete } => who.profile.quarantines(name).then(|| (name.clone(), false)),
        _ => None,
    };
    let submit = Submit { store, room, who };
    if let Some((name, deleted)) = quarantined {
        return submit.later(items::Quarantine { name, deleted }, ok).await;
    }
    Ok(match op {
        Op::Create => submit.later(lifecycle::Create, ok).await?,
        Op::Destroy => submit.later(lifecycle::Destroy, ok).await?,
        Op::Open | Op::Close => submit.later(lifecycle::Open, ok).await?,
        Op::Stats => submit.later(lifecycle::GetStats, Reply::Stats).await?,
        Op::Quota => submit.later(lifecycle::GetQuota, Reply::Quota).await?,
        Op::Sync => submit.later(lifecycle::Sync, ok).await?,
        Op::Info { name, deleted } => submit.later(items::Info { name, deleted }, Reply::Info).await?,
        Op::Load { name, offset, size, deleted } => {
            let load = items::Load { name, offset, size, deleted };
            submit
                .later(load, |value| match value {
                    Value::Bytes(data) => Answer::Reply(Reply::Data(data.into())),
                    Value::File(range) => Answer::File(range),
                })
                .await?
        }
        Op::Store { name, value } => submit.later(items::Store { name, value }, ok).await?,
        Op::Delete { name, deleted } => submit.later(items::Delete { name, deleted }, ok).await?,
        Op::Move { name, action } => submit.later(items::Move { name, action: move_action(action) }, ok).await?,
        Op::List { name, deleted } => {
            Dispatched::Listing(submit.store.submit_as(items::List { name, deleted }, submit.room, submit.who).await?)
        }
        Op::Hash { name, algorithm, deleted } => {
            let hash = items::Hash { name, algorithm: algorithm.parse()?, deleted };
            submit.later(hash, Reply::Text).await?
        }
        Op::Gather { sources, namespace, deleted } => {
            let gather = ranges::Gather { sources, namespace, deleted };
            submit.later(gather, |data| Reply::Data(data.into())).await?
        }
        Op::Defrag { sources, target, algorithm, namespace, deleted } => {
            let target = match (target, algorithm) {
                (Some(t), _) => DefragName::Given(t),
                (None, Some(a)) => DefragName::Hash(a.parse()?),
                (None, None) => return Err(Error::invalid("defrag needs a target name or a hash algorithm")),
            };
            submit.later(ranges::Defrag { sources, target, namespace, deleted }, Reply::Text).await?
        }
        Op::CacheInvalidate { name, deleted } => submit.later(lifecycle::CacheInvalidate { name, deleted }, ok).await?,
        Op::ConfigureCache { url, namespaces } => {
            let cache = configured_cache(&url, &namespaces)?;
            submit.later(lifecycle::ConfigureCache { cache }, ok).await?
        }
        Op::Purge => {
            submit
                .later(lifecycle::Purge, |p| {
                    Reply::Purged(PurgeReport { purged: p.purged, kept: p.kept, gone: p.gone, failed: p.failed })
                })
                .await?
        }
        // Answered before a store was looked up.
        Op::Ping => Dispatched::Now(Reply::Pong),
        Op::PrincipalStats => Dispatched::Now(Reply::Err(Error::backend("internal: principal stats submitted"))),
        Op::Stores => Dispatched::Now(Reply::Err(Error::backend("internal: stores asked of one store"))),
    })
}

/// Where and for whom a request's command goes.
struct Submit<'a> {
    store: &'a StoreHandle,
    room: Option<Room>,
    who: Arc<Who>,
}

impl Submit<'_> {
    /// Submit `command`; once it is done, `reply` makes its output the answer.
    async fn later<C: Command, A: Into<Answer> + 'static>(
        self,
        command: C,
        reply: fn(C::Output) -> A,
    ) -> Result<Dispatched> {
        later(self.store, command, self.room, self.who, reply).await
    }
}

/// Submit `command` for `who`; once it is done, `reply` makes its output the answer.
async fn later<C: Command, A: Into<Answer> + 'static>(
    store: &StoreHandle,
    command: C,
    room: Option<Room>,
    who: Arc<Who>,
    reply: fn(C::Output) -> A,
) -> Result<Dispatched> {
    let pending = store.submit_as(command, room, who).await?;
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
