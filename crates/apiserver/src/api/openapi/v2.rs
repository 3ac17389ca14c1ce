//! OpenAPI v2 (Swagger 2.0) at `/openapi/v2`, as JSON and as gnostic protobuf.
//!
//! kubectl ≤ 1.26 reads this document (in protobuf) for client-side validation,
//! `kubectl explain` and the patch metadata of client-side apply; newer kubectl falls back to
//! it when v3 is missing. It is derived from the v3 schemas: `#/definitions/` references,
//! `allOf: [$ref]` folded back to `$ref`, and the v3-only keywords (`oneOf`, `anyOf`, `not`,
//! `nullable`) dropped, as upstream does — kubectl 1.20's validator rejects unknown fields of
//! typed objects, so custom-resource nodes that preserve unknown fields lose their type.

use serde_json::{Map, Value, json};

use super::{Body, Operation, QUERY_PARAMETERS, Route, custom_definitions, gnostic, routes};
use crate::registry::{Catalog, V3_REF_PREFIX, builtin_definitions};

/// Where definitions live in a v2 document.
const V2_REF_PREFIX: &str = "#/definitions/";

/// The Swagger 2.0 document of every served kind, custom resources included.
pub fn v2_document(catalog: &Catalog) -> Value {
    let mut definitions = Map::new();
    for (name, schema) in builtin_definitions() {
        definitions.insert(name.clone(), to_v2_definition(name, schema));
    }
    for (name, schema) in custom_definitions(catalog.all()) {
        let converted = to_v2_definition(&name, &schema);
        definitions.insert(name, converted);
    }
    let mut paths = Map::new();
    for route in catalog.all().iter().flat_map(|kind| routes(kind)) {
        paths.insert(route.path.clone(), path_item(&route));
    }
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "v1.37.0" },
        "paths": paths,
        "definitions": definitions,
    })
}

/// The v2 document as gnostic's `openapi_v2.Document` protobuf, the form kubectl asks for
/// with `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`.
pub fn v2_protobuf(document: &Value) -> Vec<u8> {
    use prost::Message;
    gnostic::document_from_json(document).encode_to_vec()
}

fn to_v2_definition(name: &str, schema: &Value) -> Value {
    let mut converted = to_v2_schema(schema);
    // Upstream's v2 spelling of the two int-or-string scalars.
    match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            converted["type"] = json!("string");
            converted["format"] = json!("int-or-string");
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            converted["type"] = json!("string");
        }
        _ => {}
    }
    converted
}

/// One schema node and its children in v2 form.
fn to_v2_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "oneOf" | "anyOf" | "not" | "nullable" => {}
            "$ref" => {
                let target = value.as_str().unwrap_or_default();
                let name = target.strip_prefix(V3_REF_PREFIX).unwrap_or(target);
                out.insert(key.clone(), json!(format!("{V2_REF_PREFIX}{name}")));
            }
            "allOf" => match value.as_array().map(Vec::as_slice) {
                Some([single]) if single.get("$ref").is_some() => {
                    if let Value::Object(inner) = to_v2_schema(single) {
                        out.extend(inner);
                    }
                }
                Some(items) => {
                    let items: Vec<Value> = items.iter().map(to_v2_schema).collect();
                    out.insert(key.clone(), Value::Array(items));
                }
                None => {}
            },
            "properties" => {
                let properties: Map<String, Value> = value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, property)| (name.clone(), to_v2_schema(property)))
                    .collect();
                out.insert(key.clone(), Value::Object(properties));
            }
            "items" | "additionalProperties" => {
                out.insert(key.clone(), to_v2_schema(value));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    let preserves_unknown = out.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let int_or_string = out.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if preserves_unknown || int_or_string {
        // Untyped nodes are "arbitrary" to kubectl's validator; typed ones reject what the
        // server would keep.
        out.remove("type");
        if preserves_unknown {
            out.remove("properties");
            out.remove("additionalProperties");
            out.remove("required");
        }
    }
    Value::Object(out)
}

fn path_item(route: &Route) -> Value {
    let mut item = Map::new();
    let parameters: Vec<Value> = route
        .path_parameters
        .iter()
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "description": format!("{name} of the object"),
                "required": true,
                "type": "string",
                "uniqueItems": true,
            })
        })
        .collect();
    if !parameters.is_empty() {
        item.insert("parameters".into(), Value::Array(parameters));
    }
    for operation in &route.operations {
        item.insert(operation.method.into(), v2_operation(operation));
    }
    Value::Object(item)
}

fn v2_operation(operation: &Operation) -> Value {
    let mut parameters: Vec<Value> = Vec::new();
    let mut consumes = vec!["*/*"];
    if let Some(body) = &operation.body {
        let definition = match body {
            Body::Object(definition) => definition.as_str(),
            Body::DeleteOptions => "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            Body::Patch { strategic } => {
                consumes = vec![
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                ];
                if *strategic {
                    consumes.push("application/strategic-merge-patch+json");
                }
                "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
            }
        };
        parameters.push(json!({
            "name": "body",
            "in": "body",
            "required": !matches!(body, Body::DeleteOptions),
            "schema": { "$ref": format!("{V2_REF_PREFIX}{definition}") },
        }));
    }
    for (name, kind, description) in operation
        .query
        .iter()
        .filter_map(|name| QUERY_PARAMETERS.iter().find(|(n, _, _)| n == name))
    {
        parameters.push(json!({
            "name": name,
            "in": "query",
            "description": description,
            "type": kind,
            "uniqueItems": true,
        }));
    }
    let mut responses = Map::new();
    for code in operation.codes {
        responses.insert(
            code.to_string(),
            json!({
                "description": "OK",
                "schema": { "$ref": format!("{V2_REF_PREFIX}{}", operation.response) },
            }),
        );
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));
    let (group, version, kind) = &operation.gvk;
    json!({
        "description": operation.description,
        "operationId": operation.id,
        "consumes": consumes,
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "parameters": parameters,
        "responses": responses,
        "x-kubernetes-action": operation.action,
        "x-kubernetes-group-version-kind": { "group": group, "version": version, "kind": kind },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtin_types;

    #[test]
    fn v2_uses_definitions_refs_and_keeps_patch_metadata() {
        let document = v2_document(&Catalog::new(builtin_types()));
        let text = document.to_string();
        assert!(!text.contains(V3_REF_PREFIX));
        let deployment_spec = &document["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"];
        assert_eq!(
            deployment_spec["properties"]["template"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.PodTemplateSpec"
        );
        assert_eq!(
            deployment_spec["properties"]["strategy"]["x-kubernetes-patch-strategy"],
            "retainKeys"
        );
        let patch =
            &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(
            patch["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .any(|p| p["name"] == "dryRun" && p["in"] == "query")
        );
        let int_or_string =
            &document["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(int_or_string["type"], "string");
        assert!(int_or_string.get("oneOf").is_none());
    }

    #[test]
    fn preserved_unknown_fields_become_untyped() {
        let converted = to_v2_schema(&json!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": { "a": { "type": "string" } },
        }));
        assert!(converted.get("type").is_none() && converted.get("properties").is_none());
    }

    /// A gnostic schema back to JSON, writing only what is set (the inverse of
    /// `gnostic::schema` for the keywords Kubernetes uses).
    fn schema_json(schema: &gnostic::Schema) -> Value {
        let mut out = Map::new();
        let mut put_text = |key: &str, value: &str| {
            if !value.is_empty() {
                out.insert(key.into(), json!(value));
            }
        };
        put_text("$ref", &schema.r#ref);
        put_text("format", &schema.format);
        put_text("title", &schema.title);
        put_text("description", &schema.description);
        put_text("pattern", &schema.pattern);
        let parse = |any: &gnostic::Any| serde_json::from_str(&any.yaml).expect("JSON text");
        if let Some(default) = &schema.default {
            out.insert("default".into(), parse(default));
        }
        if !schema.required.is_empty() {
            out.insert("required".into(), json!(schema.required));
        }
        if !schema.r#enum.is_empty() {
            let values: Vec<Value> = schema.r#enum.iter().map(parse).collect();
            out.insert("enum".into(), Value::Array(values));
        }
        if let Some(types) = &schema.r#type {
            match types.value.as_slice() {
                [single] => out.insert("type".into(), json!(single)),
                many => out.insert("type".into(), json!(many)),
            };
        }
        if let Some(additional) = &schema.additional_properties {
            let value = match &additional.oneof {
                Some(gnostic::AdditionalProperties::Boolean(allowed)) => json!(allowed),
                Some(gnostic::AdditionalProperties::Schema(inner)) => schema_json(inner),
                None => Value::Null,
            };
            out.insert("additionalProperties".into(), value);
        }
        if let Some(items) = &schema.items {
            let value = match items.schema.as_slice() {
                [single] => schema_json(single),
                many => Value::Array(many.iter().map(schema_json).collect()),
            };
            out.insert("items".into(), value);
        }
        if !schema.all_of.is_empty() {
            let all: Vec<Value> = schema.all_of.iter().map(schema_json).collect();
            out.insert("allOf".into(), Value::Array(all));
        }
        if let Some(properties) = &schema.properties {
            let map: Map<String, Value> = properties
                .additional_properties
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.value.as_ref().map(schema_json).unwrap_or_default(),
                    )
                })
                .collect();
            out.insert("properties".into(), Value::Object(map));
        }
        if schema.read_only {
            out.insert("readOnly".into(), json!(true));
        }
        if schema.unique_items {
            out.insert("uniqueItems".into(), json!(true));
        }
        for extension in &schema.vendor_extension {
            let value = extension.value.as_ref().map(parse).unwrap_or_default();
            out.insert(extension.name.clone(), value);
        }
        Value::Object(out)
    }

    #[test]
    fn protobuf_decodes_back_with_every_definition_intact() {
        use prost::Message;
        let document = v2_document(&Catalog::new(builtin_types()));
        let bytes = v2_protobuf(&document);
        let decoded = gnostic::Document::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.swagger, "2.0");
        let definitions = decoded
            .definitions
            .expect("definitions")
            .additional_properties;
        let expected = document["definitions"].as_object().expect("definitions");
        assert_eq!(definitions.len(), expected.len());
        for named in &definitions {
            let schema = named.value.as_ref().expect("schema");
            assert_eq!(schema_json(schema), expected[&named.name], "{}", named.name);
        }
        let paths = decoded.paths.expect("paths").path;
        let patch = paths
            .iter()
            .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
            .and_then(|p| p.value.as_ref()?.patch.as_ref())
            .expect("PATCH deployment");
        let query: Vec<&str> = patch
            .parameters
            .iter()
            .filter_map(|p| p.parameter.as_ref()?.non_body_parameter.as_ref())
            .filter_map(|p| p.query_parameter_sub_schema.as_ref())
            .map(|q| q.name.as_str())
            .collect();
        assert!(query.contains(&"dryRun") && query.contains(&"fieldValidation"));
        let gvk = patch
            .vendor_extension
            .iter()
            .find(|e| e.name == "x-kubernetes-group-version-kind")
            .and_then(|e| e.value.as_ref())
            .expect("GVK extension");
        let gvk: Value = serde_json::from_str(&gvk.yaml).expect("JSON text");
        assert_eq!(gvk["kind"], "Deployment");
    }
}
