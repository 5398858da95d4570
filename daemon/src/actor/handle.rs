//! [`StoreHandle`]: the typed way into a store actor. `run(command)` answers with the
//! command's own output type (`Load` gives `Bytes`, `Info` gives `ItemInfo`), so no
//! caller matches replies it cannot get.
//!
//! [`StoreHandle::submit`] splits the two halves for callers that pipeline (the IPC
//! server): it returns once the actor has the command, which fixes its place in the
//! store's order, and hands back a [`Pending`] answer to await later.

use super::store_actor::{Call, StoreActor};
use crate::commands::Command;
use crate::limits::Room;
use crate::policy::Who;
use actix::prelude::*;
use borgstore_ipc::{Error, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// A cheap, cloneable address of one store's actor.
#[derive(Clone)]
pub struct StoreHandle {
    name: Arc<str>,
    addr: Addr<StoreActor>,
}

impl StoreHandle {
    pub(super) fn new(name: &str, addr: Addr<StoreActor>) -> Self {
        StoreHandle { name: name.into(), addr }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `command` on the store, ordered after everything submitted before, with the
    /// daemon's own rights (in-process use).
    pub async fn run<C: Command>(&self, command: C) -> Result<C::Output> {
        self.submit(command, None).await?.await
    }

    /// Run `command` for `who` (admitted against its profile, counted for it).
    pub async fn run_as<C: Command>(&self, command: C, who: Arc<Who>) -> Result<C::Output> {
        self.submit_as(command, None, who).await?.await
    }

    /// Hand `command` to the actor and return its answer-to-be. Awaiting this only
    /// waits until the actor has taken the command (only a full mailbox makes it wait),
    /// so a caller that submits in order gets its commands ordered as sent. `room` (the
    /// request's reserved bytes) is given back when the command is done.
    pub async fn submit<C: Command>(&self, command: C, room: Option<Room>) -> Result<Pending<C::Output>> {
        self.submit_as(command, room, Who::internal()).await
    }

    /// [`StoreHandle::submit`] for `who`: the command is admitted against its profile
    /// right before it runs.
    pub async fn submit_as<C: Command>(
        &self,
        command: C,
        room: Option<Room>,
        who: Arc<Who>,
    ) -> Result<Pending<C::Output>> {
        let (tx, rx) = oneshot::channel();
        // Straight into the mailbox when it has room (no round trip to the actor's
        // thread).
        match self.addr.try_send(Call::new(command, tx, room, who)) {
            Ok(()) => {}
            Err(SendError::Full(call)) => self.addr.send(call).await.map_err(|_| self.stopping())?,
            Err(SendError::Closed(_)) => return Err(self.stopping()),
        }
        Ok(Pending { rx, store: self.name.clone() })
    }

    fn stopping(&self) -> Error {
        Error::backend(format!("store {} is shutting down", self.name))
    }
}

/// The answer of a submitted command, as a future. A store that stops before
/// answering gives an error.
pub struct Pending<T> {
    rx: oneshot::Receiver<Result<T>>,
    store: Arc<str>,
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.rx).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(Error::backend(format!("store {} stopped while running the operation", self.store)))
            })
        })
    }
}
