//! The store actor: owns one served store and starts each [`Command`] when the ordering
//! rules ([`Scheduler`]) allow.
//!
//! The actors of `file:` stores live on one arbiter, the store thread, beside
//! borgstored's IPC server; a remote store's actor has an arbiter of its own (see
//! [`super::registry`]). Every command is asynchronous (the daemon's backends do
//! blocking I/O in `spawn_blocking`, network I/O asynchronously), so a slow store never
//! stalls another store, and no actor thread blocks on I/O. Callers reach it through a
//! [`super::StoreHandle`], which turns a typed command into a [`Call`] and its answer
//! back into the command's output type.

use super::ordering::{Access, Scheduler};
use super::Served;
use crate::commands::Command;
use crate::limits::Room;
use crate::policy::{admit, Who};
use actix::prelude::*;
use borgstore_ipc::{Error, Result};
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A command on its way to the actor, its type erased: how it is ordered, and the run
/// that applies it and sends its answer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Call {
    access: Access,
    run: Box<dyn FnOnce(Arc<Served>) -> BoxFuture<'static, ()> + Send>,
}

impl Call {
    /// `command`, answering on `answer`; `room` (the request's reserved bytes) is given
    /// back when the command is done.
    ///
    /// Right before it runs, the command is admitted against `who`'s profile
    /// ([`crate::policy::admit`]); afterwards it is counted for `who` and, when it
    /// changes the store, recorded in the audit log.
    pub fn new<C: Command>(
        command: C,
        answer: oneshot::Sender<Result<C::Output>>,
        room: Option<Room>,
        who: Arc<Who>,
    ) -> Call {
        let access = command.access();
        let run = Box::new(move |served: Arc<Served>| -> BoxFuture<'static, ()> {
            Box::pin(async move {
                let audited = command.audited();
                let mut refused = false;
                // The layers under the engine share the primary fairly by principal.
                let principal: Arc<str> = Arc::from(who.profile.name.as_str());
                let result = crate::flow::principal::scope(
                    principal,
                    contained(async {
                        // Unrestricted profiles that may also do the owner's things have
                        // nothing to check: skip building the need.
                        if who.profile.restricts() || !who.profile.owner {
                            let admitted = admit(&command.need(), &who, &served).await;
                            if let Err(e) = admitted {
                                refused = true;
                                return Err(e);
                            }
                        }
                        command.apply(&served).await
                    }),
                )
                .await;
                if who.door.is_some() {
                    let sent = result.as_ref().map(C::sent).unwrap_or(0);
                    let received = audited.as_ref().and_then(|a| a.size).unwrap_or(0);
                    served.principals().count(&who.profile.name, received, sent, refused);
                }
                if let Some(audited) = audited {
                    served.record(&who, audited, result.as_ref().map(|_| ()));
                }
                drop(room);
                // A vanished caller dropped its receiver: the command still counted.
                let _ = answer.send(result);
            })
        });
        Call { access, run }
    }
}

/// One store's actor.
pub struct StoreActor {
    served: Arc<Served>,
    scheduler: Scheduler<Call>,
    /// A cache sweep is running.
    sweeping: bool,
}

/// How often quarantined items past their window are purged (see
/// [`crate::policy::quarantine`]); tests shorten it with [`PURGE_INTERVAL_ENV`].
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// A testing hook: the purge interval in milliseconds.
pub const PURGE_INTERVAL_ENV: &str = "BORGSTORED_TEST_PURGE_INTERVAL_MS";

/// How often expired cache items are looked for.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl StoreActor {
    /// An actor serving `served`.
    pub fn new(served: Arc<Served>) -> Self {
        StoreActor { served, scheduler: Scheduler::default(), sweeping: false }
    }

    fn start(&mut self, access: Access, call: Call, ctx: &mut Context<Self>) {
        let fut = (call.run)(self.served.clone());
        ctx.spawn(fut.into_actor(self).map(move |(), act, ctx| {
            for (a, c) in act.scheduler.finish(&access) {
                act.start(a, c, ctx);
            }
        }));
    }
}

impl Actor for StoreActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Clients pipeline; a roomy mailbox keeps senders from waiting on each other.
        ctx.set_mailbox_capacity(4096);
        // Cache eviction runs while the store is used, not only at open and close (a
        // client may give the store a cache later, so the timer always runs).
        ctx.run_interval(SWEEP_INTERVAL, |act, ctx| {
            if act.sweeping || act.served.store().cache().is_none() {
                return;
            }
            act.sweeping = true;
            let served = act.served.clone();
            ctx.spawn(async move { served.cache_sweep().await }.into_actor(act).map(|_, act, _| act.sweeping = false));
        });
        // The background purge runs as a command, ordered like any other (alone), so
        // it never races a quarantined delete writing the ledger.
        let every = std::env::var(PURGE_INTERVAL_ENV)
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis)
            .unwrap_or(PURGE_INTERVAL);
        ctx.run_interval(every, |act, ctx| {
            if act.served.quarantine_of().is_none() {
                return;
            }
            let (tx, rx) = oneshot::channel();
            ctx.notify(Call::new(crate::commands::lifecycle::Purge, tx, None, Who::internal()));
            actix::spawn(async move {
                match rx.await {
                    Ok(Ok(p)) if p.purged + p.failed > 0 => {
                        tracing::info!(purged = p.purged, failed = p.failed, kept = p.kept, "purged quarantined items")
                    }
                    Ok(Err(e)) => tracing::warn!("purging the quarantine failed: {}", e.message),
                    _ => {}
                }
            });
        });
    }
}

impl Handler<Call> for StoreActor {
    type Result = ();
    fn handle(&mut self, call: Call, ctx: &mut Context<Self>) {
        let access = call.access.clone();
        for (a, c) in self.scheduler.arrive(access, call) {
            self.start(a, c, ctx);
        }
    }
}

/// Run a command so that a bug in it (a panic) becomes an error for its caller instead
/// of taking the store's actor, and with it the store, down.
async fn contained<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(fut).catch_unwind().await.unwrap_or_else(|_| {
        tracing::error!("an operation panicked; the store goes on");
        Err(Error::backend("internal error while running the operation"))
    })
}
