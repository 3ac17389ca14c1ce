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
//! controller's write obeys the same rules as a client's.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value, json};

use super::error::{FieldError, RegistryError, from_storage};
use super::kind::ResourceType;
use super::namespaces::{Known, NamespaceCache, is_terminating};
use super::validate::check_metadata;
use crate::storage::{ListOptions, ListResult, ObjectKey, Storage, StorageError, WatchStream};

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
        if kind.group.is_empty() && kind.kind == "Namespace" {
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
            let namespace = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            self.check_namespace_open(kind, &namespace, &object).await?;
        }
        let generated = object["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty);
        for _ in 0..3 {
            if generated {
                let prefix = object["metadata"]["generateName"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                object["metadata"]["name"] = Value::String(format!("{prefix}{}", random_suffix()));
            }
            let causes = check_metadata(kind, &object);
            if !causes.is_empty() {
                return Err(invalid(kind, &object, causes));
            }
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let key = self.key(kind, namespace_of(&object), &name)?;
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
            let name = object["metadata"]["name"]
                .as_str()
                .or(object["metadata"]["generateName"].as_str())
                .unwrap_or("");
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
            let current_version = current["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let proposed = change(&current)?;
            if let Some(given) = proposed["metadata"]["name"].as_str()
                && given != name
            {
                return Err(RegistryError::BadRequest(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            let pinned = proposed["metadata"]["resourceVersion"]
                .as_str()
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
            if next["metadata"]["name"] != current["metadata"]["name"] {
                return Err(RegistryError::BadRequest(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    next["metadata"]["name"].as_str().unwrap_or("")
                )));
            }
            let finishing =
                next["metadata"]["deletionTimestamp"].is_string() && !has_finalizers(&next);
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
            let version = current["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if let Some(uid) = &options.uid
                && current["metadata"]["uid"].as_str() != Some(uid)
            {
                return Err(RegistryError::Conflict {
                    qualified: qualified.clone(),
                    name: name.to_string(),
                    reason: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        current["metadata"]["uid"].as_str().unwrap_or("")
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
            let mut marked = current.clone();
            match options.propagation {
                Propagation::Orphan => add_finalizer(&mut marked, "orphan"),
                Propagation::Foreground => add_finalizer(&mut marked, "foregroundDeletion"),
                Propagation::Background => {}
            }
            let grace = graceful_deletion(kind, &current, options.grace_period_seconds);
            if !has_finalizers(&marked) && grace.is_none() {
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
            }
            if !marked["metadata"]["deletionTimestamp"].is_string() {
                let seconds = grace.unwrap_or(0);
                let at = SystemTime::now() + std::time::Duration::from_secs(seconds.unsigned_abs());
                marked["metadata"]["deletionTimestamp"] = Value::String(timestamp(at));
                marked["metadata"]["deletionGracePeriodSeconds"] = json!(seconds);
            }
            if kind.group.is_empty() && kind.kind == "Namespace" {
                marked["status"]["phase"] = json!("Terminating");
            }
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

/// The grace period of deleting `current`, when it gets one: a pod bound to a node is left
/// to its kubelet to stop (30 s unless the pod or the request says otherwise); an unbound
/// pod, and any other object, goes at once.
fn graceful_deletion(kind: &ResourceType, current: &Value, requested: Option<i64>) -> Option<i64> {
    let bound = current["spec"]["nodeName"]
        .as_str()
        .is_some_and(|node| !node.is_empty());
    if !(kind.group.is_empty() && kind.kind == "Pod" && bound) {
        return None;
    }
    let seconds = requested
        .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    (seconds > 0).then_some(seconds)
}

/// What an update may not change (upstream's ValidateUpdate rules that clients meet most).
fn check_update(kind: &ResourceType, current: &Value, next: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let immutable = |field: &str| FieldError {
        field: field.to_string(),
        cause: "FieldValueInvalid",
        message: "Invalid value: field is immutable".to_string(),
    };
    match (kind.group.as_str(), kind.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch", "Job")
            if current["spec"]["selector"] != next["spec"]["selector"] =>
        {
            causes.push(immutable("spec.selector"));
        }
        ("", "ConfigMap" | "Secret") if current["immutable"] == json!(true) => {
            if next["immutable"] != json!(true) {
                causes.push(immutable("immutable"));
            }
            for field in ["data", "binaryData"] {
                if current[field] != next[field] {
                    causes.push(FieldError {
                        field: field.to_string(),
                        cause: "FieldValueForbidden",
                        message: "Forbidden: field is immutable when `immutable` is set"
                            .to_string(),
                    });
                }
            }
        }
        _ => {}
    }
    causes
}

/// A Secret's `stringData` is a write-only convenience: merged into `data`, base64.
fn fold_string_data(kind: &ResourceType, object: &mut Value) {
    use base64::Engine as _;
    if !(kind.group.is_empty() && kind.kind == "Secret") {
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

fn namespace_of(object: &Value) -> Option<&str> {
    object["metadata"]["namespace"].as_str()
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
        name: object["metadata"]["name"]
            .as_str()
            .or(object["metadata"]["generateName"].as_str())
            .unwrap_or("")
            .to_string(),
        causes,
    }
}

fn random_suffix() -> String {
    // Upstream's alphabet: no vowels (no words) and no look-alike characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn without_version(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    copy
}

/// Whether anything still holds the object back from deletion.
pub fn has_finalizers(object: &Value) -> bool {
    let listed = |value: &Value| value.as_array().is_some_and(|list| !list.is_empty());
    listed(&object["metadata"]["finalizers"])
        || (object["kind"] == "Namespace" && listed(&object["spec"]["finalizers"]))
}

fn add_finalizer(object: &mut Value, finalizer: &str) {
    let meta = &mut object["metadata"];
    if !meta["finalizers"].is_array() {
        meta["finalizers"] = json!([]);
    }
    if let Some(list) = meta["finalizers"].as_array_mut()
        && !list.iter().any(|f| f == finalizer)
    {
        list.push(json!(finalizer));
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

/// Fills in the server-owned fields of a new object and checks it claims the right kind.
fn prepare_for_create(
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
    if !object["metadata"].is_object() {
        object["metadata"] = Value::Object(Map::new());
    }
    let meta = &mut object["metadata"];
    if kind.namespaced {
        let requested = namespace.unwrap_or("");
        match meta["namespace"].as_str() {
            Some(given) if !given.is_empty() && given != requested => {
                return Err(RegistryError::BadRequest(format!(
                    "the namespace of the provided object ({given}) does not match the namespace sent on the request ({requested})"
                )));
            }
            _ => meta["namespace"] = Value::String(requested.to_string()),
        }
    } else if let Some(map) = meta.as_object_mut() {
        map.remove("namespace");
    }
    if let Some(map) = meta.as_object_mut() {
        for owned in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            map.remove(owned);
        }
        map.insert(
            "uid".to_string(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        map.insert(
            "creationTimestamp".to_string(),
            Value::String(timestamp(SystemTime::now())),
        );
        if kind.has_spec_generation {
            map.insert("generation".to_string(), json!(1));
        } else {
            map.remove("generation");
        }
    }
    // Status is the controllers' to write, through the status subresource; a new object
    // starts without one (as kube-apiserver's PrepareForCreate clears it).
    if kind.subresources.status
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    super::defaults::apply_defaults(kind, object);
    fold_string_data(kind, object);
    Ok(())
}

/// `apiVersion` and `kind`: filled in when missing, a `BadRequest` when they name another
/// kind than the URL.
pub fn check_type_meta(kind: &ResourceType, object: &mut Value) -> Result<(), RegistryError> {
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
fn merge_for_update(
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
    if !next["metadata"].is_object() {
        next["metadata"] = Value::Object(Map::new());
    }
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "generation",
    ] {
        match current["metadata"].get(owned) {
            Some(value) => next["metadata"][owned] = value.clone(),
            None => {
                if let Some(map) = next["metadata"].as_object_mut() {
                    map.remove(owned);
                }
            }
        }
    }
    if kind.group.is_empty() && kind.kind == "Namespace" && part == Part::Main {
        next["spec"] = current["spec"].clone();
    }
    fold_string_data(kind, &mut next);
    if kind.has_spec_generation && part == Part::Main && spec_of(&next) != spec_of(current) {
        let generation = current["metadata"]["generation"].as_i64().unwrap_or(0);
        next["metadata"]["generation"] = json!(generation + 1);
    }
    Ok(next)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn a_spec_change_moves_generation_and_keeps_server_fields() {
        let registry = crate::registry::Registry::new();
        let kind = registry
            .catalog()
            .lookup("apps", "v1", "deployments")
            .expect("served");
        let current = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "generation": 1, "resourceVersion": "5"},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let proposed = json!({"metadata": {"name": "web", "uid": "forged"}, "spec": {"replicas": 3}, "status": {"replicas": 9}});
        let next = merge_for_update(&kind, &current, proposed, Part::Main).expect("valid");
        assert_eq!(next["metadata"]["uid"], "u1");
        assert_eq!(next["metadata"]["generation"], 2);
        assert_eq!(next["status"]["replicas"], 1, "status only through /status");
    }
}
