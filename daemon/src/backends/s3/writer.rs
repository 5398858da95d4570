//! Writes: one `PutObject` per value (atomic on S3, so there are no temp objects), the
//! empty directory marker objects (`path/dir/`) of `create` and `mkdir`, and the
//! server-side `CopyObject` that is the first half of `move`.

use super::core::S3Core;
use aws_sdk_s3::primitives::ByteStream;
use borgstore_ipc::Result;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters kept as they are in the `x-amz-copy-source` header.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');

impl S3Core {
    /// Store `value` as the object of `name`, in one PUT.
    pub async fn put(&self, name: &str, value: Bytes) -> Result<()> {
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

    /// Copy the object of `current` to `new` on the server (replacing `new`).
    pub async fn copy(&self, current: &str, new: &str) -> Result<()> {
        let source = format!("{}/{}", self.bucket(), utf8_percent_encode(&self.key(current), COPY_SOURCE));
        let o = &self.options;
        let budget = aws_sdk_s3::config::Builder::default().timeout_config(o.timeouts(o.copy_timeout));
        self.client()
            .await?
            .copy_object()
            .bucket(self.bucket())
            .copy_source(source)
            .key(self.key(new))
            .customize()
            .config_override(budget)
            .send()
            .await
            .map_err(|e| self.error("move", current, e))?;
        Ok(())
    }
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
