//! The SSH connections of one open sftp store: up to `connections` of them (the store's
//! config key, 1 to [`MAX_CONNECTIONS`]), each with its own sftp session, opened on
//! demand and replaced on their own when lost.
//!
//! Why more than one: sftp multiplexes requests over one channel, but OpenSSH's
//! `sftp-server` answers them one after the other, and one SSH connection is one stream
//! of encryption on each side. Operations on different items of one store run
//! concurrently (the store actor sees to that), so they are spread over connections.
//!
//! - Picking ([`Pool::pick`]): the connected slot with the fewest operations in flight;
//!   a slot that was never connected is taken only when every connected one is busy, so
//!   one operation at a time uses one connection, and extra connections open when
//!   concurrent demand needs them. The pick holds a [`Lease`] (the in-flight count) for
//!   the whole operation, retries included; it stays on its slot.
//! - Each slot has its own reconnect lock: a lost connection is replaced once, by the
//!   first operation that notices; the others on that slot wait for it and use its
//!   result. Operations on other slots go on meanwhile.
//! - A slot's connection may be `None`: never connected yet, or its reconnect failed
//!   (the next operation there connects first).
//! - A server that refuses a further connection (hosters limit connections per account)
//!   caps the pool at the connections it gave ([`Pool::cap`]) until the store is opened
//!   again; the operation that asked goes on over one of those.

use super::conn::Conn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::backends::url::{DEFAULT_CONNECTIONS, MAX_CONNECTIONS};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One connection place.
pub struct Slot {
    conn: Mutex<Option<Arc<Conn>>>,
    /// Had a connection since the store was opened (lost ones too: they are replaced
    /// where they were, rather than opening yet another slot).
    used: AtomicBool,
    /// One (re)connect of this slot at a time.
    pub reconnecting: tokio::sync::Mutex<()>,
    in_flight: AtomicUsize,
    /// Had a connection in place since the store was opened.
    connected_once: AtomicBool,
}

impl Slot {
    fn new() -> Self {
        Slot {
            conn: Mutex::new(None),
            used: AtomicBool::new(false),
            reconnecting: tokio::sync::Mutex::new(()),
            in_flight: AtomicUsize::new(0),
            connected_once: AtomicBool::new(false),
        }
    }

    /// The slot's connection, if any (it may be closed).
    pub fn current(&self) -> Option<Arc<Conn>> {
        lock(&self.conn).clone()
    }

    /// Put `conn` in place (None: empty the slot); returns the one it replaces.
    pub fn replace(&self, conn: Option<Arc<Conn>>) -> Option<Arc<Conn>> {
        if conn.is_some() {
            self.used.store(true, Ordering::SeqCst);
            self.connected_once.store(true, Ordering::SeqCst);
        }
        std::mem::replace(&mut *lock(&self.conn), conn)
    }

    /// Has it had a connection since the store was opened?
    pub fn connected_once(&self) -> bool {
        self.connected_once.load(Ordering::SeqCst)
    }

    /// Operations running on this slot now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// The slots of one store.
pub struct Pool {
    slots: Vec<Slot>,
    /// Slots from this one on are not used (see [`Pool::cap`]).
    cap: AtomicUsize,
}

/// One operation's hold on a slot; the in-flight count drops with it (also when the
/// operation is cancelled).
pub struct Lease<'a> {
    slot: &'a Slot,
    index: usize,
}

impl Lease<'_> {
    /// The slot this operation runs on.
    pub fn slot(&self) -> &Slot {
        self.slot
    }

    /// Its number (0 is the connection `open` made).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.slot.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Pool {
    /// `n` empty slots (clamped to 1..=[`MAX_CONNECTIONS`]).
    pub fn new(n: usize) -> Self {
        let n = n.clamp(1, MAX_CONNECTIONS);
        Pool { slots: (0..n).map(|_| Slot::new()).collect(), cap: AtomicUsize::new(n) }
    }

    /// How many connections it may hold.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Slot `i`.
    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots[i.min(self.slots.len() - 1)]
    }

    /// Where the next operation runs (see the module doc).
    pub fn pick(&self) -> Lease<'_> {
        let cap = self.cap.load(Ordering::SeqCst).clamp(1, self.slots.len());
        let slots = &self.slots[..cap];
        let used = slots.iter().enumerate().filter(|(_, s)| s.used.load(Ordering::SeqCst));
        let least = used.min_by_key(|(_, s)| s.in_flight());
        let index = match least {
            Some((i, s)) if s.in_flight() == 0 => i,
            least => match slots.iter().position(|s| !s.used.load(Ordering::SeqCst)) {
                // Reserve it now, so concurrent picks spread over further slots.
                Some(fresh) => {
                    self.slots[fresh].used.store(true, Ordering::SeqCst);
                    fresh
                }
                None => least.map_or(0, |(i, _)| i),
            },
        };
        let slot = &self.slots[index];
        slot.in_flight.fetch_add(1, Ordering::SeqCst);
        Lease { slot, index }
    }

    /// Use only the slots before `index` from now on (the server refused a connection
    /// in slot `index`); slot 0 is always used. True when this lowered the cap.
    pub fn cap(&self, index: usize) -> bool {
        let index = index.max(1);
        self.cap.fetch_min(index, Ordering::SeqCst) > index
    }

    /// How many slots may be used now.
    pub fn usable(&self) -> usize {
        self.cap.load(Ordering::SeqCst)
    }

    /// Empty every slot (closing): their connections, to be disconnected by the caller.
    pub fn take_all(&self) -> Vec<Arc<Conn>> {
        self.cap.store(self.slots.len(), Ordering::SeqCst);
        self.slots
            .iter()
            .filter_map(|s| {
                s.used.store(false, Ordering::SeqCst);
                s.connected_once.store(false, Ordering::SeqCst);
                lock(&s.conn).take()
            })
            .collect()
    }

    /// Connections that are up now.
    pub fn connected(&self) -> usize {
        self.slots.iter().filter(|s| s.current().is_some_and(|c| !c.is_closed())).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_spread_only_under_demand() {
        let pool = Pool::new(3);
        // Nothing connected yet: the first slot.
        let a = pool.pick();
        assert_eq!(a.index(), 0);
        drop(a);
        // One at a time: always the same (now used) slot.
        for _ in 0..3 {
            assert_eq!(pool.pick().index(), 0);
        }
        // Concurrent: each busy slot makes the next pick open a fresh one...
        let a = pool.pick();
        let b = pool.pick();
        let c = pool.pick();
        assert_eq!((a.index(), b.index(), c.index()), (0, 1, 2));
        // ...then the least busy one.
        let d = pool.pick();
        assert_eq!(d.slot().in_flight(), 2);
        drop(b);
        assert_eq!(pool.pick().index(), 1, "the idle one");
        drop((a, c, d));
        assert!(pool.slots.iter().all(|s| s.in_flight() == 0));
        assert!(pool.take_all().is_empty());
        assert_eq!(pool.pick().index(), 0, "closing forgets which slots were used");
        // A refused connection in slot 2: slots 0 and 1 only, until closed.
        let (a, b) = (pool.pick(), pool.pick());
        assert!(pool.cap(2) && !pool.cap(2) && pool.usable() == 2);
        assert_eq!(pool.pick().index(), 0, "no third slot");
        assert!(pool.cap(0));
        assert_eq!(pool.usable(), 1, "slot 0 always stays");
        drop((a, b));
        pool.take_all();
        assert_eq!(pool.usable(), 3);
        assert_eq!(Pool::new(0).size(), 1);
        assert_eq!(Pool::new(1000).size(), MAX_CONNECTIONS);
    }
}
