//! Writes the server must refuse, leaving the stored object as it was: failed delete
//! preconditions, a body naming another object, and changes to immutable fields.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use serde_json::json;

use crate::common::server::TestServer;
use crate::support::{api_error, assert_status, config_map, data_of, deployment};

kube_api!(
    delete_with_stale_preconditions_conflicts,
    body_naming_another_object_is_bad_request,
    changing_an_immutable_selector_is_invalid,
    immutable_config_map_refuses_data_changes,
);

async fn delete_with_stale_preconditions_conflicts(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("guarded", &[], &[]))
        .await
        .unwrap();
    let mut changed = created.clone();
    changed.data = Some([("k".to_string(), "v".to_string())].into());
    let current = api
        .replace("guarded", &PostParams::default(), &changed)
        .await
        .unwrap();

    let stale = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: created.metadata.resource_version.clone(),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    assert_status(
        &api_error(api.delete("guarded", &stale).await),
        409,
        "Conflict",
    );
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: None,
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
        }),
        ..DeleteParams::default()
    };
    assert_status(
        &api_error(api.delete("guarded", &wrong_uid).await),
        409,
        "Conflict",
    );
    assert!(api.get_opt("guarded").await.unwrap().is_some());

    let fresh = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: current.metadata.resource_version.clone(),
            uid: current.metadata.uid.clone(),
        }),
        ..DeleteParams::default()
    };
    api.delete("guarded", &fresh).await.unwrap();
    assert!(api.get_opt("guarded").await.unwrap().is_none());
}

async fn body_naming_another_object_is_bad_request(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    for name in ["here", "there"] {
        api.create(&PostParams::default(), &config_map(name, &[], &[]))
            .await
            .unwrap();
    }
    let mut there = api.get("there").await.unwrap();
    there.data = Some([("k".to_string(), "v".to_string())].into());
    // Unconditional, so only the name can be wrong.
    there.metadata.resource_version = None;
    let status = api_error(api.replace("here", &PostParams::default(), &there).await);
    assert_status(&status, 400, "BadRequest");
    assert_eq!(data_of(&api.get("here").await.unwrap(), "k"), None);
    assert_eq!(data_of(&api.get("there").await.unwrap(), "k"), None);

    // The name is checked before the resourceVersion (as kube-apiserver does): a body
    // naming another object is a 400 whatever version it carries.
    let mut there = api.get("there").await.unwrap();
    there.data = Some([("k".to_string(), "v".to_string())].into());
    let status = api_error(api.replace("here", &PostParams::default(), &there).await);
    assert_status(&status, 400, "BadRequest");
}

async fn changing_an_immutable_selector_is_invalid(server: &TestServer) {
    let api: Api<Deployment> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &deployment("fixed", 1))
        .await
        .unwrap();
    let mut changed = api.get("fixed").await.unwrap();
    let selector = json!({"matchLabels": {"app": "other"}});
    changed.spec.selector = serde_json::from_value(selector).unwrap();
    let labels = json!({"app": "other"});
    changed.spec.template.metadata.as_mut().unwrap().labels =
        Some(serde_json::from_value(labels).unwrap());
    let status = api_error(api.replace("fixed", &PostParams::default(), &changed).await);
    assert_status(&status, 422, "Invalid");
    assert!(
        status.message.contains("spec.selector"),
        "the error names the field: {}",
        status.message
    );
}

async fn immutable_config_map_refuses_data_changes(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let mut frozen = config_map("frozen", &[("k", "v")], &[]);
    frozen.immutable = Some(true);
    api.create(&PostParams::default(), &frozen).await.unwrap();
    let mut changed = api.get("frozen").await.unwrap();
    changed.data = Some([("k".to_string(), "changed".to_string())].into());
    let status = api_error(
        api.replace("frozen", &PostParams::default(), &changed)
            .await,
    );
    assert_status(&status, 422, "Invalid");
    assert_eq!(data_of(&api.get("frozen").await.unwrap(), "k"), Some("v"));
    // Metadata stays editable, and deleting is allowed.
    let mut labelled = api.get("frozen").await.unwrap();
    labelled.metadata.labels = Some([("note".to_string(), "ok".to_string())].into());
    api.replace("frozen", &PostParams::default(), &labelled)
        .await
        .unwrap();
    api.delete("frozen", &DeleteParams::default())
        .await
        .unwrap();
}
