//! Placeholder until the controllers land.
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::registry::{ObjectStore, Registry, RegistryError, WriteOptions};

/// Creates the default namespaces.
pub async fn ensure_default_namespaces(
    objects: &ObjectStore,
    registry: &Registry,
) -> Result<(), RegistryError> {
    let catalog = registry.catalog();
    let Some(kind) = catalog.lookup("", "v1", "namespaces") else {
        return Ok(());
    };
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match objects
            .create(&kind, None, object, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(RegistryError::AlreadyExists { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Runs the controllers.
pub async fn run(_objects: ObjectStore, _registry: Arc<Registry>, shutdown: CancellationToken) {
    shutdown.cancelled().await;
}
