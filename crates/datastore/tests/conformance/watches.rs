//! Watches: every change of the range after the start revision, exactly once and in
//! revision order; history from the database first, then live events, with no seam.

use bytes::Bytes;
use capstan_datastore::{DatastoreError, Event, EventKind, KeyRange, ListRequest};

use crate::database::{TestDatabase, events_through, next_event};
use crate::support::{applied, assert_every_revision_once, create_op};

conformance!(
    watch_from_now_delivers_changes_with_previous_values,
    watch_from_a_lists_revision_catches_up_then_goes_live,
    watch_on_a_prefix_ignores_other_keys,
    watch_catch_up_spans_pages_and_outruns_the_recent_window,
    a_watcher_that_stops_reading_is_cut_off_without_stalling_others,
);

async fn watch_from_now_delivers_changes_with_previous_values(db: &TestDatabase) {
    let store = db.open().await;
    let key = "/registry/pods/default/watched";
    let mut watch = store.watch(KeyRange::prefix("/registry/pods/"), None).await;

    let created = applied(store.create(key, "v1").await.unwrap());
    let updated = applied(store.update(key, "v2", created).await.unwrap());
    let deleted = applied(store.delete(key, None).await.unwrap());

    assert_eq!(
        next_event(&mut watch).await,
        Event {
            kind: EventKind::Put,
            key: key.into(),
            revision: created,
            create_revision: created,
            value: Bytes::from("v1"),
            prev_revision: 0,
            prev_value: None,
        }
    );
    assert_eq!(
        next_event(&mut watch).await,
        Event {
            kind: EventKind::Put,
            key: key.into(),
            revision: updated,
            create_revision: created,
            value: Bytes::from("v2"),
            prev_revision: created,
            prev_value: Some(Bytes::from("v1")),
        }
    );
    assert_eq!(
        next_event(&mut watch).await,
        Event {
            kind: EventKind::Delete,
            key: key.into(),
            revision: deleted,
            create_revision: created,
            value: Bytes::new(),
            prev_revision: updated,
            prev_value: Some(Bytes::from("v2")),
        }
    );
}

async fn watch_from_a_lists_revision_catches_up_then_goes_live(db: &TestDatabase) {
    let store = db.open().await;
    let prefix = "/registry/configmaps/";
    for i in 0..5 {
        applied(
            store
                .create(&format!("{prefix}before-{i}"), "x")
                .await
                .unwrap(),
        );
    }
    // The informer pattern: list, then watch from the list's revision.
    let listed = store
        .list(&ListRequest {
            range: KeyRange::prefix(prefix),
            revision: None,
            limit: 0,
        })
        .await
        .unwrap();
    for i in 0..20 {
        applied(
            store
                .create(&format!("{prefix}past-{i:02}"), "x")
                .await
                .unwrap(),
        );
    }
    let mut watch = store
        .watch(KeyRange::prefix(prefix), Some(listed.revision))
        .await;
    let first = next_event(&mut watch).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 0..20 {
                last = applied(
                    store
                        .create(&format!("{prefix}live-{i:02}"), "x")
                        .await
                        .unwrap(),
                );
            }
            last
        })
    };
    let last = writer.await.expect("the live writer finishes");

    let mut events = vec![first];
    events.extend(events_through(&mut watch, last).await);

    assert_every_revision_once(&events, listed.revision + 1, last);
    let names: Vec<String> = events
        .iter()
        .map(|e| e.key.trim_start_matches(prefix).to_string())
        .collect();
    let expected: Vec<String> = (0..20)
        .map(|i| format!("past-{i:02}"))
        .chain((0..20).map(|i| format!("live-{i:02}")))
        .collect();
    assert_eq!(names, expected);
    assert!(events.iter().all(|e| e.kind == EventKind::Put));
}

async fn watch_on_a_prefix_ignores_other_keys(db: &TestDatabase) {
    let store = db.open().await;
    let start = store.current_revision().await.unwrap();
    let mut from_start = store
        .watch(KeyRange::prefix("/registry/secrets/"), Some(start))
        .await;
    let mut live = store
        .watch(KeyRange::prefix("/registry/secrets/"), None)
        .await;

    let mut expected = Vec::new();
    for i in 0..6 {
        // Neighbours of the prefix, on both sides and sharing its first bytes.
        for other in ["/registry/secret", "/registry/secrets0", "/registry/pods/a"] {
            applied(store.create(&format!("{other}{i}"), "noise").await.unwrap());
        }
        let key = format!("/registry/secrets/s{i}");
        expected.push((key.clone(), applied(store.create(&key, "x").await.unwrap())));
    }
    let (_, last) = *expected.last().unwrap();

    for watch in [&mut from_start, &mut live] {
        let seen: Vec<(String, i64)> = events_through(watch, last)
            .await
            .into_iter()
            .map(|e| (e.key, e.revision))
            .collect();
        assert_eq!(seen, expected);
    }
}

async fn watch_catch_up_spans_pages_and_outruns_the_recent_window(db: &TestDatabase) {
    // A recent-events window of 10 makes a late watcher read the database until it has
    // caught up with a feed that keeps moving; 1500 past events take more than one page.
    let store = db.open_with(|config| config.recent_events = 10).await;
    let prefix = "/registry/events/";
    let start = store.current_revision().await.unwrap();
    let creates = (0..1500).map(|i| store.write(create_op(format!("{prefix}e{i:04}"), "x")));
    for committed in futures::future::join_all(creates).await {
        applied(committed.unwrap().outcome);
    }
    let mut watch = store.watch(KeyRange::prefix(prefix), Some(start)).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut last = 0;
            for i in 0..200 {
                last = applied(
                    store
                        .create(&format!("{prefix}late{i:03}"), "x")
                        .await
                        .unwrap(),
                );
            }
            last
        })
    };
    let mut events = events_through(&mut watch, start + 1500).await;
    let last = writer.await.expect("the late writer finishes");
    events.extend(events_through(&mut watch, last).await);

    assert_eq!(last, start + 1700);
    assert_every_revision_once(&events, start + 1, last);
}

/// A watcher that stops reading gets `WatcherTooSlow` once its bounded queue is full, naming
/// the last revision it received so it can resume from there; the others on the same
/// server receive every event meanwhile.
async fn a_watcher_that_stops_reading_is_cut_off_without_stalling_others(db: &TestDatabase) {
    const QUEUE: usize = 4;
    let store = db.open_with(|config| config.watch_queue = QUEUE).await;
    let range = KeyRange::prefix("/registry/configmaps/");
    let mut slow = store.watch(range.clone(), None).await;
    let mut reader = store.watch(range.clone(), None).await;

    // Both are live once they have received one event.
    let first = applied(
        store
            .create("/registry/configmaps/ns/first", "v")
            .await
            .unwrap(),
    );
    assert_eq!(next_event(&mut slow).await.revision, first);
    assert_eq!(next_event(&mut reader).await.revision, first);

    // The reader reads each write's event before the next write (it is live, with a queue
    // of 4). In lockstep, because a reader that merely runs beside the writes can fall 4
    // events behind on a loaded machine (one feed poll may find several commits at once),
    // which would make it a slow watcher too.
    let mut last = first;
    let mut seen = Vec::new();
    for i in 0..(QUEUE * 10) {
        let key = format!("/registry/configmaps/ns/k{i:03}");
        last = applied(store.create(&key, "v").await.unwrap());
        seen.push(next_event(&mut reader).await);
    }
    assert_eq!(seen.last().map(|event| event.revision), Some(last));
    assert_eq!(
        seen.len(),
        QUEUE * 10,
        "the reading watcher must get every event"
    );

    let mut queued = Vec::new();
    let error = loop {
        match tokio::time::timeout(crate::database::EVENT_TIMEOUT, slow.next()).await {
            Ok(Some(Ok(event))) => queued.push(event.revision),
            Ok(Some(Err(error))) => break error,
            Ok(None) => panic!("the slow watch ended without saying why"),
            Err(_) => panic!("the slow watch neither delivered nor failed"),
        }
    };
    assert!(
        queued.len() <= QUEUE,
        "at most the queue's {QUEUE} events are kept, got {queued:?}"
    );
    assert!(
        queued.windows(2).all(|pair| pair[0] < pair[1]),
        "queued events stay in order"
    );
    match error {
        DatastoreError::WatcherTooSlow {
            revision, buffered, ..
        } => {
            assert_eq!(buffered, QUEUE);
            assert_eq!(
                revision,
                queued.last().copied().unwrap_or(first),
                "it names the last revision delivered"
            );
        }
        other => panic!("expected WatcherTooSlow, got {other:?}"),
    }
    assert!(slow.next().await.is_none(), "a cut-off watch ends");
}
