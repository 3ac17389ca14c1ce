//! Two servers on one database are one cluster: a watch on one sees writes through the
//! other, and optimistic concurrency holds across them. Postgres only (SQLite is a single
//! server's file).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

use kube::runtime::watcher::{self, Event, watcher};

use crate::common::server::TestServer;
use crate::support::{api_error, assert_status, config_map, data_of};
use crate::watch::{make_twenty_changes, next, seen};

/// How soon a write through one server must reach a watch on the other.
const CROSS_SERVER_LIMIT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_watch_on_one_server_sees_create_through_other() {
    let (a, b) = TestServer::start_pair(capstan_datastore::Engine::Postgres).await;
    let checked = tokio::time::timeout(crate::SCENARIO_LIMIT, async {
        let on_a: Api<ConfigMap> = Api::namespaced(a.client.clone(), "default");
        let on_b: Api<ConfigMap> = Api::namespaced(b.client.clone(), "default");
        let version = on_b
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .expect("a list has a resourceVersion");
        let mut watch = on_b
            .watch(&WatchParams::default().timeout(30), &version)
            .await
            .unwrap()
            .boxed();

        on_a.create(&PostParams::default(), &config_map("crossed", &[], &[]))
            .await
            .unwrap();
        let seen = tokio::time::timeout(CROSS_SERVER_LIMIT, async {
            loop {
                match watch.next().await {
                    Some(Ok(WatchEvent::Added(object))) => return object,
                    Some(Ok(WatchEvent::Bookmark(_))) => {}
                    other => panic!("expected ADDED on server B, got {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("server B's watch did not see a create through A within {CROSS_SERVER_LIMIT:?}")
        });
        assert_eq!(seen.metadata.name.as_deref(), Some("crossed"));
        assert!(on_b.get_opt("crossed").await.unwrap().is_some());
    })
    .await;
    b.stop().await;
    a.stop().await;
    checked.expect("the two-server scenario finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_watcher_on_one_server_sees_every_change_through_other() {
    let (a, b) = TestServer::start_pair(capstan_datastore::Engine::Postgres).await;
    let checked = tokio::time::timeout(crate::SCENARIO_LIMIT, async {
        let on_a: Api<ConfigMap> = Api::namespaced(a.client.clone(), "default");
        let on_b: Api<ConfigMap> = Api::namespaced(b.client.clone(), "default");
        let mut stream = watcher(on_b, watcher::Config::default().streaming_lists()).boxed();
        loop {
            match next(&mut stream, "InitDone").await {
                Ok(Event::InitDone) => break,
                Ok(Event::Init) => {}
                other => panic!("expected an empty initial state, got {other:?}"),
            }
        }
        let expected = make_twenty_changes(&on_a).await;
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match next(&mut stream, "a change made through server A").await {
                Ok(Event::Apply(object)) => got.push(seen("apply", &object)),
                Ok(Event::Delete(object)) => got.push(seen("delete", &object)),
                other => panic!("after {} changes: {other:?}", got.len()),
            }
        }
        assert_eq!(got, expected, "every change through A once, in order, on B");
    })
    .await;
    b.stop().await;
    a.stop().await;
    checked.expect("the two-server scenario finishes in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stale_write_on_one_server_conflicts_with_other() {
    let (a, b) = TestServer::start_pair(capstan_datastore::Engine::Postgres).await;
    let checked = tokio::time::timeout(crate::SCENARIO_LIMIT, async {
        let on_a: Api<ConfigMap> = Api::namespaced(a.client.clone(), "default");
        let on_b: Api<ConfigMap> = Api::namespaced(b.client.clone(), "default");
        let original = on_a
            .create(
                &PostParams::default(),
                &config_map("shared", &[("k", "a")], &[]),
            )
            .await
            .unwrap();
        let mut through_b = on_b.get("shared").await.unwrap();
        through_b.data = Some([("k".to_string(), "b".to_string())].into());
        on_b.replace("shared", &PostParams::default(), &through_b)
            .await
            .unwrap();
        let mut stale = original.clone();
        stale.data = Some([("k".to_string(), "stale".to_string())].into());
        let status = api_error(on_a.replace("shared", &PostParams::default(), &stale).await);
        assert_status(&status, 409, "Conflict");
        assert_eq!(data_of(&on_a.get("shared").await.unwrap(), "k"), Some("b"));
    })
    .await;
    b.stop().await;
    a.stop().await;
    checked.expect("the two-server scenario finishes in time");
}
