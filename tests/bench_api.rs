//! `capstan bench api` against real servers: a paced mixed run over two servers on one
//! Postgres database loses, repeats and reorders no watch event, exercises every verb
//! (conflicts included) and the node heartbeats, and leaves nothing behind; a full-speed
//! create run on SQLite counts its creates; an unreachable server is a prompt, clear
//! error. Latency figures are the bench's business, not asserted here.

mod common;

use std::time::{Duration, Instant};

use capstan::bench::api::{ApiBenchArgs, Workload, measure};
use capstan::bench::client::ClusterArgs;
use capstan_datastore::Engine;
use common::server::TestServer;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;

fn args(kubeconfig: std::path::PathBuf, servers: Vec<String>) -> ApiBenchArgs {
    let mut cluster = ClusterArgs::from_kubeconfig(kubeconfig);
    cluster.server = servers;
    ApiBenchArgs {
        cluster,
        clients: 4,
        watchers: 2,
        duration: 5.0,
        rate: 200.0,
        workload: Workload::Mixed,
        value_bytes: 128,
        namespace: "capstan-bench".to_string(),
        nodes: 0,
        cleanup: true,
        deadline: 30.0,
        json: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_run_over_two_postgres_servers_loses_no_event_and_cleans_up() {
    let (first, second) = TestServer::start_pair(Engine::Postgres).await;
    let mut args = args(
        first.kubeconfig.clone(),
        vec![first.url.clone(), second.url.clone()],
    );
    args.nodes = 20;
    let report = measure(&args)
        .await
        .expect("the bench runs against the pair");

    assert_eq!(report.servers, 2, "{report:#?}");
    assert_eq!(report.events_missed, 0, "{report:#?}");
    assert_eq!(report.events_duplicated, 0, "{report:#?}");
    assert_eq!(report.events_out_of_order, 0, "{report:#?}");
    assert_eq!(report.errors, 0, "{report:#?}");
    assert!(report.conflicts > 0, "hot objects conflict: {report:#?}");
    for verb in [
        "create",
        "get",
        "update",
        "list",
        "delete",
        "watch",
        "heartbeat",
    ] {
        assert!(
            report.verbs[verb].count > 0,
            "{verb} was exercised: {report:#?}"
        );
    }
    assert!(report.writes > 0, "{report:#?}");
    assert!(report.watch.events > 0, "{report:#?}");
    assert!(
        report.watch.cross_server_samples > 0,
        "writes on one server reached watchers on the other: {report:#?}"
    );
    assert_eq!(report.rate_offered, Some(200.0));

    // Cleanup left none of the run's objects or nodes.
    let selector = format!("capstan-bench/run={}", report.run_id);
    let listing = ListParams::default().labels(&selector);
    let configmaps: Api<ConfigMap> = Api::namespaced(first.client.clone(), "capstan-bench");
    let left = configmaps
        .list(&listing)
        .await
        .expect("ConfigMaps can be listed");
    assert!(
        left.items.is_empty(),
        "ConfigMaps left: {}",
        left.items.len()
    );
    let resource = ApiResource {
        group: "bench.capstan.io".into(),
        version: "v1".into(),
        api_version: "bench.capstan.io/v1".into(),
        kind: "BenchObject".into(),
        plural: "benchobjects".into(),
    };
    let objects: Api<DynamicObject> =
        Api::namespaced_with(first.client.clone(), "capstan-bench", &resource);
    let left = objects
        .list(&listing)
        .await
        .expect("bench objects can be listed");
    assert!(
        left.items.is_empty(),
        "bench objects left: {}",
        left.items.len()
    );
    let nodes: Api<Node> = Api::all(first.client.clone());
    let left = nodes.list(&listing).await.expect("Nodes can be listed");
    assert!(left.items.is_empty(), "nodes left: {}", left.items.len());

    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_speed_create_run_on_sqlite_counts_its_creates() {
    let server = TestServer::start(Engine::Sqlite).await;
    let mut args = args(server.kubeconfig.clone(), Vec::new());
    args.workload = Workload::Create;
    args.rate = 0.0;
    args.duration = 3.0;
    let report = measure(&args)
        .await
        .expect("the bench runs against the server");

    assert_eq!(report.workload, "create");
    assert_eq!(report.rate_offered, None);
    assert!(report.verbs["create"].count > 0, "{report:#?}");
    assert_eq!(report.verbs["update"].count, 0, "{report:#?}");
    assert_eq!(report.writes, report.verbs["create"].count, "{report:#?}");
    assert_eq!(report.errors, 0, "{report:#?}");
    assert_eq!(report.events_missed, 0, "{report:#?}");
    assert_eq!(report.events_duplicated, 0, "{report:#?}");
    assert_eq!(
        report.watch.events,
        report.writes * 2,
        "each of the two watchers got every create: {report:#?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_a_clear_error_not_a_hang() {
    let server = TestServer::start(Engine::Sqlite).await;
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port 0 binds")
        .local_addr()
        .expect("a bound listener has an address")
        .port();
    let args = args(
        server.kubeconfig.clone(),
        vec![format!("https://127.0.0.1:{port}")],
    );
    let started = Instant::now();
    let error = measure(&args)
        .await
        .expect_err("the bench cannot reach the server");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it failed promptly"
    );
    let message = format!("{error:#}");
    assert!(
        message.contains("cannot connect") && message.contains(&port.to_string()),
        "{message}"
    );
    server.stop().await;
}
