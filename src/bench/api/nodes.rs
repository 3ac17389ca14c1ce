//! The simulated agents of `capstan bench api --nodes N`, as the Kubernetes density tests
//! run hollow nodes: each has a Node and a Lease in `kube-node-lease`, and every 10 s
//! (node i first at i/N of the interval, so the load is even) merge-PATCHes its Node
//! status (the Ready condition's heartbeat time) and its Lease's renewTime, as the kubelet
//! does. Each PATCH is one `heartbeat` request, timed from when it was sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use futures::StreamExt as _;
use serde_json::json;

use super::load::{Log, Verb};
use super::{Conn, RUN_LABEL, Shared, unexpected};

/// How often each simulated node reports, as the kubelet does by default.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// Namespace of the node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Requests in flight while creating or deleting the simulated nodes.
const SETUP_CONCURRENCY: usize = 16;

fn node_name(shared: &Shared, index: usize) -> String {
    format!("capstan-bench-node-{}-{index}", shared.run_id)
}

fn now_rfc3339(micros: bool) -> String {
    let now = time::OffsetDateTime::now_utc();
    let (h, m, s) = (now.hour(), now.minute(), now.second());
    let date = format!(
        "{:04}-{:02}-{:02}T{h:02}:{m:02}:{s:02}",
        now.year(),
        u8::from(now.month()),
        now.day()
    );
    if micros {
        format!("{date}.{:06}Z", now.microsecond())
    } else {
        format!("{date}Z")
    }
}

/// Creates `--nodes` Nodes and their Leases (before the run starts: not counted); returns
/// the names.
pub(super) async fn create_nodes(shared: &Shared, servers: &[Conn]) -> anyhow::Result<Vec<String>> {
    let count = shared.args.nodes;
    if count == 0 {
        return Ok(Vec::new());
    }
    ensure_lease_namespace(&servers[0]).await?;
    let names: Vec<String> = (0..count).map(|i| node_name(shared, i)).collect();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(names.iter().enumerate())
        .map(|(index, name)| {
            let conn = &servers[index % servers.len()];
            let labels = json!({RUN_LABEL: shared.run_id});
            async move {
                let node = json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": labels},
                });
                let (status, body) = conn
                    .json(Method::POST, "/api/v1/nodes", Some(&node))
                    .await?;
                if !matches!(status, StatusCode::CREATED | StatusCode::CONFLICT) {
                    return Err(unexpected(&format!("creating Node {name}"), status, &body));
                }
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "labels": labels},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                             "renewTime": now_rfc3339(true)},
                });
                let path =
                    format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases");
                let (status, body) = conn.json(Method::POST, &path, Some(&lease)).await?;
                if !matches!(status, StatusCode::CREATED | StatusCode::CONFLICT) {
                    return Err(unexpected(&format!("creating Lease {name}"), status, &body));
                }
                Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(names)
}

async fn ensure_lease_namespace(conn: &Conn) -> anyhow::Result<()> {
    super::ensure_namespace(conn, LEASE_NAMESPACE).await
}

/// Every node reports every 10 s (node i first at i/N of the interval): a merge PATCH of
/// its Node status (the Ready condition's heartbeat time) and of its Lease's renewTime.
/// Each PATCH is one `heartbeat` request, timed from when it was sent.
pub(super) async fn heartbeats(
    shared: Arc<Shared>,
    servers: Vec<Conn>,
    nodes: Vec<String>,
    started: Instant,
    end: Instant,
) -> Log {
    let count = nodes.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, name) in nodes.into_iter().enumerate() {
        let conn = servers[index % servers.len()].clone();
        let shared = shared.clone();
        let offset = HEARTBEAT_INTERVAL.mul_f64(index as f64 / count as f64);
        tasks.spawn(async move {
            let mut log = Log::default();
            let mut due = started + offset;
            while due < end {
                tokio::time::sleep_until(due.into()).await;
                heartbeat(&shared, &conn, &name, &mut log).await;
                due += HEARTBEAT_INTERVAL;
            }
            log
        });
    }
    let mut all = Log::default();
    while let Some(finished) = tasks.join_next().await {
        match finished {
            Ok(log) => {
                for (verb, samples) in log.samples {
                    all.samples.entry(verb).or_default().extend(samples);
                }
                for (verb, errors) in log.errors {
                    *all.errors.entry(verb).or_default() += errors;
                }
            }
            Err(error) => shared.error(format!("a heartbeat task failed: {error}")),
        }
    }
    all
}

async fn heartbeat(shared: &Shared, conn: &Conn, name: &str, log: &mut Log) {
    let now = now_rfc3339(false);
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "capstan bench node is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    let lease = json!({"spec": {"renewTime": now_rfc3339(true)}});
    let requests = [
        (format!("/api/v1/nodes/{name}/status"), status),
        (
            format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"),
            lease,
        ),
    ];
    for (path, patch) in requests {
        let sent = Instant::now();
        match conn
            .call(
                Method::PATCH,
                &path,
                Some(&patch),
                "application/merge-patch+json",
            )
            .await
        {
            Ok((StatusCode::OK, _)) => log.sample(shared, Verb::Heartbeat, sent),
            Ok((status, body)) => {
                let error = unexpected(&format!("PATCH {path}"), status, &body);
                log.error(shared, Verb::Heartbeat, error);
            }
            Err(error) => log.error(shared, Verb::Heartbeat, format!("{error:#}")),
        }
    }
}

/// Deletes the simulated Nodes and their Leases; failures are printed.
pub(super) async fn delete_nodes(conn: &Conn, nodes: &[String]) {
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(nodes)
        .map(|name| async move {
            for path in [
                format!("/api/v1/nodes/{name}"),
                format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"),
            ] {
                let (status, body) = conn.json(Method::DELETE, &path, None).await?;
                if !matches!(
                    status,
                    StatusCode::OK | StatusCode::ACCEPTED | StatusCode::NOT_FOUND
                ) {
                    return Err(unexpected(&format!("DELETE {path}"), status, &body));
                }
            }
            Ok(())
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    for error in results.into_iter().filter_map(Result::err).take(5) {
        eprintln!("bench: cleanup: {error:#}");
    }
}
