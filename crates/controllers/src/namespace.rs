//! The namespace lifecycle controller: empties a namespace being deleted, then lets it go.
//!
//! `ObjectStore::delete` only marks a namespace (deletionTimestamp, phase `Terminating`)
//! because of the `kubernetes` entry in its `spec.finalizers`. This controller watches
//! namespaces (list, then watch from the list's resourceVersion; a failed watch lists
//! again, and so does a periodic resync) and starts one worker per terminating namespace.
//! A worker deletes every object of every namespaced kind in the current catalog, in
//! passes: a pass that deleted something is followed at once by another (an object
//! created just before the namespace was marked may land after a list), a pass that found
//! only objects waiting for their finalizers is retried every second, and the first pass
//! that finds nothing removes `kubernetes` from `spec.finalizers` (the store then deletes
//! the namespace once no finalizer is left). Progress is reported in the namespace's
//! status conditions as upstream does, so `kubectl describe ns` says what it waits for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capstan_machinery::meta;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Backoff, ControllerError};
use capstan_apiserver::registry::{
    DeleteOptions, DeleteOutcome, ObjectStore, Part, Registry, RegistryError, ResourceType,
    WriteOptions, qualified_resource, timestamp,
};
use capstan_apiserver::storage::{ListOptions, WatchEventType};

/// The finalizer this controller owns in a namespace's `spec.finalizers`.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";
/// How often a namespace whose content waits for finalizers is looked at again.
const WAIT_FOR_FINALIZERS: Duration = Duration::from_secs(1);
/// How often every namespace is listed again, in case an event was missed.
const RESYNC: Duration = Duration::from_secs(30);
/// Kinds emptied at once.
const KINDS_AT_ONCE: usize = 8;
/// Deletes in flight at once within one kind.
const DELETES_AT_ONCE: usize = 16;
/// Objects read per page.
const PAGE: usize = 500;

/// Runs until the watch fails; the caller restarts it.
pub(super) async fn run(
    objects: ObjectStore,
    registry: Arc<Registry>,
) -> Result<(), ControllerError> {
    let kind = super::namespace_kind(&registry)?;
    let mut workers = Workers {
        objects: objects.clone(),
        registry: registry.clone(),
        tasks: JoinSet::new(),
        names: HashMap::new(),
    };
    loop {
        let mut continue_token = None;
        let resource_version = loop {
            let options = ListOptions {
                limit: PAGE,
                continue_token: continue_token.take(),
                ..ListOptions::default()
            };
            let page = objects.list(&kind, None, &options).await?;
            for namespace in page.items.iter().filter(|n| terminating(n)) {
                workers.start(name_of(namespace));
            }
            continue_token = page.continue_token;
            if continue_token.is_none() {
                break page.resource_version;
            }
        };
        let mut watch = objects.watch(&kind, None, &resource_version).await?;
        let resync = tokio::time::sleep(RESYNC);
        tokio::pin!(resync);
        loop {
            tokio::select! {
                event = watch.next() => match event {
                    Some(Ok(event)) => {
                        let live = matches!(event.kind, WatchEventType::Added | WatchEventType::Modified);
                        if live && terminating(&event.object) {
                            workers.start(name_of(&event.object));
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "namespace watch ended; listing again");
                        break;
                    }
                    None => break,
                },
                Some(done) = workers.tasks.join_next_with_id(), if !workers.tasks.is_empty() => {
                    workers.finished(done);
                }
                _ = &mut resync => break,
            }
        }
    }
}

/// One worker per terminating namespace. Dropping it (on shutdown or error) aborts the
/// workers: each step of a worker is a complete write, so stopping between two is safe.
struct Workers {
    objects: ObjectStore,
    registry: Arc<Registry>,
    tasks: JoinSet<()>,
    names: HashMap<tokio::task::Id, String>,
}

impl Workers {
    /// Starts finalizing `name` unless a worker already does.
    fn start(&mut self, name: &str) {
        if self.names.values().any(|running| running == name) {
            return;
        }
        let (objects, registry) = (self.objects.clone(), self.registry.clone());
        let handle = self
            .tasks
            .spawn(finalize(objects, registry, name.to_string()));
        self.names.insert(handle.id(), name.to_string());
    }

    /// Forgets a worker that ended (a later event or resync starts another if needed).
    fn finished(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match &done {
            Ok((id, ())) => *id,
            Err(error) => {
                tracing::error!(%error, "a namespace worker ended abnormally");
                error.id()
            }
        };
        self.names.remove(&id);
    }
}

fn terminating(namespace: &Value) -> bool {
    meta(namespace).is_deleting()
}

fn name_of(object: &Value) -> &str {
    meta(object).name().unwrap_or("")
}

/// What one pass over a namespace's content found.
#[derive(Debug, Default)]
struct Pass {
    /// Objects seen (deleted now or already being deleted).
    seen: usize,
    /// Objects left waiting for finalizers, by qualified resource.
    remaining: BTreeMap<String, usize>,
    /// Finalizers those objects wait for, with how many objects each.
    finalizers: BTreeMap<String, usize>,
    /// Kinds that could not be emptied, with why.
    failures: Vec<String>,
}

/// Where a namespace being finalized stands after a pass.
enum Progress {
    /// The namespace is gone, no longer terminating, or no longer ours to finalize.
    Done,
    /// Objects were deleted: look again at once.
    Again,
    /// Objects wait for their finalizers.
    Waiting,
}

/// Empties and finalizes one terminating namespace; returns when that is done.
async fn finalize(objects: ObjectStore, registry: Arc<Registry>, name: String) {
    let mut backoff = Backoff::default();
    loop {
        match finalize_pass(&objects, &registry, &name).await {
            Ok(Progress::Done) => return,
            Ok(Progress::Again) => backoff.reset(),
            Ok(Progress::Waiting) => {
                backoff.reset();
                tokio::time::sleep(WAIT_FOR_FINALIZERS).await;
            }
            Err(error) => {
                tracing::warn!(namespace = %name, %error, "deleting the content of a namespace failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn finalize_pass(
    objects: &ObjectStore,
    registry: &Registry,
    name: &str,
) -> Result<Progress, RegistryError> {
    let namespace_kind = super::namespace_kind(registry)?;
    let namespace = match objects.get(&namespace_kind, None, name).await {
        Ok(found) => found,
        Err(RegistryError::NotFound { .. }) => return Ok(Progress::Done),
        Err(error) => return Err(error),
    };
    let ours = namespace["spec"]["finalizers"]
        .as_array()
        .is_some_and(|list| list.iter().any(|f| f == KUBERNETES_FINALIZER));
    if !terminating(&namespace) || !ours {
        return Ok(Progress::Done);
    }
    let uid = meta(&namespace).uid().unwrap_or("").to_string();
    let pass = delete_content(objects, registry, name).await;
    set_conditions(objects, &namespace_kind, name, &uid, &pass).await;
    if let Some(failure) = pass.failures.first() {
        return Err(RegistryError::Internal(failure.clone()));
    }
    if !pass.remaining.is_empty() {
        return Ok(Progress::Waiting);
    }
    if pass.seen > 0 {
        return Ok(Progress::Again);
    }
    let result = objects
        .update(
            &namespace_kind,
            None,
            name,
            Part::Finalize,
            &WriteOptions::default(),
            |current| {
                if meta(current).uid() != Some(uid.as_str()) {
                    return Err(RegistryError::NotFound {
                        qualified: "namespaces".to_string(),
                        name: name.to_string(),
                    });
                }
                let mut next = current.clone();
                if let Some(list) = next["spec"]["finalizers"].as_array_mut() {
                    list.retain(|f| f != KUBERNETES_FINALIZER);
                }
                Ok(next)
            },
        )
        .await;
    match result {
        Ok(_) | Err(RegistryError::NotFound { .. }) => Ok(Progress::Done),
        Err(RegistryError::Conflict { .. }) => Ok(Progress::Again),
        Err(error) => Err(error),
    }
}

/// One pass: deletes every object in `namespace`, kinds in parallel.
async fn delete_content(objects: &ObjectStore, registry: &Registry, namespace: &str) -> Pass {
    let catalog = registry.catalog();
    // Versions of one resource share their objects: empty each stored resource once.
    let mut stored = HashSet::new();
    let kinds: Vec<Arc<ResourceType>> = catalog
        .all()
        .iter()
        .filter(|kind| kind.namespaced)
        .filter(|kind| stored.insert((kind.storage_group().to_string(), kind.resource.clone())))
        .cloned()
        .collect();
    let results: Vec<_> = futures::stream::iter(kinds)
        .map(|kind| async move {
            let result = delete_kind(objects, &kind, namespace).await;
            (kind, result)
        })
        .buffer_unordered(KINDS_AT_ONCE)
        .collect()
        .await;
    let mut pass = Pass::default();
    for (kind, result) in results {
        let qualified = qualified_resource(&kind);
        match result {
            Ok(found) => {
                pass.seen += found.seen;
                if found.waiting > 0 {
                    pass.remaining.insert(qualified, found.waiting);
                }
                for (finalizer, count) in found.finalizers {
                    *pass.finalizers.entry(finalizer).or_default() += count;
                }
            }
            Err(error) => pass.failures.push(format!("{qualified}: {error}")),
        }
    }
    pass
}

/// What deleting one kind's objects found.
#[derive(Debug, Default)]
struct KindPass {
    seen: usize,
    waiting: usize,
    finalizers: BTreeMap<String, usize>,
}

async fn delete_kind(
    objects: &ObjectStore,
    kind: &ResourceType,
    namespace: &str,
) -> Result<KindPass, RegistryError> {
    let mut found = KindPass::default();
    let mut continue_token = None;
    loop {
        let options = ListOptions {
            limit: PAGE,
            continue_token: continue_token.take(),
            ..ListOptions::default()
        };
        let page = objects.list(kind, Some(namespace), &options).await?;
        let outcomes: Vec<Result<Option<Value>, RegistryError>> = futures::stream::iter(page.items)
            .map(|item| async move {
                let options = DeleteOptions {
                    uid: meta(&item).uid().map(str::to_string),
                    ..DeleteOptions::default()
                };
                match objects
                    .delete(kind, Some(namespace), name_of(&item), &options)
                    .await
                {
                    Ok(DeleteOutcome::Deleted(_)) => Ok(None),
                    Ok(DeleteOutcome::Pending(marked)) => Ok(Some(marked)),
                    // Gone, or replaced since the list: the next pass sees what is there.
                    Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => {
                        Ok(None)
                    }
                    Err(error) => Err(error),
                }
            })
            .buffer_unordered(DELETES_AT_ONCE)
            .collect()
            .await;
        for outcome in outcomes {
            found.seen += 1;
            if let Some(pending) = outcome? {
                found.waiting += 1;
                for finalizer in meta(&pending).finalizers() {
                    *found.finalizers.entry(finalizer.to_string()).or_default() += 1;
                }
            }
        }
        continue_token = page.continue_token;
        if continue_token.is_none() {
            return Ok(found);
        }
    }
}

/// Writes upstream's deletion conditions; a failure only costs the report.
async fn set_conditions(
    objects: &ObjectStore,
    kind: &ResourceType,
    name: &str,
    uid: &str,
    pass: &Pass,
) {
    let counted = |map: &BTreeMap<String, usize>, what: &str| {
        map.iter()
            .map(|(key, count)| format!("{key}{what}{count} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let wanted = [
        (
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".to_string(),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".to_string(),
        ),
        if pass.failures.is_empty() {
            (
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".to_string(),
            )
        } else {
            (
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    pass.failures.len(),
                    pass.failures.join(", ")
                ),
            )
        },
        if pass.remaining.is_empty() {
            (
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".to_string(),
            )
        } else {
            (
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    counted(&pass.remaining, " has ")
                ),
            )
        },
        if pass.finalizers.is_empty() {
            (
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".to_string(),
            )
        } else {
            (
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    counted(&pass.finalizers, " in ")
                ),
            )
        },
    ];
    let now = timestamp(SystemTime::now());
    let result = objects
        .update(
            kind,
            None,
            name,
            Part::Status,
            &WriteOptions::default(),
            |current| {
                if meta(current).uid() != Some(uid) {
                    return Err(RegistryError::NotFound {
                        qualified: "namespaces".to_string(),
                        name: name.to_string(),
                    });
                }
                let mut next = current.clone();
                let existing = current["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut conditions: Vec<Value> = existing
                    .iter()
                    .filter(|c| !wanted.iter().any(|(kind, ..)| c["type"] == *kind))
                    .cloned()
                    .collect();
                for (condition, status, reason, message) in &wanted {
                    let status = if *status { "True" } else { "False" };
                    let previous = existing.iter().find(|c| c["type"] == *condition);
                    let since = previous
                        .filter(|c| c["status"] == status)
                        .and_then(|c| c["lastTransitionTime"].as_str())
                        .unwrap_or(&now);
                    conditions.push(json!({"type": condition, "status": status,
                    "lastTransitionTime": since, "reason": reason, "message": message}));
                }
                next["status"]["conditions"] = Value::Array(conditions);
                Ok(next)
            },
        )
        .await;
    if let Err(error) = result
        && !matches!(
            error,
            RegistryError::NotFound { .. } | RegistryError::Conflict { .. }
        )
    {
        tracing::debug!(namespace = name, %error, "could not report namespace deletion progress");
    }
}
