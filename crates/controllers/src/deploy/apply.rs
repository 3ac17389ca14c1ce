//! Applying one object from a file by server-side apply, and pruning one, through the same
//! patch engine and object store the API's `application/apply-patch+yaml` path uses.

use std::sync::Arc;
use std::time::SystemTime;

use capstan_machinery::{meta, meta_mut};
use serde_json::{Value, json};

use capstan_apiserver::registry::{
    DeleteOptions, ObjectStore, Part, Registry, RegistryError, ResourceType, WriteOptions,
    timestamp,
};
use capstan_patch::{FieldManager, server_side_apply};

/// The field manager of every write the deployer makes.
pub const FIELD_MANAGER: &str = "capstan-deploy";

/// Which object a file created: the entries of an Addon's `status.objects`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// As stored in `status.objects`.
    pub fn to_json(&self) -> Value {
        let mut entry = json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
        });
        if !self.namespace.is_empty() {
            entry["namespace"] = json!(self.namespace);
        }
        entry
    }

    /// From a `status.objects` entry.
    pub fn from_json(entry: &Value) -> Option<ObjectRef> {
        Some(ObjectRef {
            api_version: entry["apiVersion"].as_str()?.to_string(),
            kind: entry["kind"].as_str()?.to_string(),
            namespace: entry["namespace"].as_str().unwrap_or("").to_string(),
            name: entry["name"].as_str()?.to_string(),
        })
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why one object could not be applied.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApplyObjectError {
    /// The catalog does not serve the object's kind (yet: a CRD may still be settling).
    #[error("{api_version} {kind} {name}: unknown kind (no such resource is served)")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// The write was refused.
    #[error("{object}: {source}")]
    Write {
        /// The object.
        object: String,
        /// Why.
        #[source]
        source: RegistryError,
    },
}

/// The kind of `apiVersion`/`kind` in the current catalog.
fn find_kind(registry: &Registry, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
    registry.catalog().by_kind(api_version, kind)
}

/// Kind-specific checks the API makes on writes: custom resources against their schema,
/// CRDs by the CRD rules.
fn validate(kind: &ResourceType, object: &mut Value) -> Result<(), RegistryError> {
    let causes = capstan_apiserver::registry::validate_write(kind, object);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(capstan_apiserver::registry::invalid(kind, object, causes))
    }
}

/// Applies `object` (server-side apply, manager `capstan-deploy`, forcing conflicts: the
/// file is the desired state), creating it when it does not exist.
pub(super) async fn apply_object(
    objects: &ObjectStore,
    registry: &Registry,
    object: &Value,
) -> Result<ObjectRef, ApplyObjectError> {
    let api_version = object["apiVersion"].as_str().unwrap_or("").to_string();
    let kind_name = object["kind"].as_str().unwrap_or("").to_string();
    let name = meta(object).name().unwrap_or("").to_string();
    let Some(kind) = find_kind(registry, &api_version, &kind_name) else {
        return Err(ApplyObjectError::UnknownKind {
            api_version,
            kind: kind_name,
            name,
        });
    };
    let mut patch = object.clone();
    let namespace = if kind.namespaced {
        let namespace = meta(object)
            .namespace()
            .filter(|ns| !ns.is_empty())
            .unwrap_or("default")
            .to_string();
        meta_mut(&mut patch).set_namespace(namespace.clone());
        namespace
    } else {
        meta_mut(&mut patch).remove_namespace();
        String::new()
    };
    let reference = ObjectRef {
        api_version: kind.api_version(),
        kind: kind.kind.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let failed = |source: RegistryError| ApplyObjectError::Write {
        object: reference.to_string(),
        source,
    };
    let manager = FieldManager {
        name: FIELD_MANAGER.to_string(),
        api_version: kind.api_version(),
        time: timestamp(SystemTime::now()),
        subresource: None,
    };
    let ns = kind.namespaced.then_some(namespace.as_str());
    let options = WriteOptions::default();
    let updated = objects
        .update(&kind, ns, &name, Part::Main, &options, |current| {
            let mut next =
                server_side_apply(Some(current), &patch, &manager, true, kind.object_type())
                    .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
            // The current resourceVersion came along: it is no precondition.
            if meta(&next).resource_version() == meta(current).resource_version() {
                meta_mut(&mut next).remove_resource_version();
            }
            validate(&kind, &mut next)?;
            Ok(next)
        })
        .await;
    match updated {
        Ok(_) => Ok(reference),
        Err(RegistryError::NotFound { .. }) => {
            let mut created = server_side_apply(None, &patch, &manager, true, kind.object_type())
                .map_err(|e| failed(RegistryError::BadRequest(e.to_string())))?;
            validate(&kind, &mut created).map_err(failed)?;
            match objects.create(&kind, ns, created, &options).await {
                Ok(_) => Ok(reference),
                Err(error) => Err(failed(error)),
            }
        }
        Err(error) => Err(failed(error)),
    }
}

/// Deletes an object a file no longer holds; an object already gone is fine.
pub(super) async fn delete_object(
    objects: &ObjectStore,
    registry: &Registry,
    object: &ObjectRef,
) -> Result<(), RegistryError> {
    let Some(kind) = find_kind(registry, &object.api_version, &object.kind) else {
        tracing::warn!(%object, "cannot prune: its kind is no longer served");
        return Ok(());
    };
    let namespace = kind.namespaced.then_some(object.namespace.as_str());
    match objects
        .delete(&kind, namespace, &object.name, &DeleteOptions::default())
        .await
    {
        Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}
