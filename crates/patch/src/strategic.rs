//! Kubernetes strategic merge patch (`application/strategic-merge-patch+json`), the body
//! client-side `kubectl apply`, `kubectl patch` and `kubectl edit` send for built-in kinds.
//!
//! It is a JSON merge patch that knows lists: where the schema says
//! `x-kubernetes-patch-strategy: merge`, list items are matched by their
//! `x-kubernetes-patch-merge-key` and merged one by one (scalars merge as a set); every
//! other list is replaced. Directives in the patch say what a plain merge cannot:
//!
//! - `$patch: replace | delete | merge` on a map, or as a list item (`{"$patch":"replace"}`
//!   replaces the whole list, `{"name":"x","$patch":"delete"}` deletes one item);
//! - `$setElementOrder/<field>`: the final order of a merged list; items of the target
//!   missing from it keep their relative order after the listed ones;
//! - `$deleteFromPrimitiveList/<field>`: scalars to remove from a merged scalar list;
//! - `$retainKeys`: the keys a map keeps (a union type switching member, such as a
//!   Deployment strategy going from RollingUpdate to Recreate).
//!
//! Without a schema, maps merge and lists are replaced, as in a JSON merge patch.

use serde_json::{Map, Value};

use super::{Budget, PatchError, SchemaRef};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to `target`, merging lists as `schema` (the schema of
/// the whole object) says. Both must be JSON objects.
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    schema: SchemaRef<'_>,
) -> Result<Value, PatchError> {
    strategic_merge_patch_within(target, patch, schema, &mut Budget::default())
}

/// [`strategic_merge_patch`] within `budget`: list merges compare items one by one, so
/// their comparisons are charged, and the result is measured.
pub fn strategic_merge_patch_within(
    target: &Value,
    patch: &Value,
    schema: SchemaRef<'_>,
    budget: &mut Budget,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::invalid(
            "",
            "a strategic merge patch must be a JSON object",
        ));
    };
    let original = match target {
        Value::Object(target) => target.clone(),
        _ => Map::new(),
    };
    budget.charge(original.len() + patch.len())?;
    let merged = Value::Object(merge_map(original, patch, schema, "", budget)?);
    budget.check_document(&merged)?;
    Ok(merged)
}

fn is_directive_key(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: SchemaRef<'_>,
    path: &str,
    budget: &mut Budget,
) -> Result<Map<String, Value>, PatchError> {
    budget.charge(patch.len() + 1)?;
    if let Some(directive) = patch.get(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => {
                let mut replacement = patch.clone();
                replacement.remove(DIRECTIVE);
                return merge_map(Map::new(), &replacement, schema, path, budget);
            }
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::invalid(
                    path,
                    format!(
                        "unknown $patch directive {directive} (expected replace, delete or merge)"
                    ),
                ));
            }
        }
    }

    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keys = string_list(retain)
            .ok_or_else(|| PatchError::invalid(path, "$retainKeys must be a list of strings"))?;
        budget.charge(original.len() * keys.len())?;
        original.retain(|key, _| keys.contains(&key.as_str()));
    }

    for (key, values) in patch {
        let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
            continue;
        };
        let Value::Array(values) = values else {
            return Err(PatchError::invalid(
                &format!("{path}.{field}"),
                format!("{key} must be a list"),
            ));
        };
        if let Some(Value::Array(items)) = original.get_mut(field) {
            budget.charge(items.len() * values.len())?;
            items.retain(|item| !values.contains(item));
        }
    }

    for (key, patch_value) in patch {
        if is_directive_key(key) {
            continue;
        }
        let child_path = format!("{path}.{key}");
        let (field_schema, _) = schema.field(key);
        if patch_value.is_null() || directive_of(patch_value) == Some("delete") {
            original.remove(key);
            continue;
        }
        let merged = match (original.remove(key), patch_value) {
            (Some(Value::Object(_)), Value::Object(p))
                if field_schema.has_patch_strategy("replace") =>
            {
                Value::Object(merge_map(Map::new(), p, field_schema, &child_path, budget)?)
            }
            (Some(Value::Object(o)), Value::Object(p)) => {
                Value::Object(merge_map(o, p, field_schema, &child_path, budget)?)
            }
            (_, Value::Object(p)) => {
                Value::Object(merge_map(Map::new(), p, field_schema, &child_path, budget)?)
            }
            (Some(Value::Array(o)), Value::Array(p)) => {
                Value::Array(merge_list(o, p, field_schema, &child_path, budget)?)
            }
            (_, Value::Array(p)) => Value::Array(merge_list(
                Vec::new(),
                p,
                field_schema,
                &child_path,
                budget,
            )?),
            (_, scalar) => scalar.clone(),
        };
        original.insert(key.clone(), merged);
    }

    for (key, order) in patch {
        let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(PatchError::invalid(
                &format!("{path}.{field}"),
                format!("{key} must be a list"),
            ));
        };
        let merge_key = schema.field(field).0.patch_merge_key();
        if let Some(Value::Array(items)) = original.get_mut(field) {
            budget.charge(items.len() * order.len())?;
            reorder(items, order, merge_key);
        }
    }
    Ok(original)
}

fn merge_list(
    mut original: Vec<Value>,
    patch: &[Value],
    schema: SchemaRef<'_>,
    path: &str,
    budget: &mut Budget,
) -> Result<Vec<Value>, PatchError> {
    budget.charge(patch.len() + 1)?;
    if !schema.has_patch_strategy("merge") {
        return Ok(patch.to_vec());
    }
    let merge_key = schema.patch_merge_key();
    let item_schema = schema.items();

    let mut replace = false;
    let mut items: Vec<&Value> = Vec::new();
    let mut deletions = Vec::new();
    for item in patch {
        match directive_of(item) {
            None | Some("merge") => items.push(item),
            Some("replace") => replace = true,
            Some("delete") => deletions.push(item),
            Some(other) => {
                return Err(PatchError::invalid(
                    path,
                    format!(
                        "unknown $patch directive {other:?} in a list item (expected replace, delete or merge)"
                    ),
                ));
            }
        }
    }
    if replace {
        original.clear();
    }

    for deletion in deletions {
        let (key, key_value) = merge_key_of(deletion, merge_key, path)?;
        budget.charge(original.len())?;
        original.retain(|item| item.get(key) != Some(key_value));
    }

    for item in items {
        budget.charge(original.len())?;
        let Value::Object(patch_item) = item else {
            if !original.contains(item) {
                original.push(item.clone());
            }
            continue;
        };
        let (key, key_value) = merge_key_of(item, merge_key, path)?;
        let item_path = format!("{path}[{key}={key_value}]");
        let existing = original
            .iter()
            .position(|candidate| candidate.get(key) == Some(key_value));
        match existing {
            Some(position) => {
                let base = match std::mem::take(&mut original[position]) {
                    Value::Object(base) => base,
                    _ => Map::new(),
                };
                original[position] = Value::Object(merge_map(
                    base,
                    patch_item,
                    item_schema,
                    &item_path,
                    budget,
                )?);
            }
            None => original.push(Value::Object(merge_map(
                Map::new(),
                patch_item,
                item_schema,
                &item_path,
                budget,
            )?)),
        }
    }
    Ok(original)
}

/// The `$patch` directive of a map (`None` for anything else).
fn directive_of(value: &Value) -> Option<&str> {
    value.get(DIRECTIVE).and_then(Value::as_str).or_else(|| {
        // A `$patch` that is not a string is still a directive, just a bad one.
        value.get(DIRECTIVE).map(|_| "")
    })
}

fn merge_key_of<'v, 'k>(
    item: &'v Value,
    merge_key: Option<&'k str>,
    path: &str,
) -> Result<(&'k str, &'v Value), PatchError> {
    let Some(key) = merge_key else {
        return Err(PatchError::invalid(
            path,
            "list items are maps but the schema declares no merge key for this list",
        ));
    };
    match item.get(key) {
        Some(value) => Ok((key, value)),
        None => Err(PatchError::invalid(
            path,
            format!("list item {item} does not contain the merge key {key:?}"),
        )),
    }
}

/// Puts `items` in the order of `order` (by merge key, or by value for scalars); items the
/// order does not mention keep their relative order after the listed ones.
fn reorder(items: &mut Vec<Value>, order: &[Value], merge_key: Option<&str>) {
    let identity = |value: &Value| -> Value {
        match (merge_key, value) {
            (Some(key), Value::Object(map)) => map.get(key).cloned().unwrap_or(Value::Null),
            _ => value.clone(),
        }
    };
    let mut remaining: Vec<Option<Value>> = std::mem::take(items).into_iter().map(Some).collect();
    for wanted in order {
        let wanted = identity(wanted);
        let found = remaining
            .iter()
            .position(|item| item.as_ref().is_some_and(|item| identity(item) == wanted));
        if let Some(item) = found.and_then(|position| remaining[position].take()) {
            items.push(item);
        }
    }
    items.extend(remaining.into_iter().flatten());
}

fn string_list(value: &Value) -> Option<Vec<&str>> {
    value.as_array()?.iter().map(Value::as_str).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::super::schema::fixtures;
    use super::*;

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "d", "labels": {"app": "web", "tier": "front"}},
               "spec": spec})
    }

    fn patch_deployment(target: &Value, patch: Value) -> Result<Value, PatchError> {
        let defs = fixtures::definitions();
        let schema = SchemaRef::definition(&defs, "io.k8s.api.apps.v1.Deployment");
        strategic_merge_patch(target, &patch, schema)
    }

    fn containers(result: &Value) -> &Vec<Value> {
        result["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("the result has containers")
    }

    #[test]
    fn kubectl_apply_replaces_a_sidecar_keeping_the_declared_order() {
        let live = deployment(json!({"replicas": 1, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx"},
            {"name": "side", "image": "busybox"},
        ]}}}));
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"web"},{"name":"side2"}],
            "containers":[{"name":"side2","image":"busybox"},{"name":"side","$patch":"delete"}]}}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(
            containers(&result),
            &vec![
                json!({"name": "web", "image": "nginx"}),
                json!({"name": "side2", "image": "busybox"}),
            ]
        );
        assert_eq!(result["spec"]["replicas"], json!(1));
    }

    #[test]
    fn kubectl_apply_deletes_one_env_entry() {
        let live = deployment(json!({"template": {"spec": {"containers": [{
            "name": "web", "image": "nginx",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        }]}}}));
        let patch = json!({"spec":{"template":{"spec":{
            "$setElementOrder/containers":[{"name":"web"}],
            "containers":[{"$setElementOrder/env":[{"name":"A"}],
                           "env":[{"name":"B","$patch":"delete"}],"name":"web"}]}}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(
            containers(&result),
            &vec![json!({"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}]})]
        );
    }

    #[test]
    fn retain_keys_drops_the_other_members_of_a_union() {
        let live = deployment(json!({"strategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}));
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn a_label_is_removed_by_null() {
        let live = deployment(json!({}));
        let patch = json!({"metadata": {"labels": {"tier": null}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(result["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn merge_lists_update_and_add_by_key_and_keep_the_rest() {
        let live = deployment(json!({"template": {"spec": {"containers": [{
            "name": "web", "image": "nginx:1",
            "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
        }]}}}));
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "web", "image": "nginx:2",
            "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 8080}],
        }, {"name": "log", "image": "fluent"}]}}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(
            containers(&result),
            &vec![
                json!({"name": "web", "image": "nginx:2", "ports": [
                    {"containerPort": 80, "protocol": "TCP", "name": "http"},
                    {"containerPort": 443},
                    {"containerPort": 8080},
                ]}),
                json!({"name": "log", "image": "fluent"}),
            ]
        );
    }

    #[test]
    fn lists_without_a_strategy_are_replaced() {
        let live = deployment(json!({"template": {"spec": {"containers": [
            {"name": "web", "args": ["a", "b"]}]}}}));
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "args": ["c"]}]}}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(containers(&result)[0]["args"], json!(["c"]));
    }

    #[test]
    fn scalar_merge_lists_are_sets_with_delete_from_primitive_list() {
        let live = deployment(json!({}));
        let live = merge_patch_finalizers(&live, json!(["a", "b"]));
        let patch = json!({"metadata": {"finalizers": ["b", "c"],
                                        "$deleteFromPrimitiveList/finalizers": ["a"]}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(result["metadata"]["finalizers"], json!(["b", "c"]));
    }

    fn merge_patch_finalizers(target: &Value, finalizers: Value) -> Value {
        super::super::merge_patch(target, &json!({"metadata": {"finalizers": finalizers}}))
    }

    #[test]
    fn set_element_order_keeps_unlisted_target_items_at_the_end() {
        let live = deployment(json!({"template": {"spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "3"},
        ]}}}));
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
            "containers": [{"name": "c", "image": "33"}]}}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(
            containers(&result),
            &vec![
                json!({"name": "c", "image": "33"}),
                json!({"name": "a", "image": "1"}),
                json!({"name": "b", "image": "2"}),
            ]
        );
    }

    #[test]
    fn patch_replace_directives_on_lists_and_maps() {
        let live = deployment(
            json!({"selector": {"matchLabels": {"app": "web", "x": "y"}},
            "template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}),
        );
        let patch = json!({"spec": {
            "selector": {"matchLabels": {"$patch": "replace", "app": "api"}},
            "template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "z"}]}}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(
            result["spec"]["selector"]["matchLabels"],
            json!({"app": "api"})
        );
        assert_eq!(containers(&result), &vec![json!({"name": "z"})]);
    }

    #[test]
    fn patch_delete_and_merge_directives_on_maps() {
        let live = deployment(json!({"selector": {"matchLabels": {"app": "web"}}, "replicas": 2}));
        let patch = json!({"spec": {"$patch": "merge", "selector": {"$patch": "delete"}}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(result["spec"], json!({"replicas": 2}));
    }

    #[test]
    fn malformed_patches_are_errors_naming_the_path() {
        let live = deployment(json!({"template": {"spec": {"containers": [{"name": "a"}]}}}));
        let missing_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let error = patch_deployment(&live, missing_key)
            .unwrap_err()
            .to_string();
        assert!(error.contains(".spec.template.spec.containers"), "{error}");
        assert!(error.contains("merge key \"name\""), "{error}");

        let bad_directive = json!({"spec": {"$patch": "explode"}});
        let error = patch_deployment(&live, bad_directive)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(".spec") && error.contains("explode"),
            "{error}"
        );

        let bad_retain = json!({"spec": {"strategy": {"$retainKeys": "type"}}});
        assert!(patch_deployment(&live, bad_retain).is_err());
        assert!(patch_deployment(&live, json!([1])).is_err());
        let bad_order = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": 3}}}});
        assert!(patch_deployment(&live, bad_order).is_err());
    }

    #[test]
    fn without_a_schema_maps_merge_and_lists_replace() {
        let target = json!({"a": {"b": 1, "c": [1, 2]}});
        let patch = json!({"a": {"c": [3], "d": null}});
        let result = strategic_merge_patch(&target, &patch, SchemaRef::none()).unwrap();
        assert_eq!(result, json!({"a": {"b": 1, "c": [3]}}));
    }

    #[test]
    fn odd_patches_are_errors_or_results_never_panics() {
        let live = deployment(json!({"replicas": 1, "template": {"spec": {
            "containers": [{"name": "a", "env": [{"name": "X"}]}, "not-a-map", 3],
            "volumes": "not-a-list"}}}));
        let odd = [
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "$patch": 7}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [1, [2], null]}}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [1, {}, null]}}}}),
            json!({"spec": {"template": {"spec": {"$setElementOrder/nope": []}}}}),
            json!({"spec": {"template": {"spec": {"$deleteFromPrimitiveList/containers": [{"name": "a"}]}}}}),
            json!({"spec": {"template": {"spec": {"volumes": [{"name": "v", "$retainKeys": ["name"]}]}}}}),
            json!({"spec": {"replicas": {"$patch": "replace"}, "template": [1]}}),
            json!({"$patch": "delete"}),
            json!({"$retainKeys": []}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"value": "no key"}]}]}}}}),
        ];
        for patch in odd {
            let _ = patch_deployment(&live, patch);
        }
        assert_eq!(
            patch_deployment(&live, json!({"$patch": "delete"})).unwrap(),
            json!({})
        );
    }

    /// Merging two long lists by key compares every pair: the work is charged, and a patch
    /// that needs too much of it is refused instead of holding a core for minutes.
    #[test]
    fn quadratic_list_merges_are_bounded_by_the_step_budget() {
        let containers = |n: usize| -> Vec<Value> {
            (0..n)
                .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
                .collect()
        };
        let target = deployment(json!({"template": {"spec": {"containers": containers(2000)}}}));
        let patch = json!({"spec": {"template": {"spec": {"containers": containers(2000)}}}});
        let defs = fixtures::definitions();
        let schema = SchemaRef::definition(&defs, "io.k8s.api.apps.v1.Deployment");
        let mut small = Budget::new(1 << 24, 10, 1 << 24, 100_000);
        let error = strategic_merge_patch_within(&target, &patch, schema, &mut small);
        assert!(
            matches!(error, Err(PatchError::TooExpensive { limit: 100_000 })),
            "{error:?}"
        );
        let mut default = Budget::default();
        strategic_merge_patch_within(&target, &patch, schema, &mut default).unwrap();
        assert!(default.steps_used() > 2_000_000, "{}", default.steps_used());
    }

    #[test]
    fn set_element_order_orders_primitive_lists() {
        let live = merge_patch_finalizers(&deployment(json!({})), json!(["a", "b", "c"]));
        let patch = json!({"metadata": {"$setElementOrder/finalizers": ["c", "d", "a"],
                                        "finalizers": ["d"]}});
        let result = patch_deployment(&live, patch).unwrap();
        assert_eq!(
            result["metadata"]["finalizers"],
            json!(["c", "d", "a", "b"])
        );
    }
}
