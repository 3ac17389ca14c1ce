//! The agent's Node and Lease heartbeats against a real Capstan API server: the bodies the
//! agent sends must be accepted and read back as a kubelet's would.

mod common;

use std::time::Duration;

use capstan_agent::heartbeat::{self, NodeFacts};
use capstan_datastore::Engine;
use common::server::TestServer;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_register_a_ready_node_and_renew_its_lease() {
    common::install_crypto_provider();
    let server = TestServer::start(Engine::Sqlite).await;
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).expect("the admin kubeconfig");
    let (_facts_tx, facts) = watch::channel(NodeFacts {
        name: "hb-node".into(),
        internal_ip: Some("127.0.0.9".parse().expect("ip")),
    });
    let shutdown = CancellationToken::new();
    let (_kubeconfig_tx, kubeconfig) = watch::channel(kubeconfig);
    let beating = tokio::spawn(heartbeat::run(kubeconfig, facts, shutdown.clone()));

    let nodes: Api<Node> = Api::all(server.client.clone());
    let node = common::wait_for("a Ready node", Duration::from_secs(15), async || {
        let node = nodes.get_opt("hb-node").await.ok().flatten()?;
        let ready = node.status.as_ref()?.conditions.as_ref()?.iter().any(|c| {
            c.type_ == "Ready" && c.status == "True" && c.reason.as_deref() == Some("KubeletReady")
        });
        ready.then_some(node)
    })
    .await;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("kubernetes.io/hostname").map(String::as_str),
        Some("hb-node")
    );
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    let status = node.status.expect("status");
    let addresses = status.addresses.unwrap_or_default();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.9"),
        "{addresses:?}"
    );
    let capacity = status.capacity.unwrap_or_default();
    assert_eq!(capacity.get("pods").map(|q| q.0.as_str()), Some("110"));
    assert!(capacity.contains_key("cpu") && capacity.contains_key("memory"));

    let leases: Api<Lease> = Api::namespaced(server.client.clone(), "kube-node-lease");
    let first = common::wait_for("the node lease", Duration::from_secs(15), async || {
        let lease = leases.get_opt("hb-node").await.ok().flatten()?;
        lease.spec?.renew_time
    })
    .await;
    let lease = leases.get("hb-node").await.expect("the lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("hb-node"));
    assert_eq!(spec.lease_duration_seconds, Some(40));
    // Renewed on the next tick (every 10 s).
    common::wait_for("a renewal", Duration::from_secs(15), async || {
        let renewed = leases.get("hb-node").await.ok()?.spec?.renew_time?;
        (renewed != first).then_some(())
    })
    .await;

    shutdown.cancel();
    beating.await.expect("heartbeats stop cleanly");
    server.stop().await;
}
