//! Object semantics over storage, for every kind alike (kube-apiserver's generic registry
//! store): what create, update and delete mean beyond writing bytes.
//!
//! - **Create** fills in what the server owns (uid, creationTimestamp, generation, a name
//!   from `generateName`), checks the metadata, and refuses objects in a namespace that is
//!   missing or terminating.
//! - **Update** is a read-modify-write: the caller's function gets the current object and
//!   returns the new one; server-owned fields are carried over, `generation` moves when the
//!   spec changes, and a subresource write touches only its part. A write that leaves an
//!   object being deleted with no finalizers completes the deletion.
//! - **Delete** with finalizers (including `orphan`/`foregroundDeletion` from the
//!   propagation policy, and a namespace's `spec.finalizers`) only marks the object with a
//!   deletionTimestamp; whoever removes the last finalizer deletes it.
//!
//! The API layer (`api/`) and the controllers (`controllers/`) both use this, so a
//! controller's write obeys the same rules as a client's. What a kind does differently
//! (a pod's graceful deletion, a namespace's lifecycle, a Secret's `stringData`) comes from
//! its [`Behaviour`](super::kind::Behaviour), never from its name.
//!
//! This file holds the verbs; `metadata.rs` the rules for server-owned fields and what an
//! update may change, `finalizers.rs` what holds a deletion back.

mod finalizers;
mod metadata;

use std::sync::Arc;
use std::time::SystemTime;

use capstan_machinery::{meta, meta_mut};
use serde_json::Value;

use super::error::{FieldError, RegistryError, from_storage};
use super::kind::ResourceType;
use super::namespaces::{Known, NamespaceCache, is_terminating};
use super::validate::check_metadata;
use crate::storage::{ListOptions, ListResult, ObjectKey, Storage, StorageError, WatchStream};
pub use finalizers::has_finalizers;
use finalizers::mark_for_deletion;
use metadata::{
    check_update, merge_for_update, prepare_for_create, random_suffix, without_version,
};

/// How many times a read-modify-write retries when another writer got in first.
const UPDATE_ATTEMPTS: usize = 16;

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Check and compute everything, persist nothing (`dryRun=All`).
    pub dry_run: bool,
}

/// What a delete does to the object's dependents (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the object now; the garbage collector deletes dependents afterwards.
    #[default]
    Background,
    /// Delete dependents first; the object waits with the `foregroundDeletion` finalizer.
    Foreground,
    /// Keep dependents, removing their owner reference; the object waits with `orphan`.
    Orphan,
}

/// Options of a delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete only if the object still has this uid.
    pub uid: Option<String>,
    /// Delete only if the object still has this resourceVersion.
    pub resource_version: Option<String>,
    /// What happens to dependents.
    pub propagation: Propagation,
    /// Check everything, delete nothing.
    pub dry_run: bool,
    /// Seconds a bound pod gets to stop (`gracePeriodSeconds`); 0 deletes at once.
    pub grace_period_seconds: Option<i64>,
}

/// What a delete did.
#[derive(Debug, Clone)]
pub enum DeleteOutcome {
    /// The object is gone; this was its last state.
    Deleted(Value),
    /// The object is marked for deletion and waits for its finalizers.
    Pending(Value),
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object, except `status` when the kind has a status subresource.
    Main,
    /// Only `status` (the `status` subresource).
    Status,
    /// Only `spec.finalizers` (a namespace's `finalize` subresource).
    Finalize,
}

/// Object semantics over one [`Storage`]; cheap to clone.
#[derive(Clone)]
pub struct ObjectStore {
    storage: Storage,
    namespaces: Arc<NamespaceCache>,
}

/// `resource.group` (or `resource` for core), as error messages name a kind.
pub fn qualified_resource(kind: &ResourceType) -> String {
    if kind.group.is_empty() {
        kind.resource.clone()
    } else {
        format!("{}.{}", kind.resource, kind.group)
    }
}

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds).
pub fn timestamp(now: SystemTime) -> String {
    let now = time::OffsetDateTime::from(now);
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

impl ObjectStore {
    /// Object semantics over `storage`.
    pub fn new(storage: Storage) -> ObjectStore {
        ObjectStore {
            storage,
            namespaces: Arc::default(),
        }
    }

    /// Keeps the namespace cache that spares each create a read of its namespace (see
    /// `registry/namespaces.rs`); until it runs, creates read the namespace live.
    pub async fn track_namespaces(&self, shutdown: tokio_util::sync::CancellationToken) {
        self.namespaces.run(self.storage.clone(), shutdown).await;
    }

    /// Tells the namespace cache about a namespace this server just wrote.
    fn wrote(&self, kind: &ResourceType, stored: &Value, deleted: bool) {
        if kind.behaviour.namespace_lifecycle {
            self.namespaces.note(stored, deleted);
        }
    }

    /// The storage underneath.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    fn key(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<ObjectKey, RegistryError> {
        let resource = if kind.namespaced {
            crate::storage::ResourceKey::namespaced(kind.storage_group(), &kind.resource)
        } else {
            crate::storage::ResourceKey::cluster_scoped(kind.storage_group(), &kind.resource)
        }
        .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        let namespace = if kind.namespaced { namespace } else { None };
        resource
            .object(namespace, name)
            .map_err(|e| RegistryError::BadRequest(e.to_string()))
    }

    /// The current object.
    pub async fn get(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, RegistryError> {
        let key = self.key(kind, namespace, name)?;
        self.storage
            .get(&key)
            .await
            .map_err(|e| from_storage(e, &qualified_resource(kind), name))
    }

    /// The object as of `resource_version`.
    pub async fn get_at(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        resource_version: &str,
    ) -> Result<Value, RegistryError> {
        let key = self.key(kind, namespace, name)?;
        self.storage
            .get_at(&key, resource_version)
            .await
            .map_err(|e| from_storage(e, &qualified_resource(kind), name))
    }

    /// One page of the objects of `kind` (in `namespace`, or everywhere).
    pub async fn list(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ListResult, RegistryError> {
        let prefix = self.prefix(kind, namespace)?;
        self.storage
            .list(&prefix, options)
            .await
            .map_err(|e| from_storage(e, &qualified_resource(kind), ""))
    }

    /// Every change to objects of `kind` (in `namespace`, or everywhere) after
    /// `resource_version`.
    pub async fn watch(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        resource_version: &str,
    ) -> Result<WatchStream, RegistryError> {
        let prefix = self.prefix(kind, namespace)?;
        self.storage
            .watch(&prefix, resource_version)
            .await
            .map_err(|e| from_storage(e, &qualified_resource(kind), ""))
    }

    fn prefix(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
    ) -> Result<crate::storage::KeyPrefix, RegistryError> {
        let resource = if kind.namespaced {
            crate::storage::ResourceKey::namespaced(kind.storage_group(), &kind.resource)
        } else {
            crate::storage::ResourceKey::cluster_scoped(kind.storage_group(), &kind.resource)
        }
        .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
        resource
            .prefix(if kind.namespaced { namespace } else { None })
            .map_err(|e| RegistryError::BadRequest(e.to_string()))
    }

    /// Creates `object` of `kind` in `namespace` (ignored for cluster-scoped kinds).
    pub async fn create(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        options: &WriteOptions,
    ) -> Result<Value, RegistryError> {
        prepare_for_create(kind, namespace, &mut object)?;
        if kind.namespaced {
            let namespace = meta(&object).namespace().unwrap_or("").to_string();
            self.check_namespace_open(kind, &namespace, &object).await?;
        }
        let generated = meta(&object).name().is_none_or(str::is_empty);
        for _ in 0..3 {
            if generated {
                let prefix = meta(&object).generate_name().unwrap_or("");
                let name = format!("{prefix}{}", random_suffix());
                meta_mut(&mut object).set_name(name);
            }
            let causes = check_metadata(kind, &object);
            if !causes.is_empty() {
                return Err(invalid(kind, &object, causes));
            }
            let name = meta(&object).name().unwrap_or("").to_string();
            let key = self.key(kind, meta(&object).namespace(), &name)?;
            if options.dry_run {
                return match self.storage.get(&key).await {
                    Ok(_) => Err(RegistryError::AlreadyExists {
                        qualified: qualified_resource(kind),
                        name,
                    }),
                    Err(StorageError::NotFound { .. }) => Ok(object),
                    Err(e) => Err(from_storage(e, &qualified_resource(kind), &name)),
                };
            }
            match self.storage.create(&key, object.clone()).await {
                Err(StorageError::AlreadyExists { .. }) if generated => continue,
                Ok(created) => {
                    self.wrote(kind, &created, false);
                    return Ok(created);
                }
                other => {
                    return other.map_err(|e| from_storage(e, &qualified_resource(kind), &name));
                }
            }
        }
        Err(RegistryError::AlreadyExists {
            qualified: qualified_resource(kind),
            name: "(generated names collided three times)".to_string(),
        })
    }

    async fn check_namespace_open(
        &self,
        kind: &ResourceType,
        namespace: &str,
        object: &Value,
    ) -> Result<(), RegistryError> {
        let terminating = match self.namespaces.lookup(namespace) {
            Known::Open => false,
            Known::Terminating => true,
            Known::Unknown => {
                let key = crate::storage::ResourceKey::cluster_scoped("core", "namespaces")
                    .and_then(|r| r.object(None, namespace))
                    .map_err(|e| RegistryError::BadRequest(e.to_string()))?;
                match self.storage.get(&key).await {
                    Ok(found) => is_terminating(&found),
                    Err(StorageError::NotFound { .. }) => {
                        return Err(RegistryError::NotFound {
                            qualified: "namespaces".to_string(),
                            name: namespace.to_string(),
                        });
                    }
                    Err(e) => return Err(from_storage(e, "namespaces", namespace)),
                }
            }
        };
        if terminating {
            let name = name_or_prefix(object);
            return Err(RegistryError::Forbidden {
                message: format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    qualified_resource(kind)
                ),
            });
        }
        Ok(())
    }

    /// Read-modify-write of one object: `change` gets the current object and returns the
    /// new one (or an error, which ends the attempt). Retries on a lost race unless the
    /// new object pins a resourceVersion (then a stale one is a `Conflict`). Returns the
    /// object as stored, or as deleted when the write removed its last finalizer.
    pub async fn update<F>(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        options: &WriteOptions,
        mut change: F,
    ) -> Result<Value, RegistryError>
    where
        F: FnMut(&Value) -> Result<Value, RegistryError> + Send,
    {
        let key = self.key(kind, namespace, name)?;
        let qualified = qualified_resource(kind);
        for _ in 0..UPDATE_ATTEMPTS {
            let current = self
                .storage
                .get(&key)
                .await
                .map_err(|e| from_storage(e, &qualified, name))?;
            let current_version = meta(&current).resource_version().unwrap_or("").to_string();
            let proposed = change(&current)?;
            if let Some(given) = meta(&proposed).name()
                && given != name
            {
                return Err(RegistryError::BadRequest(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            let pinned = meta(&proposed)
                .resource_version()
                .filter(|v| !v.is_empty())
                .map(str::to_string);
            if let Some(pinned) = &pinned
                && *pinned != current_version
            {
                return Err(conflict(kind, name));
            }
            let next = merge_for_update(kind, &current, proposed, part)?;
            let mut causes = check_metadata(kind, &next);
            causes.extend(check_update(kind, &current, &next));
            if !causes.is_empty() {
                return Err(invalid(kind, &next, causes));
            }
            if meta(&next).name() != meta(&current).name() {
                return Err(RegistryError::BadRequest(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta(&next).name().unwrap_or("")
                )));
            }
            let finishing = meta(&next).is_deleting() && !has_finalizers(kind, &next);
            if options.dry_run {
                return Ok(next);
            }
            if finishing {
                return match self.storage.delete(&key, Some(&current_version)).await {
                    Err(StorageError::Conflict { .. }) if pinned.is_none() => continue,
                    Ok(last) => {
                        self.wrote(kind, &last, true);
                        Ok(last)
                    }
                    Err(e) => Err(from_storage(e, &qualified, name)),
                };
            }
            if without_version(&next) == without_version(&current) {
                return Ok(current);
            }
            match self.storage.update(&key, next, &current_version).await {
                Err(StorageError::Conflict { .. }) if pinned.is_none() => continue,
                Ok(stored) => {
                    self.wrote(kind, &stored, false);
                    return Ok(stored);
                }
                Err(e) => return Err(from_storage(e, &qualified, name)),
            }
        }
        Err(conflict(kind, name))
    }

    /// Deletes an object, or marks it for deletion when finalizers must run first.
    pub async fn delete(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<DeleteOutcome, RegistryError> {
        let key = self.key(kind, namespace, name)?;
        let qualified = qualified_resource(kind);
        for _ in 0..UPDATE_ATTEMPTS {
            let current = match self.storage.get(&key).await {
                Ok(current) => current,
                // Nothing of it can be read (finalizers, grace, preconditions): it goes.
                Err(error @ StorageError::Undecodable { .. }) if !options.dry_run => {
                    tracing::warn!(%error, "deleting a stored object that cannot be decoded");
                    let last = self
                        .storage
                        .delete(&key, None)
                        .await
                        .map_err(|e| from_storage(e, &qualified, name))?;
                    return Ok(DeleteOutcome::Deleted(last));
                }
                Err(error) => return Err(from_storage(error, &qualified, name)),
            };
            let version = meta(&current).resource_version().unwrap_or("").to_string();
            if let Some(uid) = &options.uid
                && meta(&current).uid() != Some(uid.as_str())
            {
                return Err(RegistryError::Conflict {
                    qualified: qualified.clone(),
                    name: name.to_string(),
                    reason: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta(&current).uid().unwrap_or("")
                    ),
                });
            }
            if let Some(expected) = &options.resource_version
                && *expected != version
            {
                return Err(RegistryError::Conflict {
                    qualified: qualified.clone(),
                    name: name.to_string(),
                    reason: format!(
                        "Precondition failed: ResourceVersion in precondition: {expected}, ResourceVersion in object meta: {version}"
                    ),
                });
            }
            let Some(marked) = mark_for_deletion(kind, &current, options) else {
                if options.dry_run {
                    return Ok(DeleteOutcome::Deleted(current));
                }
                match self.storage.delete(&key, Some(&version)).await {
                    Ok(last) => {
                        self.wrote(kind, &last, true);
                        return Ok(DeleteOutcome::Deleted(last));
                    }
                    Err(StorageError::Conflict { .. }) if options.resource_version.is_none() => {
                        continue;
                    }
                    Err(e) => return Err(from_storage(e, &qualified, name)),
                }
            };
            if options.dry_run || marked == current {
                return Ok(DeleteOutcome::Pending(marked));
            }
            match self.storage.update(&key, marked, &version).await {
                Ok(stored) => {
                    self.wrote(kind, &stored, false);
                    return Ok(DeleteOutcome::Pending(stored));
                }
                Err(StorageError::Conflict { .. }) if options.resource_version.is_none() => {
                    continue;
                }
                Err(e) => return Err(from_storage(e, &qualified, name)),
            }
        }
        Err(conflict(kind, name))
    }
}

fn conflict(kind: &ResourceType, name: &str) -> RegistryError {
    RegistryError::Conflict {
        qualified: qualified_resource(kind),
        name: name.to_string(),
        reason: "the object has been modified; please apply your changes to the latest version and try again".to_string(),
    }
}

/// An `Invalid` error for `object` of `kind`.
pub fn invalid(kind: &ResourceType, object: &Value, causes: Vec<FieldError>) -> RegistryError {
    RegistryError::Invalid {
        kind: kind.kind.clone(),
        group_suffix: kind.group.clone(),
        name: name_or_prefix(object).to_string(),
        causes,
    }
}

/// The name errors give an object: its name, else its `generateName` prefix.
fn name_or_prefix(object: &Value) -> &str {
    let meta = meta(object);
    meta.name().or(meta.generate_name()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20Z");
    }
}
