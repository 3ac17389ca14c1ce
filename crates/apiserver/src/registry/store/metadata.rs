//! The rules for what a write may set: the server-owned fields of a new object (uid,
//! creationTimestamp, generation, namespace), what an update carries over from the current
//! object, moves (`generation`) or refuses (immutable fields), and the kind's own
//! conversions (a Secret's `stringData`, defaults).

use std::time::SystemTime;

use capstan_machinery::{meta, meta_mut};
use serde_json::{Value, json};

use super::{Part, timestamp};
use crate::registry::error::{FieldError, RegistryError};
use crate::registry::kind::ResourceType;

/// Metadata an update cannot change: always the current object's.
const KEPT_ON_UPDATE: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "namespace",
    "generation",
];

/// Metadata a client cannot set on create.
const CLEARED_ON_CREATE: [&str; 4] = [
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

/// Fills in the server-owned fields of a new object and checks it claims the right kind.
pub(super) fn prepare_for_create(
    kind: &ResourceType,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<(), RegistryError> {
    if !object.is_object() {
        return Err(RegistryError::BadRequest(
            "the request body must be a JSON or YAML object".to_string(),
        ));
    }
    check_type_meta(kind, object)?;
    let requested = namespace.unwrap_or("");
    if kind.namespaced
        && let Some(given) = meta(object).namespace()
        && !given.is_empty()
        && given != requested
    {
        return Err(RegistryError::BadRequest(format!(
            "the namespace of the provided object ({given}) does not match the namespace sent on the request ({requested})"
        )));
    }
    let mut fields = meta_mut(object);
    if kind.namespaced {
        fields.set_namespace(requested);
    } else {
        fields.remove_namespace();
    }
    for owned in CLEARED_ON_CREATE {
        fields.remove(owned);
    }
    fields.set_uid(uuid::Uuid::new_v4().to_string());
    fields.set_creation_timestamp(timestamp(SystemTime::now()));
    if kind.has_spec_generation {
        fields.set_generation(1);
    } else {
        fields.remove("generation");
    }
    // Status is the controllers' to write, through the status subresource; a new object
    // starts without one (as kube-apiserver's PrepareForCreate clears it).
    if kind.subresources.status
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    if let Some(defaults) = kind.behaviour.defaults {
        defaults(object);
    }
    fold_string_data(kind, object);
    Ok(())
}

/// `apiVersion` and `kind`: filled in when missing, a `BadRequest` when they name another
/// kind than the URL.
fn check_type_meta(kind: &ResourceType, object: &mut Value) -> Result<(), RegistryError> {
    let api_version = kind.api_version();
    match object["apiVersion"].as_str() {
        None | Some("") => object["apiVersion"] = Value::String(api_version.clone()),
        Some(given) if given != api_version => {
            return Err(RegistryError::BadRequest(format!(
                "the API version in the data ({given}) does not match the expected API version ({api_version})"
            )));
        }
        Some(_) => {}
    }
    match object["kind"].as_str() {
        None | Some("") => object["kind"] = Value::String(kind.kind.clone()),
        Some(given) if given != kind.kind => {
            return Err(RegistryError::BadRequest(format!(
                "the kind in the data ({given}) does not match the expected kind ({}) for this URL",
                kind.kind
            )));
        }
        Some(_) => {}
    }
    Ok(())
}

/// The object an update stores: the caller's `proposed` object with the server-owned and
/// out-of-scope parts of `current` carried over.
pub(super) fn merge_for_update(
    kind: &ResourceType,
    current: &Value,
    mut proposed: Value,
    part: Part,
) -> Result<Value, RegistryError> {
    if !proposed.is_object() {
        return Err(RegistryError::BadRequest(
            "the request body must be a JSON or YAML object".to_string(),
        ));
    }
    check_type_meta(kind, &mut proposed)?;
    let mut next = match part {
        Part::Main => {
            if kind.subresources.status {
                copy_status(current, &mut proposed);
            }
            proposed
        }
        Part::Status => {
            let mut next = current.clone();
            copy_status(&proposed, &mut next);
            next
        }
        Part::Finalize => {
            let mut next = current.clone();
            next["spec"]["finalizers"] = proposed["spec"]["finalizers"].clone();
            if next["spec"]["finalizers"].is_null() {
                next["spec"]["finalizers"] = json!([]);
            }
            next
        }
    };
    let current_meta = meta(current);
    let mut fields = meta_mut(&mut next);
    for owned in KEPT_ON_UPDATE {
        match current_meta.get(owned) {
            Some(value) => fields.set(owned, value.clone()),
            None => {
                fields.remove(owned);
            }
        }
    }
    if kind.behaviour.namespace_lifecycle && part == Part::Main {
        next["spec"] = current["spec"].clone();
    }
    fold_string_data(kind, &mut next);
    if kind.has_spec_generation && part == Part::Main && spec_of(&next) != spec_of(current) {
        let generation = current_meta.generation().unwrap_or(0);
        meta_mut(&mut next).set_generation(generation + 1);
    }
    Ok(next)
}

/// What an update may not change (upstream's ValidateUpdate rules that clients meet most):
/// the kind's immutable fields, and a frozen (`immutable: true`) ConfigMap's or Secret's
/// data.
pub(super) fn check_update(kind: &ResourceType, current: &Value, next: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let immutable = |field: &str| FieldError {
        field: field.to_string(),
        cause: "FieldValueInvalid",
        message: "Invalid value: field is immutable".to_string(),
    };
    for field in kind.behaviour.immutable_fields {
        if at_path(current, field) != at_path(next, field) {
            causes.push(immutable(field));
        }
    }
    if kind.behaviour.freezable_data && current["immutable"] == json!(true) {
        if next["immutable"] != json!(true) {
            causes.push(immutable("immutable"));
        }
        for field in ["data", "binaryData"] {
            if current[field] != next[field] {
                causes.push(FieldError {
                    field: field.to_string(),
                    cause: "FieldValueForbidden",
                    message: "Forbidden: field is immutable when `immutable` is set".to_string(),
                });
            }
        }
    }
    causes
}

/// The value at a dotted path (`spec.selector`), `null` when missing.
fn at_path<'a>(object: &'a Value, dotted: &str) -> &'a Value {
    dotted.split('.').fold(object, |value, key| &value[key])
}

/// `stringData`, for kinds that take it, is a write-only convenience: merged into `data`,
/// base64.
fn fold_string_data(kind: &ResourceType, object: &mut Value) {
    use base64::Engine as _;
    if !kind.behaviour.string_data {
        return;
    }
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (key, value) in strings {
        let text = value
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        object["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Gives `to` the `status` of `from`: a copy, or none when `from` has none.
fn copy_status(from: &Value, to: &mut Value) {
    match from.get("status") {
        Some(status) => to["status"] = status.clone(),
        None => {
            if let Some(map) = to.as_object_mut() {
                map.remove("status");
            }
        }
    }
}

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_of(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// `object` without its resourceVersion, to tell a write that changes nothing.
pub(super) fn without_version(object: &Value) -> Value {
    let mut copy = object.clone();
    meta_mut(&mut copy).remove_resource_version();
    copy
}

/// The random part of a name from `generateName`.
pub(super) fn random_suffix() -> String {
    // Upstream's alphabet: no vowels (no words) and no look-alike characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn kind(group: &str, resource: &str) -> std::sync::Arc<ResourceType> {
        Registry::new()
            .catalog()
            .lookup(group, "v1", resource)
            .expect("served")
    }

    #[test]
    fn a_spec_change_moves_generation_and_keeps_server_fields() {
        let kind = kind("apps", "deployments");
        let current = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 1, "resourceVersion": "5"},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let proposed = json!({"metadata": {"name": "web", "uid": "forged"}, "spec": {"replicas": 3}, "status": {"replicas": 9}});
        let next = merge_for_update(&kind, &current, proposed, Part::Main).expect("valid");
        assert_eq!(next["metadata"]["uid"], "u1");
        assert_eq!(next["metadata"]["generation"], 2);
        assert_eq!(next["status"]["replicas"], 1, "status only through /status");
    }

    #[test]
    fn a_workload_selector_and_frozen_data_cannot_change() {
        let deployment = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}}});
        let moved = json!({"spec": {"selector": {"matchLabels": {"app": "b"}}}});
        let causes = check_update(&kind("apps", "deployments"), &deployment, &moved);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.selector");
        assert!(check_update(&kind("", "services"), &deployment, &moved).is_empty());

        let frozen = json!({"immutable": true, "data": {"a": "1"}});
        let thawed = json!({"data": {"a": "2"}});
        let fields: Vec<String> = check_update(&kind("", "configmaps"), &frozen, &thawed)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, ["immutable", "data"]);
    }

    #[test]
    fn a_secret_folds_string_data_into_data_and_a_config_map_does_not() {
        let mut secret = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}});
        prepare_for_create(&kind("", "secrets"), Some("default"), &mut secret).expect("valid");
        assert_eq!(secret["data"]["k"], "dg==");
        assert_eq!(secret["type"], "Opaque");
        assert!(secret.get("stringData").is_none());
        let mut config = json!({"metadata": {"name": "c"}, "stringData": {"k": "v"}});
        prepare_for_create(&kind("", "configmaps"), Some("default"), &mut config).expect("valid");
        assert_eq!(config["stringData"]["k"], "v");
    }

    #[test]
    fn a_namespace_spec_changes_only_through_finalize() {
        let namespaces = kind("", "namespaces");
        let current =
            json!({"metadata": {"name": "ns", "uid": "u"}, "spec": {"finalizers": ["kubernetes"]}});
        let emptied = json!({"metadata": {"name": "ns"}, "spec": {"finalizers": []}});
        let main =
            merge_for_update(&namespaces, &current, emptied.clone(), Part::Main).expect("valid");
        assert_eq!(main["spec"]["finalizers"], json!(["kubernetes"]));
        let finalized =
            merge_for_update(&namespaces, &current, emptied, Part::Finalize).expect("valid");
        assert_eq!(finalized["spec"]["finalizers"], json!([]));
    }

    #[test]
    fn a_new_object_gets_server_fields_and_a_cluster_scoped_one_no_namespace() {
        let mut node = json!({"metadata": {"name": "n", "namespace": "x", "resourceVersion": "3"}});
        prepare_for_create(&kind("", "nodes"), None, &mut node).expect("valid");
        let fields = meta(&node);
        assert_eq!(fields.namespace(), None);
        assert_eq!(fields.resource_version(), None);
        assert!(fields.uid().is_some() && fields.creation_timestamp().is_some());
        assert_eq!(fields.generation(), None, "nodes have no spec generation");
        let mut pod = json!({"metadata": {"name": "p", "namespace": "other"}});
        assert!(prepare_for_create(&kind("", "pods"), Some("default"), &mut pod).is_err());
    }
}
