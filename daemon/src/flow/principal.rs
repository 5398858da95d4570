//! Whose call this is, as the gate below the engine sees it.
//!
//! The store actor runs each command inside [`scope`] with the caller's profile name
//! (see [`crate::actor::store_actor`]), so the layers under the engine can share the
//! primary fairly between principals ([`super::fair`]) without every engine method
//! taking the caller as an argument. Work the daemon does on its own (the purge, a
//! cache sweep, background uploads) runs as [`INTERNAL`] unless it says otherwise.

use std::future::Future;
use std::sync::Arc;

tokio::task_local! {
    static PRINCIPAL: Arc<str>;
}

/// The principal of work nobody asked for directly.
pub const INTERNAL: &str = "internal";

/// The principal the current task works for ([`INTERNAL`] outside any [`scope`]).
pub fn current() -> Arc<str> {
    PRINCIPAL.try_with(Arc::clone).unwrap_or_else(|_| Arc::from(INTERNAL))
}

/// Run `fut` on behalf of `principal`.
pub async fn scope<F: Future>(principal: Arc<str>, fut: F) -> F::Output {
    PRINCIPAL.scope(principal, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scoped_and_default() {
        assert_eq!(&*current(), INTERNAL);
        let inside = scope(Arc::from("alice"), async { current() }).await;
        assert_eq!(&*inside, "alice");
        assert_eq!(&*current(), INTERNAL);
    }
}
