//! The store's Prometheus metrics: after real operations, every family exists under a
//! `capstan_` name on the registry the store was opened with (not the process-global one).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::database::TestDatabase;
use crate::support::applied;

conformance!(datastore_operations_are_measured_under_capstan_names_on_the_given_registry);

async fn datastore_operations_are_measured_under_capstan_names_on_the_given_registry(
    db: &TestDatabase,
) {
    let store = db.open().await;
    let mut revision = 0;
    for value in ["a", "b", "c"] {
        revision = applied(
            store
                .create(&format!("/metrics/{value}"), value)
                .await
                .unwrap(),
        );
    }
    store.get("/metrics/a").await.unwrap();
    store
        .compact(revision, &CancellationToken::new())
        .await
        .unwrap();
    // The change feed records pool occupancy each time it polls.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let names: BTreeSet<String> = db
        .registry()
        .gather()
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
    let global: Vec<String> = prometheus::gather()
        .iter()
        .map(|f| f.name().to_string())
        .filter(|name| name.starts_with("capstan_datastore_"))
        .collect();
    assert!(
        global.is_empty(),
        "datastore metrics leaked onto the process-global registry: {global:?}"
    );
}
