//! CustomResourceDefinitions as served kinds: the checks kube-apiserver makes before it
//! stores a CRD ([`check_crd_write`], the `validate` hook of `customresourcedefinitions`)
//! and the [`ResourceType`]s a CRD turns into ([`resource_types`], one per served
//! version), which the CRD controller hands to [`super::Registry::set_custom`].
//!
//! A CRD is read as JSON rather than through k8s-openapi types: the core stays generic over
//! kinds, and a half-valid CRD still yields every error at once instead of the first
//! decoding failure.

use std::sync::Arc;

use capstan_machinery::{meta, meta_mut};
use serde_json::Value;

use super::error::FieldError;
use super::kind::{
    Behaviour, Column, ColumnValue, ResourceType, ScalePaths, SchemaSource, Subresources,
};
use super::validate::{check_label, check_subdomain};

/// The API group of CustomResourceDefinitions.
pub const CRD_GROUP: &str = "apiextensions.k8s.io";

/// The finalizer that holds a CRD until every object of its kinds is deleted.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The names of a CRD (`spec.names`) with upstream's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdNames {
    /// `spec.names.plural`, the resource in URLs.
    pub plural: String,
    /// `spec.names.singular`; defaults to the lowercased kind.
    pub singular: String,
    /// `spec.names.kind`.
    pub kind: String,
    /// `spec.names.listKind`; defaults to `<kind>List`.
    pub list_kind: String,
    /// `spec.names.shortNames`.
    pub short_names: Vec<String>,
    /// `spec.names.categories`.
    pub categories: Vec<String>,
}

impl CrdNames {
    /// The names of `crd`.
    pub fn of(crd: &Value) -> CrdNames {
        let names = &crd["spec"]["names"];
        let text = |field: &str| names[field].as_str().unwrap_or("").to_string();
        let list = |field: &str| -> Vec<String> {
            names[field]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let kind = text("kind");
        let singular = Some(text("singular"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| kind.to_lowercase());
        let list_kind = Some(text("listKind"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{kind}List"));
        CrdNames {
            plural: text("plural"),
            singular,
            kind,
            list_kind,
            short_names: list("shortNames"),
            categories: list("categories"),
        }
    }

    /// As `status.acceptedNames` shows them.
    pub fn to_json(&self) -> Value {
        let mut names = serde_json::json!({
            "plural": self.plural,
            "singular": self.singular,
            "kind": self.kind,
            "listKind": self.list_kind,
        });
        if !self.short_names.is_empty() {
            names["shortNames"] = serde_json::json!(self.short_names);
        }
        if !self.categories.is_empty() {
            names["categories"] = serde_json::json!(self.categories);
        }
        names
    }
}

/// The version objects of `crd` are stored in (the one marked `storage`), if exactly one is.
pub fn storage_version(crd: &Value) -> Option<String> {
    let versions = crd["spec"]["versions"].as_array()?;
    let mut storage = versions.iter().filter(|v| v["storage"] == true);
    let found = storage.next()?;
    match storage.next() {
        Some(_) => None,
        None => found["name"].as_str().map(str::to_string),
    }
}

/// The kinds `crd` serves, one per served version; the CRD's problems when it is invalid.
pub fn resource_types(crd: &Value) -> Result<Vec<ResourceType>, Vec<FieldError>> {
    let errors = validate_crd(crd);
    if !errors.is_empty() {
        return Err(errors);
    }
    let spec = &crd["spec"];
    let names = CrdNames::of(crd);
    let group = spec["group"].as_str().unwrap_or("").to_string();
    let namespaced = spec["scope"] == "Namespaced";
    let versions = spec["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    Ok(versions
        .iter()
        .filter(|version| version["served"] == true)
        .map(|version| {
            let subresources = &version["subresources"];
            let status = subresources["status"].is_object();
            let scale = subresources["scale"].as_object().map(|scale| {
                let path = |field: &str| {
                    scale
                        .get(field)
                        .and_then(Value::as_str)
                        .map(|p| p.trim_start_matches('.').to_string())
                };
                ScalePaths {
                    spec_replicas: path("specReplicasPath").unwrap_or_default(),
                    status_replicas: path("statusReplicasPath").unwrap_or_default(),
                    label_selector: path("labelSelectorPath"),
                }
            });
            ResourceType {
                group: group.clone(),
                version: version["name"].as_str().unwrap_or("").to_string(),
                resource: names.plural.clone(),
                singular: names.singular.clone(),
                kind: names.kind.clone(),
                namespaced,
                short_names: names.short_names.clone(),
                categories: names.categories.clone(),
                subresources: Subresources {
                    status,
                    scale,
                    binding: false,
                    finalize: false,
                },
                columns: columns(version),
                field_selectors: selectable_fields(version),
                schema: SchemaSource::Inline(Arc::new(
                    version["schema"]["openAPIV3Schema"].clone(),
                )),
                strategic_merge: false,
                has_spec_generation: true,
                behaviour: Behaviour::DEFAULT,
            }
        })
        .collect())
}

fn columns(version: &Value) -> Vec<Column> {
    let listed = version["additionalPrinterColumns"].as_array();
    listed
        .into_iter()
        .flatten()
        .map(|column| {
            let text = |field: &str| column[field].as_str().unwrap_or("").to_string();
            Column {
                name: text("name"),
                column_type: text("type"),
                format: text("format"),
                description: text("description"),
                priority: column["priority"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                    .unwrap_or(0),
                value: ColumnValue::Path(text("jsonPath")),
            }
        })
        .collect()
}

fn selectable_fields(version: &Value) -> Vec<(String, String)> {
    let listed = version["selectableFields"].as_array();
    listed
        .into_iter()
        .flatten()
        .filter_map(|field| field["jsonPath"].as_str())
        .map(|path| {
            let path = path.trim_start_matches('.').to_string();
            (path.clone(), path)
        })
        .collect()
}

fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
    FieldError::invalid(field, value, detail)
}

fn required(field: &str, detail: &str) -> FieldError {
    FieldError::required(field, detail)
}

/// What kube-apiserver refuses in a CRD on create and update (the checks that matter to
/// serving it): name, group, names, scope, versions, schemas, subresources, columns.
pub fn validate_crd(crd: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or("");
    let names = CrdNames::of(crd);
    if group.is_empty() {
        errors.push(required("spec.group", "must not be empty"));
    } else if let Some(problem) = check_subdomain(group) {
        errors.push(invalid("spec.group", group, &problem));
    } else if !group.contains('.') {
        errors.push(invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    let name = meta(crd).name().unwrap_or("");
    let expected = format!("{}.{group}", names.plural);
    if name != expected {
        errors.push(invalid(
            "metadata.name",
            name,
            &format!("must be spec.names.plural+\".\"+spec.group (\"{expected}\")"),
        ));
    }
    check_names(&names, &mut errors);
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        None | Some("") => errors.push(required("spec.scope", "")),
        Some(other) => errors.push(FieldError {
            field: "spec.scope".to_string(),
            cause: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{other}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        }),
    }
    check_versions(spec, &mut errors);
    errors
}

fn check_names(names: &CrdNames, errors: &mut Vec<FieldError>) {
    let lowercase = [
        ("spec.names.plural", &names.plural),
        ("spec.names.singular", &names.singular),
    ];
    for (field, value) in lowercase {
        if value.is_empty() {
            errors.push(required(field, ""));
        } else if let Some(problem) = check_label(value) {
            errors.push(invalid(field, value, &problem));
        }
    }
    for (index, short) in names.short_names.iter().enumerate() {
        if let Some(problem) = check_label(short) {
            errors.push(invalid(
                &format!("spec.names.shortNames[{index}]"),
                short,
                &problem,
            ));
        }
    }
    let kinds = [
        ("spec.names.kind", &names.kind),
        ("spec.names.listKind", &names.list_kind),
    ];
    for (field, value) in kinds {
        let well_formed = value.starts_with(|c: char| c.is_ascii_alphabetic())
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if value.is_empty() {
            errors.push(required(field, ""));
        } else if !well_formed {
            errors.push(invalid(
                field,
                value,
                "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?",
            ));
        }
    }
    if !names.kind.is_empty() && names.kind == names.list_kind {
        errors.push(invalid(
            "spec.names.listKind",
            &names.list_kind,
            "kind and listKind may not be the same",
        ));
    }
}

fn check_versions(spec: &Value, errors: &mut Vec<FieldError>) {
    let versions = spec["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if versions.is_empty() {
        errors.push(required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
        return;
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        errors.push(invalid(
            "spec.versions",
            &format!("{storage} storage versions"),
            "must have exactly one version marked as storage version",
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (index, version) in versions.iter().enumerate() {
        let field = format!("spec.versions[{index}]");
        let name = version["name"].as_str().unwrap_or("");
        if name.is_empty() {
            errors.push(required(&format!("{field}.name"), ""));
        } else if let Some(problem) = check_label(name) {
            errors.push(invalid(&format!("{field}.name"), name, &problem));
        } else if seen.contains(&name) {
            errors.push(invalid(&format!("{field}.name"), name, "must be unique"));
        }
        seen.push(name);
        let schema = &version["schema"]["openAPIV3Schema"];
        let schema_field = format!("{field}.schema.openAPIV3Schema");
        if !schema.is_object() {
            errors.push(required(&schema_field, "schemas are required"));
        } else {
            if schema["type"] != "object" {
                errors.push(match schema["type"].as_str() {
                    None => required(
                        &format!("{schema_field}.type"),
                        "must be object at the root",
                    ),
                    Some(other) => invalid(
                        &format!("{schema_field}.type"),
                        other,
                        "must be object at the root",
                    ),
                });
            }
            check_structural(schema, &schema_field, errors);
        }
        check_subresources(&version["subresources"], &field, errors);
        let columns = version["additionalPrinterColumns"].as_array();
        for (column_index, column) in columns.into_iter().flatten().enumerate() {
            let column_field = format!("{field}.additionalPrinterColumns[{column_index}]");
            for required_field in ["name", "type", "jsonPath"] {
                if column[required_field].as_str().is_none_or(str::is_empty) {
                    errors.push(required(&format!("{column_field}.{required_field}"), ""));
                }
            }
            let column_type = column["type"].as_str().unwrap_or("");
            if !column_type.is_empty()
                && !["integer", "number", "string", "boolean", "date"].contains(&column_type)
            {
                errors.push(FieldError {
                    field: format!("{column_field}.type"),
                    cause: "FieldValueNotSupported",
                    message: format!("Unsupported value: \"{column_type}\": supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\""),
                });
            }
        }
    }
}

/// The structural-schema rules that matter for serving: every node that has properties or
/// items says its type, and the types are OpenAPI's.
fn check_structural(schema: &Value, field: &str, errors: &mut Vec<FieldError>) {
    const TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];
    let typed = schema["type"].as_str();
    let free = schema["x-kubernetes-int-or-string"] == true
        || schema["x-kubernetes-preserve-unknown-fields"] == true;
    match typed {
        Some(t) if !TYPES.contains(&t) => errors.push(FieldError {
            field: format!("{field}.type"),
            cause: "FieldValueNotSupported",
            message: format!("Unsupported value: \"{t}\": supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""),
        }),
        None if !free && (schema["properties"].is_object() || schema["items"].is_object()) => {
            errors.push(required(
                &format!("{field}.type"),
                "must not be empty for specified object fields",
            ));
        }
        _ => {}
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            check_structural(property, &format!("{field}.properties[{name}]"), errors);
        }
    }
    if schema["items"].is_object() {
        check_structural(&schema["items"], &format!("{field}.items"), errors);
    }
    if schema["additionalProperties"].is_object() {
        if schema["properties"].is_object() {
            errors.push(FieldError {
                field: format!("{field}.additionalProperties"),
                cause: "FieldValueForbidden",
                message: "Forbidden: additionalProperties and properties are mutual exclusive"
                    .to_string(),
            });
        }
        check_structural(
            &schema["additionalProperties"],
            &format!("{field}.additionalProperties"),
            errors,
        );
    }
}

fn check_subresources(subresources: &Value, field: &str, errors: &mut Vec<FieldError>) {
    let Some(scale) = subresources["scale"].as_object() else {
        return;
    };
    let field = format!("{field}.subresources.scale");
    let paths = [
        ("specReplicasPath", ".spec.", true),
        ("statusReplicasPath", ".status.", true),
        ("labelSelectorPath", ".", false),
    ];
    for (name, prefix, needed) in paths {
        match scale.get(name).and_then(Value::as_str) {
            None | Some("") if needed => errors.push(required(&format!("{field}.{name}"), "")),
            None | Some("") => {}
            Some(path) if !path.starts_with(prefix) || path.len() == prefix.len() => {
                errors.push(invalid(
                    &format!("{field}.{name}"),
                    path,
                    &format!("should be a json path under {prefix}"),
                ));
            }
            Some(_) => {}
        }
    }
}

/// Adds the cleanup finalizer to a CRD (so its objects are deleted before it goes).
pub fn add_cleanup_finalizer(crd: &mut Value) {
    meta_mut(crd).add_finalizer(CLEANUP_FINALIZER);
}

/// The `validate` hook of `customresourcedefinitions`: the CRD rules, and a valid CRD gets
/// its cleanup finalizer.
pub fn check_crd_write(crd: &mut Value) -> Vec<FieldError> {
    let causes = validate_crd(crd);
    if causes.is_empty() {
        add_cleanup_finalizer(crd);
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}},
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas"}},
                     "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size", "priority": 1}],
                     "selectableFields": [{"jsonPath": ".spec.color"}]},
                    {"name": "v2", "served": false, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    }

    #[test]
    fn served_versions_become_kinds() {
        let types = resource_types(&crd()).expect("valid");
        assert_eq!(types.len(), 1);
        let widget = &types[0];
        assert_eq!(
            (widget.singular.as_str(), widget.api_version()),
            ("widget", "example.com/v1".to_string())
        );
        let scale = widget.subresources.scale.as_ref().expect("scale");
        assert_eq!(scale.spec_replicas, "spec.replicas");
        assert_eq!(widget.columns[0].priority, 1);
        assert_eq!(widget.field_selectors[0].0, "spec.color");
    }

    #[test]
    fn wrong_names_and_storage_are_refused() {
        let mut bad = crd();
        bad["metadata"]["name"] = json!("widgets");
        bad["spec"]["versions"][1]["storage"] = json!(true);
        bad["spec"]["scope"] = json!("Everywhere");
        let fields: Vec<String> = validate_crd(&bad).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["metadata.name", "spec.scope", "spec.versions"]);
        assert!(resource_types(&bad).is_err());
    }
}
