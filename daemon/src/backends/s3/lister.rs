//! Listings over `ListObjectsV2`: one page, the first keys below a prefix (the existence
//! checks of create, open, rmdir and info), and `list`, one directory level walked over all
//! pages with delimiter `/`.
//!
//! Directories are key prefixes, so a listing is also how the other parts learn whether a
//! directory (or the store) exists.

use super::core::{mtime, to_u64, S3Core, PAGE};
use crate::names::{shown, validate_item_name};
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use borgstore_ipc::{Error, ItemInfo, Result};

impl S3Core {
    /// One `ListObjectsV2` page below `prefix` (of `max_keys` keys, after `token`).
    pub async fn list_page(
        &self,
        op: &str,
        name: &str,
        prefix: &str,
        delimiter: bool,
        max_keys: i32,
        token: Option<String>,
    ) -> Result<ListObjectsV2Output> {
        let mut req = self
            .client()
            .await?
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .max_keys(max_keys)
            .set_continuation_token(token);
        if delimiter {
            req = req.delimiter("/");
        }
        req.customize().config_override(self.budget(0)).send().await.map_err(|e| self.error(op, name, e))
    }

    /// The first (up to `n`) keys below `prefix`, recursively.
    pub async fn first_keys(&self, op: &str, name: &str, prefix: &str, n: i32) -> Result<Vec<String>> {
        let page = self.list_page(op, name, prefix, false, n, None).await?;
        Ok(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect())
    }

    /// The items and directories directly in directory `name`, sorted by name; the
    /// directory's own marker, uploads in progress and foreign keys are skipped.
    pub async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        let prefix = self.dir_prefix(name);
        let mut out = Vec::new();
        let mut seen_any = false;
        let mut token = None;
        loop {
            let page = self.list_page("list", name, &prefix, true, PAGE, token.take()).await?;
            seen_any |= !page.contents().is_empty() || !page.common_prefixes().is_empty();
            for object in page.contents() {
                let Some(leaf) = object.key().and_then(|k| k.strip_prefix(prefix.as_str())) else {
                    continue;
                };
                // The directory's own marker, an upload in progress or a foreign key: skip.
                if leaf.is_empty() || leaf.contains('/') || validate_item_name(leaf).is_err() {
                    continue;
                }
                out.push(ItemInfo {
                    name: leaf.to_string(),
                    exists: true,
                    size: to_u64(object.size()),
                    directory: false,
                    atime: 0.0,
                    mtime: mtime(object.last_modified()),
                });
            }
            for common in page.common_prefixes() {
                let Some(dir) = common.prefix().and_then(|p| p.strip_prefix(prefix.as_str())) else {
                    continue;
                };
                let dir = dir.strip_suffix('/').unwrap_or(dir);
                if dir.is_empty() || dir.contains('/') || validate_item_name(dir).is_err() {
                    continue;
                }
                out.push(ItemInfo { directory: true, exists: true, ..ItemInfo::missing(dir) });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                (Some(true), None) => {
                    return Err(Error::backend(format!(
                        "S3 list {}: truncated listing without continuation",
                        shown(name)
                    )))
                }
                _ => break,
            }
        }
        if !seen_any {
            return Err(Error::not_found(name));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.directory.cmp(&b.directory)));
        Ok(out)
    }
}
