//! Node password Secrets follow their Nodes: deleting a Node deletes
//! `kube-system/<node>.node-password.capstan`, so the name can be registered again by a new
//! host (K3s's node password controller does the same).
//!
//! A node registers (creating its Secret) before its agent creates the Node object, and a
//! delete event can be missed while no server runs; so every [`SWEEP_INTERVAL`] the
//! password Secrets are also swept: one whose Node does not exist, whose agent is not
//! connected (no `/capstan/agents/<node>` record) and which is older than [`ORPHAN_AGE`]
//! is deleted. Deletes carry the Secret's uid, so a Secret re-created meanwhile survives,
//! and several servers running this at once race harmlessly.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capstan_machinery::meta;
use futures::StreamExt;
use serde_json::Value;

use super::ControllerError;
use capstan_apiserver::registry::{
    DeleteOptions, ObjectStore, Registry, RegistryError, ResourceType,
};
use capstan_apiserver::storage::{ListOptions, WatchEventType};
use capstan_cluster::agents::{
    PASSWORD_NAMESPACE, PASSWORD_SECRET_TYPE, node_of_password_secret, password_secret_name,
    record_key,
};

/// How often orphaned password Secrets are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);
/// How old a password Secret without Node and connection must be to count as orphaned.
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);
/// Secrets read per page.
const PAGE: usize = 500;

/// Runs until the Node watch fails; the caller restarts it.
pub(super) async fn run(
    objects: ObjectStore,
    registry: Arc<Registry>,
) -> Result<(), ControllerError> {
    let catalog = registry.catalog();
    let kind = |kind: &'static str| {
        catalog
            .by_kind("v1", kind)
            .ok_or_else(|| RegistryError::Internal(format!("the catalog has no v1 {kind} kind")))
    };
    let (nodes, secrets) = (kind("Node")?, kind("Secret")?);
    loop {
        let options = ListOptions {
            limit: 1,
            ..ListOptions::default()
        };
        let resource_version = objects.list(&nodes, None, &options).await?.resource_version;
        sweep(&objects, &nodes, &secrets).await?;
        let mut watch = objects.watch(&nodes, None, &resource_version).await?;
        let next_sweep = tokio::time::sleep(SWEEP_INTERVAL);
        tokio::pin!(next_sweep);
        loop {
            tokio::select! {
                event = watch.next() => match event {
                    Some(Ok(event)) if event.kind == WatchEventType::Deleted => {
                        let node = meta(&event.object).name().unwrap_or("");
                        if !node.is_empty() {
                            delete_password(&objects, &secrets, node, None).await?;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::debug!(%error, "node watch ended; listing again");
                        break;
                    }
                    None => return Err(ControllerError::WatchEnded("nodes")),
                },
                () = &mut next_sweep => break,
            }
        }
    }
}

/// Deletes `node`'s password Secret (only if it still has `uid`, when given).
async fn delete_password(
    objects: &ObjectStore,
    secrets: &ResourceType,
    node: &str,
    uid: Option<String>,
) -> Result<(), RegistryError> {
    let name = password_secret_name(node);
    let options = DeleteOptions {
        uid,
        ..DeleteOptions::default()
    };
    match objects
        .delete(secrets, Some(PASSWORD_NAMESPACE), &name, &options)
        .await
    {
        Ok(_) => {
            tracing::info!(%node, "deleted the node password Secret");
            Ok(())
        }
        Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Deletes the orphaned password Secrets.
async fn sweep(
    objects: &ObjectStore,
    nodes: &ResourceType,
    secrets: &ResourceType,
) -> Result<(), ControllerError> {
    let now = SystemTime::now();
    let mut continue_token = None;
    loop {
        let options = ListOptions {
            limit: PAGE,
            continue_token: continue_token.take(),
            ..ListOptions::default()
        };
        let page = objects
            .list(secrets, Some(PASSWORD_NAMESPACE), &options)
            .await?;
        for secret in &page.items {
            let Some(node) = old_password_secret(secret, now) else {
                continue;
            };
            match objects.get(nodes, None, node).await {
                Ok(_) => continue,
                Err(RegistryError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
            if objects
                .storage()
                .store()
                .get(&record_key(node))
                .await?
                .is_some()
            {
                continue;
            }
            let uid = meta(secret).uid().map(str::to_string);
            delete_password(objects, secrets, node, uid).await?;
        }
        continue_token = page.continue_token;
        if continue_token.is_none() {
            return Ok(());
        }
    }
}

/// The node of `secret` if it is a node password Secret older than [`ORPHAN_AGE`] at `now`.
fn old_password_secret(secret: &Value, now: SystemTime) -> Option<&str> {
    if secret["type"].as_str() != Some(PASSWORD_SECRET_TYPE) {
        return None;
    }
    let node = node_of_password_secret(meta(secret).name()?)?;
    let created = meta(secret).creation_timestamp()?;
    let created =
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .ok()?;
    let age = time::OffsetDateTime::from(now) - created;
    (age >= ORPHAN_AGE).then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(name: &str, kind: &str, created: &str) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created}, "type": kind})
    }

    #[test]
    fn only_old_node_password_secrets_are_candidates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10 * 3600);
        let old = "1970-01-01T08:00:00Z";
        let young = "1970-01-01T09:30:00Z";
        let candidate = secret("w1.node-password.capstan", PASSWORD_SECRET_TYPE, old);
        assert_eq!(old_password_secret(&candidate, now), Some("w1"));
        let fresh = secret("w1.node-password.capstan", PASSWORD_SECRET_TYPE, young);
        assert_eq!(old_password_secret(&fresh, now), None);
        let opaque = secret("w1.node-password.capstan", "Opaque", old);
        assert_eq!(old_password_secret(&opaque, now), None);
        let other = secret("db-credentials", PASSWORD_SECRET_TYPE, old);
        assert_eq!(old_password_secret(&other, now), None);
    }
}
