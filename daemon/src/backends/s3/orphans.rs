//! Multipart uploads left behind, cleaned up when the store is opened.
//!
//! Two kinds, two rules:
//!
//! - Ours, cut off by a crash: the journal (`journal`) still lists them, and the process
//!   that ran them is gone. Each is aborted (one that is gone already counts as aborted)
//!   and crossed out; one whose abort fails stays listed for the next open. Entries of a
//!   process that still runs, or for another endpoint, bucket or prefix, are left alone.
//! - Anybody's, abandoned: an upload under the store's prefix started longer ago than
//!   `abandoned_upload_age` (a day by default) belongs to a host that died for good, or
//!   lost its journal. Younger ones are left alone: several daemons may share a bucket and
//!   prefix, and another host's upload may be live.
//!
//! Uploads this process has in flight are never touched (a store may be reopened while
//! another client's upload runs, and two stores may share a location). Cleaning up is best effort: a server that refuses
//! `ListMultipartUploads` (some permissions policies do) or fails costs a warning, never
//! the open.

use super::core::S3Core;
use super::journal::Entry;
use super::multipart::{abort_upload, is_live};
use futures::StreamExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Aborts in flight at once while cleaning up.
const ABORTS_IN_FLIGHT: usize = 8;
/// Pages of `ListMultipartUploads` read at most (1000 uploads each).
const MAX_PAGES: usize = 100;

/// Whether an upload started at `initiated` (seconds since the epoch) is older than `age`
/// at `now`; an upload without a start time is not.
fn abandoned(initiated: Option<f64>, age: Duration, now: SystemTime) -> bool {
    let Some(started) = initiated.filter(|t| t.is_finite() && *t >= 0.0) else {
        return false;
    };
    let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    now - started > age.as_secs_f64()
}

impl S3Core {
    /// Abort the uploads our journal lists and the abandoned ones under the prefix (see
    /// the module docs).
    pub async fn abort_leftovers(&self) {
        self.abort_journaled().await;
        if let Some(age) = self.parts.abandoned_upload_age {
            if let Err(e) = self.abort_abandoned(age).await {
                tracing::warn!("S3: looking for abandoned multipart uploads failed: {e}");
            }
        }
    }

    /// Whether the journal entry `e` is a leftover of this store: same location, and the
    /// upload runs neither here nor in another process that is still running.
    async fn is_leftover(&self, e: &Entry) -> bool {
        if e.endpoint != self.endpoint() || e.bucket != self.bucket() || !e.key.starts_with(self.prefix.as_str()) {
            return false;
        }
        if is_live(&e.upload_id) {
            return false;
        }
        match &e.owner {
            Some(owner) if owner.pid != std::process::id() => !owner.running().await,
            _ => true,
        }
    }

    async fn abort_journaled(&self) {
        let Some(journal) = &self.journal else {
            return;
        };
        let mut entries: Vec<(PathBuf, Entry)> = Vec::new();
        for (file, entry) in journal.entries().await {
            if self.is_leftover(&entry).await {
                entries.push((file, entry));
            }
        }
        if entries.is_empty() {
            return;
        }
        let Ok(client) = self.client().await else {
            return;
        };
        let total = entries.len();
        let aborted = count_done(entries, |(file, entry)| async move {
            match abort_upload(client, &entry.bucket, &entry.key, &entry.upload_id, self.budget(0)).await {
                Ok(()) => {
                    if let Err(e) = journal.remove_file(&file).await {
                        tracing::warn!("S3 upload journal {}: cannot cross out: {e}", journal.dir().display());
                    }
                    true
                }
                Err(e) => {
                    tracing::warn!("S3: aborting an upload cut off earlier failed, the next open tries again: {e}");
                    false
                }
            }
        })
        .await;
        tracing::info!("S3: aborted {aborted} of {total} multipart uploads cut off earlier (from the upload journal)");
    }

    async fn abort_abandoned(&self, age: Duration) -> borgstore_ipc::Result<()> {
        let client = self.client().await?;
        let now = SystemTime::now();
        let mut old = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        for _ in 0..MAX_PAGES {
            let page = client
                .list_multipart_uploads()
                .bucket(self.bucket())
                .prefix(self.prefix.as_str())
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .customize()
                .config_override(self.budget(0))
                .send()
                .await
                .map_err(|e| self.error("open", "", e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                if abandoned(upload.initiated().map(|t| t.as_secs_f64()), age, now) && !is_live(id) {
                    old.push((key.to_string(), id.to_string()));
                }
            }
            match (page.is_truncated(), page.next_key_marker(), page.next_upload_id_marker()) {
                (Some(true), Some(k), id) if !k.is_empty() => {
                    key_marker = Some(k.to_string());
                    id_marker = id.map(str::to_owned);
                }
                _ => break,
            }
        }
        if old.is_empty() {
            return Ok(());
        }
        let total = old.len();
        let aborted = count_done(old, |(key, id)| async move {
            match abort_upload(client, self.bucket(), &key, &id, self.budget(0)).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("S3: aborting an abandoned multipart upload failed: {e}");
                    false
                }
            }
        })
        .await;
        tracing::info!(
            "S3: aborted {aborted} of {total} multipart uploads under the store started more than {}s ago",
            age.as_secs()
        );
        Ok(())
    }
}

/// Run `abort` on every item, [`ABORTS_IN_FLIGHT`] at a time; how many of them worked.
async fn count_done<T, F, Fut>(items: Vec<T>, abort: F) -> usize
where
    F: FnMut(T) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    futures::stream::iter(items)
        .map(abort)
        .buffer_unordered(ABORTS_IN_FLIGHT)
        .filter(|done| std::future::ready(*done))
        .count()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uploads_older_than_the_age_are_abandoned() {
        let day = Duration::from_secs(86_400);
        let now = UNIX_EPOCH + Duration::from_secs(10 * 86_400);
        let at = |days_ago: f64| Some(10.0 * 86_400.0 - days_ago * 86_400.0);
        assert!(abandoned(at(1.5), day, now));
        assert!(!abandoned(at(0.5), day, now));
        assert!(!abandoned(at(-1.0), day, now), "a clock ahead of ours");
        assert!(!abandoned(None, day, now));
        assert!(!abandoned(Some(f64::NAN), day, now));
        assert!(abandoned(Some(0.0), day, now));
    }
}
