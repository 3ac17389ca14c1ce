//! Reading from the past: watches resumed from an older resourceVersion replay what came
//! after it, and a version that compaction removed answers 410 Expired, the signal on which
//! kube-rs's watcher re-lists.

use std::time::Duration;

use capstan_datastore::Engine;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::common::server::TestServer;
use crate::support::{config_map, data_of, eventually};

kube_api!(watch_from_past_version_replays_later_changes);

async fn watch_from_past_version_replays_later_changes(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("h", &[("n", "0")], &[]))
        .await
        .unwrap();
    for n in 1..=3 {
        let patch = json!({"data": {"n": n.to_string()}});
        api.patch("h", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let from = created.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(30), &from)
        .await
        .unwrap()
        .boxed();
    let mut values = Vec::new();
    while values.len() < 3 {
        let event = tokio::time::timeout(crate::common::EVENT_TIMEOUT, stream.next())
            .await
            .expect("the replayed events arrive")
            .expect("the watch stays open")
            .unwrap();
        match event {
            WatchEvent::Modified(object) => values.push(data_of(&object, "n").unwrap().to_string()),
            WatchEvent::Bookmark(_) => {}
            other => panic!("expected the three updates after {from}, got {other:?}"),
        }
    }
    assert_eq!(
        values,
        ["1", "2", "3"],
        "changes after the version, not the create"
    );
}

/// A server that compacts every second, keeping one revision of history.
async fn compacting_server(engine: Engine) -> TestServer {
    TestServer::start_with(engine, |config| {
        config.datastore_compact_retain_revisions = 1;
        config.datastore_compact_retain_seconds = 0;
        config.datastore_compact_interval_seconds = 1;
    })
    .await
}

async fn watch_from_compacted_version_is_expired(engine: Engine) {
    let server = compacting_server(engine).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &config_map("old", &[("n", "0")], &[]),
        )
        .await
        .unwrap();
    let from = created.metadata.resource_version.clone().unwrap();
    for n in 1..=5 {
        let patch = json!({"data": {"n": n.to_string()}});
        api.patch("old", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }
    let params = WatchParams::default().timeout(5);
    eventually(
        Duration::from_secs(15),
        "a compacted version answers 410",
        || async {
            match api.watch(&params, &from).await {
                Err(kube::Error::Api(status)) if status.code == 410 => Ok(()),
                Err(other) => Err(format!("watch failed otherwise: {other}")),
                Ok(stream) => match stream.boxed().next().await {
                    Some(Ok(WatchEvent::Error(status))) if status.code == 410 => Ok(()),
                    Some(Ok(WatchEvent::Error(status))) => Err(format!("error event {status:?}")),
                    Some(Ok(event)) => Err(format!("the old version still replays: {event:?}")),
                    Some(Err(error)) => Err(format!("stream error: {error}")),
                    None => Err("the watch ended without events".to_string()),
                },
            }
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_watch_from_compacted_version_is_expired() {
    watch_from_compacted_version_is_expired(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_watch_from_compacted_version_is_expired() {
    watch_from_compacted_version_is_expired(Engine::Postgres).await;
}
