//! `/metrics` as an operator's Prometheus sees it: after a few ordinary requests against a
//! real server, every family the operator's kit promises is there under a `capstan_` name,
//! the request counters moved for those requests, anonymous scrapes are refused, and the
//! Grafana dashboard shipped in `config/` queries only metrics that exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use capstan_datastore::Engine;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

use common::server::{TestServer, anonymous_client};

/// One scrape: family name → its type, and every sample as (name, labels, value).
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE <name> <type>");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("<series> <value>");
            let value: f64 = value.parse().expect("a sample value is a number");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label=\"value\"");
                    (key.to_string(), value.trim_matches('"').to_string())
                })
                .collect();
            samples.push((name.to_string(), labels, value));
        }
        Scrape { types, samples }
    }

    /// Whether `name` is a family, or a histogram's `_bucket`/`_sum`/`_count` series.
    fn has(&self, name: &str) -> bool {
        self.types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|family| self.types.get(family).is_some_and(|t| t == "histogram"))
            })
    }

    /// The value of the sample `name` whose labels include all of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(sample, have, _)| {
                sample == name
                    && labels
                        .iter()
                        .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, value)| *value)
    }
}

async fn fetch_metrics(client: &kube::Client) -> Result<String, kube::Error> {
    client
        .request_text(
            http::Request::get("/metrics")
                .body(Vec::new())
                .expect("a GET request builds"),
        )
        .await
}

/// Every `capstan_…` metric name in the dashboard's queries.
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    if key == "expr"
                        && let Some(expr) = value.as_str()
                    {
                        collect_names(expr, found);
                    }
                    walk(value, found);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, found)),
            _ => {}
        }
    }
    fn collect_names(expr: &str, found: &mut BTreeSet<String>) {
        let mut rest = expr;
        while let Some(start) = rest.find("capstan_") {
            let tail = &rest[start..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            found.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    let mut found = BTreeSet::new();
    walk(dashboard, &mut found);
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_promised_family_and_count_the_requests_made() {
    let server = TestServer::start(Engine::Sqlite).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");

    // A watch open while the requests happen, so the watch gauges and events move.
    let mut watch = configmaps
        .watch(&WatchParams::default().timeout(30), "0")
        .await
        .expect("the watch starts")
        .boxed();
    let object: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "metrics-probe"},
        "data": {"k": "v"},
    }))
    .expect("a ConfigMap");
    configmaps
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
    configmaps.get("metrics-probe").await.expect("get");
    configmaps.list(&ListParams::default()).await.expect("list");
    let added = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = watch.try_next().await.expect("the watch streams") {
            if let WatchEvent::Added(cm) = event
                && cm.metadata.name.as_deref() == Some("metrics-probe")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(added, Ok(true), "the watch delivers the created ConfigMap");

    let text = fetch_metrics(&server.client)
        .await
        .expect("the admin may scrape");
    let scrape = Scrape::parse(&text);

    for family in [
        "capstan_apiserver_requests_total",
        "capstan_apiserver_request_duration_seconds",
        "capstan_apiserver_requests_in_flight",
        "capstan_apiserver_watchers",
        "capstan_apiserver_watch_events_sent_total",
        "capstan_datastore_query_duration_seconds",
        "capstan_datastore_poller_lag_seconds",
        "capstan_datastore_revision",
        "capstan_datastore_compaction_backlog_revisions",
        "capstan_datastore_compaction_duration_seconds",
        "capstan_datastore_pool_connections",
        "capstan_join_agents_connected",
        "capstan_join_registrations_total",
    ] {
        assert!(scrape.has(family), "{family} is missing from /metrics");
    }
    let unprefixed: Vec<&String> = scrape
        .types
        .keys()
        .filter(|name| !name.starts_with("capstan_"))
        .collect();
    assert!(unprefixed.is_empty(), "unprefixed families: {unprefixed:?}");

    // The requests made are counted with Kubernetes verbs and the resource's plural.
    let counted = |verb: &str, code: &str| {
        scrape
            .value(
                "capstan_apiserver_requests_total",
                &[("verb", verb), ("resource", "configmaps"), ("code", code)],
            )
            .unwrap_or(0.0)
    };
    assert!(counted("create", "201") >= 1.0, "create counted:\n{text}");
    assert!(counted("get", "200") >= 1.0, "get counted");
    assert!(counted("list", "200") >= 1.0, "list counted");
    assert!(counted("watch", "200") >= 1.0, "watch counted");
    let latency = |verb: &str| {
        scrape
            .value(
                "capstan_apiserver_request_duration_seconds_count",
                &[("verb", verb), ("resource", "configmaps")],
            )
            .unwrap_or(0.0)
    };
    assert!(latency("create") >= 1.0 && latency("get") >= 1.0);
    assert_eq!(
        latency("watch"),
        0.0,
        "watches stay out of the latency histogram"
    );
    assert!(
        scrape
            .value("capstan_apiserver_watchers", &[("resource", "configmaps")])
            .unwrap_or(0.0)
            >= 1.0,
        "the open watch is counted"
    );
    assert!(
        scrape
            .value(
                "capstan_apiserver_watch_events_sent_total",
                &[("resource", "configmaps")]
            )
            .unwrap_or(0.0)
            >= 1.0,
        "the ADDED event sent is counted"
    );
    // The scrape itself is in flight while it is rendered.
    assert!(
        scrape
            .value("capstan_apiserver_requests_in_flight", &[])
            .unwrap_or(0.0)
            >= 1.0
    );
    for state in ["in_use", "idle", "waiting"] {
        assert!(
            scrape
                .value("capstan_datastore_pool_connections", &[("state", state)])
                .is_some(),
            "pool connections {state}"
        );
    }
    assert!(
        scrape
            .value(
                "capstan_datastore_query_duration_seconds_count",
                &[("operation", "write_batch")]
            )
            .unwrap_or(0.0)
            >= 1.0,
        "datastore query latency by operation"
    );
    assert!(
        scrape
            .value("capstan_datastore_poller_lag_seconds_count", &[])
            .unwrap_or(0.0)
            >= 1.0,
        "the create reached the watchers through the feed"
    );
    assert!(
        scrape
            .value("capstan_datastore_revision", &[])
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        scrape
            .value(
                "capstan_join_registrations_total",
                &[("result", "accepted")]
            )
            .is_some(),
        "registration results are visible before the first agent"
    );

    // The dashboard queries only what exists.
    let dashboard_path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dashboard_path).expect("config/grafana-dashboard.json exists"),
    )
    .expect("the dashboard is JSON");
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(36),
        "a current Grafana schema"
    );
    let datasource_variable = dashboard["templating"]["list"]
        .as_array()
        .expect("the dashboard has variables")
        .iter()
        .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource");
    assert!(datasource_variable, "a Prometheus data source variable");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(rows, ["API", "Datastore", "Cluster"]);
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {} queries the chosen data source",
            panel["title"]
        );
    }
    let referenced = dashboard_metrics(&dashboard);
    assert!(referenced.len() >= 15, "dashboard queries: {referenced:?}");
    let missing: Vec<&String> = referenced.iter().filter(|name| !scrape.has(name)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not have: {missing:?}"
    );

    // No credentials, no metrics.
    let anonymous = anonymous_client(&server.kubeconfig).await;
    match fetch_metrics(&anonymous).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("an anonymous scrape must get 401, got {other:?}"),
    }

    drop(watch);
    server.stop().await;
}
