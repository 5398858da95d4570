//! One store's budget for its primary backend, shared fairly between principals.
//!
//! The budget is up to three limits, all optional: calls in flight
//! (`max_concurrency`), bytes per second into the primary (`bandwidth_in`: stores) and
//! out of it (`bandwidth_out`: loads). Every process on the host that uses the store
//! draws from the same budget, because every call goes through the store's one actor.
//!
//! **Fairness.** Waiting calls queue per principal, and the next call to go is the
//! first waiting call of the principal that has used the least so far: start-time fair
//! queueing, with a call costing [`CALL_COST`] plus the bytes it moved. A principal
//! that was idle joins at the current virtual time, so idling earns no credit. One
//! process with 64 calls in flight and another with 4 therefore get the same share
//! while both wait, and a call never waits behind more than one call of each other
//! principal that wants the primary.
//!
//! **Bandwidth** is a token bucket per direction that may go into debt: a store is
//! charged its size when it goes; a load, whose size is not known before, the average
//! size of recent loads when it goes, corrected to its size when it is back. A call waits while the bucket of its direction is in debt; short
//! bursts up to [`BURST`] of a second's budget pass at once. So the rate over any
//! stretch of seconds stays at the budget, though a single large value goes at the
//! link's speed and the calls after it wait for the debt to be paid.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What one call costs in the fair order besides its bytes, so calls that move nothing
/// (infos, deletes) are shared too.
pub const CALL_COST: f64 = 4096.0;

/// The part of a second's bandwidth that may go at once after an idle spell.
pub const BURST: f64 = 0.1;

/// Which bandwidth budget a call draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into the primary (a store), with its size known before it goes.
    In(u64),
    /// Out of the primary (a load); charged once its size is known.
    Out,
    /// Neither (info, list, delete, move...).
    Neither,
}

/// The limits of one store's budget (None: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Calls in flight on the primary, all principals together.
    pub max_concurrency: Option<usize>,
    /// Bytes per second into the primary.
    pub bandwidth_in: Option<u64>,
    /// Bytes per second out of the primary.
    pub bandwidth_out: Option<u64>,
}

impl Limits {
    /// No limit at all: calls need not queue.
    pub fn is_unlimited(&self) -> bool {
        self.max_concurrency.is_none() && self.bandwidth_in.is_none() && self.bandwidth_out.is_none()
    }
}

/// The shared budget of one store.
pub struct Fair {
    limit: usize,
    rate_in: f64,
    rate_out: f64,
    state: Mutex<State>,
}

struct State {
    in_use: usize,
    tokens_in: f64,
    tokens_out: f64,
    refilled: Instant,
    principals: HashMap<Arc<str>, Share>,
    /// The virtual start time of the last call that went.
    clock: f64,
    /// A wake-up for calls waiting on a bucket in debt is scheduled.
    timer: bool,
    /// The moving average size of loads, charged when one goes.
    average_out: f64,
}

/// What a load is charged when it goes before any load came back.
const FIRST_LOAD_GUESS: f64 = 65536.0;

#[derive(Default)]
struct Share {
    /// Virtual time at which this principal's use so far is paid for.
    finish: f64,
    waiting: VecDeque<Waiter>,
}

struct Waiter {
    /// Sent what the call was charged in advance.
    go: oneshot::Sender<f64>,
    direction: Direction,
}

/// A call's place on the primary; dropping it gives the place back.
pub struct Permit {
    fair: Arc<Fair>,
    principal: Arc<str>,
    /// What a load was charged when it went (see [`Permit::charge_out`]).
    reserved: f64,
    /// How long the call queued before it got its place.
    pub waited: Duration,
}

impl Permit {
    /// A load came back with `bytes`: correct what it was charged when it went, in the
    /// budget and in the principal's share.
    pub fn charge_out(&self, bytes: u64) {
        let mut st = self.fair.lock();
        let delta = bytes as f64 - self.reserved;
        if self.fair.rate_out > 0.0 {
            st.tokens_out -= delta;
        }
        st.average_out = 0.8 * st.average_out + 0.2 * bytes as f64;
        let clock = st.clock;
        let share = st.principals.entry(self.principal.clone()).or_default();
        share.finish = (share.finish + delta).max(clock);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.fair.lock().in_use -= 1;
        Fair::dispatch(&self.fair);
    }
}

/// A granted place that nobody took (its waiter went away) is given back.
struct Waiting {
    fair: Arc<Fair>,
    go: Option<oneshot::Receiver<f64>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut go) = self.go.take() {
            go.close();
            if let Ok(reserved) = go.try_recv() {
                let mut st = self.fair.lock();
                st.in_use -= 1;
                if self.fair.rate_out > 0.0 {
                    st.tokens_out += reserved;
                }
            }
            // Also drops the abandoned waiter from its queue.
            Fair::dispatch(&self.fair);
        }
    }
}

impl Fair {
    /// A budget with `limits`.
    pub fn new(limits: Limits) -> Arc<Fair> {
        let rate = |r: Option<u64>| r.map(|r| r as f64).unwrap_or(0.0);
        let (rate_in, rate_out) = (rate(limits.bandwidth_in), rate(limits.bandwidth_out));
        Arc::new(Fair {
            limit: limits.max_concurrency.unwrap_or(usize::MAX).max(1),
            rate_in,
            rate_out,
            state: Mutex::new(State {
                in_use: 0,
                tokens_in: rate_in * BURST,
                tokens_out: rate_out * BURST,
                refilled: Instant::now(),
                principals: HashMap::new(),
                clock: 0.0,
                timer: false,
                average_out: FIRST_LOAD_GUESS,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a place for one call of `principal` moving in `direction`.
    pub async fn acquire(self: &Arc<Self>, principal: Arc<str>, direction: Direction) -> Permit {
        let arrived = Instant::now();
        let (go, wait) = oneshot::channel::<f64>();
        {
            let mut st = self.lock();
            let clock = st.clock;
            let share = st.principals.entry(principal.clone()).or_default();
            if share.waiting.is_empty() {
                // Idling earns no credit.
                share.finish = share.finish.max(clock);
            }
            share.waiting.push_back(Waiter { go, direction });
        }
        let mut waiting = Waiting { fair: self.clone(), go: Some(wait) };
        Fair::dispatch(self);
        let mut reserved = 0.0;
        if let Some(go) = waiting.go.as_mut() {
            // The sender lives in the queue until it is used; a closed channel cannot
            // happen while `self` lives, and would only let the call go early.
            reserved = go.await.unwrap_or(0.0);
        }
        waiting.go = None;
        Permit { fair: self.clone(), principal, reserved, waited: arrived.elapsed() }
    }

    /// Let calls go while there is room: always the first waiting call of the
    /// principal that has used least, unless its bucket is in debt.
    fn dispatch(this: &Arc<Fair>) {
        let mut st = this.lock();
        let now = Instant::now();
        let dt = now.saturating_duration_since(st.refilled).as_secs_f64();
        st.refilled = now;
        st.tokens_in = (st.tokens_in + this.rate_in * dt).min(this.rate_in * BURST);
        st.tokens_out = (st.tokens_out + this.rate_out * dt).min(this.rate_out * BURST);
        // Waiters that went away leave from the front of their queue (one in the middle
        // leaves when it gets there: its place is not taken, see the send below), so a
        // dispatch costs the number of principals, not of waiters.
        for share in st.principals.values_mut() {
            while share.waiting.front().is_some_and(|w| w.go.is_closed()) {
                share.waiting.pop_front();
            }
        }
        while st.in_use < this.limit {
            let mut best: Option<(f64, Arc<str>)> = None;
            let mut debt_wait: Option<Duration> = None;
            for (name, share) in &st.principals {
                let Some(first) = share.waiting.front() else { continue };
                let (tokens, rate) = match first.direction {
                    Direction::In(_) => (st.tokens_in, this.rate_in),
                    Direction::Out => (st.tokens_out, this.rate_out),
                    Direction::Neither => (0.0, 0.0),
                };
                if rate > 0.0 && tokens < 0.0 {
                    let wait = Duration::from_secs_f64(-tokens / rate).max(Duration::from_millis(1));
                    debt_wait = Some(debt_wait.map_or(wait, |w| w.min(wait)));
                    continue;
                }
                if best.as_ref().is_none_or(|(f, n)| share.finish < *f || (share.finish == *f && name < n)) {
                    best = Some((share.finish, name.clone()));
                }
            }
            let Some((start, name)) = best else {
                if let (Some(wait), false) = (debt_wait, st.timer) {
                    Fair::wake_after(this, &mut st, wait);
                }
                break;
            };
            let average_out = st.average_out;
            let Some(share) = st.principals.get_mut(&name) else { break };
            let Some(waiter) = share.waiting.pop_front() else { break };
            let (bytes_in, reserved) = match waiter.direction {
                Direction::In(n) => (n as f64, 0.0),
                Direction::Out => (0.0, average_out),
                Direction::Neither => (0.0, 0.0),
            };
            share.finish = start + CALL_COST + bytes_in + reserved;
            st.clock = st.clock.max(start);
            if this.rate_in > 0.0 {
                st.tokens_in -= bytes_in;
            }
            if this.rate_out > 0.0 {
                st.tokens_out -= reserved;
            }
            st.in_use += 1;
            if waiter.go.send(reserved).is_err() {
                // It went away while it waited: nothing goes, nothing is charged.
                st.in_use -= 1;
                st.tokens_out += if this.rate_out > 0.0 { reserved } else { 0.0 };
                st.tokens_in += if this.rate_in > 0.0 { bytes_in } else { 0.0 };
            }
        }
        // Forget principals that wait for nothing and have no use left to pay for.
        let clock = st.clock;
        st.principals.retain(|_, s| !s.waiting.is_empty() || s.finish > clock);
    }

    fn wake_after(this: &Arc<Fair>, st: &mut State, wait: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        st.timer = true;
        let fair = this.clone();
        runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            fair.lock().timer = false;
            Fair::dispatch(&fair);
        });
    }

    /// Calls on the primary now, and calls waiting for a place.
    pub fn load(&self) -> (usize, usize) {
        let st = self.lock();
        (st.in_use, st.principals.values().map(|s| s.waiting.len()).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: Option<usize>, bw_in: Option<u64>, bw_out: Option<u64>) -> Limits {
        Limits { max_concurrency: max, bandwidth_in: bw_in, bandwidth_out: bw_out }
    }

    #[tokio::test]
    async fn concurrency_is_bounded_and_places_come_back() {
        let fair = Fair::new(limits(Some(2), None, None));
        let a = fair.acquire("a".into(), Direction::Neither).await;
        let _b = fair.acquire("a".into(), Direction::Neither).await;
        let third = tokio::spawn({
            let fair = fair.clone();
            async move { fair.acquire("a".into(), Direction::Neither).await.waited }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fair.load(), (2, 1), "the third call waits");
        drop(a);
        let waited = third.await.unwrap();
        assert!(waited >= Duration::from_millis(40), "it queued until a place came back");
        assert_eq!(fair.load(), (1, 0), "its permit was dropped with its task");
    }

    #[tokio::test]
    async fn the_principal_that_used_least_goes_first() {
        let fair = Fair::new(limits(Some(1), None, None));
        let held = fair.acquire("greedy".into(), Direction::Neither).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // The greedy principal queues 6 calls before the modest one queues 2.
        for (i, who) in ["greedy"; 6].into_iter().chain(["modest"; 2]).enumerate() {
            let (f, order) = (fair.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = f.acquire(who.into(), Direction::Neither).await;
                order.lock().unwrap().push(who);
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(p);
            }));
            while fair.load().1 < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        let modest_last = order.iter().rposition(|w| *w == "modest").unwrap();
        assert!(modest_last <= 4, "the modest principal did not wait behind all greedy calls: {order:?}");
    }

    #[tokio::test]
    async fn a_bucket_in_debt_holds_its_direction_only() {
        let fair = Fair::new(limits(None, Some(1000), None));
        let p = fair.acquire("a".into(), Direction::In(10_000)).await;
        drop(p);
        // 10 s of debt: an info still goes, a store waits.
        let info = tokio::time::timeout(Duration::from_secs(1), fair.acquire("a".into(), Direction::Neither)).await;
        assert!(info.is_ok());
        drop(info);
        let store = tokio::time::timeout(Duration::from_millis(200), fair.acquire("a".into(), Direction::In(1))).await;
        assert!(store.is_err(), "a store waits while the in-bucket is in debt");
        assert_eq!(fair.load(), (0, 0), "the abandoned waiter left the queue's count and took no place");
    }

    #[tokio::test]
    async fn a_waiter_that_went_away_in_the_middle_takes_no_place() {
        let fair = Fair::new(limits(Some(1), None, None));
        let held = fair.acquire("a".into(), Direction::Neither).await;
        let first = tokio::spawn({
            let fair = fair.clone();
            async move { fair.acquire("a".into(), Direction::Neither).await.waited }
        });
        while fair.load().1 < 1 {
            tokio::task::yield_now().await;
        }
        let gone = tokio::time::timeout(Duration::from_millis(20), fair.acquire("a".into(), Direction::Neither)).await;
        assert!(gone.is_err());
        let last = tokio::spawn({
            let fair = fair.clone();
            async move { fair.acquire("a".into(), Direction::Neither).await.waited }
        });
        while fair.load().1 < 3 {
            tokio::task::yield_now().await;
        }
        drop(held);
        first.await.unwrap();
        last.await.unwrap();
        assert_eq!(fair.load(), (0, 0), "every place came back, the abandoned one was never taken");
    }
}
