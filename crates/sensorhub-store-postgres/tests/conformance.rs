//! The store conformance suite (`sensorhub_core::conformance`) against the
//! PostgreSQL engine, on a real PostgreSQL: one database per test.

use sensorhub_core::{
    SharedStore, StoreSettings, conformance::Engine, store::StoreFuture, store_conformance,
};
use sensorhub_store_postgres::{PostgresConfig, PostgresStore, testing::TestPostgres};

/// Stores on one database, which outlives each of them.
struct Postgres {
    url: String,
}

impl Engine for Postgres {
    fn open(&self, settings: StoreSettings) -> StoreFuture<'_, SharedStore> {
        Box::pin(async move {
            let mut config = PostgresConfig::new(self.url.parse().expect("test URL"));
            config.settings = settings;
            let store = PostgresStore::open(config).await?;
            Ok(std::sync::Arc::new(store) as SharedStore)
        })
    }
}

async fn fresh() -> Postgres {
    let url = tokio::task::spawn_blocking(|| TestPostgres::shared().fresh_url())
        .await
        .expect("start PostgreSQL");
    Postgres { url }
}

store_conformance!(fresh());
