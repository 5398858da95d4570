//! [`BlockingClient`]: the same API for code without an async runtime.

use crate::client::{Client, ClientOptions, ListStream};
use borgstore_ipc::protocol::{MoveAction, StoreSummary};
use borgstore_ipc::{Error, ItemInfo, Quota, Result, Source, Stats};
use std::sync::Arc;
use tokio::runtime::Runtime;

/// A blocking client; it runs its own small runtime. Do not use it from inside an
/// async context (use [`Client`] there).
pub struct BlockingClient {
    rt: Arc<Runtime>,
    client: Client,
}

impl BlockingClient {
    /// Start the client's runtime and connect (see [`Client::connect`]). Blocks until
    /// connected; panics when called on a thread that runs an async runtime.
    pub fn connect(options: ClientOptions) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Error::backend(format!("cannot start a runtime: {e}")))?;
        let client = rt.block_on(Client::connect(options))?;
        Ok(BlockingClient { rt: Arc::new(rt), client })
    }

    /// The async client inside (shares the connection).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// See [`Client::create`].
    pub fn create(&self) -> Result<()> {
        self.rt.block_on(self.client.create())
    }
    /// See [`Client::destroy`].
    pub fn destroy(&self) -> Result<()> {
        self.rt.block_on(self.client.destroy())
    }
    /// See [`Client::open`].
    pub fn open(&self) -> Result<()> {
        self.rt.block_on(self.client.open())
    }
    /// See [`Client::close`].
    pub fn close(&self) -> Result<()> {
        self.rt.block_on(self.client.close())
    }
    /// See [`Client::info`].
    pub fn info(&self, name: &str, deleted: bool) -> Result<ItemInfo> {
        self.rt.block_on(self.client.info(name, deleted))
    }
    /// See [`Client::load`].
    pub fn load(&self, name: &str, offset: i64, size: Option<u64>, deleted: bool) -> Result<Vec<u8>> {
        self.rt.block_on(self.client.load(name, offset, size, deleted))
    }
    /// See [`Client::store`].
    pub fn store(&self, name: &str, value: Vec<u8>) -> Result<()> {
        self.rt.block_on(self.client.store(name, value))
    }
    /// See [`Client::delete`].
    pub fn delete(&self, name: &str, deleted: bool) -> Result<()> {
        self.rt.block_on(self.client.delete(name, deleted))
    }
    /// See [`Client::move_`].
    pub fn move_(&self, name: &str, action: MoveAction) -> Result<()> {
        self.rt.block_on(self.client.move_(name, action))
    }
    /// An iterator over the items of namespace `name`.
    pub fn list(&self, name: &str, deleted: bool) -> Result<BlockingList> {
        let stream = self.rt.block_on(self.client.list(name, deleted))?;
        Ok(BlockingList { rt: self.rt.clone(), stream })
    }
    /// See [`Client::hash`].
    pub fn hash(&self, name: &str, algorithm: &str, deleted: bool) -> Result<String> {
        self.rt.block_on(self.client.hash(name, algorithm, deleted))
    }
    /// See [`Client::defrag`].
    pub fn defrag(
        &self,
        sources: Vec<Source>,
        target: Option<String>,
        algorithm: Option<String>,
        namespace: Option<String>,
        deleted: bool,
    ) -> Result<String> {
        self.rt.block_on(self.client.defrag(sources, target, algorithm, namespace, deleted))
    }
    /// See [`Client::gather`].
    pub fn gather(&self, sources: Vec<Source>, namespace: Option<String>, deleted: bool) -> Result<Vec<u8>> {
        self.rt.block_on(self.client.gather(sources, namespace, deleted))
    }
    /// See [`Client::sync`].
    pub fn sync(&self) -> Result<()> {
        self.rt.block_on(self.client.sync())
    }
    /// See [`Client::quota`].
    pub fn quota(&self) -> Result<Quota> {
        self.rt.block_on(self.client.quota())
    }
    /// See [`Client::stats`].
    pub fn stats(&self) -> Result<Stats> {
        self.rt.block_on(self.client.stats())
    }
    /// See [`Client::cache_invalidate`].
    pub fn cache_invalidate(&self, name: &str, deleted: bool) -> Result<()> {
        self.rt.block_on(self.client.cache_invalidate(name, deleted))
    }
    /// See [`Client::stores`].
    pub fn stores(&self) -> Result<Vec<StoreSummary>> {
        self.rt.block_on(self.client.stores())
    }
}

/// Items of a listing, fetched chunk by chunk as the iteration goes.
pub struct BlockingList {
    rt: Arc<Runtime>,
    stream: ListStream,
}

impl Iterator for BlockingList {
    type Item = Result<ItemInfo>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rt.block_on(self.stream.next()).transpose()
    }
}
