//! Upkeep: compaction (the oldest readable revision moves up and superseded history goes,
//! while current state stays exact), TTL expiry, and the leader locks that elect the one
//! server doing it.

use std::time::Duration;

use bytes::Bytes;
use capstan_datastore::{
    CompactionState, DatastoreError, EventKind, KeyRange, KeyValue, ListRequest, WriteOp,
};
use tokio_util::sync::CancellationToken;

use crate::database::{EVENT_TIMEOUT, TestDatabase, events_through, next_event};
use crate::support::applied;

conformance!(
    compaction_refuses_history_below_the_compact_revision_and_keeps_the_rest,
    expired_keys_are_deleted_and_the_deletion_is_watched,
    leader_lock_is_exclusive_until_released,
);

async fn compaction_refuses_history_below_the_compact_revision_and_keeps_the_rest(
    db: &TestDatabase,
) {
    let store = db.open().await;
    let (a, b, d) = ("/compact/a", "/compact/b", "/compact/d");
    let a1 = applied(store.create(a, "a1").await.unwrap());
    let a2 = applied(store.update(a, "a2", a1).await.unwrap());
    let b1 = applied(store.create(b, "b1").await.unwrap());
    let b_deleted = applied(store.delete(b, Some(b1)).await.unwrap());
    let a3 = applied(store.update(a, "a3", a2).await.unwrap());
    let d1 = applied(store.create(d, "d1").await.unwrap());

    let stats = store.compact(a3, &CancellationToken::new()).await.unwrap();

    // Below a3, a1 and a2 were superseded, b1 deleted, and b's deletion needs no marker.
    assert_eq!(stats.compact_revision, a3);
    assert_eq!(stats.rows_removed, 4, "a1, a2, b1 and b's deletion marker");
    assert_eq!(
        store.compaction_state().await.unwrap(),
        CompactionState {
            compact_revision: a3,
            compacted_through: a3
        }
    );

    // Below the compact revision: reads and watches are refused, not answered wrongly.
    for revision in [a1, a2, b1, b_deleted] {
        match store.get_at(a, revision).await {
            Err(DatastoreError::Compacted {
                requested,
                compact_revision,
            }) => assert_eq!((requested, compact_revision), (revision, a3)),
            other => panic!("get_at({revision}) below the compact revision: {other:?}"),
        }
        let listed = store
            .list(&ListRequest {
                range: KeyRange::prefix("/compact/"),
                revision: Some(revision),
                limit: 0,
            })
            .await;
        assert!(
            matches!(listed, Err(DatastoreError::Compacted { .. })),
            "list at {revision}: {listed:?}"
        );
    }
    let mut too_old = store.watch(KeyRange::prefix("/compact/"), Some(b1)).await;
    match tokio::time::timeout(EVENT_TIMEOUT, too_old.next()).await {
        Ok(Some(Err(DatastoreError::Compacted {
            requested,
            compact_revision,
        }))) => assert_eq!((requested, compact_revision), (b1, a3)),
        other => panic!("a watch from below the compact revision must fail first: {other:?}"),
    }

    // At and above it: everything is intact and exact.
    let a4 = applied(store.update(a, "a4", a3).await.unwrap());
    let kv = |key: &str, value: &'static str, create_revision, mod_revision| KeyValue {
        key: key.to_string(),
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    };
    assert_eq!(
        store.get_at(a, a3).await.unwrap(),
        Some(kv(a, "a3", a1, a3))
    );
    assert_eq!(store.get_at(b, a3).await.unwrap(), None);
    assert_eq!(store.get(a).await.unwrap(), Some(kv(a, "a4", a1, a4)));
    let at_compact_revision = store
        .list(&ListRequest {
            range: KeyRange::prefix("/compact/"),
            revision: Some(a3),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(at_compact_revision.items, [kv(a, "a3", a1, a3)]);
    let now = store
        .list(&ListRequest {
            range: KeyRange::prefix("/compact/"),
            revision: None,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(now.items, [kv(a, "a4", a1, a4), kv(d, "d1", d1, d1)]);

    let mut from_compact = store.watch(KeyRange::prefix("/compact/"), Some(a3)).await;
    let events = events_through(&mut from_compact, a4).await;
    assert_eq!(
        events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [d1, a4]
    );
    assert_eq!(events[1].prev_revision, a3);
    assert_eq!(events[1].prev_value, Some(Bytes::from("a3")));

    // The compact revision never moves back, and never past the head.
    let again = store.compact(a1, &CancellationToken::new()).await.unwrap();
    assert_eq!((again.compact_revision, again.steps), (a3, 0));
    let beyond = store
        .compact(a4 + 100, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(beyond.compact_revision, a4);
    assert_eq!(store.get(d).await.unwrap(), Some(kv(d, "d1", d1, d1)));
    let mut at_head = store.watch(KeyRange::prefix("/compact/"), None).await;
    let after = applied(store.delete(d, None).await.unwrap());
    let deletion = next_event(&mut at_head).await;
    assert_eq!(
        (deletion.kind, deletion.revision),
        (EventKind::Delete, after)
    );
    assert_eq!(deletion.prev_value, Some(Bytes::from("d1")));
}

async fn expired_keys_are_deleted_and_the_deletion_is_watched(db: &TestDatabase) {
    let store = db.open().await;
    let (short, renewed, plain) = ("/ttl/short", "/ttl/renewed", "/ttl/plain");
    let ttl = Duration::from_secs(1);
    let mut watch = store.watch(KeyRange::prefix("/ttl/"), None).await;
    let with_ttl = |key: &str| WriteOp::Create {
        key: key.into(),
        value: Bytes::from("short-lived"),
        ttl: Some(ttl),
    };
    applied(store.write(with_ttl(short)).await.unwrap().outcome);
    let renewed_at = applied(store.write(with_ttl(renewed)).await.unwrap().outcome);
    applied(store.create(plain, "forever").await.unwrap());
    // An update without a TTL removes the expiry.
    let update = WriteOp::Update {
        key: renewed.into(),
        value: Bytes::from("kept"),
        expected_revision: renewed_at,
        ttl: None,
    };
    let kept_at = applied(store.write(update).await.unwrap().outcome);

    assert_eq!(store.expire_keys().await.unwrap(), 0, "nothing expired yet");
    assert!(store.get(short).await.unwrap().is_some());

    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    assert_eq!(store.expire_keys().await.unwrap(), 1);

    assert_eq!(store.get(short).await.unwrap(), None);
    assert_eq!(
        store.get(renewed).await.unwrap().unwrap().value,
        Bytes::from("kept")
    );
    assert!(store.get(plain).await.unwrap().is_some());
    let expired_at = store.current_revision().await.unwrap();
    let events = events_through(&mut watch, expired_at).await;
    let deletion = events.last().unwrap();
    assert_eq!(events.len(), 5, "three creates, one update, one expiry");
    assert_eq!(events[3].revision, kept_at);
    assert_eq!(
        (deletion.kind, deletion.key.as_str()),
        (EventKind::Delete, short)
    );
    assert_eq!(deletion.prev_value, Some(Bytes::from("short-lived")));

    assert_eq!(
        store.expire_keys().await.unwrap(),
        0,
        "each key expires once"
    );
}

async fn leader_lock_is_exclusive_until_released(db: &TestDatabase) {
    let first = db.open().await;
    let second = db.open().await;

    let mut held = first
        .try_lock("x", "a")
        .await
        .unwrap()
        .expect("a free lock is taken");
    assert!(second.try_lock("x", "b").await.unwrap().is_none());
    assert!(held.still_held().await);
    assert!(
        second.try_lock("x", "b").await.unwrap().is_none(),
        "still held after renewal"
    );
    let other_name = second.try_lock("y", "b").await.unwrap();
    assert!(other_name.is_some(), "locks of other names are independent");

    held.release().await;

    let mut taken_over = second
        .try_lock("x", "b")
        .await
        .unwrap()
        .expect("a released lock is free at once");
    assert!(taken_over.still_held().await);
    assert!(first.try_lock("x", "a").await.unwrap().is_none());
    taken_over.release().await;
    if let Some(lease) = other_name {
        lease.release().await;
    }
}
