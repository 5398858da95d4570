//! Listings: one directory level as the server's JSON array, turned into items sorted by
//! name (the server's order is not ours to rely on).

use super::core::{Req, RestCore};
use borgstore_ipc::{Error, ItemInfo, Result};
use reqwest::Method;

/// One entry of the server's listing (REST-API.md).
#[derive(serde::Deserialize)]
struct Entry {
    name: String,
    size: u64,
    #[serde(default)]
    directory: bool,
    #[serde(default)]
    atime: f64,
    #[serde(default)]
    mtime: f64,
}

impl RestCore {
    /// The items and directories directly in directory `name`, sorted by name.
    pub async fn list(&self, name: &str) -> Result<Vec<ItemInfo>> {
        let mut req = Req::new(Method::GET, name);
        req.list = true;
        let r = self.call_ok(req, "list").await?;
        let entries: Vec<Entry> = serde_json::from_slice(&r.body)
            .map_err(|e| Error::backend(format!("the REST server sent an invalid listing: {e}")))?;
        let mut items: Vec<ItemInfo> = entries
            .into_iter()
            .map(|e| ItemInfo {
                name: e.name,
                exists: true,
                size: e.size,
                directory: e.directory,
                atime: e.atime,
                mtime: e.mtime,
            })
            .collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(items)
    }
}
