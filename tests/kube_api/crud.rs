//! Create, get, list, replace and delete, with the errors a client relies on.

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery;
use serde_json::json;

use crate::common::server::TestServer;
use crate::support::{api_error, assert_status, config_map, data_of};

kube_api!(
    create_get_list_replace_delete,
    replace_with_stale_resource_version_conflicts,
    create_twice_is_already_exists,
    get_missing_is_not_found,
    generate_name_gives_unique_names,
    server_sets_identity_fields,
    dry_run_create_persists_nothing,
    pod_create_get_delete,
    dynamic_object_crud,
    delete_collection_deletes_only_selected,
    dry_run_delete_keeps_the_object,
    invalid_object_is_unprocessable,
    replace_missing_is_not_found,
);

async fn create_get_list_replace_delete(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &config_map("web", &[("k", "v1")], &[]),
        )
        .await
        .unwrap();
    assert_eq!(data_of(&created, "k"), Some("v1"));

    let fetched = api.get("web").await.unwrap();
    assert_eq!(fetched.metadata.uid, created.metadata.uid);
    assert_eq!(data_of(&fetched, "k"), Some("v1"));

    let listed = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = listed
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, ["web"]);
    assert!(
        listed.metadata.resource_version.is_some(),
        "a list carries its resourceVersion"
    );

    let mut changed = fetched.clone();
    changed
        .data
        .as_mut()
        .unwrap()
        .insert("k".into(), "v2".into());
    let replaced = api
        .replace("web", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(data_of(&replaced, "k"), Some("v2"));
    assert_ne!(
        replaced.metadata.resource_version, fetched.metadata.resource_version,
        "a replace moves the resourceVersion"
    );
    assert_eq!(data_of(&api.get("web").await.unwrap(), "k"), Some("v2"));

    api.delete("web", &DeleteParams::default()).await.unwrap();
    assert_status(&api_error(api.get("web").await), 404, "NotFound");
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn replace_with_stale_resource_version_conflicts(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let stale = api
        .create(
            &PostParams::default(),
            &config_map("contended", &[("k", "a")], &[]),
        )
        .await
        .unwrap();
    let mut first = stale.clone();
    first.data.as_mut().unwrap().insert("k".into(), "b".into());
    api.replace("contended", &PostParams::default(), &first)
        .await
        .unwrap();

    let mut second = stale.clone();
    second.data.as_mut().unwrap().insert("k".into(), "c".into());
    let status = api_error(
        api.replace("contended", &PostParams::default(), &second)
            .await,
    );
    assert_status(&status, 409, "Conflict");
    assert_eq!(
        data_of(&api.get("contended").await.unwrap(), "k"),
        Some("b")
    );
}

async fn create_twice_is_already_exists(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let object = config_map("twice", &[("k", "first")], &[]);
    api.create(&PostParams::default(), &object).await.unwrap();
    let mut again = object.clone();
    again
        .data
        .as_mut()
        .unwrap()
        .insert("k".into(), "second".into());
    let status = api_error(api.create(&PostParams::default(), &again).await);
    assert_status(&status, 409, "AlreadyExists");
    assert_eq!(
        data_of(&api.get("twice").await.unwrap(), "k"),
        Some("first")
    );
}

async fn get_missing_is_not_found(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let status = api_error(api.get("x").await);
    assert_status(&status, 404, "NotFound");
    assert_eq!(status.message, r#"configmaps "x" not found"#);
    assert!(api.get_opt("x").await.unwrap().is_none());
}

async fn generate_name_gives_unique_names(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let mut object = config_map("", &[], &[]);
    object.metadata.name = None;
    object.metadata.generate_name = Some("gen-".into());
    let first = api.create(&PostParams::default(), &object).await.unwrap();
    let second = api.create(&PostParams::default(), &object).await.unwrap();
    let (first, second) = (first.metadata.name.unwrap(), second.metadata.name.unwrap());
    assert!(
        first.starts_with("gen-") && first.len() > 4,
        "generated name {first}"
    );
    assert!(
        second.starts_with("gen-") && second.len() > 4,
        "generated name {second}"
    );
    assert_ne!(first, second);
    api.get(&first).await.unwrap();
}

async fn server_sets_identity_fields(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let mut object = config_map("ids", &[], &[]);
    // Whatever a client sends for these, the server decides them.
    object.metadata.uid = Some("client-chosen".into());
    object.metadata.resource_version = None;
    let created = api.create(&PostParams::default(), &object).await.unwrap();
    let uid = created.metadata.uid.clone().expect("the server sets a uid");
    assert_ne!(uid, "client-chosen");
    assert!(
        created.metadata.creation_timestamp.is_some(),
        "creationTimestamp set"
    );
    let version = created
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion set");
    assert!(!version.is_empty());
    assert_eq!(created.metadata.namespace.as_deref(), Some("default"));
    let fetched = api.get("ids").await.unwrap();
    assert_eq!(fetched.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(fetched.metadata.resource_version, Some(version));
}

async fn dry_run_create_persists_nothing(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = api
        .create(&params, &config_map("dry", &[("k", "v")], &[]))
        .await
        .unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("dry"));
    assert_eq!(data_of(&answered, "k"), Some("v"));
    assert_status(&api_error(api.get("dry").await), 404, "NotFound");
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn pod_create_get_delete(server: &TestServer) {
    let api: Api<Pod> = Api::namespaced(server.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "solo"},
        "spec": {"containers": [{"name": "main", "image": "registry.example/main:1"}]},
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let fetched = api.get("solo").await.unwrap();
    let containers = &fetched.spec.as_ref().unwrap().containers;
    assert_eq!(
        containers[0].image.as_deref(),
        Some("registry.example/main:1")
    );
    // A pod bound to no node has no kubelet to wait for: it goes at once.
    api.delete("solo", &DeleteParams::default()).await.unwrap();
    assert_status(&api_error(api.get("solo").await), 404, "NotFound");
}

async fn dynamic_object_crud(server: &TestServer) {
    let gvk = GroupVersionKind::gvk("", "v1", "Secret");
    let (resource, _) = discovery::pinned_kind(&server.client, &gvk).await.unwrap();
    assert_eq!(resource.plural, "secrets");
    let api: Api<DynamicObject> = Api::namespaced_with(server.client.clone(), "default", &resource);
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "dyn"},
        "stringData": {"password": "hunter2"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    let fetched = api.get("dyn").await.unwrap();
    // stringData is write-only: the server folds it into base64 data.
    assert_eq!(
        fetched.data["data"]["password"],
        json!("aHVudGVyMg=="),
        "stringData folded into data; stored object: {}",
        fetched.data
    );
    assert!(
        fetched.data.get("stringData").is_none(),
        "stringData is not stored"
    );
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    api.delete("dyn", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("dyn").await.unwrap().is_none());
}

async fn delete_collection_deletes_only_selected(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    for (name, app) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        api.create(
            &PostParams::default(),
            &config_map(name, &[], &[("app", app)]),
        )
        .await
        .unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=a"),
    )
    .await
    .unwrap();
    let left: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(left, ["b1"]);
}

async fn dry_run_delete_keeps_the_object(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &config_map("kept", &[], &[]))
        .await
        .unwrap();
    let params = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    api.delete("kept", &params).await.unwrap();
    let kept = api.get("kept").await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none());
}

async fn invalid_object_is_unprocessable(server: &TestServer) {
    let api: Api<Pod> = Api::namespaced(server.client.clone(), "default");
    // A pod needs at least one container, and names must be DNS subdomains.
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "Not_A_Name"},
        "spec": {"containers": []},
    }))
    .unwrap();
    let status = api_error(api.create(&PostParams::default(), &pod).await);
    assert_status(&status, 422, "Invalid");
    assert!(
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn replace_missing_is_not_found(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let status = api_error(
        api.replace(
            "ghost",
            &PostParams::default(),
            &config_map("ghost", &[], &[]),
        )
        .await,
    );
    assert_status(&status, 404, "NotFound");
    let patch = json!({"data": {"k": "v"}});
    let status = api_error(
        api.patch("ghost", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_status(&status, 404, "NotFound");
}
