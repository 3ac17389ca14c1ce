//! Contended writers on one server: compare-and-swap makes every increment count exactly
//! once, the revisions they take are one gap-free run, and a watcher sees all of them.

use capstan_datastore::KeyRange;

use crate::database::{TestDatabase, events_through};
use crate::support::{
    applied, assert_every_revision_once, assert_increments_chain, counter, run_contended_writers,
};

conformance!(concurrent_writers_lose_no_increment_and_a_watcher_sees_every_revision);

async fn concurrent_writers_lose_no_increment_and_a_watcher_sees_every_revision(db: &TestDatabase) {
    let store = db.open().await;
    let prefix = "/registry/leases/";
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch(KeyRange::prefix(prefix), Some(start)).await;
    let hot_keys: Vec<String> = (0..3).map(|i| format!("{prefix}hot-{i}")).collect();
    for key in &hot_keys {
        applied(store.create(key, "0").await.unwrap());
    }

    let report =
        run_contended_writers(std::slice::from_ref(&store), 8, 50, 5, &hot_keys, prefix).await;
    let end = store.current_revision().await.unwrap();

    assert_eq!(
        report.revisions,
        (start + 4..=end).collect::<Vec<_>>(),
        "the writers' revisions are every revision after the hot keys' creation, once each"
    );
    for key in &hot_keys {
        let stored = store.get(key).await.unwrap().unwrap();
        let increments = report.increments.get(key).copied().unwrap_or(0);
        assert_eq!(counter(&stored.value), increments, "counter of {key}");
    }
    assert!(
        report.increments.values().sum::<u64>() > 0,
        "some increments apply"
    );

    let events = events_through(&mut watch, end).await;
    assert_every_revision_once(&events, start + 1, end);
    assert_increments_chain(&events, &hot_keys);
}
