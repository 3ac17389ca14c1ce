//! `capstan bench watches` against a real server on SQLite: a thousand watches multiplexed
//! over a few HTTP/2 connections all receive every write, and more GET clients than the
//! max-in-flight limit are shed with 429 and Retry-After. Timings are the bench's business,
//! not asserted here.

mod common;

use capstan::bench::client::ClusterArgs;
use capstan::bench::watches::{WatchBenchArgs, measure};
use capstan_datastore::Engine;
use common::server::TestServer;

fn args(kubeconfig: std::path::PathBuf) -> WatchBenchArgs {
    WatchBenchArgs {
        cluster: ClusterArgs::from_kubeconfig(kubeconfig),
        namespace: "default".to_string(),
        watches: 1000,
        streams_per_connection: 100,
        writes: 5,
        deadline: 30,
        server_pid: Some(std::process::id()),
        overload_clients: 0,
        overload_seconds: 1,
        json: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_write_reaches_every_one_of_a_thousand_watches() {
    let server = TestServer::start(Engine::Sqlite).await;
    let report = measure(&args(server.kubeconfig.clone()))
        .await
        .expect("the bench runs against the server");
    assert_eq!(report.watches_established, 1000, "{report:?}");
    assert_eq!(report.connections, 10, "{report:?}");
    assert_eq!(report.events_missed, 0, "{report:?}");
    assert_eq!(report.watches_complete, 1000, "{report:?}");
    assert!(
        report.memory_watching.is_some(),
        "memory is read from /proc: {report:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn more_clients_than_the_in_flight_limit_get_429_with_retry_after() {
    let server = TestServer::start_with(Engine::Sqlite, |config| {
        config.max_requests_inflight = 4;
    })
    .await;
    let mut args = args(server.kubeconfig.clone());
    args.watches = 50;
    args.writes = 1;
    args.overload_clients = 200;
    args.overload_seconds = 2;
    let report = measure(&args)
        .await
        .expect("the bench runs against the server");
    assert_eq!(report.events_missed, 0, "{report:?}");
    let overload = report.overload.expect("the overload phase ran");
    let rejected = overload.statuses.get(&429).copied().unwrap_or(0);
    let served = overload.statuses.get(&200).copied().unwrap_or(0);
    assert!(rejected > 0, "some requests were shed: {overload:?}");
    assert!(served > 0, "some requests were served: {overload:?}");
    assert_eq!(overload.rejected_without_retry_after, 0, "{overload:?}");
    assert_eq!(
        overload.statuses.keys().copied().collect::<Vec<_>>(),
        vec![200, 429],
        "only 200 and 429 answers: {overload:?}"
    );
    server.stop().await;
}
