//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! foreground and orphan deletes the store only marks (kube-controller-manager's
//! garbagecollector, by `metadata.ownerReferences` and uids).
//!
//! How it stays cheap: one list of every stored object, then one watch over the whole
//! `/registry/` range, feed a [`Graph`] (uid per object, owner references of dependents).
//! A delete event points at the deleted uid's dependents, which are checked at once, and so
//! is a new dependent whose owners are unknown (created after its owner went); every
//! 30 seconds every dependent is checked against the graph, in memory. Only a dependent
//! whose owners look gone (or are being deleted in the foreground) costs reads: its live
//! state and its owners' are read before anything is written, so a lagging graph never
//! deletes a live owner's dependent. Watching the datastore range instead of each kind
//! means one watch per server whatever the number of kinds, and custom resources are seen
//! before their CRD reaches the catalog.
//!
//! Writes go through [`ObjectStore`] with uid preconditions, so several servers running
//! this at once race harmlessly: a `NotFound` or `Conflict` means another one did it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use capstan_machinery::{meta, meta_mut};
use futures::StreamExt;
use serde_json::Value;
use tokio::time::MissedTickBehavior;

use super::ControllerError;
use super::graph::{FOREGROUND, Graph, ORPHAN, ObjectMeta, OwnerReference};
use capstan_apiserver::registry::{
    Catalog, DeleteOptions, ObjectStore, Part, Propagation, Registry, RegistryError, ResourceType,
    WriteOptions,
};
use capstan_datastore::{EventKind, KeyRange, ListRequest};

/// The range every object lives under.
const ROOT: &str = "/registry/";
/// Objects read per page of the initial list.
const PAGE: usize = 1000;
/// How often every dependent is checked again, in case an event was missed.
const FULL_SCAN: Duration = Duration::from_secs(30);
/// How often owners waiting for their dependents are looked at without a trigger.
const OWNER_RECHECK: Duration = Duration::from_secs(1);

/// Runs the collector until the watch fails (the caller restarts it with a fresh list).
pub(super) async fn run(
    objects: ObjectStore,
    registry: Arc<Registry>,
) -> Result<(), ControllerError> {
    let (mut graph, revision) = list_everything(&objects).await?;
    let mut watch = objects
        .storage()
        .store()
        .watch_stream(KeyRange::prefix(ROOT), Some(revision))
        .await
        .boxed();
    // Dependents to check. Not a channel: it is filled and drained by this loop alone, a
    // full scan replaces it, and a key queued twice costs one in-memory check.
    let mut queue: VecDeque<String> = graph.all_dependents().into();
    let mut owners_due = true;
    let mut full_scan = tokio::time::interval(FULL_SCAN);
    let mut owner_recheck = tokio::time::interval(OWNER_RECHECK);
    // A slow step delays the timers instead of bunching their ticks up behind it.
    full_scan.set_missed_tick_behavior(MissedTickBehavior::Delay);
    owner_recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let collector = Collector {
        objects: &objects,
        registry: &registry,
    };
    loop {
        let busy = owners_due || !queue.is_empty();
        tokio::select! {
            event = watch.next() => {
                let event = match event {
                    Some(Ok(event)) => event,
                    Some(Err(error)) => return Err(error.into()),
                    None => return Err(ControllerError::WatchEnded("every object")),
                };
                let consequences = match event.kind {
                    EventKind::Put => match ObjectMeta::parse(&event.value) {
                        Some(meta) => graph.put(&event.key, meta),
                        None => graph.delete(&event.key),
                    },
                    EventKind::Delete => graph.delete(&event.key),
                };
                queue.extend(consequences.check);
                owners_due |= consequences.owners_due;
            }
            _ = full_scan.tick() => {
                queue = graph.all_dependents().into();
                owners_due = true;
            }
            _ = owner_recheck.tick(), if graph.has_waiting() => owners_due = true,
            _ = std::future::ready(()), if busy => {
                if owners_due {
                    owners_due = false;
                    for key in graph.waiting() {
                        collector.finish_owner(&graph, &key).await;
                    }
                } else if let Some(key) = queue.pop_front()
                    && !graph.has_solid_owner(&key)
                {
                    collector.collect(&graph, &key).await;
                }
            }
        }
    }
}

/// Every stored object, paged, exact at one revision; and that revision.
async fn list_everything(objects: &ObjectStore) -> Result<(Graph, i64), ControllerError> {
    let store = objects.storage().store();
    let mut graph = Graph::default();
    let mut range = KeyRange::prefix(ROOT);
    let mut revision = None;
    loop {
        let page = store
            .list(&ListRequest {
                range: range.clone(),
                revision,
                limit: PAGE,
            })
            .await?;
        revision = Some(page.revision);
        for item in &page.items {
            if let Some(meta) = ObjectMeta::parse(&item.value) {
                graph.put(&item.key, meta);
            }
        }
        match page.items.last() {
            // Keys are printable ASCII from '!' up: appending '!' gives the next key.
            Some(last) if page.more => range.start = format!("{}!", last.key),
            _ => return Ok((graph, page.revision)),
        }
    }
}

/// How one owner reference stands.
#[derive(Debug, PartialEq, Eq)]
enum OwnerState {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner is gone (or another object has its name now).
    Dangling,
    /// The owner is being deleted in the foreground.
    Waiting,
}

/// The writes, with the store and the current catalog.
struct Collector<'a> {
    objects: &'a ObjectStore,
    registry: &'a Registry,
}

impl Collector<'_> {
    /// Deletes the dependent at `key` if none of its owners remains, or drops the
    /// references to gone owners when some remain.
    async fn collect(&self, graph: &Graph, key: &str) {
        let Some(recorded) = graph.get(key) else {
            return;
        };
        let catalog = self.registry.catalog();
        let Some(kind) = catalog.by_kind(&recorded.api_version, &recorded.kind) else {
            return; // Not served (yet): the next full scan tries again.
        };
        let namespace = recorded.metadata.namespace.as_deref();
        let name = &recorded.metadata.name;
        let result = async {
            let live = self.objects.get(&kind, namespace, name).await?;
            let Some(live) = ObjectMeta::from_value(&live) else {
                return Ok(());
            };
            if live.metadata.uid != recorded.metadata.uid || live.deleting() {
                return Ok(());
            }
            let mut solid = false;
            let mut gone = Vec::new();
            let mut waiting = false;
            for owner in live.owners() {
                match self.owner_state(&catalog, &kind, namespace, owner).await? {
                    OwnerState::Solid => solid = true,
                    OwnerState::Dangling => gone.push(owner.uid.clone()),
                    OwnerState::Waiting => {
                        waiting = true;
                        gone.push(owner.uid.clone());
                    }
                }
            }
            let uid = live.metadata.uid.clone();
            if solid {
                if !gone.is_empty() {
                    self.drop_owner_references(&kind, namespace, name, &uid, &gone)
                        .await?;
                }
                return Ok(());
            }
            let propagation = if waiting && graph.has_dependents(&uid) {
                Propagation::Foreground
            } else if live.has_finalizer(ORPHAN) {
                Propagation::Orphan
            } else if live.has_finalizer(FOREGROUND) {
                Propagation::Foreground
            } else {
                Propagation::Background
            };
            tracing::debug!(
                key,
                ?propagation,
                "deleting an object whose owners are gone"
            );
            let options = DeleteOptions {
                uid: Some(uid),
                propagation,
                ..DeleteOptions::default()
            };
            self.objects
                .delete(&kind, namespace, name, &options)
                .await?;
            Ok(())
        };
        report(key, result.await);
    }

    /// Looks an owner up by name and compares uids.
    async fn owner_state(
        &self,
        catalog: &Catalog,
        dependent: &ResourceType,
        namespace: Option<&str>,
        owner: &OwnerReference,
    ) -> Result<OwnerState, RegistryError> {
        let Some(kind) = catalog.by_kind(&owner.api_version, &owner.kind) else {
            // An owner of a kind not served cannot be judged; keep the dependent.
            return Ok(OwnerState::Solid);
        };
        if kind.namespaced && !dependent.namespaced {
            // Upstream treats a namespaced owner of a cluster-scoped object as unresolvable
            // and never collects the object.
            return Ok(OwnerState::Solid);
        }
        let found = match self.objects.get(&kind, namespace, &owner.name).await {
            Ok(found) => found,
            Err(RegistryError::NotFound { .. }) => return Ok(OwnerState::Dangling),
            Err(error) => return Err(error),
        };
        Ok(match ObjectMeta::from_value(&found) {
            Some(found) if found.metadata.uid == owner.uid => {
                if found.deleting() && found.has_finalizer(FOREGROUND) {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                }
            }
            _ => OwnerState::Dangling,
        })
    }

    async fn drop_owner_references(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        uid: &str,
        owners: &[String],
    ) -> Result<(), RegistryError> {
        self.objects
            .update(
                kind,
                namespace,
                name,
                Part::Main,
                &WriteOptions::default(),
                |current| {
                    same_object(kind, current, name, uid)?;
                    let mut next = current.clone();
                    meta_mut(&mut next).retain_owner_references(|reference| {
                        !owners.iter().any(|o| reference.uid() == Some(o.as_str()))
                    });
                    Ok(next)
                },
            )
            .await
            .map(drop)
    }

    /// Carries out the orphan or foreground delete of the owner at `key`.
    async fn finish_owner(&self, graph: &Graph, key: &str) {
        let Some(recorded) = graph.get(key) else {
            return;
        };
        let Some(kind) = self
            .registry
            .catalog()
            .by_kind(&recorded.api_version, &recorded.kind)
        else {
            return;
        };
        let namespace = recorded.metadata.namespace.as_deref();
        let name = &recorded.metadata.name;
        let uid = &recorded.metadata.uid;
        let result = async {
            let live = self.objects.get(&kind, namespace, name).await?;
            let Some(live) = ObjectMeta::from_value(&live) else {
                return Ok(());
            };
            if live.metadata.uid != *uid || !live.deleting() {
                return Ok(());
            }
            if live.has_finalizer(ORPHAN) {
                for dependent in graph.dependents_of(uid) {
                    self.orphan(graph, &dependent, uid).await?;
                }
                return self
                    .remove_finalizer(&kind, namespace, name, uid, ORPHAN)
                    .await;
            }
            if live.has_finalizer(FOREGROUND) {
                let mut blocking = 0;
                for dependent in graph.dependents_of(uid) {
                    if self.delete_dependent(graph, &dependent, uid).await? {
                        blocking += 1;
                    }
                }
                if blocking == 0 {
                    return self
                        .remove_finalizer(&kind, namespace, name, uid, FOREGROUND)
                        .await;
                }
            }
            Ok(())
        };
        report(key, result.await);
    }

    /// Removes the references to `owner` from the dependent at `key`.
    async fn orphan(&self, graph: &Graph, key: &str, owner: &str) -> Result<(), RegistryError> {
        let Some((kind, dependent)) = self.resolve(graph, key) else {
            return Ok(());
        };
        let result = self
            .drop_owner_references(
                &kind,
                dependent.metadata.namespace.as_deref(),
                &dependent.metadata.name,
                &dependent.metadata.uid,
                &[owner.to_string()],
            )
            .await;
        ignore_races(result)
    }

    /// Starts deleting a dependent of an owner deleted in the foreground; whether the
    /// owner must still wait for it (it exists and blocks its owner's deletion).
    async fn delete_dependent(
        &self,
        graph: &Graph,
        key: &str,
        owner: &str,
    ) -> Result<bool, RegistryError> {
        let Some((kind, recorded)) = self.resolve(graph, key) else {
            return Ok(false);
        };
        let namespace = recorded.metadata.namespace.as_deref();
        let live = match self
            .objects
            .get(&kind, namespace, &recorded.metadata.name)
            .await
        {
            Ok(live) => live,
            Err(RegistryError::NotFound { .. }) => return Ok(false),
            Err(error) => return Err(error),
        };
        let Some(live) = ObjectMeta::from_value(&live) else {
            return Ok(false);
        };
        let Some(reference) = live.owners().iter().find(|r| r.uid == owner) else {
            return Ok(false);
        };
        let blocks = reference.block_owner_deletion == Some(true);
        if live.metadata.uid == recorded.metadata.uid && !live.deleting() {
            self.collect(graph, key).await;
        }
        Ok(blocks)
    }

    fn resolve(&self, graph: &Graph, key: &str) -> Option<(Arc<ResourceType>, ObjectMeta)> {
        let recorded = graph.get(key)?;
        let kind = self
            .registry
            .catalog()
            .by_kind(&recorded.api_version, &recorded.kind)?;
        Some((kind, recorded.clone()))
    }

    async fn remove_finalizer(
        &self,
        kind: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        uid: &str,
        finalizer: &str,
    ) -> Result<(), RegistryError> {
        let result = self
            .objects
            .update(
                kind,
                namespace,
                name,
                Part::Main,
                &WriteOptions::default(),
                |current| {
                    same_object(kind, current, name, uid)?;
                    let mut next = current.clone();
                    meta_mut(&mut next).remove_finalizer(finalizer);
                    Ok(next)
                },
            )
            .await;
        ignore_races(result.map(drop))
    }
}

/// `NotFound` unless `current` is the object with `uid` (the name may have been reused).
fn same_object(
    kind: &ResourceType,
    current: &Value,
    name: &str,
    uid: &str,
) -> Result<(), RegistryError> {
    if meta(current).uid() == Some(uid) {
        Ok(())
    } else {
        Err(RegistryError::NotFound {
            qualified: capstan_apiserver::registry::qualified_resource(kind),
            name: name.to_string(),
        })
    }
}

/// Another server (or the owner of the object) got there first: nothing to do.
fn ignore_races(result: Result<(), RegistryError>) -> Result<(), RegistryError> {
    match result {
        Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => Ok(()),
        other => other,
    }
}

/// Logs a failed step; the object is looked at again on the next trigger or full scan.
fn report(key: &str, result: Result<(), RegistryError>) {
    if let Err(error) = ignore_races(result) {
        tracing::warn!(key, %error, "garbage collection step failed; retrying later");
    }
}
