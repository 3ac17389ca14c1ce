//! The namespaces every cluster has, created at start by whichever server gets there first.

use serde_json::json;

use capstan_apiserver::registry::{ObjectStore, Registry, RegistryError, WriteOptions};

/// Created at start when missing, as kube-apiserver's system namespaces controller does.
pub const DEFAULT_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the [`DEFAULT_NAMESPACES`] that do not exist. Several servers may run this at
/// once: a namespace another one created first is fine.
pub async fn ensure_default_namespaces(
    objects: &ObjectStore,
    registry: &Registry,
) -> Result<(), RegistryError> {
    let kind = super::namespace_kind(registry)?;
    for name in DEFAULT_NAMESPACES {
        match objects.get(&kind, None, name).await {
            Ok(_) => continue,
            Err(RegistryError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match objects
            .create(&kind, None, namespace, &WriteOptions::default())
            .await
        {
            Ok(_) => tracing::info!(namespace = name, "created a default namespace"),
            Err(RegistryError::AlreadyExists { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
