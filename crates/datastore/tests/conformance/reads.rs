//! Reads: current and past values, lists exact at one revision (every page of a list is
//! the same snapshot, however many writes land between pages), and counts.

use bytes::Bytes;
use capstan_datastore::{DatastoreError, KeyRange, KeyValue, ListPage, ListRequest, Store};

use crate::database::TestDatabase;
use crate::support::applied;

conformance!(
    get_at_reads_the_value_at_each_past_revision,
    get_at_a_future_revision_is_refused,
    list_returns_the_keys_of_a_range_in_byte_order,
    list_pages_are_one_snapshot_while_writes_continue,
    list_at_a_past_revision_is_exact,
    count_counts_the_live_keys_of_a_range,
);

/// The smallest valid key after `key` (keys are printable ASCII from `!`): where the next
/// page of a list starts.
fn start_after(key: &str) -> String {
    format!("{key}!")
}

async fn list(store: &Store, range: KeyRange, revision: Option<i64>, limit: usize) -> ListPage {
    store
        .list(&ListRequest {
            range,
            revision,
            limit,
        })
        .await
        .unwrap()
}

fn keys(page: &ListPage) -> Vec<&str> {
    page.items.iter().map(|kv| kv.key.as_str()).collect()
}

async fn get_at_reads_the_value_at_each_past_revision(db: &TestDatabase) {
    let store = db.open().await;
    let key = "/registry/pods/default/history";
    let created = applied(store.create(key, "v1").await.unwrap());
    let updated = applied(store.update(key, "v2", created).await.unwrap());
    let deleted = applied(store.delete(key, Some(updated)).await.unwrap());
    let recreated = applied(store.create(key, "v3").await.unwrap());
    let unrelated = applied(
        store
            .create("/registry/pods/default/other", "x")
            .await
            .unwrap(),
    );

    let at = |revision| {
        let store = store.clone();
        async move { store.get_at(key, revision).await.unwrap() }
    };
    let value = |value: &'static str, create_revision, mod_revision| {
        Some(KeyValue {
            key: key.to_string(),
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        })
    };
    assert_eq!(at(created - 1).await, None, "before it was created");
    assert_eq!(at(created).await, value("v1", created, created));
    assert_eq!(at(updated).await, value("v2", created, updated));
    assert_eq!(at(deleted).await, None, "while deleted");
    assert_eq!(at(recreated).await, value("v3", recreated, recreated));
    assert_eq!(
        at(unrelated).await,
        value("v3", recreated, recreated),
        "unchanged by a later write to another key"
    );
}

async fn get_at_a_future_revision_is_refused(db: &TestDatabase) {
    let store = db.open().await;
    let current = applied(store.create("/future/k", "v").await.unwrap());

    match store.get_at("/future/k", current + 1).await {
        Err(DatastoreError::FutureRevision {
            requested,
            current: reported,
        }) => assert_eq!((requested, reported), (current + 1, current)),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
    let request = ListRequest {
        range: KeyRange::prefix("/future/"),
        revision: Some(current + 1),
        limit: 0,
    };
    assert!(matches!(
        store.list(&request).await,
        Err(DatastoreError::FutureRevision { .. })
    ));
}

async fn list_returns_the_keys_of_a_range_in_byte_order(db: &TestDatabase) {
    let store = db.open().await;
    // Byte order: 'B' < 'a' and '-' < '.' < '/', the same under every engine.
    let inside = [
        "/registry/pods/c",
        "/registry/pods/a/1",
        "/registry/pods/B",
        "/registry/pods/a.1",
        "/registry/pods/a",
        "/registry/pods/b",
        "/registry/pods/a-1",
    ];
    let outside = [
        "/registry/pods",
        "/registry/pod",
        "/registry/pods0",
        "/registry/podsX",
        "/registry/services/a",
    ];
    for key in inside.iter().chain(&outside) {
        applied(store.create(key, format!("value of {key}")).await.unwrap());
    }
    let mut sorted = inside.to_vec();
    sorted.sort_unstable();
    let current = store.current_revision().await.unwrap();

    let all = list(&store, KeyRange::prefix("/registry/pods/"), None, 0).await;
    assert_eq!(keys(&all), sorted);
    assert_eq!(all.revision, current);
    assert!(!all.more);
    for kv in &all.items {
        assert_eq!(kv.value, Bytes::from(format!("value of {}", kv.key)));
    }

    let first_two = list(&store, KeyRange::prefix("/registry/pods/"), None, 2).await;
    assert_eq!(keys(&first_two), ["/registry/pods/B", "/registry/pods/a"]);
    assert!(first_two.more);

    let exact = list(&store, KeyRange::prefix("/registry/pods/"), None, 7).await;
    assert_eq!(exact.items.len(), 7);
    assert!(!exact.more, "a page that ends with the range has no more");

    let half_open = KeyRange {
        start: "/registry/pods/a".into(),
        end: "/registry/pods/c".into(),
    };
    let between = list(&store, half_open, None, 0).await;
    assert_eq!(
        keys(&between),
        [
            "/registry/pods/a",
            "/registry/pods/a-1",
            "/registry/pods/a.1",
            "/registry/pods/a/1",
            "/registry/pods/b"
        ]
    );

    let nothing = list(&store, KeyRange::prefix("/registry/nodes/"), None, 10).await;
    assert!(nothing.items.is_empty() && !nothing.more);
}

async fn list_pages_are_one_snapshot_while_writes_continue(db: &TestDatabase) {
    let store = db.open().await;
    let prefix = "/registry/pages/";
    let key = |i: usize| format!("{prefix}k{i:02}");
    for i in 0..10 {
        applied(
            store
                .create(&key(i), format!("original {i}"))
                .await
                .unwrap(),
        );
    }
    let snapshot = list(&store, KeyRange::prefix(prefix), None, 0).await;

    let first = list(&store, KeyRange::prefix(prefix), None, 4).await;
    assert_eq!(first.revision, snapshot.revision);
    assert_eq!(first.items, snapshot.items[..4]);
    assert!(first.more);

    // After the first page: changes on the pages still to come, on the page already read,
    // and at both ends, plus a writer that keeps going while the next pages are read.
    let current = |i: usize| snapshot.items[i].mod_revision;
    applied(store.update(&key(5), "changed", current(5)).await.unwrap());
    applied(store.delete(&key(6), None).await.unwrap());
    applied(store.create(&format!("{prefix}k04a"), "new").await.unwrap());
    applied(store.update(&key(1), "changed", current(1)).await.unwrap());
    applied(store.delete(&key(0), None).await.unwrap());
    applied(store.create(&key(10), "new").await.unwrap());
    let churn = {
        let store = store.clone();
        let churn_key = key(8);
        tokio::spawn(async move {
            let mut revision = store.get(&churn_key).await.unwrap().unwrap().mod_revision;
            for round in 0..30 {
                let outcome = store.update(&churn_key, format!("churn {round}"), revision);
                revision = applied(outcome.await.unwrap());
            }
        })
    };

    let mut pages = vec![first];
    while pages.last().is_some_and(|page| page.more) {
        let last_key = pages
            .last()
            .and_then(|p| p.items.last())
            .unwrap()
            .key
            .clone();
        let range = KeyRange {
            start: start_after(&last_key),
            end: KeyRange::prefix(prefix).end,
        };
        let page = list(&store, range, Some(snapshot.revision), 4).await;
        assert_eq!(page.revision, snapshot.revision);
        pages.push(page);
        assert!(
            pages.len() <= 3,
            "ten keys in pages of four take three pages"
        );
    }
    churn.await.expect("the churning writer finishes");

    let paged: Vec<KeyValue> = pages.into_iter().flat_map(|page| page.items).collect();
    assert_eq!(paged, snapshot.items, "the pages together are the snapshot");

    let now = list(&store, KeyRange::prefix(prefix), None, 0).await;
    assert_eq!(
        keys(&now),
        [
            "k01", "k02", "k03", "k04", "k04a", "k05", "k07", "k08", "k09", "k10"
        ]
        .map(|k| format!("{prefix}{k}"))
    );
    assert_eq!(now.items[0].value, Bytes::from("changed"));
    assert_eq!(now.items[7].value, Bytes::from("churn 29"));
}

async fn list_at_a_past_revision_is_exact(db: &TestDatabase) {
    let store = db.open().await;
    let (a, b, c) = ("/past/a", "/past/b", "/past/c");
    let empty_at = store.current_revision().await.unwrap();
    let a_created = applied(store.create(a, "a1").await.unwrap());
    let b_created = applied(store.create(b, "b1").await.unwrap());
    let a_updated = applied(store.update(a, "a2", a_created).await.unwrap());
    applied(store.delete(b, Some(b_created)).await.unwrap());
    let c_created = applied(store.create(c, "c1").await.unwrap());

    let entry = |key: &str, value: &'static str, create_revision, mod_revision| KeyValue {
        key: key.to_string(),
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    };
    let at = |revision| list(&store, KeyRange::prefix("/past/"), Some(revision), 0);

    assert!(at(empty_at).await.items.is_empty());
    let before_changes = at(b_created).await;
    assert_eq!(before_changes.revision, b_created);
    assert_eq!(
        before_changes.items,
        [
            entry(a, "a1", a_created, a_created),
            entry(b, "b1", b_created, b_created)
        ]
    );
    assert_eq!(
        at(a_updated).await.items,
        [
            entry(a, "a2", a_created, a_updated),
            entry(b, "b1", b_created, b_created)
        ]
    );
    assert_eq!(
        at(c_created).await.items,
        [
            entry(a, "a2", a_created, a_updated),
            entry(c, "c1", c_created, c_created)
        ]
    );
    // A past list with a limit pages like a current one.
    let first = list(&store, KeyRange::prefix("/past/"), Some(b_created), 1).await;
    assert_eq!(first.items, [entry(a, "a1", a_created, a_created)]);
    assert!(first.more);
}

async fn count_counts_the_live_keys_of_a_range(db: &TestDatabase) {
    let store = db.open().await;
    for i in 0..5 {
        applied(store.create(&format!("/count/in/{i}"), "x").await.unwrap());
    }
    applied(store.create("/count/out", "x").await.unwrap());
    applied(store.create("/count/inx", "x").await.unwrap());

    let (revision, count) = store.count(&KeyRange::prefix("/count/in/")).await.unwrap();
    assert_eq!((revision, count), (7, 5));

    let deleted = applied(store.delete("/count/in/3", None).await.unwrap());
    let (revision, count) = store.count(&KeyRange::prefix("/count/in/")).await.unwrap();
    assert_eq!((revision, count), (deleted, 4));

    let (_, none) = store
        .count(&KeyRange::prefix("/count/none/"))
        .await
        .unwrap();
    assert_eq!(none, 0);
}
