//! Two servers on one database are one cluster: a watch on one sees writes through the
//! other. Postgres only (SQLite is a single server's file).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

use crate::common::server::TestServer;
use crate::support::config_map;

/// How soon a write through one server must reach a watch on the other.
const CROSS_SERVER_LIMIT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_watch_on_one_server_sees_create_through_other() {
    let (a, b) = TestServer::start_pair(capstan::datastore::Engine::Postgres).await;
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
