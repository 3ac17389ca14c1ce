#![allow(clippy::unwrap_used)]
//! The storage interface's contract, as the API layer relies on it: resourceVersions from
//! revisions, optimistic concurrency, lists exact at one revision across pages, continue
//! tokens, and watches that resume from a list. SQLite only: everything below the storage
//! layer is checked on every engine by the datastore crate's conformance suite
//! (`cargo test -p capstan-datastore`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use capstan_apiserver::storage::{
    ItemFilter, ListOptions, ObjectKey, ResourceKey, ResourceVersionMatch, Storage, StorageError,
    WatchEventType, WatchStream,
};
use capstan_datastore::Engine;
use common::{EVENT_TIMEOUT, TestDatabase};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn setup() -> (TestDatabase, Storage) {
    let db = TestDatabase::create(Engine::Sqlite).await;
    let storage = Storage::new(db.open().await);
    (db, storage)
}

fn pods() -> ResourceKey {
    ResourceKey::namespaced("", "pods").unwrap()
}

fn pod_key(namespace: &str, name: &str) -> ObjectKey {
    pods().object(Some(namespace), name).unwrap()
}

fn pod(name: &str, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"image": image}})
}

fn rv(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("every object read from storage has a resourceVersion")
        .parse()
        .unwrap()
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn next(watch: &mut WatchStream) -> capstan_apiserver::storage::WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sets_the_resource_version_and_get_returns_the_same_object() {
    let (db, storage) = setup().await;
    let key = pod_key("default", "web");
    // A resourceVersion sent by a client is not stored: the revision decides it.
    let mut sent = pod("web", "nginx");
    sent["metadata"]["resourceVersion"] = json!("999");
    let created = storage.create(&key, sent).await.unwrap();
    let revision = rv(&created);
    assert_eq!(revision, storage.store().current_revision().await.unwrap());
    assert_eq!(storage.get(&key).await.unwrap(), created);
    let stored = storage.store().get(key.as_str()).await.unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(
        stored,
        pod("web", "nginx"),
        "stored bytes carry no resourceVersion"
    );

    match storage.create(&key, pod("web", "other")).await {
        Err(StorageError::AlreadyExists { key: taken }) => assert_eq!(taken, key.as_str()),
        other => panic!("a second create must fail with AlreadyExists: {other:?}"),
    }
    match storage.get(&pod_key("default", "missing")).await {
        Err(StorageError::NotFound { .. }) => {}
        other => panic!("get of a missing object: {other:?}"),
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_and_delete_check_their_resource_version_precondition() {
    let (db, storage) = setup().await;
    let key = pod_key("default", "web");
    let v1 = storage.create(&key, pod("web", "v1")).await.unwrap();
    let v2 = storage
        .update(&key, pod("web", "v2"), &rv(&v1).to_string())
        .await
        .unwrap();
    assert!(rv(&v2) > rv(&v1));
    assert_eq!(v2["spec"]["image"], "v2");

    match storage
        .update(&key, pod("web", "v3"), &rv(&v1).to_string())
        .await
    {
        Err(StorageError::Conflict { current, .. }) => assert_eq!(current, rv(&v2).to_string()),
        other => panic!("an update with a stale resourceVersion must conflict: {other:?}"),
    }
    match storage.update(&key, pod("web", "v3"), "not-a-number").await {
        Err(StorageError::InvalidResourceVersion { .. }) => {}
        other => panic!("a non-integer resourceVersion is bad input: {other:?}"),
    }
    // The past stays readable until compaction.
    let old = storage.get_at(&key, &rv(&v1).to_string()).await.unwrap();
    assert_eq!(old, v1);

    match storage.delete(&key, Some(&rv(&v1).to_string())).await {
        Err(StorageError::Conflict { .. }) => {}
        other => panic!("a delete with a stale precondition must conflict: {other:?}"),
    }
    let deleted = storage
        .delete(&key, Some(&rv(&v2).to_string()))
        .await
        .unwrap();
    assert_eq!(
        deleted["spec"]["image"], "v2",
        "delete returns the last state"
    );
    assert_eq!(
        rv(&deleted),
        storage.store().current_revision().await.unwrap(),
        "at the delete's revision"
    );
    assert!(matches!(
        storage.get(&key).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        storage
            .update(&key, pod("web", "v4"), &rv(&v2).to_string())
            .await,
        Err(StorageError::NotFound { .. })
    ));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guaranteed_update_retries_when_another_writer_gets_in_first() {
    let (db, storage) = setup().await;
    let key = pod_key("default", "counter");
    let created = storage
        .create(&key, json!({"metadata": {"name": "counter"}, "count": 0}))
        .await
        .unwrap();
    let mut calls = 0;
    let updated = storage
        .guaranteed_update(&key, |mut current| {
            calls += 1;
            if calls == 1 {
                // Another writer commits between our read and our write.
                let (storage, key, seen) = (storage.clone(), key.clone(), current.clone());
                tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(async {
                        let mut theirs = seen.clone();
                        theirs["count"] = json!(100);
                        storage
                            .update(&key, theirs, &rv(&seen).to_string())
                            .await
                            .unwrap();
                    })
                });
            }
            current["count"] = json!(current["count"].as_i64().unwrap() + 1);
            Ok(current)
        })
        .await
        .unwrap();
    assert_eq!(calls, 2, "the mutation is re-applied to the re-read object");
    assert_eq!(updated["count"], 101, "the other writer's change is kept");
    assert_eq!(rv(&updated), rv(&created) + 2);
    assert_eq!(storage.get(&key).await.unwrap(), updated);

    // A mutation that changes nothing writes nothing.
    let same = storage.guaranteed_update(&key, Ok).await.unwrap();
    assert_eq!(same, updated);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_return_every_object_once_at_one_resource_version_while_writes_continue() {
    let (db, storage) = setup().await;
    let mut expected = BTreeSet::new();
    for i in 0..25 {
        let name = format!("p{i:02}");
        storage
            .create(&pod_key("ns", &name), pod(&name, "v1"))
            .await
            .unwrap();
        expected.insert(name);
    }
    let prefix = pods().namespace_prefix("ns").unwrap();
    let mut options = ListOptions {
        limit: 4,
        ..ListOptions::default()
    };
    let first = storage.list(&prefix, &options).await.unwrap();
    assert_eq!(first.items.len(), 4);
    assert_eq!(first.remaining_item_count, Some(21));
    let list_rv = first.resource_version.clone();
    let mut seen = names(&first.items);
    let mut token = first.continue_token;
    let mut writes = 0;
    while let Some(next) = token {
        // Writes land everywhere: new keys before and after the cursor, updates, deletes.
        writes += 1;
        let early = format!("p{writes:02}a");
        storage
            .create(&pod_key("ns", &early), pod(&early, "new"))
            .await
            .unwrap();
        storage
            .create(&pod_key("ns", &format!("z{writes}")), pod("z", "new"))
            .await
            .unwrap();
        storage
            .guaranteed_update(&pod_key("ns", &format!("p{:02}", 24 - writes)), |mut p| {
                p["spec"]["image"] = json!("v2");
                Ok(p)
            })
            .await
            .unwrap();
        storage
            .delete(&pod_key("ns", &format!("p{:02}", writes + 10)), None)
            .await
            .unwrap();

        options.continue_token = Some(next);
        let page = storage.list(&prefix, &options).await.unwrap();
        assert_eq!(
            page.resource_version, list_rv,
            "every page is at one revision"
        );
        assert!(
            page.items.iter().all(|item| item["spec"]["image"] == "v1"),
            "items are as of the list's revision"
        );
        seen.extend(names(&page.items));
        token = page.continue_token;
    }
    assert!(writes > 0);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no object twice: {seen:?}");
    assert_eq!(
        unique, expected,
        "every object of the snapshot, nothing newer"
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_list_fills_each_page_with_matches_and_resumes_after_the_last_one() {
    let (db, storage) = setup().await;
    // 1,200 pods, every 100th "wanted": a selective list must read past many batches.
    for i in 0..1200 {
        let name = format!("f{i:04}");
        let image = if i % 100 == 7 { "wanted" } else { "other" };
        storage
            .create(&pod_key("ns", &name), pod(&name, image))
            .await
            .unwrap();
    }
    let prefix = pods().namespace_prefix("ns").unwrap();
    let wanted = ItemFilter(Arc::new(|object: &Value| {
        object["spec"]["image"] == "wanted"
    }));
    let mut options = ListOptions {
        limit: 5,
        filter: Some(wanted.clone()),
        ..ListOptions::default()
    };
    let first = storage.list(&prefix, &options).await.unwrap();
    assert_eq!(
        names(&first.items),
        ["f0007", "f0107", "f0207", "f0307", "f0407"],
        "one page holds `limit` matches even when they are far apart"
    );
    assert_eq!(
        first.remaining_item_count, None,
        "no count for a filtered list"
    );
    // A write between pages does not show: the rest is read at the first page's version.
    storage
        .create(&pod_key("ns", "f0999x"), pod("f0999x", "wanted"))
        .await
        .unwrap();
    options.continue_token = first.continue_token.clone();
    let second = storage.list(&prefix, &options).await.unwrap();
    assert_eq!(
        names(&second.items),
        ["f0507", "f0607", "f0707", "f0807", "f0907"]
    );
    assert_eq!(second.resource_version, first.resource_version);
    options.continue_token = second.continue_token.clone();
    let last = storage.list(&prefix, &options).await.unwrap();
    assert_eq!(names(&last.items), ["f1007", "f1107"]);
    assert_eq!(last.continue_token, None, "the range is exhausted");
    // Without a limit, every match at once.
    let all = storage
        .list(
            &prefix,
            &ListOptions {
                filter: Some(wanted),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.items.len(), 13);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_tokens_and_resource_versions_are_checked() {
    let (db, storage) = setup().await;
    for name in ["a", "b", "c"] {
        storage
            .create(&pod_key("ns", name), pod(name, "v1"))
            .await
            .unwrap();
    }
    let prefix = pods().all_prefix();
    let page_one = ListOptions {
        limit: 1,
        ..ListOptions::default()
    };
    let first = storage.list(&prefix, &page_one).await.unwrap();
    let token = first.continue_token.clone().unwrap();

    let with = |token: &str, rv: Option<&str>| ListOptions {
        limit: 1,
        continue_token: Some(token.to_string()),
        resource_version: rv.map(str::to_string),
        ..ListOptions::default()
    };
    for bad in [
        "%%%",
        "bm90IGEgdG9rZW4",
        "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MX0",
    ] {
        match storage.list(&prefix, &with(bad, None)).await {
            Err(StorageError::InvalidContinue { .. }) => {}
            other => panic!("token {bad:?} must be InvalidContinue: {other:?}"),
        }
    }
    match storage.list(&prefix, &with(&token, Some("1"))).await {
        Err(StorageError::InvalidContinue { .. }) => {}
        other => panic!("a token with a resourceVersion must be refused: {other:?}"),
    }
    let exact = |rv: &str| ListOptions {
        resource_version: Some(rv.to_string()),
        resource_version_match: ResourceVersionMatch::Exact,
        ..ListOptions::default()
    };
    assert!(matches!(
        storage.list(&prefix, &exact("x1")).await,
        Err(StorageError::InvalidResourceVersion { .. })
    ));
    assert!(matches!(
        storage.list(&prefix, &exact("1000000")).await,
        Err(StorageError::TooLargeResourceVersion { .. })
    ));
    let at_first = storage.list(&prefix, &exact("1")).await.unwrap();
    assert_eq!(names(&at_first.items), ["a"]);

    // Once the list's revision is compacted, its token has expired (410 Gone).
    storage
        .update(
            &pod_key("ns", "a"),
            pod("a", "v2"),
            &rv(&first.items[0]).to_string(),
        )
        .await
        .unwrap();
    let head = storage.store().current_revision().await.unwrap();
    storage
        .store()
        .compact(head, &CancellationToken::new())
        .await
        .unwrap();
    match storage.list(&prefix, &with(&token, None)).await {
        Err(StorageError::Expired { requested, oldest }) => {
            assert_eq!(
                (requested.to_string(), oldest),
                (first.resource_version, head)
            );
        }
        other => panic!("a compacted token must be Expired: {other:?}"),
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_list_sees_every_later_change_in_order() {
    let (db, storage) = setup().await;
    let prefix = pods().namespace_prefix("ns").unwrap();
    storage
        .create(&pod_key("ns", "before"), pod("before", "v1"))
        .await
        .unwrap();
    let list = storage
        .list(&prefix, &ListOptions::default())
        .await
        .unwrap();
    let mut watch = storage
        .watch(&prefix, &list.resource_version)
        .await
        .unwrap();

    let key = pod_key("ns", "web");
    let created = storage.create(&key, pod("web", "v1")).await.unwrap();
    let updated = storage
        .update(&key, pod("web", "v2"), &rv(&created).to_string())
        .await
        .unwrap();
    let deleted = storage.delete(&key, None).await.unwrap();

    let added = next(&mut watch).await;
    assert_eq!(added.kind, WatchEventType::Added);
    assert_eq!(added.object, created);
    let modified = next(&mut watch).await;
    assert_eq!(modified.kind, WatchEventType::Modified);
    assert_eq!(modified.object, updated);
    let gone = next(&mut watch).await;
    assert_eq!(gone.kind, WatchEventType::Deleted);
    assert_eq!(gone.object, deleted);
    assert_eq!(gone.object["spec"]["image"], "v2");
    assert_eq!(
        gone.resource_version(),
        Some(rv(&deleted).to_string().as_str())
    );

    assert!(matches!(
        storage.watch(&prefix, "10000").await,
        Err(StorageError::TooLargeResourceVersion { .. })
    ));
    let head = storage.store().current_revision().await.unwrap();
    storage
        .store()
        .compact(head, &CancellationToken::new())
        .await
        .unwrap();
    let mut stale = storage
        .watch(&prefix, &list.resource_version)
        .await
        .unwrap();
    match tokio::time::timeout(EVENT_TIMEOUT, stale.next()).await {
        Ok(Some(Err(StorageError::Expired { .. }))) => {}
        other => panic!("a watch from a compacted revision must be Expired: {other:?}"),
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_prefix_never_reaches_into_a_longer_namespace() {
    let (db, storage) = setup().await;
    let after = storage
        .store()
        .current_revision()
        .await
        .unwrap()
        .to_string();
    let in_a = pods().namespace_prefix("a").unwrap();
    let mut watch_a = storage.watch(&in_a, &after).await.unwrap();
    storage
        .create(&pod_key("ab", "x"), pod("x", "v1"))
        .await
        .unwrap();
    storage
        .create(&pod_key("a", "y"), pod("y", "v1"))
        .await
        .unwrap();
    // A cluster-scoped resource whose name starts like the pods resource.
    let podsx = ResourceKey::cluster_scoped("", "podsx").unwrap();
    storage
        .create(&podsx.object(None, "z").unwrap(), pod("z", "v1"))
        .await
        .unwrap();

    let only_a = storage.list(&in_a, &ListOptions::default()).await.unwrap();
    assert_eq!(names(&only_a.items), ["y"]);
    let every = storage
        .list(&pods().all_prefix(), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(names(&every.items), ["y", "x"]);
    let event = next(&mut watch_a).await;
    assert_eq!(
        event.object["metadata"]["name"], "y",
        "ab's create is not seen"
    );
    db.cleanup().await;
}
