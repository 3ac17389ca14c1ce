//! Watches as controllers consume them: `kube::runtime::watcher` (list then watch, and
//! streaming lists with `sendInitialEvents` and bookmarks) and raw `Api::watch` from a
//! list's resourceVersion. Each must see every change once, in order.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, Event, watcher};
use serde_json::json;

use crate::common::EVENT_TIMEOUT;
use crate::common::server::TestServer;
use crate::support::{config_map, data_of};

kube_api!(
    watcher_sees_every_change_in_order,
    streaming_list_watcher_sees_every_change_in_order,
    raw_watch_from_list_version,
    selector_watch_reports_objects_entering_and_leaving,
    watcher_sees_concurrent_creates_once_in_revision_order,
    watch_ends_at_its_timeout,
);

/// What one watch event said about one object: kind of event, name, `data.n`.
pub(crate) type Seen = (&'static str, String, String);

pub(crate) fn seen(kind: &'static str, object: &ConfigMap) -> Seen {
    (
        kind,
        object.metadata.name.clone().unwrap_or_default(),
        data_of(object, "n").unwrap_or("").to_string(),
    )
}

/// The next item of `stream`, failing the test after [`EVENT_TIMEOUT`] of silence.
pub(crate) async fn next<T>(stream: &mut (impl Stream<Item = T> + Unpin), waiting_for: &str) -> T {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(item)) => item,
        Ok(None) => panic!("the watch ended while waiting for {waiting_for}"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?} while waiting for {waiting_for}"),
    }
}

/// Creates 8 objects, updates 7 of them, deletes 5: 20 changes, one at a time. Returns what
/// a watch must report for them, in order.
pub(crate) async fn make_twenty_changes(api: &Api<ConfigMap>) -> Vec<Seen> {
    let mut expected = Vec::new();
    for i in 0..8 {
        let name = format!("w-{i}");
        let object = config_map(&name, &[("n", "0")], &[("suite", "watch")]);
        let created = api.create(&PostParams::default(), &object).await.unwrap();
        expected.push(seen("apply", &created));
    }
    for i in 0..7 {
        let patch = json!({"data": {"n": "1"}});
        let updated = api
            .patch(
                &format!("w-{i}"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        expected.push(seen("apply", &updated));
    }
    for i in 0..5 {
        let name = format!("w-{i}");
        let last = api.get(&name).await.unwrap();
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        expected.push(seen("delete", &last));
    }
    expected
}

/// Runs `watcher` with `config` over three existing objects, then twenty changes.
async fn watch_initial_state_then_changes(server: &TestServer, config: watcher::Config) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    for i in 0..3 {
        let object = config_map(&format!("pre-{i}"), &[("n", "pre")], &[("suite", "watch")]);
        api.create(&PostParams::default(), &object).await.unwrap();
    }
    // Unlabelled objects must not appear in the labelled watch.
    api.create(&PostParams::default(), &config_map("other", &[], &[]))
        .await
        .unwrap();

    let mut stream = watcher(api.clone(), config.labels("suite=watch")).boxed();
    let mut initial = Vec::new();
    match next(&mut stream, "Init").await {
        Ok(Event::Init) => {}
        other => panic!("expected Init first, got {other:?}"),
    }
    loop {
        match next(&mut stream, "the initial objects").await {
            Ok(Event::InitApply(object)) => initial.push(seen("init", &object)),
            Ok(Event::InitDone) => break,
            other => panic!("expected InitApply or InitDone, got {other:?}"),
        }
    }
    initial.sort();
    let names: Vec<_> = initial.iter().map(|(_, name, _)| name.as_str()).collect();
    assert_eq!(names, ["pre-0", "pre-1", "pre-2"]);

    let expected = make_twenty_changes(&api).await;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        match next(
            &mut stream,
            &format!("change {} of {}", got.len() + 1, expected.len()),
        )
        .await
        {
            Ok(Event::Apply(object)) => got.push(seen("apply", &object)),
            Ok(Event::Delete(object)) => got.push(seen("delete", &object)),
            Ok(restart) => panic!(
                "the watcher restarted after {} of {} changes (the watch broke): {restart:?}",
                got.len(),
                expected.len()
            ),
            Err(error) => panic!("the watcher failed after {} changes: {error}", got.len()),
        }
    }
    assert_eq!(got, expected, "every change once, in order");
}

async fn watcher_sees_every_change_in_order(server: &TestServer) {
    watch_initial_state_then_changes(server, watcher::Config::default()).await;
}

async fn streaming_list_watcher_sees_every_change_in_order(server: &TestServer) {
    watch_initial_state_then_changes(server, watcher::Config::default().streaming_lists()).await;
}

async fn raw_watch_from_list_version(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &config_map("before", &[], &[]))
        .await
        .unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let version = list
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &version)
        .await
        .unwrap()
        .boxed();

    let created = api
        .create(
            &PostParams::default(),
            &config_map("raw", &[("n", "0")], &[]),
        )
        .await
        .unwrap();
    let patch = json!({"data": {"n": "1"}});
    let modified = api
        .patch("raw", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    api.delete("raw", &DeleteParams::default()).await.unwrap();

    let mut got = Vec::new();
    while got.len() < 3 {
        match next(&mut stream, "ADDED, MODIFIED, DELETED").await.unwrap() {
            WatchEvent::Added(object) => got.push(("ADDED", object)),
            WatchEvent::Modified(object) => got.push(("MODIFIED", object)),
            WatchEvent::Deleted(object) => got.push(("DELETED", object)),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => panic!("the watch sent an error: {status:?}"),
        }
    }
    let kinds: Vec<_> = got.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(
        kinds,
        ["ADDED", "MODIFIED", "DELETED"],
        "the object 'before' predates the watch"
    );
    assert_eq!(
        got[0].1.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(
        got[1].1.metadata.resource_version,
        modified.metadata.resource_version
    );
    assert_eq!(data_of(&got[1].1, "n"), Some("1"));
    assert_eq!(got[2].1.metadata.name.as_deref(), Some("raw"));
}

async fn selector_watch_reports_objects_entering_and_leaving(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let version = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    let params = WatchParams::default().labels("app=web").timeout(30);
    let mut stream = api.watch(&params, &version).await.unwrap().boxed();

    api.create(
        &PostParams::default(),
        &config_map("mover", &[], &[("app", "db")]),
    )
    .await
    .unwrap();
    let relabel = |app: &str| json!({"metadata": {"labels": {"app": app}}});
    for app in ["web", "db"] {
        api.patch(
            "mover",
            &PatchParams::default(),
            &Patch::Merge(&relabel(app)),
        )
        .await
        .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        match next(&mut stream, "ADDED, DELETED").await.unwrap() {
            WatchEvent::Added(_) => got.push("ADDED"),
            WatchEvent::Modified(_) => got.push("MODIFIED"),
            WatchEvent::Deleted(_) => got.push("DELETED"),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(status) => panic!("the watch sent an error: {status:?}"),
        }
    }
    assert_eq!(
        got,
        ["ADDED", "DELETED"],
        "an object entering the selector is ADDED, one leaving it is DELETED"
    );
}

async fn watcher_sees_concurrent_creates_once_in_revision_order(server: &TestServer) {
    const WRITERS: usize = 40;
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        match next(&mut stream, "InitDone").await {
            Ok(Event::InitDone) => break,
            Ok(Event::Init) => {}
            other => panic!("expected an empty initial list, got {other:?}"),
        }
    }
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..WRITERS {
        let api = api.clone();
        writers.spawn(async move {
            api.create(
                &PostParams::default(),
                &config_map(&format!("c-{i:02}"), &[], &[]),
            )
            .await
            .unwrap()
        });
    }
    let mut created = Vec::new();
    while let Some(done) = writers.join_next().await {
        created.push(done.expect("writers do not panic"));
    }

    let mut seen = Vec::new();
    while seen.len() < WRITERS {
        match next(
            &mut stream,
            &format!("create {} of {WRITERS}", seen.len() + 1),
        )
        .await
        {
            Ok(Event::Apply(object)) => seen.push(object),
            other => panic!("expected Apply events only, got {other:?}"),
        }
    }
    let revisions: Vec<u64> = seen
        .iter()
        .map(|o| {
            o.metadata
                .resource_version
                .as_deref()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        revisions.windows(2).all(|pair| pair[0] < pair[1]),
        "events arrive in commit order: {revisions:?}"
    );
    let mut names: Vec<_> = seen
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), WRITERS, "each create seen exactly once");
    for object in &created {
        assert!(
            seen.iter()
                .any(|s| s.metadata.resource_version == object.metadata.resource_version),
            "the watch reports the version the create returned"
        );
    }
}

async fn watch_ends_at_its_timeout(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let started = std::time::Instant::now();
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(error))) => panic!("the watch failed instead of ending: {error}"),
            Err(_) => {
                panic!("a watch with timeoutSeconds=1 was still open after {EVENT_TIMEOUT:?}")
            }
        }
    }
    let lasted = started.elapsed();
    assert!(
        lasted >= std::time::Duration::from_millis(900)
            && lasted < std::time::Duration::from_secs(5),
        "a watch with timeoutSeconds=1 lasted {lasted:?}"
    );
}
