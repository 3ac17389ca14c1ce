//! Custom resources: a CustomResourceDefinition becomes an API that kube-rs reaches through
//! discovery and `DynamicObject`, like any built-in kind.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery;
use serde_json::json;

use crate::common::server::TestServer;
use crate::support::eventually;

kube_api!(custom_resource_definition_serves_its_kind);

async fn custom_resource_definition_serves_its_kind(server: &TestServer) {
    let definitions: Api<CustomResourceDefinition> = Api::all(server.client.clone());
    let definition: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {"size": {"type": "integer"}},
                    }},
                }},
            }],
        },
    }))
    .unwrap();
    definitions
        .create(&PostParams::default(), &definition)
        .await
        .unwrap();

    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let resource = eventually(
        Duration::from_secs(10),
        "the CRD's kind is discoverable",
        || async {
            let established = definitions
                .get("widgets.example.com")
                .await
                .unwrap()
                .status
                .and_then(|status| status.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            match discovery::pinned_kind(&server.client, &gvk).await {
                Ok((resource, _)) if established => Ok(resource),
                Ok(_) => Err("discoverable, but not Established".to_string()),
                Err(error) => Err(format!("established: {established}; discovery: {error}")),
            }
        },
    )
    .await;
    assert_eq!(resource.plural, "widgets");

    let api: Api<DynamicObject> = Api::namespaced_with(server.client.clone(), "default", &resource);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 1},
    }))
    .unwrap();
    api.create(&PostParams::default(), &widget).await.unwrap();
    let patch = json!({"spec": {"size": 2}});
    api.patch("w", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(api.get("w").await.unwrap().data["spec"]["size"], json!(2));
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    api.delete("w", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("w").await.unwrap().is_none());
}
