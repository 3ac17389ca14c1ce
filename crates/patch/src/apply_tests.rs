//! Server-side apply and `record_update`, as specifications: ownership, conflicts, force,
//! removal of dropped fields, and the bookkeeping of Update entries.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use serde_json::json;

use super::super::record_update;
use super::super::schema::fixtures;
use super::*;

fn manager(name: &str, time: &str) -> FieldManager {
    FieldManager {
        name: name.to_owned(),
        api_version: "apps/v1".to_owned(),
        time: time.to_owned(),
        subresource: None,
    }
}

fn deployment_type(defs: &BTreeMap<String, Value>) -> ObjectType<'_> {
    ObjectType::new(SchemaRef::definition(defs, "io.k8s.api.apps.v1.Deployment"))
        .with_status_subresource()
}

fn config(replicas: u32, containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}})
}

fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_owned(),
                e["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn fields_of<'v>(object: &'v Value, manager: &str) -> &'v Value {
    let entries = object["metadata"]["managedFields"].as_array().unwrap();
    &entries.iter().find(|e| e["manager"] == manager).unwrap()["fieldsV1"]
}

#[test]
fn create_by_apply_owns_exactly_the_configuration() {
    let defs = fixtures::definitions();
    let applied = config(2, json!([{"name": "web", "image": "nginx"}]));
    let created = server_side_apply(
        None,
        &applied,
        &manager("kubectl", "t1"),
        false,
        deployment_type(&defs),
    )
    .unwrap();
    assert_eq!(created["spec"], applied["spec"]);
    let entry = &created["metadata"]["managedFields"][0];
    assert_eq!(entry["manager"], "kubectl");
    assert_eq!(entry["operation"], "Apply");
    assert_eq!(entry["apiVersion"], "apps/v1");
    assert_eq!(entry["time"], "t1");
    assert_eq!(entry["fieldsType"], "FieldsV1");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:app": {}}},
               "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                   "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}})
    );
}

#[test]
fn reapplying_the_same_configuration_changes_nothing() {
    let defs = fixtures::definitions();
    let applied = config(2, json!([{"name": "web", "image": "nginx"}]));
    let kind = deployment_type(&defs);
    let first = server_side_apply(None, &applied, &manager("kubectl", "t1"), false, kind).unwrap();
    let second = server_side_apply(
        Some(&first),
        &applied,
        &manager("kubectl", "t2"),
        false,
        kind,
    )
    .unwrap();
    assert_eq!(second, first);
}

#[test]
fn another_manager_changing_replicas_conflicts_and_names_the_owner() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let live = server_side_apply(
        None,
        &config(2, json!([{"name": "web", "image": "nginx"}])),
        &manager("kubectl-client-side-apply", "t1"),
        false,
        kind,
    )
    .unwrap();
    let hpa_config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let error = server_side_apply(Some(&live), &hpa_config, &manager("hpa", "t2"), false, kind)
        .unwrap_err();
    let ApplyError::Conflicts(conflicts) = &error else {
        panic!("expected conflicts, got {error:?}");
    };
    assert_eq!(
        conflicts,
        &vec![Conflict {
            manager: "kubectl-client-side-apply".into(),
            api_version: "apps/v1".into(),
            field: ".spec.replicas".into(),
        }]
    );
    assert_eq!(
        error.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
}

#[test]
fn applying_the_value_another_manager_set_shares_ownership() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let live = server_side_apply(
        None,
        &config(2, json!([])),
        &manager("a", "t1"),
        false,
        kind,
    )
    .unwrap();
    let same = json!({"metadata": {"name": "web"}, "spec": {"replicas": 2}});
    let shared = server_side_apply(Some(&live), &same, &manager("b", "t2"), false, kind).unwrap();
    assert_eq!(fields_of(&shared, "a")["f:spec"]["f:replicas"], json!({}));
    assert_eq!(fields_of(&shared, "b")["f:spec"]["f:replicas"], json!({}));
}

#[test]
fn force_takes_ownership_of_conflicting_fields() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let live = server_side_apply(
        None,
        &config(2, json!([{"name": "web", "image": "nginx"}])),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap();
    let hpa_config = json!({"metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let forced =
        server_side_apply(Some(&live), &hpa_config, &manager("hpa", "t2"), true, kind).unwrap();
    assert_eq!(forced["spec"]["replicas"], json!(5));
    assert_eq!(
        fields_of(&forced, "hpa"),
        &json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(
        fields_of(&forced, "kubectl")["f:spec"]
            .get("f:replicas")
            .is_none()
    );
    assert!(
        fields_of(&forced, "kubectl")["f:spec"]
            .get("f:template")
            .is_some()
    );
}

#[test]
fn a_field_dropped_from_the_configuration_is_removed() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let two = json!([{"name": "web", "image": "nginx"}, {"name": "side", "image": "busybox"}]);
    let live = server_side_apply(
        None,
        &config(2, two),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap();
    let mut one = config(2, json!([{"name": "web", "image": "nginx"}]));
    one["metadata"]["labels"] = json!({});
    let applied =
        server_side_apply(Some(&live), &one, &manager("kubectl", "t2"), false, kind).unwrap();
    assert_eq!(
        applied["spec"]["template"]["spec"]["containers"],
        json!([{"name": "web", "image": "nginx"}])
    );
    assert_eq!(applied["metadata"]["labels"], json!({}));
}

#[test]
fn a_dropped_field_another_manager_owns_survives() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let live = server_side_apply(
        None,
        &config(2, json!([])),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap();
    let other = json!({"metadata": {"name": "web", "labels": {"app": "web"}}});
    let live =
        server_side_apply(Some(&live), &other, &manager("labeller", "t2"), false, kind).unwrap();
    let mut without_labels = config(2, json!([]));
    without_labels["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let applied = server_side_apply(
        Some(&live),
        &without_labels,
        &manager("kubectl", "t3"),
        false,
        kind,
    )
    .unwrap();
    assert_eq!(applied["metadata"]["labels"], json!({"app": "web"}));
    assert!(fields_of(&applied, "kubectl")["f:metadata"].is_null());
}

#[test]
fn map_lists_merge_by_key_and_atomic_lists_replace() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let live = server_side_apply(
        None,
        &config(
            1,
            json!([{"name": "web", "image": "nginx", "command": ["a", "b"]}]),
        ),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap();
    let sidecar = json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {
        "containers": [{"name": "log", "image": "fluent"}]}}}});
    let live = server_side_apply(
        Some(&live),
        &sidecar,
        &manager("injector", "t2"),
        false,
        kind,
    )
    .unwrap();
    let names: Vec<&Value> = live["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, vec!["web", "log"]);
    let error = server_side_apply(
        Some(&live),
        &config(
            1,
            json!([{"name": "web", "image": "nginx", "command": ["c"]}]),
        ),
        &manager("other", "t3"),
        false,
        kind,
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains(".spec.template.spec.containers[name=\"web\"].command"),
        "{error}"
    );
}

#[test]
fn status_is_not_applied_through_the_main_resource() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let mut with_status = config(1, json!([]));
    with_status["status"] = json!({"replicas": 9});
    let created =
        server_side_apply(None, &with_status, &manager("kubectl", "t1"), false, kind).unwrap();
    assert!(created.get("status").is_none());
    assert!(fields_of(&created, "kubectl").get("f:status").is_none());
}

#[test]
fn objects_without_managed_fields_are_owned_by_before_first_apply() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let legacy = config(3, json!([]));
    let error = server_side_apply(
        Some(&legacy),
        &config(4, json!([])),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("\"before-first-apply\""),
        "{error}"
    );
}

#[test]
fn an_update_takes_the_fields_it_changes_from_the_applier() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let live = server_side_apply(
        None,
        &config(2, json!([{"name": "web", "image": "nginx"}])),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap();
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(7);
    let managed = record_update(Some(&live), &scaled, &manager("hpa", "t2"), kind);
    scaled["metadata"]["managedFields"] = managed;
    assert_eq!(
        managers(&scaled),
        vec![
            ("kubectl".into(), "Apply".into()),
            ("hpa".into(), "Update".into())
        ]
    );
    assert_eq!(
        fields_of(&scaled, "hpa"),
        &json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(
        fields_of(&scaled, "kubectl")["f:spec"]
            .get("f:replicas")
            .is_none()
    );

    let mut rescaled = scaled.clone();
    rescaled["spec"]["replicas"] = json!(8);
    rescaled["metadata"]["labels"]["team"] = json!("x");
    let managed = record_update(Some(&scaled), &rescaled, &manager("hpa", "t3"), kind);
    let entries = managed.as_array().unwrap();
    assert_eq!(
        entries.len(),
        2,
        "the Update merges into hpa's entry: {managed}"
    );
    assert_eq!(entries[1]["time"], "t3");
    assert_eq!(
        entries[1]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {"f:team": {}}}, "f:spec": {"f:replicas": {}}})
    );
}

#[test]
fn create_by_update_owns_every_set_field_and_empty_entries_are_dropped() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let object = config(1, json!([]));
    let managed = record_update(None, &object, &manager("kubectl-create", "t1"), kind);
    assert_eq!(
        managed[0]["fieldsV1"],
        // An empty granular list owns nothing, as upstream.
        json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}}})
    );
    let mut live = object.clone();
    live["metadata"]["managedFields"] = managed;
    let mut rewritten = live.clone();
    rewritten["metadata"]["labels"]["app"] = json!("api");
    rewritten["spec"]["replicas"] = json!(2);
    rewritten["spec"]["template"]["spec"]["containers"] = json!([{"name": "x"}]);
    let managed = record_update(Some(&live), &rewritten, &manager("editor", "t2"), kind);
    let names: Vec<&Value> = managed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["manager"])
        .collect();
    assert_eq!(
        names,
        vec!["editor"],
        "kubectl-create owns nothing any more: {managed}"
    );
}

#[test]
fn odd_configurations_and_managed_fields_never_panic() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let mut live = config(1, json!([{"name": "web"}]));
    live["metadata"]["managedFields"] = json!([
        {"manager": "x", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"bad": {}}},
        {"manager": "y", "operation": "Apply", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}}, "i:3": {}, "v:1": {}}}}}}},
        "not an entry",
    ]);
    let odd = [
        json!({"spec": {"template": {"spec": {"containers": [{"image": "keyless"}, 3]}}}}),
        json!({"spec": {"template": {"spec": {"containers": "scalar"}}}}),
        json!({"spec": [1, 2], "metadata": null}),
        json!({"metadata": {"finalizers": [{"a": 1}, {"a": 1}, null]}}),
    ];
    for applied in odd {
        let _ = server_side_apply(Some(&live), &applied, &manager("m", "t"), false, kind);
        let _ = server_side_apply(Some(&live), &applied, &manager("m", "t"), true, kind);
        let _ = record_update(Some(&live), &applied, &manager("m", "t"), kind);
    }
    assert!(matches!(
        server_side_apply(Some(&live), &json!([1]), &manager("m", "t"), false, kind),
        Err(ApplyError::InvalidConfiguration { .. })
    ));
}

#[test]
fn several_conflicts_are_listed_per_manager() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let live = server_side_apply(
        None,
        &config(2, json!([{"name": "web", "image": "nginx"}])),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap();
    let error = server_side_apply(
        Some(&live),
        &config(3, json!([{"name": "web", "image": "httpd"}])),
        &manager("other", "t2"),
        false,
        kind,
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl\" using apps/v1:\n\
         - .spec.replicas\n\
         - .spec.template.spec.containers[name=\"web\"].image"
    );
}

#[test]
fn map_list_keys_missing_from_the_configuration_take_their_schema_default() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let ports = |ports: Value| config(1, json!([{"name": "web", "ports": ports}]));
    let mut live = server_side_apply(
        None,
        &ports(json!([{"containerPort": 80}])),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap();
    // The API layer defaulted the stored object.
    live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
    let applied = server_side_apply(
        Some(&live),
        &ports(json!([{"containerPort": 80, "name": "http"}])),
        &manager("kubectl", "t2"),
        false,
        kind,
    )
    .unwrap();
    assert_eq!(
        applied["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
    );
    let container = &fields_of(&applied, "kubectl")["f:spec"]["f:template"]["f:spec"]["f:containers"]
        ["k:{\"name\":\"web\"}"];
    assert!(
        container["f:ports"]
            .get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
            .is_some(),
        "{container}"
    );
}

#[test]
fn dropping_the_last_label_removes_the_emptied_labels_map() {
    let defs = fixtures::definitions();
    let kind = deployment_type(&defs);
    let live = server_side_apply(
        None,
        &config(1, json!([])),
        &manager("kubectl", "t1"),
        false,
        kind,
    )
    .unwrap();
    let mut unlabelled = config(1, json!([]));
    unlabelled["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    let applied = server_side_apply(
        Some(&live),
        &unlabelled,
        &manager("kubectl", "t2"),
        false,
        kind,
    )
    .unwrap();
    assert!(applied["metadata"].get("labels").is_none(), "{applied}");
    assert_eq!(applied["metadata"]["name"], "web");
}
