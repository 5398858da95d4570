//! Writes: a value of up to `part_size` bytes as one `PutObject`, a larger one as a
//! multipart upload (`multipart`); the empty directory marker objects (`path/dir/`) of
//! `create` and `mkdir`; and the server-side copy that is the first half of `move`, one
//! `CopyObject` or, for an object larger than one copy may be, a copy in parts.
//!
//! Both ways of storing are atomic on S3 (the object is replaced when the PUT or the
//! completed upload is in, never before), so there are no temp objects.

use super::core::{code, status, to_u64, S3Core, S3_COPY_LIMIT};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::copy_object::CopyObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use borgstore_ipc::{Error, Result};
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters kept as they are in the `x-amz-copy-source` header.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');

impl S3Core {
    /// Store `value` as the object of `name`: in one PUT, or in parts when it is larger
    /// than `part_size`.
    pub async fn put(&self, name: &str, value: Bytes) -> Result<()> {
        if self.parts.in_parts(value.len() as u64) {
            return self.put_in_parts("store", name, value).await;
        }
        self.put_object("store", name, self.key(name), value).await
    }

    /// An empty marker object (`key` ends with `/`).
    pub async fn put_marker(&self, op: &str, name: &str, key: String) -> Result<()> {
        self.put_object(op, name, key, Bytes::new()).await
    }

    /// PUT `value` as the object `key` (errors name `name`).
    async fn put_object(&self, op: &str, name: &str, key: String, value: Bytes) -> Result<()> {
        let len = value.len() as u64;
        self.client()
            .await?
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .content_length(i64::try_from(len).unwrap_or(i64::MAX))
            .body(ByteStream::from(value))
            .customize()
            .config_override(self.budget(len))
            .send()
            .await
            .map_err(|e| self.error(op, name, e))?;
        Ok(())
    }

    /// The markers of directory `name` and its parents, parents first, so a directory
    /// never exists without its parents' markers.
    pub async fn mkdir(&self, name: &str) -> Result<()> {
        let mut end = 0;
        for part in name.split('/') {
            end += part.len();
            self.put_marker("mkdir", name, self.dir_prefix(&name[..end])).await?;
            end += 1;
        }
        Ok(())
    }

    /// The `x-amz-copy-source` of `name`'s object.
    pub fn copy_source(&self, name: &str) -> String {
        format!("{}/{}", self.bucket(), utf8_percent_encode(&self.key(name), COPY_SOURCE))
    }

    /// Copy the object of `current` to `new` on the server (replacing `new`): one
    /// `CopyObject`, or a copy in parts for an object larger than `max_copy_size`.
    pub async fn copy(&self, current: &str, new: &str) -> Result<()> {
        let limit = self.options.max_copy_size;
        let client = self.client().await?;
        if limit < S3_COPY_LIMIT {
            // A limit below S3's: learn the size first.
            let (size, etag) = self.size_and_etag(current).await?;
            if size > limit {
                return self.copy_in_parts(current, new, size, etag.as_deref()).await;
            }
            return self.copy_object(client, current, new).await.map_err(|e| self.error("move", current, e));
        }
        match self.copy_object(client, current, new).await {
            Ok(()) => Ok(()),
            Err(e) if too_large(&e) => match self.size_and_etag(current).await? {
                (size, etag) if size > limit => self.copy_in_parts(current, new, size, etag.as_deref()).await,
                _ => Err(self.error("move", current, e)),
            },
            Err(e) => Err(self.error("move", current, e)),
        }
    }

    /// Size and ETag of `name`'s object; ObjectNotFound when there is none.
    async fn size_and_etag(&self, name: &str) -> Result<(u64, Option<String>)> {
        match self.head("move", name).await? {
            Some(head) => Ok((to_u64(head.content_length()), head.e_tag().map(str::to_owned))),
            None => Err(Error::not_found(name)),
        }
    }

    /// One `CopyObject` of `current` to `new`.
    async fn copy_object(
        &self,
        client: &Client,
        current: &str,
        new: &str,
    ) -> std::result::Result<(), SdkError<CopyObjectError, HttpResponse>> {
        client
            .copy_object()
            .bucket(self.bucket())
            .copy_source(self.copy_source(current))
            .key(self.key(new))
            .customize()
            .config_override(self.server_budget())
            .send()
            .await?;
        Ok(())
    }
}

/// Whether S3 refused a `CopyObject` because the source is larger than one copy may be
/// (AWS: `InvalidRequest`, "larger than the maximum allowable size"; others say
/// `EntityTooLarge`).
fn too_large(e: &SdkError<CopyObjectError, HttpResponse>) -> bool {
    status(e) == Some(400) && matches!(code(e), Some("InvalidRequest" | "EntityTooLarge"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_encoded() {
        let key = "a b/ä+x/data/00/0011.del";
        assert_eq!(utf8_percent_encode(key, COPY_SOURCE).to_string(), "a%20b/%C3%A4%2Bx/data/00/0011.del");
    }
}
