//! The store conformance suite (`sensorhub_core::conformance`) against the
//! embedded engine, on a durable directory.

use sensorhub_core::{
    SharedStore, StoreSettings, conformance::Engine, store::StoreFuture, store_conformance,
};
use sensorhub_store_embedded::{EmbeddedConfig, EmbeddedStore, StoreLocation};

/// Stores in one temporary directory, which outlives each of them.
struct Embedded {
    dir: tempfile::TempDir,
}

impl Engine for Embedded {
    fn open(&self, settings: StoreSettings) -> StoreFuture<'_, SharedStore> {
        Box::pin(async move {
            let mut config =
                EmbeddedConfig::new(StoreLocation::Directory(self.dir.path().join("data")));
            config.settings = settings;
            let store = EmbeddedStore::open(config)?;
            Ok(std::sync::Arc::new(store) as SharedStore)
        })
    }
}

async fn fresh() -> Embedded {
    Embedded {
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

store_conformance!(fresh());
