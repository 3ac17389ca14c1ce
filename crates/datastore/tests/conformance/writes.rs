//! Writes and their revisions: each applied write takes the next revision of one global,
//! gap-free sequence; a failed comparison writes nothing and takes no revision.

use bytes::Bytes;
use capstan_datastore::{KeyRange, KeyValue, Result, Store, WriteOutcome};

use crate::database::TestDatabase;
use crate::support::{applied, create_op};

conformance!(
    a_new_database_is_empty_at_revision_zero,
    create_then_get_returns_the_value,
    update_replaces_the_value_and_keeps_the_create_revision,
    create_of_an_existing_key_conflicts_and_costs_no_revision,
    update_with_a_stale_revision_conflicts_and_reports_the_current_one,
    delete_with_and_without_an_expected_revision,
    a_deleted_key_can_be_created_again_as_a_new_key,
    revisions_are_dense_even_when_comparisons_fail,
    concurrent_writes_to_one_key_apply_once_each_without_gaps,
);

async fn a_new_database_is_empty_at_revision_zero(db: &TestDatabase) {
    let store = db.open().await;
    assert_eq!(store.current_revision().await.unwrap(), 0);
    assert_eq!(store.get("/registry/anything").await.unwrap(), None);
    let (revision, count) = store.count(&KeyRange::prefix("/")).await.unwrap();
    assert_eq!((revision, count), (0, 0));
}

async fn create_then_get_returns_the_value(db: &TestDatabase) {
    let store = db.open().await;
    let key = "/registry/pods/default/web";

    let revision = applied(store.create(key, "spec-1").await.unwrap());

    assert_eq!(revision, 1);
    assert_eq!(store.current_revision().await.unwrap(), revision);
    assert_eq!(
        store.get(key).await.unwrap(),
        Some(KeyValue {
            key: key.to_string(),
            value: Bytes::from("spec-1"),
            create_revision: revision,
            mod_revision: revision,
        })
    );
    assert_eq!(
        store.get("/registry/pods/default/other").await.unwrap(),
        None
    );
}

async fn update_replaces_the_value_and_keeps_the_create_revision(db: &TestDatabase) {
    let store = db.open().await;
    let key = "/registry/configmaps/default/settings";
    let created = applied(store.create(key, "v1").await.unwrap());

    let updated = applied(store.update(key, "v2", created).await.unwrap());

    assert_eq!(updated, created + 1);
    let kv = store.get(key).await.unwrap().expect("the key exists");
    assert_eq!(kv.value, Bytes::from("v2"));
    assert_eq!(kv.create_revision, created);
    assert_eq!(kv.mod_revision, updated);
    assert_eq!(store.current_revision().await.unwrap(), updated);
}

async fn create_of_an_existing_key_conflicts_and_costs_no_revision(db: &TestDatabase) {
    let store = db.open().await;
    let key = "/registry/namespaces/kube-system";
    let created = applied(store.create(key, "original").await.unwrap());

    let again = store.create(key, "impostor").await.unwrap();

    assert_eq!(
        again,
        WriteOutcome::Conflict {
            current_revision: Some(created)
        }
    );
    assert_eq!(store.current_revision().await.unwrap(), created);
    assert_eq!(
        store.get(key).await.unwrap().unwrap().value,
        Bytes::from("original")
    );
}

async fn update_with_a_stale_revision_conflicts_and_reports_the_current_one(db: &TestDatabase) {
    let store = db.open().await;
    let key = "/registry/deployments/default/api";
    let created = applied(store.create(key, "replicas: 1").await.unwrap());
    let updated = applied(store.update(key, "replicas: 2", created).await.unwrap());

    let stale = store.update(key, "replicas: 9", created).await.unwrap();
    let missing = store
        .update("/registry/deployments/default/ghost", "x", created)
        .await
        .unwrap();

    assert_eq!(
        stale,
        WriteOutcome::Conflict {
            current_revision: Some(updated)
        }
    );
    assert_eq!(
        missing,
        WriteOutcome::Conflict {
            current_revision: None
        }
    );
    assert_eq!(store.current_revision().await.unwrap(), updated);
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(
        (kv.value, kv.mod_revision),
        (Bytes::from("replicas: 2"), updated)
    );
}

async fn delete_with_and_without_an_expected_revision(db: &TestDatabase) {
    let store = db.open().await;
    let guarded = "/registry/secrets/default/guarded";
    let unguarded = "/registry/secrets/default/unguarded";
    let guarded_at = applied(store.create(guarded, "a").await.unwrap());
    let unguarded_at = applied(store.create(unguarded, "b").await.unwrap());

    // A delete that expects another revision fails and says which one the key has.
    let wrong = store.delete(guarded, Some(guarded_at - 1)).await.unwrap();
    assert_eq!(
        wrong,
        WriteOutcome::Conflict {
            current_revision: Some(guarded_at)
        }
    );
    assert_eq!(store.current_revision().await.unwrap(), unguarded_at);

    let deleted = applied(store.delete(guarded, Some(guarded_at)).await.unwrap());
    assert_eq!(deleted, unguarded_at + 1);
    assert_eq!(store.get(guarded).await.unwrap(), None);

    let deleted_blind = applied(store.delete(unguarded, None).await.unwrap());
    assert_eq!(deleted_blind, deleted + 1);
    assert_eq!(store.get(unguarded).await.unwrap(), None);

    // Deleting what does not exist is a conflict with no current revision, and free.
    for expected in [None, Some(deleted)] {
        assert_eq!(
            store.delete(guarded, expected).await.unwrap(),
            WriteOutcome::Conflict {
                current_revision: None
            }
        );
    }
    assert_eq!(store.current_revision().await.unwrap(), deleted_blind);
}

async fn a_deleted_key_can_be_created_again_as_a_new_key(db: &TestDatabase) {
    let store = db.open().await;
    let key = "/registry/pods/default/job-1";
    let first = applied(store.create(key, "first life").await.unwrap());
    applied(store.delete(key, Some(first)).await.unwrap());

    let second = applied(store.create(key, "second life").await.unwrap());

    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(kv.create_revision, second, "a re-created key starts anew");
    assert_eq!(kv.mod_revision, second);
    assert_eq!(kv.value, Bytes::from("second life"));
}

async fn revisions_are_dense_even_when_comparisons_fail(db: &TestDatabase) {
    let store = db.open().await;
    let start = store.current_revision().await.unwrap();
    let mut head = start;
    let (a, b) = ("/dense/a", "/dense/b");

    let a_created = takes_next(&store, &mut head, store.create(a, "1").await).await;
    takes_none(&store, head, store.create(a, "2").await).await;
    takes_none(&store, head, store.update(a, "3", a_created - 1).await).await;
    let a_updated = takes_next(&store, &mut head, store.update(a, "4", a_created).await).await;
    takes_none(&store, head, store.delete(b, None).await).await;
    takes_next(&store, &mut head, store.create(b, "5").await).await;
    takes_none(&store, head, store.delete(a, Some(a_created)).await).await;
    takes_next(&store, &mut head, store.delete(a, Some(a_updated)).await).await;
    takes_none(&store, head, store.update(a, "6", a_updated).await).await;

    assert_eq!(head, start + 4);
}

/// Checks that a write applied at the revision after `head`, and advances `head`.
async fn takes_next(store: &Store, head: &mut i64, outcome: Result<WriteOutcome>) -> i64 {
    *head += 1;
    assert_eq!(outcome.unwrap(), WriteOutcome::Applied { revision: *head });
    assert_eq!(store.current_revision().await.unwrap(), *head);
    *head
}

/// Checks that a write failed its comparison and the revision stayed at `head`.
async fn takes_none(store: &Store, head: i64, outcome: Result<WriteOutcome>) {
    let outcome = outcome.unwrap();
    assert!(
        matches!(outcome, WriteOutcome::Conflict { .. }),
        "expected a conflict, got {outcome:?}"
    );
    assert_eq!(store.current_revision().await.unwrap(), head);
}

async fn concurrent_writes_to_one_key_apply_once_each_without_gaps(db: &TestDatabase) {
    let store = db.open().await;
    let start = store.current_revision().await.unwrap();

    // Twenty creates of one key and twenty of distinct keys, all at once, so they share
    // write batches: exactly one create of the shared key wins, and the revisions taken
    // are one contiguous run whatever failed beside them.
    let creates = (0..20).flat_map(|i| {
        [
            store.write(create_op("/race/shared", format!("writer {i}"))),
            store.write(create_op(format!("/race/own-{i:02}"), "mine")),
        ]
    });
    let outcomes = futures::future::join_all(creates).await;

    let mut revisions = Vec::new();
    let mut conflicts = 0;
    for outcome in outcomes {
        match outcome.unwrap().outcome {
            WriteOutcome::Applied { revision } => revisions.push(revision),
            WriteOutcome::Conflict { .. } => conflicts += 1,
        }
    }
    revisions.sort_unstable();
    assert_eq!(conflicts, 19);
    assert_eq!(revisions, (start + 1..=start + 21).collect::<Vec<_>>());
    assert_eq!(store.current_revision().await.unwrap(), start + 21);
}
