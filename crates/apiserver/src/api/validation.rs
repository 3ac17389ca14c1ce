//! Checks of request objects beyond metadata: fields the kind's schema does not know
//! (for `fieldValidation`), and the schema checks of custom resources and CRDs.

use serde_json::Value;

use crate::registry::{self, ResourceType, SchemaSource};
use capstan_patch::SchemaRef;

/// How deep the walk goes; deeper objects are not checked further.
const MAX_DEPTH: usize = 64;

/// The dotted paths of fields in `object` that the kind's schema does not declare.
pub fn unknown_fields(kind: &ResourceType, object: &Value) -> Vec<String> {
    if let SchemaSource::Inline(schema) = &kind.schema {
        return registry::unknown_fields(schema, object);
    }
    let mut copy = object.clone();
    prune_unknown_fields(kind, &mut copy)
}

/// Removes from `object` the fields the kind's schema does not declare, as kube-apiserver
/// drops unknown fields of built-in kinds while decoding (`fieldValidation=Warn` or
/// `Ignore`); returns their dotted paths. Custom resources are pruned against their own
/// schema when they are validated (`registry::validate_and_prune`), so for them this only
/// lists.
pub fn prune_unknown_fields(kind: &ResourceType, object: &mut Value) -> Vec<String> {
    if let SchemaSource::Inline(schema) = &kind.schema {
        return registry::unknown_fields(schema, object);
    }
    let object_type = kind.object_type();
    let mut found = Vec::new();
    walk(object_type.schema, object, "", 0, &mut found);
    found
}

fn walk(
    schema: SchemaRef<'_>,
    value: &mut Value,
    path: &str,
    depth: usize,
    found: &mut Vec<String>,
) {
    if !schema.is_known() || depth > MAX_DEPTH {
        return;
    }
    if schema.extension("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let declares = schema.extension("properties").is_some();
            let additional = schema.extension("additionalProperties");
            let mut unknown = Vec::new();
            for (key, child) in map.iter_mut() {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let property = schema.property(key);
                if property.is_known() {
                    walk(property, child, &child_path, depth + 1, found);
                } else if let Some(additional) = additional {
                    if additional.is_object() {
                        walk(
                            schema.additional_properties(),
                            child,
                            &child_path,
                            depth + 1,
                            found,
                        );
                    } else if additional == &Value::Bool(false) {
                        unknown.push(key.clone());
                        found.push(child_path);
                    }
                } else if declares {
                    unknown.push(key.clone());
                    found.push(child_path);
                }
            }
            for key in unknown {
                map.remove(&key);
            }
        }
        Value::Array(items) => {
            let item_schema = schema.items();
            for (index, item) in items.iter_mut().enumerate() {
                walk(
                    item_schema,
                    item,
                    &format!("{path}[{index}]"),
                    depth + 1,
                    found,
                );
            }
        }
        _ => {}
    }
}
