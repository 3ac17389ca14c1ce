//! Patches of every type kube-rs sends: JSON merge, JSON patch, strategic merge and
//! server-side apply.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::server::TestServer;
use crate::support::{api_error, assert_status, config_map, data_of, deployment};

kube_api!(
    merge_patch_adds_changes_and_removes_keys,
    json_patch_with_failing_test_leaves_object_unchanged,
    strategic_patch_merges_containers_by_name,
    apply_conflicts_between_managers_until_forced,
    apply_removes_fields_its_manager_stops_applying,
    apply_shares_a_list_between_managers_by_key,
    patch_with_stale_resource_version_conflicts,
);

async fn merge_patch_adds_changes_and_removes_keys(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    api.create(
        &PostParams::default(),
        &config_map("m", &[("keep", "1"), ("change", "a"), ("drop", "x")], &[]),
    )
    .await
    .unwrap();
    let patch = json!({"data": {"change": "b", "drop": null, "add": "new"}});
    let patched = api
        .patch("m", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let data = patched.data.unwrap();
    let keys: Vec<_> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["add", "change", "keep"]);
    assert_eq!(data["change"], "b");
    assert_eq!(data_of(&api.get("m").await.unwrap(), "add"), Some("new"));
}

async fn json_patch_with_failing_test_leaves_object_unchanged(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("j", &[("k", "v")], &[]))
        .await
        .unwrap();

    let passing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "v"},
        {"op": "add", "path": "/data/n", "value": "added"},
    ]))
    .unwrap();
    let patched = api
        .patch("j", &PatchParams::default(), &Patch::Json::<()>(passing))
        .await
        .unwrap();
    assert_eq!(data_of(&patched, "n"), Some("added"));

    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "not-v"},
        {"op": "replace", "path": "/data/k", "value": "clobbered"},
    ]))
    .unwrap();
    let status = api_error(
        api.patch("j", &PatchParams::default(), &Patch::Json::<()>(failing))
            .await,
    );
    assert!(
        (400..500).contains(&status.code),
        "a failed test op is a client error, got {status:?}"
    );
    let after = api.get("j").await.unwrap();
    assert_eq!(data_of(&after, "k"), Some("v"));
    assert_eq!(
        after.metadata.resource_version,
        patched.metadata.resource_version
    );
    assert_ne!(
        after.metadata.resource_version,
        created.metadata.resource_version
    );
}

async fn strategic_patch_merges_containers_by_name(server: &TestServer) {
    let api: Api<Deployment> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &deployment("sp", 1))
        .await
        .unwrap();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "sidecar", "image": "registry.example/sidecar:2"},
    ]}}}});
    let patched = api
        .patch("sp", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let containers = patched.spec.template.spec.unwrap().containers;
    let images: Vec<_> = containers
        .iter()
        .map(|c| (c.name.as_str(), c.image.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        images,
        [
            ("app", "registry.example/app:1"),
            ("sidecar", "registry.example/sidecar:2"),
        ],
        "a strategic patch merges containers by name, keeping the others"
    );
}

async fn apply_conflicts_between_managers_until_forced(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let intent = |value: &str| {
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ssa"},
            "data": {"owned": value},
        })
    };
    let applied = api
        .patch(
            "ssa",
            &PatchParams::apply("mgr-a"),
            &Patch::Apply(intent("a")),
        )
        .await
        .unwrap();
    assert_eq!(data_of(&applied, "owned"), Some("a"));
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|entry| (entry.manager.clone(), entry.operation.clone()))
        .collect();
    assert!(
        managers.contains(&(Some("mgr-a".into()), Some("Apply".into()))),
        "managedFields name mgr-a as an Apply manager, got {managers:?}"
    );

    let status = api_error(
        api.patch(
            "ssa",
            &PatchParams::apply("mgr-b"),
            &Patch::Apply(intent("b")),
        )
        .await,
    );
    assert_status(&status, 409, "Conflict");
    assert!(
        status.message.contains("mgr-a"),
        "the conflict names the owning manager: {}",
        status.message
    );
    assert_eq!(data_of(&api.get("ssa").await.unwrap(), "owned"), Some("a"));

    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("mgr-b").force(),
            &Patch::Apply(intent("b")),
        )
        .await
        .unwrap();
    assert_eq!(data_of(&forced, "owned"), Some("b"));
    let managers: Vec<_> = forced
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|entry| entry.manager.clone())
        .collect();
    assert!(
        managers.contains(&"mgr-b".to_string()),
        "mgr-b manages the field after forcing, got {managers:?}"
    );
}

async fn apply_removes_fields_its_manager_stops_applying(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let intent = |data: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shrink"}, "data": data});
    let params = PatchParams::apply("mgr-a");
    api.patch(
        "shrink",
        &params,
        &Patch::Apply(intent(json!({"x": "1", "y": "2"}))),
    )
    .await
    .unwrap();
    let applied = api
        .patch("shrink", &params, &Patch::Apply(intent(json!({"x": "1"}))))
        .await
        .unwrap();
    assert_eq!(data_of(&applied, "x"), Some("1"));
    assert_eq!(
        data_of(&applied, "y"),
        None,
        "a field the manager owned and no longer applies is removed"
    );
}

async fn apply_shares_a_list_between_managers_by_key(server: &TestServer) {
    let api: Api<Deployment> = Api::namespaced(server.client.clone(), "default");
    let intent = |containers: serde_json::Value| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "shared"},
            "spec": {
                "selector": {"matchLabels": {"app": "shared"}},
                "template": {
                    "metadata": {"labels": {"app": "shared"}},
                    "spec": {"containers": containers},
                },
            },
        })
    };
    let app = json!([{"name": "app", "image": "registry.example/app:1"}]);
    api.patch(
        "shared",
        &PatchParams::apply("mgr-a"),
        &Patch::Apply(intent(app)),
    )
    .await
    .unwrap();
    let sidecar = json!([{"name": "sidecar", "image": "registry.example/sidecar:1"}]);
    let merged = api
        .patch(
            "shared",
            &PatchParams::apply("mgr-b"),
            &Patch::Apply(intent(sidecar)),
        )
        .await
        .unwrap();
    let names: Vec<_> = merged
        .spec
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        ["app", "sidecar"],
        "containers are a list keyed by name: each manager keeps its own entry"
    );
}

async fn patch_with_stale_resource_version_conflicts(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let created = api
        .create(
            &PostParams::default(),
            &config_map("locked", &[("k", "a")], &[]),
        )
        .await
        .unwrap();
    let first = json!({"data": {"k": "b"}});
    api.patch("locked", &PatchParams::default(), &Patch::Merge(&first))
        .await
        .unwrap();
    let stale = json!({
        "metadata": {"resourceVersion": created.metadata.resource_version},
        "data": {"k": "c"},
    });
    let status = api_error(
        api.patch("locked", &PatchParams::default(), &Patch::Merge(&stale))
            .await,
    );
    assert_status(&status, 409, "Conflict");
    assert_eq!(data_of(&api.get("locked").await.unwrap(), "k"), Some("b"));
}
