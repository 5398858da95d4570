//! Removals: `delete`, `move` (which removes its source) and `rmdir`.
//!
//! A delete or move whose reply was lost and whose retry finds nothing counts as done:
//! the first attempt did it (`gone_is_done` of [`RestCore::call`]).

use super::core::{ok_or_status, Req, RestCore};
use borgstore_ipc::Result;
use reqwest::Method;

impl RestCore {
    /// Delete item `name`.
    pub async fn delete(&self, name: &str) -> Result<()> {
        ok_or_status(self.call(Req::new(Method::DELETE, name), true).await?, "delete").map(|_| ())
    }

    /// Rename `current` to `new`, replacing `new`.
    pub async fn move_(&self, current: &str, new: &str) -> Result<()> {
        let req = Req::new(Method::POST, "").query("cmd", "move").query("current", current).query("new", new);
        ok_or_status(self.call(req, true).await?, "move").map(|_| ())
    }

    /// Remove the empty directory `name`.
    pub async fn rmdir(&self, name: &str) -> Result<()> {
        self.call_ok(Req::new(Method::DELETE, name).query("cmd", "rmdir"), "rmdir").await.map(|_| ())
    }
}
