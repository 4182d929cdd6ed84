//! Running one test on both store engines.
//!
//! Why a macro: the behaviours users rely on (the four RPC kinds,
//! durability, follow, validation, statistics, idempotency) must hold
//! whichever engine the binary was given, so each such test is written once
//! as `async fn case(options: TestOptions)` and run twice: on the embedded
//! store, and on a fresh database of the test binary's real PostgreSQL
//! (`sensorhub_store_postgres::testing`). The tests are then named
//! `module::embedded::case` and `module::postgres::case`.

/// Makes `embedded::$case` and `postgres::$case` tests of each `$case`.
#[macro_export]
macro_rules! on_both_engines {
    ($($case:ident),* $(,)?) => {
        /// The cases above, on the embedded store.
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(sensorhub_grpc::testing::TestOptions::default()).await;
                }
            )*
        }

        /// The cases above, on a fresh database of a real PostgreSQL.
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(sensorhub_grpc::testing::TestOptions::on_postgres().await).await;
                }
            )*
        }
    };
}
