//! What sits around the verbs: authentication, the body size limit and discovery.

use k8s_openapi::api::core::v1::ConfigMap;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams, WatchParams};
use kube::discovery::Discovery;

use crate::common::server::{TestServer, anonymous_client};
use crate::support::{api_error, config_map};

kube_api!(
    request_without_credentials_is_unauthorized,
    oversize_body_is_refused_and_nothing_stored,
    discovery_finds_deployments_with_scale,
);

async fn request_without_credentials_is_unauthorized(server: &TestServer) {
    let anonymous = anonymous_client(&server.kubeconfig).await;
    let api: Api<ConfigMap> = Api::namespaced(anonymous, "default");
    let status = api_error(api.list(&ListParams::default()).await);
    assert_eq!(status.code, 401, "no credentials: {status:?}");
    assert_eq!(status.reason, "Unauthorized");
}

async fn oversize_body_is_refused_and_nothing_stored(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let big = "x".repeat(4 * 1024 * 1024);
    let result = api
        .create(
            &PostParams::default(),
            &config_map("big", &[("blob", &big)], &[]),
        )
        .await;
    // Checked first so a failure below still tells whether anything was stored.
    assert!(
        api.get_opt("big").await.unwrap().is_none(),
        "the oversize object was stored"
    );
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 413, "a 4 MiB body: {status:?}");
        }
        Err(other) => panic!("a 4 MiB body: expected a 413 Status, got: {other}"),
        Ok(_) => panic!("a 4 MiB body was accepted"),
    }
}

async fn discovery_finds_deployments_with_scale(server: &TestServer) {
    for aggregated in [false, true] {
        let discovery = Discovery::new(server.client.clone());
        let discovery = if aggregated {
            discovery.run_aggregated().await
        } else {
            discovery.run().await
        }
        .unwrap_or_else(|error| panic!("discovery (aggregated: {aggregated}): {error}"));
        let apps = discovery.get("apps").expect("the apps group is served");
        let (resource, capabilities) = apps
            .versioned_resources("v1")
            .into_iter()
            .find(|(resource, _)| resource.kind == "Deployment")
            .expect("apps/v1 serves Deployment");
        assert_eq!(resource.plural, "deployments");
        let subresources: Vec<_> = capabilities
            .subresources
            .iter()
            .map(|(sub, _)| sub.plural.as_str())
            .collect();
        assert!(
            subresources.contains(&"scale") && subresources.contains(&"status"),
            "Deployment subresources (aggregated: {aggregated}): {subresources:?}"
        );
        let core = discovery.get("").expect("the core group is served");
        assert!(
            core.recommended_kind("ConfigMap").is_some(),
            "v1 serves ConfigMap"
        );
    }
}

/// Shutdown drains watches: a server with a watch open stops in time, and the client's
/// stream ends instead of hanging.
async fn stop_with_open_watch(engine: capstan_datastore::Engine) {
    let server = TestServer::start(engine).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let mut stream = api
        .watch(&WatchParams::default().timeout(290), "0")
        .await
        .unwrap()
        .boxed();
    server.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the watch stream did not end after the server stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stop_with_open_watch() {
    stop_with_open_watch(capstan_datastore::Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stop_with_open_watch() {
    stop_with_open_watch(capstan_datastore::Engine::Postgres).await;
}
