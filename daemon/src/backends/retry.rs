//! The one retry policy of the remote backends (sftp, S3, rclone, the REST client).
//!
//! A backend runs an operation as attempts. Each failed attempt is a [`Failure`]: the
//! error plus a `retriable` flag, set where the error is made, by the code that knows
//! what it means (a lost connection, a body cut off, a server error that passes). The
//! policy ([`Retry`]) only says how often to try again and how long to pause first; it
//! never looks at an error to decide. So the rules live in one place:
//!
//! - a failure that is not retriable ends the operation at once, with its error;
//! - a retriable one is tried again after the next pause, until the pauses run out;
//!   then the operation ends with the last error, still flagged retriable (so a backend
//!   can say "gave up after N attempts" where it wants to).
//!
//! Which failures are retriable, and the pauses, are the backends' own (see each one);
//! [`Failure::if_lost`] is the common rule "a lost connection may come back, anything
//! else is the server's answer". Retries of a lost connection are logged as warnings,
//! others (a server error said to pass, an object briefly missing) at debug level.
//!
//! [`Retry::run`] drives a closure; [`Tries`] is the same policy for a caller that keeps
//! state from one attempt to the next (sftp's reconnects) in its own loop.
//!
//! A small module rather than a crate (backon would do): the pauses we need are three
//! lines each, and our rule (the flag decides, the policy counts) is the whole API.

use borgstore_ipc::{Error, ErrorKind};
use std::future::Future;
use std::time::Duration;

/// A failed attempt: its error, and whether another attempt may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub error: Error,
    /// Whether trying again may help (set by the backend that made the error).
    pub retriable: bool,
}

impl Failure {
    /// A failure worth another attempt.
    pub fn transient(error: Error) -> Self {
        Failure { error, retriable: true }
    }

    /// A failure that another attempt would only repeat (an answer, a bad argument).
    pub fn fatal(error: Error) -> Self {
        Failure { error, retriable: false }
    }

    /// The common rule: a lost connection ([`ErrorKind::ConnectionLost`]) is worth another
    /// attempt, every other error is an answer.
    pub fn if_lost(error: Error) -> Self {
        let retriable = error.kind == ErrorKind::ConnectionLost;
        Failure { error, retriable }
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        f.error
    }
}

/// When to try again: the pause before each retry (an attempt after the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// One retry after each of these pauses, in order.
    Pauses(&'static [Duration]),
    /// `retries` retries, each after `wait` (zero: right away).
    Every {
        /// The pause before each retry.
        wait: Duration,
        /// How many retries at most.
        retries: u32,
    },
    /// `retries` retries; the first after `first`, each further one after twice the
    /// pause before, at most `max`.
    Doubling {
        /// The pause before the first retry.
        first: Duration,
        /// The longest pause.
        max: Duration,
        /// How many retries at most.
        retries: u32,
    },
}

impl Retry {
    /// No retries: the first attempt's outcome is final.
    pub const NONE: Retry = Retry::Every { wait: Duration::ZERO, retries: 0 };

    /// How many retries at most (attempts: one more).
    pub fn retries(&self) -> u32 {
        match *self {
            Retry::Pauses(p) => u32::try_from(p.len()).unwrap_or(u32::MAX),
            Retry::Every { retries, .. } | Retry::Doubling { retries, .. } => retries,
        }
    }

    /// The pause before retry `n` (1: the first retry); None when there is no such retry.
    pub fn pause(&self, n: u32) -> Option<Duration> {
        if n == 0 || n > self.retries() {
            return None;
        }
        match *self {
            Retry::Pauses(p) => p.get(n as usize - 1).copied(),
            Retry::Every { wait, .. } => Some(wait),
            Retry::Doubling { first, max, .. } => Some(first.saturating_mul(1 << (n - 1).min(16)).min(max)),
        }
    }

    /// Count the attempts of one operation; `what` names it in the log.
    pub fn start(self, what: &str) -> Tries<'_> {
        Tries { policy: self, what, attempt: 0 }
    }

    /// Run `attempt` (given its number, 0 for the first) until it succeeds, fails with
    /// an error that is not retriable, or the retries are used up.
    pub async fn run<T, F, Fut>(self, what: &str, mut attempt: F) -> Result<T, Failure>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut tries = self.start(what);
        loop {
            match attempt(tries.attempt()).await {
                Ok(value) => return Ok(value),
                Err(failure) => tries.after(failure).await?,
            }
        }
    }
}

/// The attempts of one operation under a [`Retry`] policy.
#[derive(Debug)]
pub struct Tries<'a> {
    policy: Retry,
    what: &'a str,
    attempt: u32,
}

impl Tries<'_> {
    /// The number of the attempt to make now (0: the first, 1: the first retry, ...).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// After a failed attempt: pause before the next one, or give up with `failure`
    /// (not retriable, or no retry left).
    pub async fn after(&mut self, failure: Failure) -> Result<(), Failure> {
        let next = self.attempt.saturating_add(1);
        let pause = match self.policy.pause(next) {
            Some(pause) if failure.retriable => pause,
            _ => return Err(failure),
        };
        let retries = self.policy.retries();
        if failure.error.kind == ErrorKind::ConnectionLost {
            tracing::warn!("{}: {}; retry {next}/{retries} in {pause:?}", self.what, failure.error);
        } else {
            tracing::debug!("{}: {}; retry {next}/{retries} in {pause:?}", self.what, failure.error);
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        self.attempt = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::time::Instant;

    const MS: Duration = Duration::from_millis(1);

    fn lost() -> Error {
        Error::new(ErrorKind::ConnectionLost, "gone")
    }

    /// Run `policy` over an operation that fails with `fail` until attempt `ok_at`
    /// (None: never); returns the outcome, the attempt numbers seen and the time taken.
    async fn drive(
        policy: Retry,
        fail: fn(Error) -> Failure,
        ok_at: Option<u32>,
    ) -> (Result<u32, Failure>, Vec<u32>, Duration) {
        let seen = std::sync::Mutex::new(Vec::new());
        let started = Instant::now();
        let result = policy
            .run("test", |n| {
                seen.lock().unwrap().push(n);
                async move {
                    match ok_at {
                        Some(k) if n >= k => Ok(n),
                        _ => Err(fail(lost())),
                    }
                }
            })
            .await;
        (result, seen.into_inner().unwrap(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_the_listed_pauses_then_gives_up() {
        const WAITS: [Duration; 3] = [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(3)];
        let (result, seen, took) = drive(Retry::Pauses(&WAITS), Failure::transient, None).await;
        assert_eq!(seen, [0, 1, 2, 3], "the first attempt and three retries");
        assert_eq!(took, Duration::from_millis(4200), "exactly the three pauses");
        let failure = result.unwrap_err();
        assert!(failure.retriable, "gave up on a retriable failure: the retries ran out");
        assert_eq!(failure.error, lost());
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_on_a_retry_after_the_pauses_before_it() {
        let policy = Retry::Every { wait: Duration::from_secs(5), retries: 3 };
        let (result, seen, took) = drive(policy, Failure::if_lost, Some(2)).await;
        assert_eq!(result, Ok(2));
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(took, Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_that_is_not_retriable_ends_at_once() {
        let (result, seen, took) =
            drive(Retry::Every { wait: Duration::from_secs(5), retries: 3 }, Failure::fatal, None).await;
        assert_eq!(seen, [0]);
        assert_eq!(took, Duration::ZERO);
        assert!(!result.unwrap_err().retriable);
        // if_lost: only a lost connection is retried.
        let f = Failure::if_lost(Error::not_found("x"));
        assert!(!f.retriable);
        assert!(Failure::if_lost(lost()).retriable);
        assert_eq!(Error::from(f), Error::not_found("x"));
    }

    #[tokio::test(start_paused = true)]
    async fn no_retries_and_zero_pauses() {
        let (result, seen, took) = drive(Retry::NONE, Failure::transient, None).await;
        assert_eq!((seen, took), (vec![0], Duration::ZERO));
        assert!(result.unwrap_err().retriable);
        let (_, seen, took) = drive(Retry::Every { wait: Duration::ZERO, retries: 2 }, Failure::transient, None).await;
        assert_eq!((seen, took), (vec![0, 1, 2], Duration::ZERO), "retried right away");
    }

    #[tokio::test(start_paused = true)]
    async fn doubling_pauses_are_capped_and_never_overflow() {
        let policy = Retry::Doubling { first: 200 * MS, max: Duration::from_secs(5), retries: 7 };
        let pauses: Vec<_> = (0..=8).map(|n| policy.pause(n)).collect();
        let want = [None, Some(200), Some(400), Some(800), Some(1600), Some(3200), Some(5000), Some(5000), None];
        assert_eq!(pauses, want.map(|p| p.map(|ms| ms * MS)));
        let huge = Retry::Doubling { first: Duration::MAX, max: Duration::MAX, retries: u32::MAX };
        assert_eq!(huge.pause(u32::MAX), Some(Duration::MAX));
        let (_, seen, took) = drive(
            Retry::Doubling { first: 200 * MS, max: Duration::from_secs(5), retries: 3 },
            Failure::transient,
            None,
        )
        .await;
        assert_eq!(seen, [0, 1, 2, 3]);
        assert_eq!(took, 1400 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn tries_drive_a_loop_of_the_callers_own() {
        let count = AtomicU32::new(0);
        let mut tries = Retry::Every { wait: Duration::from_secs(1), retries: 2 }.start("loop");
        let started = Instant::now();
        let failure = loop {
            count.fetch_add(1, Ordering::SeqCst);
            if let Err(f) = tries.after(Failure::transient(lost())).await {
                break f;
            }
        };
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert_eq!(tries.attempt(), 2);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(failure.retriable);
    }
}
