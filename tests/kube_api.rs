#![allow(clippy::unwrap_used)]
//! The Kubernetes API as a client sees it: every verb driven through kube-rs (typed
//! `Api<ConfigMap>`, `Api<Deployment>`, `Api<Namespace>`, `Api<Pod>` and dynamic objects)
//! against a real server started in this process, on SQLite and on Postgres.
//!
//! - `crud`: create, get, list, replace, delete and their errors; generateName; dryRun.
//! - `patch`: merge, JSON, strategic merge and server-side apply with field managers.
//! - `history`: watches from past resourceVersions; 410 Expired after compaction.
//! - `list`: label and field selectors, paging with continue tokens, bad selectors.
//! - `pods`: graceful and forced deletion of a bound pod; pod status.
//! - `refusals`: stale delete preconditions, mismatched names, immutable fields.
//! - `subresources`: `/scale`, `/status`, and deletion held by finalizers.
//! - `namespaces`: namespace lifecycle and objects in namespaces that do not exist.
//! - `watch`: `kube::runtime::watcher` (list-then-watch and streaming lists) and raw
//!   `Api::watch`, each seeing every change once, in order.
//! - `custom_resources`: a CRD's kind served, discovered and used as `DynamicObject`.
//! - `edge`: authentication, body size limit, discovery.
//! - `two_servers`: a watch on one server sees writes made through another (Postgres).
//!
//! Each scenario is an `async fn(&TestServer)`; `kube_api!` turns it into one test per
//! engine (`<group>::<engine>::<scenario>`, so `cargo test --test kube_api postgres` runs
//! one engine). Postgres comes from `CAPSTAN_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). A failing test here is a bug report
//! against the server.

mod common;

/// Instantiates each named scenario of the enclosing module as a test on every engine.
/// Every test gets a fresh server with a fresh datastore, a time limit, and a clean stop.
macro_rules! kube_api {
    ($($scenario:ident),+ $(,)?) => {
        kube_api!(@engine sqlite, Sqlite, $($scenario),+);
        kube_api!(@engine postgres, Postgres, $($scenario),+);
    };
    (@engine $module:ident, $engine:ident, $($scenario:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let server = crate::common::server::TestServer::start(
                        capstan_datastore::Engine::$engine,
                    )
                    .await;
                    let finished =
                        tokio::time::timeout(crate::SCENARIO_LIMIT, super::$scenario(&server))
                            .await;
                    server.stop().await;
                    if finished.is_err() {
                        panic!(
                            "{} did not finish within {:?}",
                            stringify!($scenario),
                            crate::SCENARIO_LIMIT
                        );
                    }
                }
            )+
        }
    };
}

/// The longest any one scenario may take.
const SCENARIO_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

#[path = "kube_api/crud.rs"]
mod crud;
#[path = "kube_api/custom_resources.rs"]
mod custom_resources;
#[path = "kube_api/edge.rs"]
mod edge;
#[path = "kube_api/history.rs"]
mod history;
#[path = "kube_api/list.rs"]
mod list;
#[path = "kube_api/namespaces.rs"]
mod namespaces;
#[path = "kube_api/patch.rs"]
mod patch;
#[path = "kube_api/pods.rs"]
mod pods;
#[path = "kube_api/refusals.rs"]
mod refusals;
#[path = "kube_api/subresources.rs"]
mod subresources;
#[path = "kube_api/two_servers.rs"]
mod two_servers;
#[path = "kube_api/watch.rs"]
mod watch;

/// Helpers the scenario groups share.
mod support {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::time::{Duration, Instant};

    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::core::Status;
    use serde_json::json;

    /// The `Status` of a request that must have failed with an API error.
    pub fn api_error<T: Debug>(result: Result<T, kube::Error>) -> Status {
        match result {
            Err(kube::Error::Api(status)) => *status,
            Err(other) => panic!("expected an API error (a Status body), got: {other}"),
            Ok(value) => panic!("expected an API error, the request succeeded: {value:?}"),
        }
    }

    /// Fails unless `status` has this code and reason.
    pub fn assert_status(status: &Status, code: u16, reason: &str) {
        assert_eq!(
            (status.code, status.reason.as_str()),
            (code, reason),
            "unexpected error status: {status:?}"
        );
    }

    /// A ConfigMap named `name` with `data` and `labels`.
    pub fn config_map(name: &str, data: &[(&str, &str)], labels: &[(&str, &str)]) -> ConfigMap {
        let to_map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": to_map(labels)},
            "data": to_map(data),
        }))
        .unwrap()
    }

    /// The `data[key]` of a ConfigMap.
    pub fn data_of<'a>(config_map: &'a ConfigMap, key: &str) -> Option<&'a str> {
        config_map.data.as_ref()?.get(key).map(String::as_str)
    }

    /// A Deployment of `replicas` pods running two containers, `app` and `sidecar`.
    pub fn deployment(name: &str, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [
                        {"name": "app", "image": "registry.example/app:1"},
                        {"name": "sidecar", "image": "registry.example/sidecar:1"},
                    ]},
                },
            },
        }))
        .unwrap()
    }

    /// Polls `check` every 100 ms until it returns `Ok`, failing after `limit` with the
    /// last `Err` (what the state looked like instead).
    pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let started = Instant::now();
        loop {
            match check().await {
                Ok(value) => return value,
                Err(state) if started.elapsed() > limit => {
                    panic!("{what}: not within {limit:?}; last seen: {state}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}
