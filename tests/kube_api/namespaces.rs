//! Namespaces: created, terminated with their contents, and required for namespaced
//! objects.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::common::server::TestServer;
use crate::support::{api_error, assert_status, config_map, eventually};

kube_api!(
    namespace_terminates_then_goes,
    create_in_missing_namespace_is_not_found,
    default_namespaces_exist,
);

async fn namespace_terminates_then_goes(server: &TestServer) {
    let namespaces: Api<Namespace> = Api::all(server.client.clone());
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "doomed"},
    }))
    .unwrap();
    let created = namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let phase = |ns: &Namespace| ns.status.as_ref().and_then(|s| s.phase.clone());
    assert_eq!(phase(&created).as_deref(), Some("Active"));
    let inside: Api<ConfigMap> = Api::namespaced(server.client.clone(), "doomed");
    inside
        .create(&PostParams::default(), &config_map("content", &[], &[]))
        .await
        .unwrap();

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    if let Some(terminating) = namespaces.get_opt("doomed").await.unwrap() {
        assert_eq!(phase(&terminating).as_deref(), Some("Terminating"));
        assert!(terminating.metadata.deletion_timestamp.is_some());
        let status = api_error(
            inside
                .create(&PostParams::default(), &config_map("late", &[], &[]))
                .await,
        );
        // Forbidden while it terminates; NotFound only if it finished going meanwhile.
        if status.code == 404 {
            assert!(namespaces.get_opt("doomed").await.unwrap().is_none());
        } else {
            assert_status(&status, 403, "Forbidden");
        }
    }
    eventually(Duration::from_secs(15), "the namespace is gone", || async {
        match namespaces.get_opt("doomed").await.unwrap() {
            None => Ok(()),
            Some(namespace) => Err(format!(
                "phase {:?}, finalizers {:?}",
                phase(&namespace),
                namespace.spec.and_then(|spec| spec.finalizers)
            )),
        }
    })
    .await;
    assert!(
        inside.get_opt("content").await.unwrap().is_none(),
        "a deleted namespace's objects are deleted with it"
    );
}

async fn create_in_missing_namespace_is_not_found(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "nowhere");
    let status = api_error(
        api.create(&PostParams::default(), &config_map("lost", &[], &[]))
            .await,
    );
    assert_status(&status, 404, "NotFound");
    assert_eq!(status.message, r#"namespaces "nowhere" not found"#);
}

async fn default_namespaces_exist(server: &TestServer) {
    let namespaces: Api<Namespace> = Api::all(server.client.clone());
    let mut names: Vec<_> = namespaces
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .iter()
        .filter_map(|ns| ns.metadata.name.clone())
        .collect();
    // The bundled manifests add capstan-system moments after start (tests/deploy.rs).
    names.retain(|name| name != "capstan-system");
    names.sort();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let default = namespaces.get("default").await.unwrap();
    assert_eq!(
        default.status.and_then(|s| s.phase).as_deref(),
        Some("Active")
    );
}
