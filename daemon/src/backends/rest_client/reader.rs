//! Reads: `info` (HEAD), `load` (GET with a `Range`), and what the server computes for us
//! without sending items back and forth: `hash`, `gather` and `quota`.

use super::core::{sources_json, Req, RestCore};
use crate::hashing::HashAlgorithm;
use borgstore_ipc::{Error, ErrorKind, ItemInfo, Quota, Result, Source};
use bytes::Bytes;
use reqwest::Method;

impl RestCore {
    /// Metadata of `name`; a 404 is a missing item, not an error.
    pub async fn info(&self, name: &str) -> Result<ItemInfo> {
        let r = self.call(Req::new(Method::HEAD, name), false).await?;
        if r.status == 404 {
            return Ok(ItemInfo::missing(name));
        }
        let r = super::core::ok_or_status(r, "info")?;
        Ok(ItemInfo {
            name: name.rsplit('/').next().unwrap_or(name).to_string(),
            exists: true,
            size: r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0),
            directory: r.header("x-borgstore-is-directory") == Some("true"),
            atime: r.float_header("x-borgstore-atime"),
            mtime: r.float_header("x-borgstore-mtime"),
        })
    }

    /// Bytes of `name` from `offset` (negative: from the end) for `size` bytes.
    pub async fn load(&self, name: &str, offset: i64, size: Option<u64>) -> Result<Bytes> {
        if size == Some(0) {
            // Still tell a missing item from an empty range.
            return match self.info(name).await? {
                i if i.exists => Ok(Bytes::new()),
                _ => Err(Error::new(ErrorKind::ObjectNotFound, format!("{} not found", crate::names::shown(name)))),
            };
        }
        let range = crate::backends::http_range(offset, size);
        let mut req = Req::new(Method::GET, name);
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let mut data = self.call_ok(req, "load").await?.body;
        crate::backends::cut_tail(&mut data, offset, size);
        Ok(data)
    }

    /// Hex digest of `name`, computed by the server.
    pub async fn hash(&self, name: &str, algorithm: HashAlgorithm) -> Result<String> {
        let req = Req::new(Method::POST, name).query("cmd", "hash").query("algorithm", algorithm.to_string());
        Ok(self.call_ok(req, "hash").await?.text().trim().to_string())
    }

    /// The bytes of all `sources`, concatenated by the server.
    pub async fn gather(&self, sources: &[Source]) -> Result<Bytes> {
        let req = Req::new(Method::POST, "").query("cmd", "gather").body(sources_json(sources));
        Ok(self.call_ok(req, "gather").await?.body)
    }

    /// The store's quota limit and usage as the server tracks them.
    pub async fn quota(&self) -> Result<Quota> {
        let r = self.call_ok(Req::new(Method::POST, "").query("cmd", "quota"), "quota").await?;
        let q: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|e| Error::backend(format!("invalid quota answer: {e}")))?;
        Ok(Quota { limit: q["limit"].as_i64().unwrap_or(-1), usage: q["usage"].as_i64().unwrap_or(-1) })
    }
}
