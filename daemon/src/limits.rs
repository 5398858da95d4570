//! Budgets of request bytes held in memory, so memory stays bounded whatever clients
//! send (DESIGN.md section 4).
//!
//! What is bounded, and where:
//! - The IPC handshake frame: [`HANDSHAKE_MAX`] bytes, checked from its length header.
//! - IPC request frames: each reserves its size from its connection's budget
//!   ([`PER_CONNECTION`]) and from the daemon-wide [`Budget`] (`max_in_flight`) before
//!   its body is read, and holds both until its reply is written.
//! - REST bodies that are held whole in memory (small values, JSON bodies, values for
//!   backends that cannot stream) reserve from the same daemon-wide budget before they
//!   are read; larger uploads to file: stores stream to disk through a few chunks.
//! - A request larger than a whole budget takes all of it, so it runs alone.
//!
//! Excess requests wait for room: IPC readers pause (the client's socket fills up), REST
//! uploads wait up to [`REST_WAIT`] and then get 503.
//!
//! Replies: a large loaded value is sent from its open file a piece at a time, not held
//! whole ([`crate::backends::value`]); at most [`crate::backends::value::OPEN_MAX`] are
//! open at once. [`raise_open_files`] lifts the process's soft limit on open files to
//! its hard limit at start, so those and many connections fit.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest IPC handshake frame: a hello is a few dozen bytes.
pub const HANDSHAKE_MAX: u32 = 64 * 1024;
/// Request bytes one IPC connection may have in the daemon at once.
pub const PER_CONNECTION: u64 = 64 << 20;
/// How long a REST upload waits for room in the budget before it gets 503.
pub const REST_WAIT: Duration = Duration::from_secs(30);
/// How long a client may leave a started request body without sending a byte.
pub const BODY_IDLE: Duration = Duration::from_secs(60);

/// Raise the soft limit on open files to the hard limit (1024 by default on many
/// systems, while the hard limit is far higher); returns the limit now in force.
pub fn raise_open_files() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current < now.maximum {
        let raised = Rlimit { current: now.maximum, maximum: now.maximum };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return now.maximum;
        }
    }
    now.current
}

/// Reservations are counted in KiB, so budgets of any size fit the semaphore.
const UNIT: u64 = 1024;

/// A budget of bytes in memory, shared by whoever holds a clone.
#[derive(Clone, Debug)]
pub struct Budget {
    sem: Arc<Semaphore>,
    units: u32,
}

/// Room reserved in a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// A reservation of nothing (for requests without a body).
    pub fn none() -> Reservation {
        Reservation { _permit: None }
    }
}

/// Room for one request's bytes in its connection's budget and in the daemon's; it
/// travels with the request to its store actor and is given back when the operation is
/// done (not when the client reads the reply).
#[derive(Debug)]
pub struct Room {
    _connection: Reservation,
    _daemon: Reservation,
}

impl Room {
    /// Reserve `bytes` from the connection's budget, then from the daemon's (always in
    /// that order, so waiting readers never hold one another up in a cycle).
    pub async fn reserve(connection: &Budget, daemon: &Budget, bytes: u64) -> Room {
        let c = connection.reserve(bytes).await;
        let d = daemon.reserve(bytes).await;
        Room { _connection: c, _daemon: d }
    }
}

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Budget {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).max(1);
        Budget { sem: Arc::new(Semaphore::new(units as usize)), units }
    }

    /// The whole budget in bytes.
    pub fn capacity(&self) -> u64 {
        self.units as u64 * UNIT
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }

    fn units_for(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).min(self.units)
    }

    /// Reserve room for `bytes`, waiting until there is. More than the whole budget
    /// takes all of it.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        if bytes == 0 {
            return Reservation::none();
        }
        // The semaphore is never closed, so acquiring only fails if it were.
        let permit = self.sem.clone().acquire_many_owned(self.units_for(bytes)).await.ok();
        Reservation { _permit: permit }
    }

    /// Like [`Budget::reserve`], giving up after `wait`.
    pub async fn reserve_within(&self, bytes: u64, wait: Duration) -> Option<Reservation> {
        tokio::time::timeout(wait, self.reserve(bytes)).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_oversize_ones_take_everything() {
        let b = Budget::new(10 * UNIT);
        assert_eq!(b.capacity(), 10 * UNIT);
        let r1 = b.reserve(4 * UNIT).await;
        let r2 = b.reserve(1).await; // rounds up to one unit
        assert_eq!(b.available(), 5 * UNIT);
        assert!(b.reserve_within(6 * UNIT, Duration::from_millis(20)).await.is_none(), "no room: waits");
        drop(r1);
        let big = b.reserve_within(1 << 40, Duration::from_millis(20)).await;
        assert!(big.is_none(), "an oversize request waits for the whole budget");
        drop(r2);
        let big = b.reserve(1 << 40).await;
        assert_eq!(b.available(), 0);
        drop(big);
        assert_eq!(b.available(), 10 * UNIT);
        let _ = b.reserve(0).await;
        assert_eq!(b.available(), 10 * UNIT, "nothing reserved for an empty body");
    }
}
