//! The codec against prost + k8s-pb (an independent protobuf implementation of the same
//! types), JSON round trips, and malformed input.

#![allow(clippy::unwrap_used)]

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message as _;
use serde_json::{Value, json};

use super::{MAGIC, ProtobufError, decode_object, encode_object, supports};

mod fixtures;
use fixtures::*;

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

/// k8s-openapi's serde (the JSON names Kubernetes uses) reads and writes `object` unchanged.
fn assert_k8s_openapi_agrees<T>(object: Value)
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_json::from_value(object.clone()).unwrap();
    assert_eq!(serde_json::to_value(typed).unwrap(), object);
}

#[test]
fn decoded_json_uses_the_names_k8s_openapi_uses() {
    use k8s_openapi::api::{apps::v1 as apps_json, core::v1 as core_json};
    let decode = |bytes: Vec<u8>| decode_object(&bytes).unwrap();
    assert_k8s_openapi_agrees::<core_json::ConfigMap>(decode(body(
        "v1",
        "ConfigMap",
        &config_map(),
    )));
    assert_k8s_openapi_agrees::<core_json::Namespace>(decode(body(
        "v1",
        "Namespace",
        &namespace(),
    )));
    assert_k8s_openapi_agrees::<core_json::Secret>(decode(body("v1", "Secret", &secret())));
    assert_k8s_openapi_agrees::<apps_json::Deployment>(decode(body(
        "apps/v1",
        "Deployment",
        &deployment(),
    )));
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
