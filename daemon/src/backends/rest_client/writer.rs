//! Writes: `store` (a POST of the value with its `X-Content-hash-sha256`, so the server
//! can refuse a value damaged on the way), `mkdir`, and `defrag`, which the server builds
//! from ranges of existing items without sending them to us.

use super::core::{sources_json, Req, RestCore};
use crate::backends::DefragTarget;
use crate::names::validate_name;
use borgstore_ipc::{Result, Source};
use bytes::Bytes;
use reqwest::Method;
use sha2::{Digest, Sha256};

impl RestCore {
    /// Store `value` as `name`.
    pub async fn store(&self, name: &str, value: Bytes) -> Result<()> {
        let digest = hex::encode(Sha256::digest(&value));
        let req = Req::new(Method::POST, name).header("x-content-hash-sha256", digest).body(value);
        self.call_ok(req, "store").await.map(|_| ())
    }

    /// Create directory `name` (and missing parents).
    pub async fn mkdir(&self, name: &str) -> Result<()> {
        self.call_ok(Req::new(Method::POST, name).query("cmd", "mkdir"), "mkdir").await.map(|_| ())
    }

    /// Have the server build a new item from `sources`; returns its name.
    pub async fn defrag(&self, sources: &[Source], target: &DefragTarget) -> Result<String> {
        let mut req = Req::new(Method::POST, "").query("cmd", "defrag");
        match target {
            DefragTarget::Name(n) => {
                validate_name(n)?;
                req = req.query("target", n.clone());
            }
            DefragTarget::Hashed { algorithm, namespace, levels } => {
                req = req.query("algorithm", algorithm.to_string());
                if !namespace.is_empty() {
                    req = req.query("namespace", namespace.clone());
                }
                if *levels > 0 {
                    req = req.query("levels", levels.to_string());
                }
            }
        }
        let req = req.body(sources_json(sources));
        Ok(self.call_ok(req, "defrag").await?.text().trim().to_string())
    }
}
