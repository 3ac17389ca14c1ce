//! Pods: graceful deletion of a pod bound to a node (the kubelet finishes it, or a zero
//! grace period forces it), and the status a kubelet reports through `/status`.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::server::TestServer;
use crate::support::{api_error, assert_status};

kube_api!(bound_pod_deletes_gracefully_unless_forced, pod_status_patch);

fn pod(name: &str, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.example/main:1"}],
        },
    }))
    .unwrap()
}

async fn bound_pod_deletes_gracefully_unless_forced(server: &TestServer) {
    let api: Api<Pod> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &pod("bound", Some("node-1")))
        .await
        .unwrap();
    api.delete("bound", &DeleteParams::default()).await.unwrap();
    let terminating = api
        .get_opt("bound")
        .await
        .unwrap()
        .expect("a pod on a node waits for its kubelet to stop it");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));

    // `kubectl delete --force --grace-period=0`: gone at once.
    api.delete("bound", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert_status(&api_error(api.get("bound").await), 404, "NotFound");
}

async fn pod_status_patch(server: &TestServer) {
    let api: Api<Pod> = Api::namespaced(server.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &pod("reporting", Some("node-1")))
        .await
        .unwrap();
    assert_eq!(
        created.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "a new pod is Pending"
    );
    let status = json!({"status": {"phase": "Running", "podIP": "10.42.0.7"}});
    let patched = api
        .patch_status("reporting", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let status = patched.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.42.0.7"));
}
