//! Removals: `DeleteObject` of one key (`delete`, `rmdir`, the second half of `move`),
//! `DeleteObjects` batches for `destroy`, and B2's variant of those batches.
//!
//! B2 gets single deletes, a few at a time: `DeleteObjects` is the one operation that
//! requires a checksum header, which B2 refuses (see the module docs of `s3`).

use super::core::{S3Core, PAGE};
use super::url::Flavor;
use crate::names::shown;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use borgstore_ipc::{Error, ErrorKind, Result};
use futures::StreamExt;

/// Concurrent single-object deletes in a B2 `destroy`.
const B2_DELETE_CONCURRENCY: usize = 16;

impl S3Core {
    /// Delete the object `key` (errors name `name`).
    pub async fn delete_key(&self, op: &str, name: &str, key: String) -> Result<()> {
        self.client()
            .await?
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .customize()
            .config_override(self.budget(0))
            .send()
            .await
            .map_err(|e| self.error(op, name, e))?;
        Ok(())
    }

    /// Delete item `name`; ObjectNotFound when there is none (S3 deletes quietly).
    pub async fn delete(&self, name: &str) -> Result<()> {
        if self.head("delete", name).await?.is_none() {
            return Err(Error::not_found(name));
        }
        self.delete_key("delete", name, self.key(name)).await
    }

    /// Remove the empty directory `name` (its marker).
    pub async fn rmdir(&self, name: &str) -> Result<()> {
        let marker = self.dir_prefix(name);
        let keys = self.first_keys("rmdir", name, &marker, 2).await?;
        if keys.is_empty() {
            return Err(Error::not_found(name));
        }
        if keys.iter().any(|k| *k != marker) {
            return Err(Error::backend(format!("S3 rmdir {}: directory not empty", shown(name))));
        }
        self.delete_key("rmdir", name, marker).await
    }

    /// Delete every key of the store, page by page; BackendDoesNotExist when it has none.
    pub async fn destroy(&self) -> Result<()> {
        let prefix = self.prefix.clone();
        let mut page = self.list_page("destroy", "", &prefix, false, PAGE, None).await?;
        if page.contents().is_empty() {
            return Err(Error::new(ErrorKind::BackendDoesNotExist, "the store does not exist"));
        }
        loop {
            let keys: Vec<String> = page.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect();
            self.delete_keys(keys).await?;
            let token = match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => t.to_string(),
                (Some(true), None) => return Err(Error::backend("S3 destroy: truncated listing without continuation")),
                _ => return Ok(()),
            };
            page = self.list_page("destroy", "", &prefix, false, PAGE, Some(token)).await?;
        }
    }

    /// Delete `keys` (at most [`PAGE`]).
    async fn delete_keys(&self, keys: Vec<String>) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if self.url.flavor == Flavor::B2 {
            let mut results = futures::stream::iter(keys.into_iter().map(|k| self.delete_key("destroy", "", k)))
                .buffer_unordered(B2_DELETE_CONCURRENCY);
            while let Some(r) = results.next().await {
                r?;
            }
            return Ok(());
        }
        let objects = keys
            .into_iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::backend(format!("S3 destroy: {e}")))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| Error::backend(format!("S3 destroy: {e}")))?;
        let out = self
            .client()
            .await?
            .delete_objects()
            .bucket(self.bucket())
            .delete(delete)
            .customize()
            .config_override(self.budget(0))
            .send()
            .await
            .map_err(|e| self.error("destroy", "", e))?;
        if let Some(first) = out.errors().first() {
            return Err(Error::backend(format!(
                "S3 destroy: {} objects could not be deleted, e.g. one with {}: {}",
                out.errors().len(),
                first.code().unwrap_or("an unknown error"),
                first.message().unwrap_or("")
            )));
        }
        Ok(())
    }
}
