//! Request activity of a REST server, for `borgstore-server-rest --idle-timeout`.
//!
//! A request counts as in flight from the moment its headers have been read (before its
//! body arrives) until the last byte of its response body has been handed to the
//! connection, or the response is dropped. [`Activity::idle`] resolves once nothing has
//! been in flight for the whole timeout, so a socket-activated server can exit and let
//! systemd start it again on the next connection.

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::Bytes;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
// Tokio's clock (the system's in production) so that tests can run on paused time.
use tokio::time::Instant;

/// Requests in flight and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `base` when a request last started or ended.
    last: AtomicU64,
    /// Woken whenever the last request in flight ends.
    quiet: Notify,
}

impl Activity {
    /// Nothing in flight; the idle time counts from now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            quiet: Notify::new(),
        })
    }

    fn touch(&self) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(now, Ordering::SeqCst);
    }

    /// A request starts; it ends when the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(self.clone())
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves when no request has been in flight for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let quiet = self.quiet.notified();
            if self.in_flight() > 0 {
                quiet.await;
                continue;
            }
            let last = self.base + Duration::from_millis(self.last.load(Ordering::SeqCst));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                // A request that starts right now still completes: the caller stops its
                // server gracefully.
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// One request in flight (see [`Activity::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

/// A response body that keeps its request in flight until it has been sent.
pub struct Tracked {
    body: BoxBody,
    _request: InFlight,
}

impl Tracked {
    /// `body`, keeping `request` in flight until it has been sent in full or dropped.
    pub fn new(body: BoxBody, request: InFlight) -> Tracked {
        Tracked { body, _request: request }
    }
}

impl MessageBody for Tracked {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the sleeps below advance the clock at once instead of taking 1 s.
    #[tokio::test(start_paused = true)]
    async fn idle_waits_for_requests_in_flight_and_for_the_timeout() {
        let ms = Duration::from_millis;
        let a = Activity::new();
        let start = Instant::now();
        let req = a.begin();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.idle(ms(300)).await })
        };
        tokio::time::sleep(ms(600)).await;
        assert!(!waiter.is_finished(), "idle while a request is in flight");
        drop(req);
        tokio::time::sleep(ms(150)).await;
        assert!(!waiter.is_finished(), "idle before the timeout");
        drop(a.begin());
        waiter.await.unwrap();
        // 600 ms in flight, 150 ms quiet, then a short request and 300 ms quiet; on paused
        // time it resolves right then, not later.
        let took = start.elapsed();
        assert!(took >= ms(1050) && took < ms(1060), "{took:?}");
        assert_eq!(a.in_flight(), 0);
    }
}
