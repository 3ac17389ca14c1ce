//! The node's heartbeats, as a kubelet sends them: the Node object (created once, status
//! updated when it changes or every minute) and the Lease `kube-node-lease/<node>` renewed
//! every 10 s, all through the local load balancer so they survive a server failing.
//! Errors are logged and retried at the next tick; they never stop the agent. The client
//! follows the node's credentials: each registration brings a new certificate (one of an
//! earlier cluster token is refused), and the next tick uses it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the Lease is renewed.
pub const LEASE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a Lease lasts without renewal.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// The Node status is rewritten at least this often even when nothing changed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(60);
/// The namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the heartbeats say about the node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The node's name.
    pub name: String,
    /// The node's IP as the servers see it, when known.
    pub internal_ip: Option<IpAddr>,
}

/// Sends heartbeats with the latest kubeconfig of `kubeconfig` until `shutdown`, reading
/// the node's address from `facts` (it changes when the agent reconnects elsewhere).
pub async fn run(
    kubeconfig: watch::Receiver<String>,
    facts: watch::Receiver<NodeFacts>,
    shutdown: CancellationToken,
) {
    let mut heart = Heart {
        kubeconfig,
        facts,
        client: None,
        last_status: None,
        node_created: false,
        // Ready since the agent started: the transition time stays put between heartbeats.
        ready_since: now_seconds(),
    };
    let mut ticker = tokio::time::interval(LEASE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let beats = async {
        loop {
            ticker.tick().await;
            heart.beat().await;
        }
    };
    // A request to a server that hangs is dropped at shutdown, not waited for.
    shutdown.run_until_cancelled(beats).await;
}

/// What the heartbeats remember from one tick to the next.
struct Heart {
    kubeconfig: watch::Receiver<String>,
    facts: watch::Receiver<NodeFacts>,
    client: Option<Client>,
    /// The status last written (without timestamps) and when.
    last_status: Option<(serde_json::Value, Instant)>,
    node_created: bool,
    ready_since: String,
}

impl Heart {
    /// One tick: the Node (registered if missing), its status when due, the Lease.
    async fn beat(&mut self) {
        if self.kubeconfig.has_changed().unwrap_or(false) {
            self.client = None;
        }
        if self.client.is_none() {
            let kubeconfig_yaml = self.kubeconfig.borrow_and_update().clone();
            match make_client(&kubeconfig_yaml).await {
                Ok(made) => self.client = Some(made),
                Err(error) => {
                    tracing::warn!(%error, "heartbeats: cannot build a client for the local load balancer");
                    return;
                }
            }
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        let facts = self.facts.borrow().clone();
        if !self.node_created {
            match ensure_node(&client, &facts).await {
                Ok(()) => self.node_created = true,
                Err(error) => {
                    tracing::warn!(node = %facts.name, %error, "heartbeats: cannot register the Node; retrying");
                    return;
                }
            }
        }
        let status = node_status(&facts);
        let due = match &self.last_status {
            None => true,
            Some((previous, at)) => {
                !same_status(previous, &status) || at.elapsed() >= STATUS_INTERVAL
            }
        };
        if due {
            let stamped = stamp(status.clone(), &self.ready_since);
            let nodes: Api<Node> = Api::all(client.clone());
            match nodes
                .patch_status(
                    &facts.name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": stamped })),
                )
                .await
            {
                Ok(_) => self.last_status = Some((status, Instant::now())),
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    tracing::warn!(node = %facts.name, "heartbeats: the Node is gone; registering it again");
                    self.node_created = false;
                }
                Err(error) => {
                    tracing::warn!(node = %facts.name, %error, "heartbeats: cannot update the Node status")
                }
            }
        }
        if let Err(error) = renew_lease(&client, &facts.name).await {
            tracing::warn!(node = %facts.name, %error, "heartbeats: cannot renew the node Lease");
        }
    }
}

async fn make_client(kubeconfig_yaml: &str) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig_yaml)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn ensure_node(client: &Client, facts: &NodeFacts) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(&facts.name).await?.is_some() {
        return Ok(());
    }
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": facts.name,
            "labels": {
                "kubernetes.io/hostname": facts.name,
                "kubernetes.io/os": std::env::consts::OS,
                "kubernetes.io/arch": arch(),
            },
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

async fn renew_lease(client: &Client, node: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let spec = json!({
        "holderIdentity": node,
        "leaseDurationSeconds": LEASE_DURATION_SECONDS,
        "renewTime": now_micro(),
    });
    match leases
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": spec })),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": { "name": node, "namespace": LEASE_NAMESPACE },
                "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(error) => Err(error),
    }
}

/// The Node status without timestamps (compared to decide whether to send).
fn node_status(facts: &NodeFacts) -> serde_json::Value {
    let mut addresses = Vec::new();
    if let Some(ip) = facts.internal_ip {
        addresses.push(json!({ "type": "InternalIP", "address": ip.to_string() }));
    }
    addresses.push(json!({ "type": "Hostname", "address": facts.name }));
    let resources = json!({
        "cpu": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string(),
        "memory": memory_total().unwrap_or_else(|| "0".into()),
        "pods": "110",
    });
    json!({
        "addresses": addresses,
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "capstan agent is posting ready status",
        }],
        "nodeInfo": {
            "operatingSystem": std::env::consts::OS,
            "architecture": arch(),
            "kubeletVersion": concat!("v0.0.0-capstan-", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": "",
            "containerRuntimeVersion": "",
        },
    })
}

fn same_status(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    a == b
}

/// Adds the heartbeat time (now) and the transition time (`since`) to the conditions.
fn stamp(mut status: serde_json::Value, since: &str) -> serde_json::Value {
    let now = now_seconds();
    if let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for condition in conditions {
            condition["lastHeartbeatTime"] = json!(now);
            condition["lastTransitionTime"] = json!(since);
        }
    }
    status
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `MemTotal` from /proc/meminfo as a Kubernetes quantity (`<n>Ki`).
fn memory_total() -> Option<String> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&meminfo)
}

fn parse_meminfo(meminfo: &str) -> Option<String> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{kib}Ki"))
}

fn now_seconds() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn now_micro() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_ready_with_addresses_and_capacity() {
        let facts = NodeFacts {
            name: "n1".into(),
            internal_ip: Some("127.0.0.5".parse().expect("ip")),
        };
        let status = stamp(node_status(&facts), "2026-01-01T00:00:00Z");
        assert_eq!(
            status["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(status["addresses"][0]["address"], "127.0.0.5");
        assert_eq!(status["addresses"][1]["type"], "Hostname");
        assert_eq!(status["capacity"]["pods"], "110");
        assert_eq!(status["conditions"][0]["reason"], "KubeletReady");
        let stamped = status["conditions"][0]["lastHeartbeatTime"]
            .as_str()
            .expect("time");
        assert_eq!(stamped.len(), "2026-01-01T00:00:00Z".len());
        // The parsed status fits the Kubernetes type.
        let _: k8s_openapi::api::core::v1::NodeStatus =
            serde_json::from_value(status).expect("a valid NodeStatus");
        assert_eq!(
            parse_meminfo("MemTotal:       16314744 kB\nMemFree: 1 kB\n").as_deref(),
            Some("16314744Ki")
        );
        assert!(now_micro().ends_with('Z'));
    }
}
