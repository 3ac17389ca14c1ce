//! Objects built two ways, as k8s-pb (prost) values the way Go clients write them and
//! as the JSON the Kubernetes API server reads, for the tests to compare.

#![allow(clippy::unwrap_used)]

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::{Value, json};

use super::super::MAGIC;

/// A request body as kubectl builds it: magic + runtime.Unknown, encoded by prost.
pub(super) fn body(api_version: &str, kind: &str, object: &impl prost::Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
}

pub(super) fn strings<const N: usize>(
    pairs: [(&str, &str); N],
) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn int_or_string_int(value: i32) -> IntOrString {
    // as Go writes it: all three fields, always
    IntOrString {
        r#type: Some(0),
        int_val: Some(value),
        str_val: Some(String::new()),
    }
}

pub(super) fn int_or_string_str(value: &str) -> IntOrString {
    IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: Some(value.into()),
    }
}

pub(super) fn quantity(value: &str) -> Quantity {
    Quantity {
        string: Some(value.into()),
    }
}

pub(super) fn config_map() -> core::ConfigMap {
    core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: Some("settings".into()),
            namespace: Some("team-a".into()),
            labels: strings([("app", "web"), ("tier", "front")]),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_795_550_400),
                nanos: Some(0),
            }),
            ..Default::default()
        }),
        data: strings([("color", "blue"), ("empty", "")]),
        binary_data: [("blob".to_string(), vec![0u8, 1, 2, 255])].into(),
        immutable: None,
    }
}

pub(super) fn config_map_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "settings",
            "namespace": "team-a",
            "labels": {"app": "web", "tier": "front"},
            "creationTimestamp": "2026-11-24T20:00:00Z"
        },
        "data": {"color": "blue", "empty": ""},
        "binaryData": {"blob": "AAEC/w=="}
    })
}

pub(super) fn namespace() -> core::Namespace {
    core::Namespace {
        metadata: Some(meta::ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        }),
        spec: Some(core::NamespaceSpec {
            finalizers: vec!["kubernetes".into()],
        }),
        status: None,
    }
}

pub(super) fn namespace_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a"},
        "spec": {"finalizers": ["kubernetes"]}
    })
}

pub(super) fn secret() -> core::Secret {
    core::Secret {
        metadata: Some(meta::ObjectMeta {
            name: Some("db".into()),
            namespace: Some("team-a".into()),
            ..Default::default()
        }),
        immutable: Some(false),
        data: [("password".to_string(), b"s3cret".to_vec())].into(),
        string_data: Default::default(),
        r#type: Some("Opaque".into()),
    }
}

pub(super) fn secret_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "team-a"},
        "immutable": false,
        "data": {"password": "czNjcmV0"},
        "type": "Opaque"
    })
}

pub(super) fn container(name: &str, image: &str, port: i32) -> core::Container {
    core::Container {
        name: Some(name.into()),
        image: Some(image.into()),
        args: vec!["--port".into(), port.to_string()],
        ports: vec![core::ContainerPort {
            name: Some("http".into()),
            container_port: Some(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }],
        env: vec![core::EnvVar {
            name: Some("MODE".into()),
            value: Some("production".into()),
            value_from: None,
        }],
        resources: Some(core::ResourceRequirements {
            limits: [("memory".to_string(), quantity("128Mi"))].into(),
            requests: [
                ("cpu".to_string(), quantity("100m")),
                ("memory".to_string(), quantity("64Mi")),
            ]
            .into(),
            claims: vec![],
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: Some("/healthz".into()),
                    port: Some(int_or_string_str("http")),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn deployment() -> apps::Deployment {
    let labels = strings([("app", "web")]);
    let mut sidecar = container("proxy", "envoy:1.30", 9901);
    sidecar.readiness_probe = Some(core::Probe {
        handler: Some(core::ProbeHandler {
            tcp_socket: Some(core::TcpSocketAction {
                port: Some(int_or_string_int(9901)),
                host: None,
            }),
            ..Default::default()
        }),
        initial_delay_seconds: Some(0),
        ..Default::default()
    });
    apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            namespace: Some("team-a".into()),
            labels: labels.clone(),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: labels.clone(),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels,
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![container("web", "nginx:1.27", 8080), sidecar],
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: Some(int_or_string_int(1)),
                    max_surge: Some(int_or_string_str("25%")),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

pub(super) fn container_json(name: &str, image: &str, port: i64) -> Value {
    json!({
        "name": name,
        "image": image,
        "args": ["--port", port.to_string()],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [{"name": "MODE", "value": "production"}],
        "resources": {
            "limits": {"memory": "128Mi"},
            "requests": {"cpu": "100m", "memory": "64Mi"}
        },
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5}
    })
}

pub(super) fn deployment_json() -> Value {
    let mut sidecar = container_json("proxy", "envoy:1.30", 9901);
    sidecar["readinessProbe"] = json!({"tcpSocket": {"port": 9901}, "initialDelaySeconds": 0});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "team-a", "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [container_json("web", "nginx:1.27", 8080), sidecar],
                    "terminationGracePeriodSeconds": 30
                }
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}
            }
        }
    })
}

pub(super) fn config_map_list_json() -> Value {
    let mut item = config_map_json();
    let item = item.as_object_mut().unwrap();
    item.remove("apiVersion");
    item.remove("kind");
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMapList",
        "metadata": {"resourceVersion": "4711", "continue": "eyJydiI6NDcxMX0"},
        "items": [item, {"metadata": {"name": "second", "namespace": "team-a"}}]
    })
}

pub(super) fn status_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": "configmaps \"settings\" already exists",
        "reason": "AlreadyExists",
        "details": {"name": "settings", "kind": "configmaps"},
        "code": 409
    })
}
