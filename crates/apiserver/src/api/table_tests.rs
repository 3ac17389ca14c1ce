//! Table tests: the rows kubectl prints for the built-in kinds, and CRD columns.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::*;
use crate::registry::{Column, ColumnValue, ResourceType, builtin_types};

const CREATED: &str = "2026-01-01T00:00:00Z";

fn now() -> SystemTime {
    parse_timestamp("2026-01-01T00:05:00Z").expect("valid timestamp")
}

fn kind(group: &str, kind: &str) -> ResourceType {
    builtin_types()
        .into_iter()
        .find(|t| t.group == group && t.kind == kind)
        .unwrap_or_else(|| panic!("{group}/{kind} is built in"))
}

fn headers(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .expect("column definitions")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn first_row(table: &Value) -> Vec<Value> {
    table["rows"][0]["cells"]
        .as_array()
        .expect("a row with cells")
        .clone()
}

fn cells(resource: &ResourceType, object: Value) -> Vec<Value> {
    first_row(&render_table(
        resource,
        &[object],
        IncludeObject::None,
        json!({}),
        now(),
    ))
}

#[test]
fn pod_rows_show_readiness_status_restarts_and_age() {
    let pod = json!({
        "metadata": {"name": "web", "namespace": "default", "creationTimestamp": CREATED},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "sidecar"}]},
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": "10.0.0.5"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 3, "state": {"running": {}}},
                {"name": "sidecar", "ready": false, "restartCount": 0, "state": {"running": {}}},
            ],
        },
    });
    let table = render_table(
        &kind("", "Pod"),
        std::slice::from_ref(&pod),
        IncludeObject::Metadata,
        json!({"resourceVersion": "42"}),
        now(),
    );
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(table["metadata"], json!({"resourceVersion": "42"}));
    assert_eq!(
        headers(&table),
        [
            "Name",
            "Ready",
            "Status",
            "Restarts",
            "Age",
            "IP",
            "Node",
            "Nominated Node",
            "Readiness Gates"
        ]
    );
    assert_eq!(table["columnDefinitions"][0]["format"], "name");
    assert_eq!(table["columnDefinitions"][5]["priority"], 1);
    assert_eq!(
        first_row(&table),
        [
            json!("web"),
            json!("1/2"),
            json!("Running"),
            json!("3"),
            json!("5m"),
            json!("10.0.0.5"),
            json!("node-1"),
            json!("<none>"),
            json!("<none>"),
        ]
    );
    assert_eq!(
        table["rows"][0]["object"],
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": pod["metadata"],
        })
    );
}

#[test]
fn pod_status_explains_what_is_wrong() {
    let pod = |status: Value, deleting: bool| {
        let mut metadata = json!({"name": "p", "creationTimestamp": CREATED});
        if deleting {
            metadata["deletionTimestamp"] = json!(CREATED);
        }
        json!({
            "metadata": metadata,
            "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "init"}]},
            "status": status,
        })
    };
    let status_of = |object: Value| cells(&kind("", "Pod"), object)[2].clone();
    let waiting = json!({"phase": "Pending", "containerStatuses": [
        {"name": "a", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]});
    assert_eq!(status_of(pod(waiting.clone(), false)), "ImagePullBackOff");
    assert_eq!(status_of(pod(waiting, true)), "Terminating");
    let init = json!({"phase": "Pending", "initContainerStatuses": [
        {"name": "init", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]});
    assert_eq!(status_of(pod(init, false)), "Init:CrashLoopBackOff");
    let initializing = json!({"phase": "Pending", "initContainerStatuses": [
        {"name": "init", "state": {"running": {}}}]});
    assert_eq!(status_of(pod(initializing, false)), "Init:0/1");
    let exited = json!({"phase": "Running", "containerStatuses": [
        {"name": "a", "state": {"terminated": {"exitCode": 2}}}]});
    assert_eq!(status_of(pod(exited, false)), "ExitCode:2");
}

#[test]
fn deployment_rows_show_ready_over_desired() {
    let deployment = json!({
        "metadata": {"name": "web", "creationTimestamp": "2025-12-31T20:55:00Z"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [
                {"name": "app", "image": "nginx:1.27"},
                {"name": "log", "image": "busybox"},
            ]}},
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    });
    let resource = kind("apps", "Deployment");
    let table = render_table(
        &resource,
        &[deployment],
        IncludeObject::None,
        json!({}),
        now(),
    );
    assert_eq!(
        headers(&table),
        [
            "Name",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
            "Containers",
            "Images",
            "Selector"
        ]
    );
    assert_eq!(
        first_row(&table),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("3h10m"),
            json!("app,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web"),
        ]
    );
    assert_eq!(table["rows"][0]["object"], Value::Null);
}

#[test]
fn service_rows_show_ports_and_addresses() {
    let service = json!({
        "metadata": {"name": "web", "creationTimestamp": CREATED},
        "spec": {
            "type": "LoadBalancer",
            "clusterIPs": ["10.96.0.10"],
            "selector": {"tier": "front", "app": "web"},
            "ports": [
                {"port": 80, "protocol": "TCP"},
                {"port": 443, "nodePort": 30443, "protocol": "TCP"},
            ],
        },
    });
    assert_eq!(
        cells(&kind("", "Service"), service),
        [
            json!("web"),
            json!("LoadBalancer"),
            json!("10.96.0.10"),
            json!("<pending>"),
            json!("80/TCP,443:30443/TCP"),
            json!("5m"),
            json!("app=web,tier=front"),
        ]
    );
}

#[test]
fn other_kinds_render_their_upstream_cells() {
    let node = json!({
        "metadata": {"name": "n1", "creationTimestamp": CREATED,
                     "labels": {"node-role.kubernetes.io/control-plane": ""}},
        "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "nodeInfo": {"kubeletVersion": "v1.37.0"},
                   "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}]},
    });
    let row = cells(&kind("", "Node"), node);
    assert_eq!(
        row[..6],
        [
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("control-plane"),
            json!("5m"),
            json!("v1.37.0"),
            json!("192.168.1.2"),
        ]
    );
    let endpoints = json!({"metadata": {"name": "e"}, "subsets": [{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
        "ports": [{"port": 80}, {"port": 443}],
    }]});
    assert_eq!(
        cells(&kind("", "Endpoints"), endpoints)[1],
        "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
    );
    let job = json!({"metadata": {"name": "j"},
        "spec": {"completions": 3},
        "status": {"succeeded": 1, "startTime": "2026-01-01T00:00:00Z",
                   "completionTime": "2026-01-01T00:00:45Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}});
    assert_eq!(
        cells(&kind("batch", "Job"), job)[1..4],
        [json!("Complete"), json!("1/3"), json!("45s")]
    );
    let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "", "b": ""}});
    assert_eq!(
        cells(&kind("", "Secret"), secret)[1..3],
        [json!("Opaque"), json!(2)]
    );
}

#[test]
fn events_and_default_tables_lay_out_their_own_columns() {
    let events = render_table(
        &kind("", "Event"),
        &[],
        IncludeObject::None,
        json!({}),
        now(),
    );
    assert_eq!(
        headers(&events),
        [
            "Last Seen",
            "Type",
            "Reason",
            "Object",
            "Subobject",
            "Source",
            "Message",
            "First Seen",
            "Count",
            "Name"
        ]
    );
    let event = json!({
        "metadata": {"name": "web.1"},
        "involvedObject": {"kind": "Pod", "name": "web"},
        "type": "Normal", "reason": "Pulled", "message": " pulled \n",
        "source": {"component": "kubelet", "host": "n1"},
    });
    let row = cells(&kind("", "Event"), event);
    assert_eq!(
        row[1..7],
        [
            json!("Normal"),
            json!("Pulled"),
            json!("pod/web"),
            json!(""),
            json!("kubelet, n1"),
            json!("pulled")
        ]
    );
    assert_eq!(row[8..], [json!(1), json!("web.1")]);

    let role = json!({"metadata": {"name": "admin", "creationTimestamp": CREATED}});
    let table = render_table(
        &kind("rbac.authorization.k8s.io", "ClusterRole"),
        &[role],
        IncludeObject::None,
        json!({}),
        now(),
    );
    assert_eq!(headers(&table), ["Name", "Created At"]);
    assert_eq!(first_row(&table), [json!("admin"), json!(CREATED)]);
}

#[test]
fn custom_resource_columns_read_paths_by_type() {
    let mut resource = kind("apps", "Deployment");
    let path = |name: &str, column_type: &str, path: &str| Column {
        name: name.to_string(),
        column_type: column_type.to_string(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        value: ColumnValue::Path(path.to_string()),
    };
    resource.columns = vec![
        path("Replicas", "integer", ".spec.replicas"),
        path("Phase", "string", ".status.phase"),
        path("First", "string", ".status.items[1].name"),
        path("Since", "date", ".status.since"),
        path("Created", "date", ".metadata.creationTimestamp"),
    ];
    let object = json!({
        "metadata": {"name": "c", "creationTimestamp": CREATED},
        "spec": {"replicas": 2.0},
        "status": {"items": [{"name": "a"}, {"name": "b"}], "since": "2026-01-01T00:04:15Z"},
    });
    let table = render_table(
        &resource,
        &[object],
        IncludeObject::Object,
        json!({}),
        now(),
    );
    assert_eq!(
        headers(&table),
        ["Name", "Replicas", "Phase", "First", "Since", "Created"],
        "custom columns are shown as listed"
    );
    assert_eq!(
        first_row(&table),
        [
            json!("c"),
            json!(2),
            Value::Null,
            json!("b"),
            json!("45s"),
            json!("5m")
        ]
    );
    assert_eq!(table["rows"][0]["object"]["spec"]["replicas"], 2.0);

    resource.columns.truncate(2);
    let table = render_table(&resource, &[], IncludeObject::None, json!({}), now());
    assert_eq!(
        headers(&table),
        ["Name", "Replicas", "Phase"],
        "custom columns get no AGE added"
    );
    resource.columns.clear();
    let table = render_table(&resource, &[], IncludeObject::None, json!({}), now());
    assert_eq!(headers(&table), ["Name", "Age"]);
    assert_eq!(table["columnDefinitions"][1]["type"], "date");
}

#[test]
fn single_objects_render_one_row_tables_for_watch_events() {
    let pod =
        json!({"metadata": {"name": "web", "resourceVersion": "7", "creationTimestamp": CREATED}});
    let first = render_object_table(&kind("", "Pod"), &pod, IncludeObject::None, true, now());
    assert_eq!(first["metadata"], json!({"resourceVersion": "7"}));
    assert_eq!(first["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(headers(&first)[0], "Name");
    let later = render_object_table(&kind("", "Pod"), &pod, IncludeObject::None, false, now());
    assert_eq!(later["columnDefinitions"], Value::Null);
    assert_eq!(first_row(&later)[2], "");
}
