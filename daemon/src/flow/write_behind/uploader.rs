//! Background uploads of a spool to the primary: [`UPLOADERS`] workers per spool, each
//! taking one job at a time (one name: the spool never hands out two jobs of the same
//! name at once), retrying a failed upload with capped exponential backoff until it
//! succeeds or the job is dropped (destroy, close). A primary that is down only delays.

use super::spool::{read_checked, Job, Spool};
use crate::backends::Backend;
use std::sync::Arc;
use std::time::Duration;

/// Uploads in flight at once per spool.
pub const UPLOADERS: usize = 16;

/// Longest pause between two tries of one upload.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// Shortens [`RETRY_MAX`] (milliseconds), for tests.
pub const RETRY_MAX_ENV: &str = "BORGSTORE_WRITE_BEHIND_RETRY_MAX_MS";

fn retry_max() -> Duration {
    std::env::var(RETRY_MAX_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.max(1)))
        .unwrap_or(RETRY_MAX)
}

/// Start the workers of `spool` (on the current runtime).
pub fn start(spool: &Arc<Spool>, primary: &Arc<dyn Backend>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..UPLOADERS).map(|_| tokio::spawn(worker(spool.clone(), primary.clone()))).collect()
}

async fn worker(spool: Arc<Spool>, primary: Arc<dyn Backend>) {
    while let Some(job) = spool.next_job().await {
        upload(&spool, &primary, &job).await;
    }
}

async fn upload(spool: &Spool, primary: &Arc<dyn Backend>, job: &Job) {
    let (path, name) = (job.path.clone(), job.name.clone());
    let value = match tokio::task::spawn_blocking(move || read_checked(&path, &name)).await {
        Ok(Ok(v)) => v,
        Ok(Err(why)) => return spool.set_aside(job, &why).await,
        Err(e) => return spool.set_aside(job, &e.to_string()).await,
    };
    let cap = retry_max();
    let mut pause = Duration::from_millis(50).min(cap);
    let mut failures = 0u64;
    loop {
        match primary.store(&job.name, value.clone()).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(namespace = %spool.prefix, failures, "write-behind: upload succeeded after retries");
                }
                return spool.uploaded(job).await;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(
                        namespace = %spool.prefix,
                        failures,
                        error = %e,
                        "write-behind: upload to the primary failed; retrying (the value is safe in the spool)"
                    );
                }
            }
        }
        tokio::time::sleep(pause).await;
        if !spool.wanted(job) {
            return;
        }
        pause = (pause * 2).min(cap);
    }
}
