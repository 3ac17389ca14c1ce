//! The codec against prost + k8s-pb (an independent protobuf implementation of the same
//! types), JSON round trips, and malformed input.

#![allow(clippy::unwrap_used)]

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message as _;
use serde_json::{Value, json};

use super::{MAGIC, ProtobufError, decode_object, encode_object, supports};

/// A request body as kubectl builds it: magic + runtime.Unknown, encoded by prost.
fn body(api_version: &str, kind: &str, object: &impl prost::Message) -> Vec<u8> {
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

/// Encode JSON with our encoder, check the envelope with prost, return the raw object.
fn encode_and_unwrap(object: &Value) -> Vec<u8> {
    let encoded = encode_object(object).unwrap();
    let envelope = encoded
        .strip_prefix(&MAGIC)
        .expect("responses start with the magic");
    let unknown = Unknown::decode(envelope).unwrap();
    let type_meta = unknown.type_meta.unwrap();
    assert_eq!(
        type_meta.api_version.as_deref(),
        object["apiVersion"].as_str()
    );
    assert_eq!(type_meta.kind.as_deref(), object["kind"].as_str());
    unknown.raw.unwrap()
}

fn strings<const N: usize>(pairs: [(&str, &str); N]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn int_or_string_int(value: i32) -> IntOrString {
    // as Go writes it: all three fields, always
    IntOrString {
        r#type: Some(0),
        int_val: Some(value),
        str_val: Some(String::new()),
    }
}

fn int_or_string_str(value: &str) -> IntOrString {
    IntOrString {
        r#type: Some(1),
        int_val: Some(0),
        str_val: Some(value.into()),
    }
}

fn quantity(value: &str) -> Quantity {
    Quantity {
        string: Some(value.into()),
    }
}

fn config_map() -> core::ConfigMap {
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

fn config_map_json() -> Value {
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

fn namespace() -> core::Namespace {
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

fn namespace_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a"},
        "spec": {"finalizers": ["kubernetes"]}
    })
}

fn secret() -> core::Secret {
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

fn secret_json() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "team-a"},
        "immutable": false,
        "data": {"password": "czNjcmV0"},
        "type": "Opaque"
    })
}

fn container(name: &str, image: &str, port: i32) -> core::Container {
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

fn deployment() -> apps::Deployment {
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

fn container_json(name: &str, image: &str, port: i64) -> Value {
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

fn deployment_json() -> Value {
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

#[test]
fn kubectl_bodies_decode_to_the_json_the_api_server_accepts() {
    let cases = [
        (body("v1", "ConfigMap", &config_map()), config_map_json()),
        (body("v1", "Namespace", &namespace()), namespace_json()),
        (body("v1", "Secret", &secret()), secret_json()),
        (
            body("apps/v1", "Deployment", &deployment()),
            deployment_json(),
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(decode_object(&bytes).unwrap(), expected);
    }
}

#[test]
fn encoded_objects_decode_with_prost_to_the_same_values() {
    let raw = encode_and_unwrap(&config_map_json());
    assert_eq!(
        core::ConfigMap::decode(raw.as_slice()).unwrap(),
        config_map()
    );
    let raw = encode_and_unwrap(&namespace_json());
    assert_eq!(
        core::Namespace::decode(raw.as_slice()).unwrap(),
        namespace()
    );
    let raw = encode_and_unwrap(&secret_json());
    assert_eq!(core::Secret::decode(raw.as_slice()).unwrap(), secret());
    let raw = encode_and_unwrap(&deployment_json());
    let decoded = apps::Deployment::decode(raw.as_slice()).unwrap();
    let spec = decoded.spec.as_ref().unwrap();
    assert_eq!(
        spec.replicas,
        Some(0),
        "replicas: 0 is present, not dropped"
    );
    assert_eq!(decoded, deployment());
}

fn config_map_list_json() -> Value {
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

fn status_json() -> Value {
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

#[test]
fn json_survives_encode_then_decode() {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "capstan-leader", "namespace": "kube-system"},
        "spec": {
            "holderIdentity": "server-1",
            "leaseDurationSeconds": 15,
            "renewTime": "2026-11-24T20:00:00.123456Z"
        }
    });
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "names": {"plural": "widgets", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "spec": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "additionalProperties": false,
                            "properties": {
                                "size": {"type": "integer", "minimum": 1.5, "default": 3},
                                "mode": {"type": "string", "enum": ["a", "b"]},
                                "tags": {"type": "array", "items": {"type": "string"}},
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "ref": {"$ref": "#/definitions/x"}
                            },
                            "x-kubernetes-validations": [{"rule": "self.size < 10"}]
                        }
                    }
                }}
            }]
        }
    });
    let revision = json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {"name": "web-1"},
        "data": {"spec": {"template": {"x": [1, 2, {"y": null}]}}},
        "revision": 1
    });
    for object in [
        config_map_json(),
        namespace_json(),
        secret_json(),
        deployment_json(),
        config_map_list_json(),
        status_json(),
        lease,
        crd,
        revision,
    ] {
        let encoded = encode_object(&object).unwrap();
        assert_eq!(decode_object(&encoded).unwrap(), object);
    }
}

#[test]
fn status_under_meta_k8s_io_is_supported_too() {
    let mut status = status_json();
    status["apiVersion"] = json!("meta.k8s.io/v1");
    assert!(supports("meta.k8s.io/v1", "Status"));
    assert_eq!(
        decode_object(&encode_object(&status).unwrap()).unwrap(),
        status
    );
    let raw = encode_and_unwrap(&status);
    let decoded = meta::Status::decode(raw.as_slice()).unwrap();
    assert_eq!(decoded.code, Some(409));
    assert_eq!(decoded.reason.as_deref(), Some("AlreadyExists"));
}

#[test]
fn go_zero_values_for_unset_fields_are_omitted_and_unknown_fields_skipped() {
    // Go writes non-pointer fields even when empty: "" strings, and a zero
    // creationTimestamp as an empty message
    let mut map = config_map();
    let metadata = map.metadata.as_mut().unwrap();
    metadata.generate_name = Some(String::new());
    metadata.creation_timestamp = Some(meta::Time::default());
    metadata.deletion_timestamp = Some(meta::Time {
        seconds: Some(0),
        nanos: Some(0),
    });
    let mut raw = map.encode_to_vec();
    // field 99 (varint) and field 100 (bytes): from a newer client, to be skipped
    raw.extend_from_slice(&[0x98, 0x06, 0x01, 0xa2, 0x06, 0x02, b'h', b'i']);
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
        }),
        raw: Some(raw),
        ..Default::default()
    };
    let decoded = decode_object(&[MAGIC.to_vec(), unknown.encode_to_vec()].concat()).unwrap();
    let mut expected = config_map_json();
    expected["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("creationTimestamp");
    // a timestamp that is on the wire, even at the epoch, is a timestamp
    expected["metadata"]["deletionTimestamp"] = json!("1970-01-01T00:00:00Z");
    assert_eq!(decoded, expected);
}

fn error_of(bytes: &[u8]) -> String {
    decode_object(bytes).unwrap_err().to_string()
}

#[test]
fn malformed_bodies_are_errors_that_say_what_is_wrong() {
    assert!(matches!(
        decode_object(b""),
        Err(ProtobufError::MissingMagic)
    ));
    assert!(error_of(b"{\"kind\":\"ConfigMap\"}").contains("missing k8s magic prefix"));
    assert!(error_of(b"k8s").contains("missing k8s magic prefix"));
    assert!(error_of(b"k8s\0").contains("without typeMeta"));

    let good = body("v1", "ConfigMap", &config_map());
    assert!(error_of(&good[..good.len() - 3]).starts_with("protobuf body: truncated"));

    // binaryData (field 3) sent as a varint
    let wrong_wire = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
        }),
        raw: Some(vec![0x18, 0x01]),
        ..Default::default()
    };
    assert_eq!(
        error_of(&[MAGIC.to_vec(), wrong_wire.encode_to_vec()].concat()),
        "protobuf body: field 3 of io.k8s.api.core.v1.ConfigMap: wire type 0, expected length-delimited"
    );

    let unknown_kind = body("apps/v1", "Foo", &config_map());
    assert!(
        error_of(&unknown_kind).starts_with("protobuf body: unknown kind apps/v1 Foo"),
        "{}",
        error_of(&unknown_kind)
    );
    assert!(!supports("apps/v1", "Foo"));

    // a namespace name that is not UTF-8
    let bad_utf8 = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("Namespace".into()),
        }),
        raw: Some(vec![0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28]),
        ..Default::default()
    };
    assert!(error_of(&[MAGIC.to_vec(), bad_utf8.encode_to_vec()].concat()).contains("UTF-8"));

    let gzipped = Unknown {
        content_encoding: Some("gzip".into()),
        ..Unknown::decode(&good[4..]).unwrap()
    };
    assert!(error_of(&[MAGIC.to_vec(), gzipped.encode_to_vec()].concat()).contains("gzip"));
}

/// A CRD body whose openAPIV3Schema nests `not` (JSONSchemaProps field 28) `levels` deep.
fn nested_crd_body(levels: usize) -> Vec<u8> {
    let mut schema = Vec::new();
    for _ in 0..levels {
        let mut outer = Vec::new();
        super::wire::put_bytes(&mut outer, 28, &schema);
        schema = outer;
    }
    let mut validation = Vec::new();
    super::wire::put_bytes(&mut validation, 1, &schema);
    let mut version = Vec::new();
    super::wire::put_bytes(&mut version, 4, &validation);
    let mut spec = Vec::new();
    super::wire::put_bytes(&mut spec, 7, &version);
    let mut crd = Vec::new();
    super::wire::put_bytes(&mut crd, 2, &spec);
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("apiextensions.k8s.io/v1".into()),
            kind: Some("CustomResourceDefinition".into()),
        }),
        raw: Some(crd),
        ..Default::default()
    };
    [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let error = error_of(&nested_crd_body(1_000));
    assert!(error.contains("nested deeper"), "{error}");
}

#[test]
fn embedded_protobuf_objects_decode_and_share_the_nesting_limit() {
    let revision = |data: Vec<u8>| apps::ControllerRevision {
        metadata: Some(meta::ObjectMeta {
            name: Some("web-1".into()),
            ..Default::default()
        }),
        data: Some(k8s_pb::apimachinery::pkg::runtime::RawExtension { raw: Some(data) }),
        revision: Some(1),
    };
    let decoded = decode_object(&body(
        "apps/v1",
        "ControllerRevision",
        &revision(body("v1", "ConfigMap", &config_map())),
    ))
    .unwrap();
    assert_eq!(decoded["data"], config_map_json());

    let mut nested = body("v1", "ConfigMap", &config_map());
    for _ in 0..1_000 {
        nested = body("apps/v1", "ControllerRevision", &revision(nested));
    }
    assert!(error_of(&nested).contains("nested deeper"));
}

#[test]
fn nesting_up_to_the_limit_fits_a_small_stack() {
    // what the limit allows must fit in half of a tokio worker's 2 MiB stack, even unoptimised
    let body = nested_crd_body(super::MAX_DEPTH - 6);
    let decoded = std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(move || decode_object(&body).map(|object| encode_object(&object)))
        .unwrap()
        .join()
        .unwrap();
    assert!(decoded.unwrap().is_ok());
}

#[test]
fn every_truncation_and_byte_flip_of_a_real_body_is_handled_without_panic() {
    let good = body("apps/v1", "Deployment", &deployment());
    for len in 0..good.len() {
        let _ = decode_object(&good[..len]);
    }
    for index in 4..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bytes = good.clone();
            bytes[index] ^= flip;
            let _ = decode_object(&bytes);
        }
    }
}

#[test]
fn json_of_the_wrong_shape_is_an_error_naming_the_field() {
    let mut object = deployment_json();
    object["spec"]["replicas"] = json!("three");
    let error = encode_object(&object).unwrap_err().to_string();
    assert_eq!(
        error,
        "protobuf encoding of Deployment: field spec.replicas: expected an integer"
    );
    object["spec"]["replicas"] = json!(1);
    object["spec"]["template"]["spec"]["containers"][1]["ports"][0]["containerPort"] =
        json!(1u64 << 40);
    let error = encode_object(&object).unwrap_err().to_string();
    assert!(
        error.contains("spec.template.spec.containers.1.ports.0.containerPort"),
        "{error}"
    );
    assert!(matches!(
        encode_object(&json!({"apiVersion": "v1", "kind": "Nope"})),
        Err(ProtobufError::UnknownKind { .. })
    ));
    assert!(encode_object(&json!(["not", "an", "object"])).is_err());
    let mut secret = secret_json();
    secret["data"]["password"] = json!("not base64!");
    assert!(
        encode_object(&secret)
            .unwrap_err()
            .to_string()
            .contains("data.password")
    );
}
