//! The store actor: owns one store's engine and runs its operations in the order
//! [`Scheduler`] allows.
//!
//! Each actor lives in its own arbiter (thread), and every operation is asynchronous
//! (the backends do blocking I/O in `spawn_blocking`), so a slow store never stalls
//! another store, and the actor thread itself never blocks on I/O.
//!
//! The daemon keeps each store open while it serves it: a client's `open` and `close`
//! only check that the store exists; `create` creates and opens it, `destroy` closes
//! and removes it. A store that did not exist at start is opened by the first
//! operation after something created it.

use super::ordering::{Access, Scheduler};
use crate::hashing::HashAlgorithm;
use crate::names::nesting::item_of;
use crate::store::{DefragName, Lister, MoveAction, RawOp, RawReply, Store};
use actix::prelude::*;
use borgstore_ipc::protocol::{MoveAction as WireMove, Op, Reply};
use borgstore_ipc::{Error, Result};
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::{oneshot, Mutex};

/// What an operation gives back: a reply, or a cursor for a streamed listing.
pub enum Outcome {
    Reply(Reply),
    List(Lister),
}

/// Run `op` on the store; the answer arrives on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Exec {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Outcome>>,
    /// The room reserved for the request's bytes, given back when the operation is done.
    pub room: Option<crate::limits::Room>,
}

/// Run a backend-level operation (REST) on the store; the answer arrives on `reply`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RawExec {
    pub op: RawOp,
    pub reply: oneshot::Sender<Result<RawReply>>,
}

/// Finish everything that arrived before, then close the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub done: oneshot::Sender<Result<()>>,
}

enum Job {
    Exec(Exec),
    Raw(RawExec),
    Shutdown(Shutdown),
}

/// One store's actor.
pub struct StoreActor {
    name: String,
    state: Arc<StoreState>,
    scheduler: Scheduler<Job>,
    /// A cache sweep is running.
    sweeping: bool,
}

/// How often expired cache items are looked for.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// What running operations share.
struct StoreState {
    store: Store,
    /// Whether the daemon has the store open; the lock orders open/close transitions.
    opened: Mutex<bool>,
}

impl StoreActor {
    /// An actor for `store`; `opened` tells whether the caller already opened it.
    pub fn new(name: impl Into<String>, store: Store, opened: bool) -> Self {
        StoreActor {
            name: name.into(),
            state: Arc::new(StoreState { store, opened: Mutex::new(opened) }),
            scheduler: Scheduler::default(),
            sweeping: false,
        }
    }

    fn start_job(&mut self, access: Access, job: Job, ctx: &mut Context<Self>) {
        let state = self.state.clone();
        match job {
            Job::Exec(Exec { op, reply, room }) => {
                let fut = contained(async move {
                    let result = state.execute(op).await;
                    drop(room);
                    result
                });
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    // A vanished client dropped its receiver: the operation still counted.
                    let _ = reply.send(result);
                    act.finished(&access, ctx);
                }));
            }
            Job::Raw(RawExec { op, reply }) => {
                let fut = contained(async move { state.execute_raw(op).await });
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    let _ = reply.send(result);
                    act.finished(&access, ctx);
                }));
            }
            Job::Shutdown(Shutdown { done }) => {
                let name = self.name.clone();
                let fut = async move { state.close(&name).await };
                ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
                    let _ = done.send(result);
                    act.finished(&access, ctx);
                }));
            }
        }
    }

    fn finished(&mut self, access: &Access, ctx: &mut Context<Self>) {
        for (a, j) in self.scheduler.finish(access) {
            self.start_job(a, j, ctx);
        }
    }

    fn arrive(&mut self, access: Access, job: Job, ctx: &mut Context<Self>) {
        for (a, j) in self.scheduler.arrive(access, job) {
            self.start_job(a, j, ctx);
        }
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Clients pipeline; a roomy mailbox keeps senders from waiting on each other.
        ctx.set_mailbox_capacity(4096);
        // Cache eviction runs while the store is used, not only at open and close (a
        // client may give the store a cache later, so the timer always runs).
        {
            ctx.run_interval(SWEEP_INTERVAL, |act, ctx| {
                if act.sweeping || act.state.store.cache().is_none() {
                    return;
                }
                act.sweeping = true;
                let state = act.state.clone();
                ctx.spawn(
                    async move {
                        if *state.opened.lock().await {
                            state.store.cache_sweep().await;
                        }
                    }
                    .into_actor(act)
                    .map(|_, act, _| act.sweeping = false),
                );
            });
        }
    }
}

impl Handler<Exec> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: Exec, ctx: &mut Context<Self>) {
        let access = access_of(&msg.op);
        self.arrive(access, Job::Exec(msg), ctx);
    }
}

impl Handler<RawExec> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: RawExec, ctx: &mut Context<Self>) {
        let access = raw_access_of(&msg.op);
        self.arrive(access, Job::Raw(msg), ctx);
    }
}

impl Handler<Shutdown> for StoreActor {
    type Result = ();
    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        self.arrive(Access::Exclusive, Job::Shutdown(msg), ctx);
    }
}

/// The ordering key of an item: its name without the soft-delete distinction, so all
/// operations on one item (live or deleted, any level) are ordered.
fn item(name: &str) -> Access {
    Access::Item(name.to_string())
}

/// Run an operation so that a bug in it (a panic) becomes an error for its caller
/// instead of taking the store's actor, and with it the store, down.
async fn contained<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(fut).catch_unwind().await.unwrap_or_else(|_| {
        tracing::error!("an operation panicked; the store goes on");
        Err(Error::backend("internal error while running the operation"))
    })
}

/// How an operation must be ordered.
pub fn access_of(op: &Op) -> Access {
    match op {
        Op::Info { name, .. }
        | Op::Load { name, .. }
        | Op::Store { name, .. }
        | Op::Delete { name, .. }
        | Op::Hash { name, .. } => item(name),
        Op::Move { name, action } => match action {
            WireMove::Rename { .. } => Access::Exclusive,
            _ => item(name),
        },
        Op::Quota | Op::Stats | Op::List { .. } | Op::Stores | Op::Ping => Access::Free,
        Op::Create
        | Op::Destroy
        | Op::Open
        | Op::Close
        | Op::Gather { .. }
        | Op::Defrag { .. }
        | Op::CacheInvalidate { .. }
        | Op::ConfigureCache { .. } => Access::Exclusive,
    }
}

/// How a backend-level operation must be ordered: by the item its nested name belongs
/// to, so it is ordered with the IPC operations on that item.
pub fn raw_access_of(op: &RawOp) -> Access {
    match op {
        RawOp::Info(n) | RawOp::Delete(n) => Access::Item(item_of(n)),
        RawOp::Load { name, .. } | RawOp::Store { name, .. } | RawOp::Hash { name, .. } => Access::Item(item_of(name)),
        RawOp::Move { current, new } if item_of(current) == item_of(new) => Access::Item(item_of(current)),
        RawOp::List(_) | RawOp::Quota => Access::Free,
        RawOp::Move { .. } | RawOp::Mkdir(_) | RawOp::Rmdir(_) | RawOp::Gather(_) | RawOp::Defrag { .. } => {
            Access::Exclusive
        }
    }
}

/// The cache a client asks for (None: no namespace is cached).
fn configured_cache(
    url: &str,
    namespaces: &[borgstore_ipc::protocol::CacheNamespace],
) -> Result<Option<crate::store::cache::Cache>> {
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
    let backend = crate::backends::url::backend_from_url(url, Default::default())
        .map_err(|e| Error::new(e.kind, format!("cache URL: {}", e.message)))?;
    Ok(Some(Cache::new(backend, policies)))
}

fn algorithm(name: &str) -> Result<HashAlgorithm> {
    name.parse()
}

impl StoreState {
    /// Open the store if it is not open yet (it may have been created since).
    async fn ensure_open(&self) -> Result<()> {
        let mut opened = self.opened.lock().await;
        if !*opened {
            self.store.open().await?;
            *opened = true;
        }
        Ok(())
    }

    async fn close(&self, name: &str) -> Result<()> {
        let mut opened = self.opened.lock().await;
        if *opened {
            self.store.close().await?;
            *opened = false;
            tracing::info!(store = name, "store closed");
        }
        Ok(())
    }

    async fn execute(&self, op: Op) -> Result<Outcome> {
        let store = &self.store;
        let ok = |_| Outcome::Reply(Reply::Ok);
        match op {
            Op::Create => {
                // As in Python borgstore, creating over an existing but empty store is
                // fine; the backend refuses a non-empty one. The daemon keeps stores
                // open, so close for the create and reopen whatever the outcome.
                let mut opened = self.opened.lock().await;
                if *opened {
                    store.close().await?;
                    *opened = false;
                }
                let created = store.create().await;
                match store.open().await {
                    Ok(()) => *opened = true,
                    Err(e) if created.is_ok() => return Err(e),
                    Err(_) => {}
                }
                created.map(ok)
            }
            Op::Destroy => {
                let mut opened = self.opened.lock().await;
                if *opened {
                    store.close().await?;
                    *opened = false;
                }
                store.destroy().await.map(ok)
            }
            Op::Open | Op::Close => self.ensure_open().await.map(ok),
            Op::Ping | Op::Stores => Ok(Outcome::Reply(Reply::Pong)),
            Op::ConfigureCache { url, namespaces } => {
                let cache = configured_cache(&url, &namespaces)?;
                let opened = self.opened.lock().await;
                store.set_cache(cache, *opened).await;
                Ok(Outcome::Reply(Reply::Ok))
            }
            Op::Stats => Ok(Outcome::Reply(Reply::Stats(store.stats()))),
            other => {
                self.ensure_open().await?;
                self.execute_open(other).await
            }
        }
    }

    async fn execute_raw(&self, op: RawOp) -> Result<RawReply> {
        self.ensure_open().await?;
        self.store.raw(op).await
    }

    async fn execute_open(&self, op: Op) -> Result<Outcome> {
        let store = &self.store;
        let reply = |r: Reply| Ok(Outcome::Reply(r));
        match op {
            Op::Info { name, deleted } => reply(Reply::Info(store.info(&name, deleted).await?)),
            Op::Load { name, offset, size, deleted } => {
                reply(Reply::Data(store.load(&name, offset, size, deleted).await?.into()))
            }
            Op::Store { name, value } => {
                store.store(&name, Bytes::from(value)).await?;
                reply(Reply::Ok)
            }
            Op::Delete { name, deleted } => {
                store.delete(&name, deleted).await?;
                reply(Reply::Ok)
            }
            Op::Move { name, action } => {
                let action = match action {
                    WireMove::Delete => MoveAction::Delete,
                    WireMove::Undelete => MoveAction::Undelete,
                    WireMove::ChangeLevel { deleted } => MoveAction::ChangeLevel { deleted },
                    WireMove::Rename { new_name, deleted } => MoveAction::Rename { new_name, deleted },
                };
                store.move_(&name, action).await?;
                reply(Reply::Ok)
            }
            Op::List { name, deleted } => Ok(Outcome::List(store.list(&name, deleted)?)),
            Op::Hash { name, algorithm: alg, deleted } => {
                reply(Reply::Text(store.hash(&name, algorithm(&alg)?, deleted).await?))
            }
            Op::Gather { sources, namespace, deleted } => {
                reply(Reply::Data(store.gather(&sources, namespace.as_deref(), deleted).await?.into()))
            }
            Op::Defrag { sources, target, algorithm: alg, namespace, deleted } => {
                let name = match (target, alg) {
                    (Some(t), _) => DefragName::Given(t),
                    (None, Some(a)) => DefragName::Hash(algorithm(&a)?),
                    (None, None) => return Err(Error::invalid("defrag needs a target name or a hash algorithm")),
                };
                reply(Reply::Text(store.defrag(&sources, name, namespace.as_deref(), deleted).await?))
            }
            Op::Quota => reply(Reply::Quota(store.quota().await?)),
            Op::CacheInvalidate { name, deleted } => {
                store.cache_invalidate(&name, deleted).await?;
                reply(Reply::Ok)
            }
            Op::Create
            | Op::Destroy
            | Op::Open
            | Op::Close
            | Op::Ping
            | Op::Stores
            | Op::Stats
            | Op::ConfigureCache { .. } => Err(Error::backend("internal: operation routed wrongly")),
        }
    }
}
