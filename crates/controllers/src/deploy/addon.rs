//! The `Addon` records (`addons.capstan.io/v1`, one per manifest file) and the Warning
//! Events of failed applies.

use std::sync::Arc;
use std::time::SystemTime;

use capstan_machinery::{meta, meta_mut};
use serde_json::{Value, json};

use super::apply::{FIELD_MANAGER, ObjectRef};
use capstan_apiserver::registry::{
    ADDON_GROUP, ObjectStore, Part, Registry, RegistryError, ResourceType, WriteOptions, timestamp,
};

/// The reason of the Event a failed apply records.
pub const FAILED_REASON: &str = "ApplyManifestFailed";
/// The annotation naming the server that wrote an Addon's spec (every version carries it,
/// the first one too, which has no status yet).
pub const APPLIED_BY_ANNOTATION: &str = "addons.capstan.io/applied-by";
/// The namespace the deployer's Events go to (Addons are cluster-scoped).
pub const EVENT_NAMESPACE: &str = "kube-system";

/// The `Addon` kind of the catalog.
pub(super) fn addon_kind(registry: &Registry) -> Result<Arc<ResourceType>, RegistryError> {
    registry
        .catalog()
        .by_kind(&format!("{ADDON_GROUP}/v1"), "Addon")
        .ok_or_else(|| RegistryError::Internal("the catalog has no Addon kind".to_string()))
}

/// The outcome of one apply, as an Addon records it.
pub(super) struct Outcome<'a> {
    /// The file's path.
    pub source: &'a str,
    /// The file's SHA-256.
    pub checksum: &'a str,
    /// The objects the Addon is responsible for.
    pub objects: &'a [ObjectRef],
    /// This server's identity.
    pub applied_by: &'a str,
    /// Why applying failed, if it did.
    pub error: Option<&'a str>,
}

fn status(outcome: &Outcome<'_>, previous: &Value) -> Value {
    let now = timestamp(SystemTime::now());
    let (condition_status, reason, message) = match outcome.error {
        None => ("True", "Applied", "every object of the file is applied"),
        Some(error) => ("False", FAILED_REASON, error),
    };
    let unchanged = previous["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Applied"))
        .filter(|c| c["status"] == condition_status);
    let transition = unchanged
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(&now)
        .to_string();
    let mut status = json!({
        "objects": outcome.objects.iter().map(ObjectRef::to_json).collect::<Vec<_>>(),
        "appliedBy": outcome.applied_by,
        "lastApplied": if outcome.error.is_none() { json!(now) } else { previous["lastApplied"].clone() },
        "conditions": [{
            "type": "Applied",
            "status": condition_status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": transition,
        }],
    });
    if let Some(error) = outcome.error {
        status["error"] = json!(error);
    }
    if status["lastApplied"].is_null()
        && let Some(map) = status.as_object_mut()
    {
        map.remove("lastApplied");
    }
    status
}

/// Creates or updates the Addon `name` with `outcome`; returns it as stored.
pub(super) async fn record(
    objects: &ObjectStore,
    registry: &Registry,
    name: &str,
    outcome: &Outcome<'_>,
) -> Result<Value, RegistryError> {
    let kind = addon_kind(registry)?;
    let spec = json!({ "source": outcome.source, "checksum": outcome.checksum });
    let options = WriteOptions::default();
    let current = match objects.get(&kind, None, name).await {
        Ok(current) => current,
        Err(RegistryError::NotFound { .. }) => {
            let addon = json!({
                "apiVersion": kind.api_version(),
                "kind": "Addon",
                "metadata": {
                    "name": name,
                    "labels": { "app.kubernetes.io/managed-by": FIELD_MANAGER },
                    "annotations": { APPLIED_BY_ANNOTATION: outcome.applied_by },
                },
                "spec": spec,
            });
            // A new object starts without status (as in Kubernetes): it follows at once.
            objects.create(&kind, None, addon, &options).await?;
            let next_status = status(outcome, &Value::Null);
            return objects
                .update(&kind, None, name, Part::Status, &options, |current| {
                    let mut next = current.clone();
                    next["status"] = next_status.clone();
                    meta_mut(&mut next).remove_resource_version();
                    Ok(next)
                })
                .await;
        }
        Err(error) => return Err(error),
    };
    // Status first, so the version carrying the new spec also carries this server's name.
    let next_status = status(outcome, &current["status"]);
    objects
        .update(&kind, None, name, Part::Status, &options, |current| {
            let mut next = current.clone();
            next["status"] = next_status.clone();
            meta_mut(&mut next).remove_resource_version();
            Ok(next)
        })
        .await?;
    objects
        .update(&kind, None, name, Part::Main, &options, |current| {
            let mut next = current.clone();
            next["spec"] = spec.clone();
            let mut fields = meta_mut(&mut next);
            fields.set_annotation(APPLIED_BY_ANNOTATION, json!(outcome.applied_by));
            fields.remove_resource_version();
            Ok(next)
        })
        .await
}

/// The Addon `name`, if it exists.
pub(super) async fn get(
    objects: &ObjectStore,
    registry: &Registry,
    name: &str,
) -> Result<Option<Value>, RegistryError> {
    let kind = addon_kind(registry)?;
    match objects.get(&kind, None, name).await {
        Ok(addon) => Ok(Some(addon)),
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Every Addon.
pub(super) async fn list(
    objects: &ObjectStore,
    registry: &Registry,
) -> Result<Vec<Value>, RegistryError> {
    let kind = addon_kind(registry)?;
    Ok(objects
        .list(
            &kind,
            None,
            &capstan_apiserver::storage::ListOptions::default(),
        )
        .await?
        .items)
}

/// Deletes the Addon `name` (not the objects it lists).
pub(super) async fn delete(
    objects: &ObjectStore,
    registry: &Registry,
    name: &str,
) -> Result<(), RegistryError> {
    let kind = addon_kind(registry)?;
    match objects
        .delete(
            &kind,
            None,
            name,
            &capstan_apiserver::registry::DeleteOptions::default(),
        )
        .await
    {
        Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The objects an Addon lists in its status.
pub(super) fn listed_objects(addon: &Value) -> Vec<ObjectRef> {
    addon["status"]["objects"]
        .as_array()
        .map(|entries| entries.iter().filter_map(ObjectRef::from_json).collect())
        .unwrap_or_default()
}

/// Records a Warning Event `ApplyManifestFailed` about `addon` in `kube-system`.
pub(super) async fn warn(
    objects: &ObjectStore,
    registry: &Registry,
    addon: &Value,
    message: &str,
) -> Result<(), RegistryError> {
    let kind = registry
        .catalog()
        .by_kind("v1", "Event")
        .ok_or_else(|| RegistryError::Internal("the catalog has no v1 Event".to_string()))?;
    let name = meta(addon).name().unwrap_or("");
    let now = timestamp(SystemTime::now());
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{name}.{:016x}", rand::random::<u64>()),
            "namespace": EVENT_NAMESPACE,
        },
        "involvedObject": {
            "apiVersion": format!("{ADDON_GROUP}/v1"),
            "kind": "Addon",
            "name": name,
            "uid": meta(addon).uid(),
            "resourceVersion": meta(addon).resource_version(),
        },
        "reason": FAILED_REASON,
        "message": message,
        "type": "Warning",
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": { "component": FIELD_MANAGER },
        "reportingComponent": FIELD_MANAGER,
    });
    objects
        .create(
            &kind,
            Some(EVENT_NAMESPACE),
            event,
            &WriteOptions::default(),
        )
        .await
        .map(|_| ())
}
