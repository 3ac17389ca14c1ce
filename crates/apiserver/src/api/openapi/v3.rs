//! OpenAPI v3: the index at `/openapi/v3` and one document per group/version.
//!
//! kubectl ≥ 1.27 reads these for `explain`, client-side apply (patch metadata) and to learn
//! whether a kind's PATCH operations accept `fieldValidation`. Each document holds the paths of
//! one group/version and, in `components.schemas`, every definition they reach.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{
    Body, Operation, QUERY_PARAMETERS, Route, custom_definitions, document_hash,
    group_version_path, route_definitions, routes,
};
use crate::registry::{Catalog, V3_REF_PREFIX, direct_references, reachable_definitions};

/// `/openapi/v3`: the path of every group/version document, with a content hash so clients
/// can cache them.
pub fn v3_index(catalog: &Catalog) -> Value {
    index_of(&all_documents(catalog))
}

/// The index of already built documents.
pub(crate) fn index_of(documents: &BTreeMap<String, Value>) -> Value {
    let paths: Map<String, Value> = documents
        .iter()
        .map(|(path, document)| {
            let url = format!("/openapi/v3/{path}?hash={}", document_hash(document));
            (path.clone(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

/// Every group/version document, by path.
pub(crate) fn all_documents(catalog: &Catalog) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for group in catalog.groups() {
        for version in &group.versions {
            let path = group_version_path(&group.group, version);
            if let Some(document) = v3_document(catalog, &path) {
                out.insert(path, document);
            }
        }
    }
    out
}

/// `/openapi/v3/<path>` for `api/v1` or `apis/<group>/<version>`; `None` when nothing is
/// served there.
pub fn v3_document(catalog: &Catalog, path: &str) -> Option<Value> {
    let path = path.trim_matches('/');
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => (String::new(), version.to_string()),
        ["apis", group, version] => (group.to_string(), version.to_string()),
        _ => return None,
    };
    let kinds = catalog.in_group_version(&group, &version);
    if kinds.is_empty() {
        return None;
    }
    let routes: Vec<Route> = kinds.iter().flat_map(|k| routes(k)).collect();
    let custom = custom_definitions(&kinds);
    let mut roots = route_definitions(&routes);
    for schema in custom.values() {
        direct_references(schema, &mut roots);
    }
    let mut schemas: Map<String, Value> = reachable_definitions(&roots).into_iter().collect();
    schemas.extend(custom);
    let mut paths = Map::new();
    for route in &routes {
        paths.insert(route.path.clone(), path_item(route));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.37.0" },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
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
                "schema": { "type": "string", "uniqueItems": true },
            })
        })
        .collect();
    if !parameters.is_empty() {
        item.insert("parameters".into(), Value::Array(parameters));
    }
    for operation in &route.operations {
        item.insert(operation.method.into(), v3_operation(operation));
    }
    Value::Object(item)
}

fn schema_ref(definition: &str) -> Value {
    json!({ "$ref": format!("{V3_REF_PREFIX}{definition}") })
}

fn v3_operation(operation: &Operation) -> Value {
    let parameters: Vec<Value> = operation
        .query
        .iter()
        .filter_map(|name| QUERY_PARAMETERS.iter().find(|(n, _, _)| n == name))
        .map(|(name, kind, description)| {
            json!({
                "name": name,
                "in": "query",
                "description": description,
                "schema": { "type": kind, "uniqueItems": true },
            })
        })
        .collect();
    let response = schema_ref(&operation.response);
    let mut responses = Map::new();
    for code in operation.codes {
        responses.insert(
            code.to_string(),
            json!({
                "description": "OK",
                "content": {
                    "application/json": { "schema": response },
                    "application/yaml": { "schema": response },
                },
            }),
        );
    }
    responses.insert("401".into(), json!({ "description": "Unauthorized" }));
    let (group, version, kind) = &operation.gvk;
    let mut out = json!({
        "description": operation.description,
        "operationId": operation.id,
        "parameters": parameters,
        "responses": responses,
        "x-kubernetes-action": operation.action,
        "x-kubernetes-group-version-kind": { "group": group, "version": version, "kind": kind },
    });
    if let Some(body) = &operation.body {
        out["requestBody"] = request_body(body);
    }
    out
}

fn request_body(body: &Body) -> Value {
    let (types, definition): (Vec<&str>, &str) = match body {
        Body::Object(definition) => (vec!["*/*"], definition),
        Body::DeleteOptions => (
            vec!["*/*"],
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        ),
        Body::Patch { strategic } => {
            let mut types = vec![
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
            ];
            if *strategic {
                types.push("application/strategic-merge-patch+json");
            }
            (types, "io.k8s.apimachinery.pkg.apis.meta.v1.Patch")
        }
    };
    let content: Map<String, Value> = types
        .into_iter()
        .map(|t| (t.to_string(), json!({ "schema": schema_ref(definition) })))
        .collect();
    let required = !matches!(body, Body::DeleteOptions);
    json!({ "content": content, "required": required })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{SchemaSource, builtin_types};
    use std::sync::Arc;

    #[test]
    fn apps_v1_post_deployments_declares_field_validation_and_gvk() {
        let catalog = Catalog::new(builtin_types());
        let document = v3_document(&catalog, "apis/apps/v1").expect("apps/v1 document");
        let post = &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"];
        assert_eq!(post["x-kubernetes-action"], "post");
        assert_eq!(
            post["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert_eq!(post["operationId"], "createAppsV1NamespacedDeployment");
        let names: Vec<&str> = post["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(names.contains(&"fieldValidation") && names.contains(&"dryRun"));
        let scale = &document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
            ["patch"];
        assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    }

    #[test]
    fn documents_carry_every_definition_they_reference() {
        let catalog = Catalog::new(builtin_types());
        for (path, document) in all_documents(&catalog) {
            let schemas = &document["components"]["schemas"];
            let mut references = Vec::new();
            direct_references(&document, &mut references);
            for name in references {
                assert!(schemas.get(&name).is_some(), "{path}: {name}");
            }
        }
        let core = v3_document(&catalog, "api/v1").expect("core document");
        let spec = &core["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"];
        assert_eq!(
            spec["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
    }

    #[test]
    fn index_lists_core_apps_and_apiextensions() {
        let index = v3_index(&Catalog::new(builtin_types()));
        for path in ["api/v1", "apis/apps/v1", "apis/apiextensions.k8s.io/v1"] {
            let url = index["paths"][path]["serverRelativeURL"]
                .as_str()
                .unwrap_or_else(|| panic!("{path} missing"));
            assert!(url.starts_with(&format!("/openapi/v3/{path}?hash=")));
        }
    }

    #[test]
    fn custom_resources_get_a_named_schema_with_gvk() {
        let mut types = builtin_types();
        let mut widget = types[0].clone();
        widget.group = "example.io".into();
        widget.version = "v1".into();
        widget.resource = "widgets".into();
        widget.kind = "Widget".into();
        widget.strategic_merge = false;
        widget.schema = SchemaSource::Inline(Arc::new(json!({
            "type": "object",
            "properties": { "spec": { "type": "object", "properties": { "size": { "type": "integer" } } } },
        })));
        types.push(widget);
        let document = v3_document(&Catalog::new(types), "apis/example.io/v1").expect("document");
        let schemas = &document["components"]["schemas"];
        let widget = &schemas["io.example.v1.Widget"];
        assert_eq!(
            widget["x-kubernetes-group-version-kind"][0]["kind"],
            "Widget"
        );
        assert_eq!(
            widget["properties"]["spec"]["properties"]["size"]["type"],
            "integer"
        );
        assert!(
            schemas
                .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
                .is_some()
        );
        assert!(schemas.get("io.example.v1.WidgetList").is_some());
    }
}
