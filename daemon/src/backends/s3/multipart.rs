//! Multipart uploads: a value larger than `part_size` is stored as
//! `CreateMultipartUpload`, one `UploadPart` per slice of the value (up to
//! `part_concurrency` in flight, each with its own time budget and the SDK's retries),
//! then `CompleteMultipartUpload` with the parts in order. An object larger than one
//! `CopyObject` may copy is moved the same way, with `UploadPartCopy` of byte ranges.
//!
//! Atomic like a single PUT: the object appears (or is replaced) only when the upload is
//! completed, in full; until then readers see the old object or none, and listings never
//! show the parts.
//!
//! Never left behind: an upload that fails (a part, the completion) is aborted before the
//! error is returned, and one whose future is dropped (a cancelled call) is aborted by a
//! task its guard ([`InFlight`]) spawns. What a crash cuts off, the journal (`journal`)
//! remembers for the next `open` (`orphans`).
//!
//! Parts are slices of the value's one buffer (no copies). They carry no checksum of ours
//! in the completion: the upload is created without a checksum algorithm, which every S3
//! server (and B2, which refuses checksum headers it does not need) accepts.

use super::core::{chain, code, status, S3Core};
use super::journal::{Entry, Journal, Owner};
use crate::backends::parts::pieces;
use crate::names::shown;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use borgstore_ipc::{Error, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// A multipart upload in flight: aborted unless it is [completed](InFlight::completed),
/// also when it is dropped half-way.
pub struct InFlight {
    client: Client,
    bucket: String,
    /// The object key it makes.
    pub key: String,
    /// Its id.
    pub upload_id: String,
    budget: aws_sdk_s3::config::Builder,
    journal: Option<Journal>,
    settled: bool,
}

/// The ids of the multipart uploads this process has in flight, whichever store runs
/// them: never aborted as leftovers, whatever a journal or their age says.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this process has the upload `upload_id` in flight.
pub fn is_live(upload_id: &str) -> bool {
    live().contains(upload_id)
}

/// Abort the upload `upload_id` of `key`; one that is gone already (`NoSuchUpload`) counts
/// as aborted. The error is for the log.
pub async fn abort_upload(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    budget: aws_sdk_s3::config::Builder,
) -> std::result::Result<(), String> {
    let res = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .customize()
        .config_override(budget)
        .send()
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("NoSuchUpload") || status(&e) == Some(404) => Ok(()),
        Err(e) => Err(chain(&e)),
    }
}

impl InFlight {
    /// Start a multipart upload of `key` (errors name `name`) and write it down.
    pub async fn start(core: &S3Core, op: &str, name: &str, key: String) -> Result<InFlight> {
        let client = core.client().await?.clone();
        let created = client
            .create_multipart_upload()
            .bucket(core.bucket())
            .key(&key)
            .customize()
            .config_override(core.budget(0))
            .send()
            .await
            .map_err(|e| core.error(op, name, e))?;
        let Some(upload_id) = created.upload_id().filter(|id| !id.is_empty()).map(str::to_owned) else {
            return Err(Error::backend(format!("S3 {op} {}: the server started an upload without an id", shown(name))));
        };
        live().insert(upload_id.clone());
        let upload = InFlight {
            client,
            bucket: core.bucket().to_string(),
            key,
            upload_id,
            budget: core.budget(0),
            journal: core.journal.clone(),
            settled: false,
        };
        if let Some(journal) = &upload.journal {
            let started =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let entry = Entry {
                endpoint: core.endpoint(),
                bucket: upload.bucket.clone(),
                key: upload.key.clone(),
                upload_id: upload.upload_id.clone(),
                started,
                owner: Owner::me().await,
            };
            if let Err(e) = journal.add(&entry).await {
                tracing::warn!(
                    "S3 upload journal {}: cannot write down the upload of {}: {e} (if the daemon dies \
                     now, only the age-based sweep removes it)",
                    journal.dir().display(),
                    shown(name)
                );
            }
        }
        Ok(upload)
    }

    /// The upload was completed: cross it out.
    pub async fn completed(mut self) {
        self.settled = true;
        forget(&self.journal, &self.upload_id).await;
    }

    /// After the parts and the completion: crossed out when `result` is Ok, aborted (and
    /// the error returned) when not.
    pub async fn settle(self, result: Result<()>) -> Result<()> {
        match result {
            Ok(()) => {
                self.completed().await;
                Ok(())
            }
            Err(e) => {
                self.abort().await;
                Err(e)
            }
        }
    }

    /// Abort the upload now. When that fails, it stays written down, for the next open.
    pub async fn abort(mut self) {
        self.settled = true;
        let aborted = abort_upload(&self.client, &self.bucket, &self.key, &self.upload_id, self.budget.clone()).await;
        settle_abort(aborted, &self.journal, &self.upload_id).await;
    }
}

/// Cross the upload out of the journal and the live set.
async fn forget(journal: &Option<Journal>, upload_id: &str) {
    if let Some(journal) = journal {
        if let Err(e) = journal.remove(upload_id).await {
            tracing::warn!("S3 upload journal {}: cannot cross out an upload: {e}", journal.dir().display());
        }
    }
    live().remove(upload_id);
}

/// After an abort: forgotten when it worked, kept in the journal (for the next open) when not.
async fn settle_abort(aborted: std::result::Result<(), String>, journal: &Option<Journal>, upload_id: &str) {
    match aborted {
        Ok(()) => forget(journal, upload_id).await,
        Err(e) => {
            live().remove(upload_id);
            tracing::warn!(
                "S3: aborting a failed multipart upload failed, {}: {e}",
                if journal.is_some() { "the next open aborts it" } else { "it stays on the server" }
            );
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped half-way (the call was cancelled): abort on the runtime, in the background.
        let (client, bucket, key, id) =
            (self.client.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone());
        let (budget, journal) = (self.budget.clone(), self.journal.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let aborted = abort_upload(&client, &bucket, &key, &id, budget).await;
                    settle_abort(aborted, &journal, &id).await;
                });
            }
            Err(_) => {
                live().remove(&id);
                tracing::warn!(
                    "S3: a cancelled multipart upload could not be aborted (no runtime); it stays on the server"
                );
            }
        }
    }
}

/// The ETag S3 gives the object of a completed multipart upload: the MD5 of the parts'
/// MD5s, then `-` and the number of parts. None when a part's ETag is not an MD5 (some
/// servers, encrypted buckets).
fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    for p in parts {
        let digest = hex::decode(p.e_tag()?.trim_matches('"')).ok().filter(|d| d.len() == 16)?;
        md5.update(digest);
    }
    Some(format!("\"{}-{}\"", hex::encode(md5.finalize()), parts.len()))
}

impl S3Core {
    /// Store `value` as the object of `name` in parts (see the module docs).
    pub async fn put_in_parts(&self, op: &str, name: &str, value: Bytes) -> Result<()> {
        let len = value.len() as u64;
        let part = self.parts.part_size_for(len);
        let upload = InFlight::start(self, op, name, self.key(name)).await?;
        let sent = async {
            let parts =
                pieces(0, len, part).enumerate().map(|(i, (a, b))| (i as i32 + 1, value.slice(a as usize..b as usize)));
            let done = futures::stream::iter(parts)
                .map(|(n, body)| self.upload_part(op, name, &upload, n, body))
                .buffer_unordered(self.parts.part_concurrency.max(1))
                .try_collect::<Vec<_>>()
                .await?;
            self.complete(op, name, &upload, done).await
        }
        .await;
        upload.settle(sent).await
    }

    /// Copy the object of `current` (`size` bytes, ETag `etag`) to `new` in parts, each
    /// a server-side `UploadPartCopy` of a byte range; a source replaced meanwhile fails
    /// the copy rather than mixing two versions.
    pub async fn copy_in_parts(&self, current: &str, new: &str, size: u64, etag: Option<&str>) -> Result<()> {
        let op = "move";
        let source = self.copy_source(current);
        let part = self.parts.part_size_for(size);
        let upload = InFlight::start(self, op, current, self.key(new)).await?;
        let copied = async {
            let done = futures::stream::iter(pieces(0, size, part).enumerate())
                .map(|(i, (a, b))| {
                    let req = upload
                        .client
                        .upload_part_copy()
                        .bucket(self.bucket())
                        .key(&upload.key)
                        .upload_id(&upload.upload_id)
                        .part_number(i as i32 + 1)
                        .copy_source(&source)
                        .copy_source_range(format!("bytes={a}-{}", b - 1))
                        .set_copy_source_if_match(etag.map(str::to_owned));
                    async move {
                        let out = req
                            .customize()
                            .config_override(self.server_budget())
                            .send()
                            .await
                            .map_err(|e| self.error(op, current, e))?;
                        let tag = out.copy_part_result().and_then(|r| r.e_tag()).ok_or_else(|| {
                            Error::backend(format!("S3 move {}: a part copy came back without an ETag", shown(current)))
                        })?;
                        Ok::<_, Error>(CompletedPart::builder().part_number(i as i32 + 1).e_tag(tag).build())
                    }
                })
                .buffer_unordered(self.parts.part_concurrency.max(1))
                .try_collect::<Vec<_>>()
                .await?;
            self.complete(op, current, &upload, done).await
        }
        .await;
        upload.settle(copied).await
    }

    /// Upload part `n` of `upload`.
    async fn upload_part(&self, op: &str, name: &str, upload: &InFlight, n: i32, body: Bytes) -> Result<CompletedPart> {
        let len = body.len() as u64;
        let out = upload
            .client
            .upload_part()
            .bucket(self.bucket())
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .part_number(n)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(ByteStream::from(body))
            .customize()
            .config_override(self.budget(len))
            .send()
            .await
            .map_err(|e| self.error(op, name, e))?;
        let Some(tag) = out.e_tag() else {
            return Err(Error::backend(format!("S3 {op} {}: part {n} was stored without an ETag", shown(name))));
        };
        Ok(CompletedPart::builder().part_number(n).e_tag(tag).build())
    }

    /// Complete `upload` with `parts` (in any order; sent sorted by number).
    async fn complete(&self, op: &str, name: &str, upload: &InFlight, mut parts: Vec<CompletedPart>) -> Result<()> {
        parts.sort_by_key(|p| p.part_number());
        let expected = multipart_etag(&parts);
        let res = upload
            .client
            .complete_multipart_upload()
            .bucket(self.bucket())
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .customize()
            .config_override(self.server_budget())
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some("NoSuchUpload") => {
                // An earlier attempt may have completed it and its answer was lost: then the
                // object is there with the ETag our parts make.
                let target = upload.key.strip_prefix(self.prefix.as_str()).unwrap_or(name);
                let etag = self.head(op, target).await?.and_then(|h| h.e_tag().map(str::to_owned));
                if expected.is_some() && etag == expected {
                    return Ok(());
                }
                Err(Error::backend(format!(
                    "S3 {op} {}: the multipart upload vanished before it was completed (NoSuchUpload)",
                    shown(name)
                )))
            }
            Err(e) => Err(self.error(op, name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etags_are_the_md5_of_the_part_md5s() {
        let part = |n: i32, tag: &str| CompletedPart::builder().part_number(n).e_tag(tag).build();
        // Two parts whose MD5s are those of "a" and "b".
        let parts = [part(1, "\"0cc175b9c0f1b6a831c399e269772661\""), part(2, "92eb5ffee6ae2fec3ad71c777531578f")];
        let mut both = hex::decode("0cc175b9c0f1b6a831c399e269772661").unwrap();
        both.extend(hex::decode("92eb5ffee6ae2fec3ad71c777531578f").unwrap());
        let want = format!("\"{}-2\"", hex::encode(<md5::Md5 as md5::Digest>::digest(&both)));
        assert_eq!(multipart_etag(&parts).as_deref(), Some(want.as_str()));
        assert_eq!(multipart_etag(&[part(1, "not-an-md5")]), None);
        assert_eq!(multipart_etag(&[CompletedPart::builder().part_number(1).build()]), None);
    }
}
