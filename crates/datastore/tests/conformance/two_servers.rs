//! Two servers (two stores on one database): one revision sequence, one compaction state
//! and one set of leader locks for both, and every change reaches the watchers of both,
//! whichever server wrote it.

use bytes::Bytes;
use capstan_datastore::{DatastoreError, EventKind, KeyRange};
use tokio_util::sync::CancellationToken;

use crate::database::{EVENT_TIMEOUT, TestDatabase, events_through, next_event};
use crate::support::{
    applied, assert_every_revision_once, assert_increments_chain, counter, run_contended_writers,
};

conformance!(
    writes_on_one_server_are_read_and_watched_on_the_other,
    concurrent_writers_on_both_servers_reach_watchers_on_both_completely,
    compaction_on_one_server_applies_to_the_other,
    leader_lock_hands_over_between_servers,
);

async fn writes_on_one_server_are_read_and_watched_on_the_other(db: &TestDatabase) {
    let (a, b) = (db.open().await, db.open().await);
    let key = "/registry/pods/default/shared";
    let mut watch_b = b.watch(KeyRange::prefix("/registry/pods/"), None).await;

    let created = applied(a.create(key, "v1").await.unwrap());
    // A write that returned is visible to every server's reads at once.
    assert_eq!(b.current_revision().await.unwrap(), created);
    assert_eq!(
        b.get(key).await.unwrap().map(|kv| kv.value),
        Some(Bytes::from("v1"))
    );
    let updated = applied(a.update(key, "v2", created).await.unwrap());
    assert_eq!(b.get(key).await.unwrap().unwrap().mod_revision, updated);
    // Writes through B continue the same sequence.
    let on_b = applied(b.update(key, "v3", updated).await.unwrap());
    assert_eq!(on_b, updated + 1);
    let deleted = applied(a.delete(key, Some(on_b)).await.unwrap());
    assert_eq!(b.get(key).await.unwrap(), None);

    let events = events_through(&mut watch_b, deleted).await;
    let summary: Vec<(EventKind, i64, Option<Bytes>)> = events
        .iter()
        .map(|e| (e.kind, e.revision, e.prev_value.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (EventKind::Put, created, None),
            (EventKind::Put, updated, Some(Bytes::from("v1"))),
            (EventKind::Put, on_b, Some(Bytes::from("v2"))),
            (EventKind::Delete, deleted, Some(Bytes::from("v3"))),
        ]
    );
}

async fn concurrent_writers_on_both_servers_reach_watchers_on_both_completely(db: &TestDatabase) {
    let (a, b) = (db.open().await, db.open().await);
    let prefix = "/registry/endpoints/";
    let start = a.current_revision().await.unwrap();
    let range = KeyRange::prefix(prefix);
    let mut watchers = [
        a.watch(range.clone(), Some(start)).await,
        b.watch(range.clone(), Some(start)).await,
        a.watch(range.clone(), None).await,
        b.watch(range.clone(), None).await,
    ];
    let hot_keys: Vec<String> = (0..3).map(|i| format!("{prefix}hot-{i}")).collect();
    for key in &hot_keys {
        applied(a.create(key, "0").await.unwrap());
    }

    let report = run_contended_writers(&[a.clone(), b.clone()], 4, 40, 5, &hot_keys, prefix).await;
    let end = b.current_revision().await.unwrap();

    assert_eq!(report.revisions, (start + 4..=end).collect::<Vec<_>>());
    for key in &hot_keys {
        let stored = b.get(key).await.unwrap().unwrap();
        let increments = report.increments.get(key).copied().unwrap_or(0);
        assert_eq!(counter(&stored.value), increments, "counter of {key}");
    }
    for (index, watch) in watchers.iter_mut().enumerate() {
        let events = events_through(watch, end).await;
        assert_every_revision_once(&events, start + 1, end);
        assert_increments_chain(&events, &hot_keys);
        assert!(
            events.iter().all(|e| e.kind == EventKind::Put),
            "watcher {index}: nothing was deleted"
        );
    }
}

async fn compaction_on_one_server_applies_to_the_other(db: &TestDatabase) {
    let (a, b) = (db.open().await, db.open().await);
    let key = "/registry/nodes/n1";
    let start = a.current_revision().await.unwrap();
    let mut live_on_b = b
        .watch(KeyRange::prefix("/registry/nodes/"), Some(start))
        .await;
    let mut revision = applied(a.create(key, "0").await.unwrap());
    for i in 1..5 {
        revision = applied(a.update(key, format!("{i}"), revision).await.unwrap());
    }
    assert_eq!(events_through(&mut live_on_b, revision).await.len(), 5);

    a.compact(revision, &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(
        b.compaction_state().await.unwrap().compact_revision,
        revision
    );
    assert!(matches!(
        b.get_at(key, revision - 1).await,
        Err(DatastoreError::Compacted { .. })
    ));
    let mut too_old = b
        .watch(KeyRange::prefix("/registry/nodes/"), Some(start))
        .await;
    let first = tokio::time::timeout(EVENT_TIMEOUT, too_old.next()).await;
    assert!(
        matches!(first, Ok(Some(Err(DatastoreError::Compacted { .. })))),
        "a watch from below the compact revision must fail first: {first:?}"
    );
    // A watcher that had already caught up is not disturbed.
    let next = applied(a.update(key, "5", revision).await.unwrap());
    let event = next_event(&mut live_on_b).await;
    assert_eq!((event.revision, event.prev_revision), (next, revision));
    assert_eq!(event.prev_value, Some(Bytes::from("4")));
}

async fn leader_lock_hands_over_between_servers(db: &TestDatabase) {
    let (a, b) = (db.open().await, db.open().await);
    let lock = "datastore-maintenance";

    let on_a = a.try_lock(lock, "server-a").await.unwrap().expect("free");
    for _ in 0..3 {
        assert!(b.try_lock(lock, "server-b").await.unwrap().is_none());
    }
    on_a.release().await;

    let on_b = b
        .try_lock(lock, "server-b")
        .await
        .unwrap()
        .expect("B takes over as soon as A releases");
    assert!(a.try_lock(lock, "server-a").await.unwrap().is_none());
    on_b.release().await;

    let mut back_on_a = a
        .try_lock(lock, "server-a")
        .await
        .unwrap()
        .expect("and hands back the same way");
    assert!(back_on_a.still_held().await);
    back_on_a.release().await;
}
