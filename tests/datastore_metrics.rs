//! The datastore's Prometheus metrics: after real operations, every family exists in the
//! default registry under a `capstan_` name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use capstan_datastore::{Engine, WriteOutcome};
use tokio_util::sync::CancellationToken;

use common::TestDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastore_operations_are_measured_under_capstan_names() {
    let db = TestDatabase::create(Engine::Sqlite).await;
    let store = db.open().await;
    let mut revision = 0;
    for value in ["a", "b", "c"] {
        revision = match store
            .create(&format!("/metrics/{value}"), value)
            .await
            .unwrap()
        {
            WriteOutcome::Applied { revision } => revision,
            other => panic!("create did not apply: {other:?}"),
        };
    }
    store.get("/metrics/a").await.unwrap();
    store
        .compact(revision, &CancellationToken::new())
        .await
        .unwrap();
    // The change feed records pool occupancy each time it polls.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let names: BTreeSet<String> = prometheus::gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    for expected in [
        "capstan_datastore_query_duration_seconds",
        "capstan_datastore_write_batch_size",
        "capstan_datastore_revision",
        "capstan_datastore_pool_connections",
        "capstan_datastore_compaction_backlog_revisions",
        "capstan_datastore_compaction_duration_seconds",
        "capstan_datastore_compacted_rows_total",
    ] {
        assert!(
            names.contains(expected),
            "{expected} is missing from {names:?}"
        );
    }
    assert!(
        names.iter().all(|name| name.starts_with("capstan_")),
        "unprefixed metric in {names:?}"
    );
    store.close().await;
    db.cleanup().await;
}
