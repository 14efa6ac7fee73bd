//! Opening a store by URL for the examples: every URL [`durable::Store::connect`] knows, plus
//! `files:<directory>` for the custom [file backend](crate::file_backend).

use durable::{Backend, Dict, Encoding, Error, Options, Result, Store};

use crate::file_backend::FileStore;

/// A store chosen by URL: one of durable's own ([`durable::Store`]) or the example file backend.
///
/// | URL | store |
/// | --- | --- |
/// | `files:DIR`, `files://DIR` | [`FileStore`] in directory `DIR` (created on first use) |
/// | anything else | [`durable::Store::connect`]: `memory:`, `sqlite://`, `postgres://`, `mysql://`, `redis://`, `zk://` |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ExampleStore {
    /// One of the stores of the `durable` facade.
    Durable(Store),
    /// The custom backend over a directory of files.
    Files(FileStore),
}

impl ExampleStore {
    /// Connects to the store named by `url` (see the table above).
    pub async fn connect(url: &str) -> Result<Self> {
        if let Some(path) = url.strip_prefix("files:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(Error::Config(format!(
                    "store URL {url:?} names no directory (expected files:DIR)"
                )));
            }
            return Ok(ExampleStore::Files(FileStore::new(path)));
        }
        Ok(ExampleStore::Durable(Store::connect(url).await?))
    }

    /// A backend over dictionary `dictionary` in `namespace`.
    pub fn backend(&self, namespace: &str, dictionary: &str) -> Result<Box<dyn Backend>> {
        match self {
            ExampleStore::Durable(store) => store.backend(namespace, dictionary),
            ExampleStore::Files(store) => Ok(Box::new(store.backend(namespace, dictionary)?)),
        }
    }

    /// Opens dictionary `dictionary` in `namespace` (see [`Dict::open`]).
    pub async fn open<V, E>(
        &self,
        namespace: &str,
        dictionary: &str,
        encoding: E,
        options: Options,
    ) -> Result<Dict<V, E>>
    where
        V: Send + Sync + 'static,
        E: Encoding<V>,
    {
        Dict::open(self.backend(namespace, dictionary)?, encoding, options).await
    }
}
