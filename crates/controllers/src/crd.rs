//! The CRD controller: CustomResourceDefinitions in the datastore become served kinds.
//!
//! Every server runs one. It lists the CRDs, then watches them (listing again after a
//! watch error or compaction), and on every change:
//!
//! 1. decides which CRDs' names are accepted: those already accepted first, then the
//!    oldest (creationTimestamp, then name), so a later CRD claiming a taken plural, singular, kind, listKind or short name
//!    in its group, or a built-in resource or kind, is refused, and every server reaches
//!    the same verdict from the same CRDs without asking the others;
//! 2. serves the kinds of the accepted CRDs (`Registry::set_custom`) at once, from its own
//!    watch, so a new kind is served by every server within a watch delay of the write,
//!    whichever server took it;
//! 3. brings each CRD's status to what upstream reports (`NamesAccepted`, `Established`,
//!    `acceptedNames`, `storedVersions`) and adds the cleanup finalizer, writing only when
//!    the stored object differs: servers that agree write nothing, so they never fight;
//! 4. for a CRD being deleted, deletes every object of its kinds, then removes the
//!    finalizer, which lets the store delete the CRD.
//!
//! Several servers do the same work at once: writes are read-modify-write and idempotent,
//! and `NotFound`/`Conflict` are expected outcomes of a race, retried on the next tick.
//! Deleting a CRD's objects runs inline: it delays other CRD changes on this server by as
//! long as the deletes take, which keeps the state in one task and needs no locks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capstan_machinery::{meta, meta_mut};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use capstan_apiserver::registry::{
    CLEANUP_FINALIZER, CRD_GROUP, CrdNames, DeleteOptions, DeleteOutcome, ObjectStore, Part,
    Registry, RegistryError, ResourceType, WriteOptions, add_cleanup_finalizer, builtin_types,
    resource_types, storage_version, timestamp,
};
use capstan_apiserver::storage::{ListOptions, WatchEventType};

/// How soon unfinished work (a lost write race, objects still being deleted) is retried,
/// and how long to wait before listing again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(objects: ObjectStore, registry: Arc<Registry>, shutdown: CancellationToken) {
    let Some(kind) = registry
        .catalog()
        .lookup(CRD_GROUP, "v1", "customresourcedefinitions")
    else {
        tracing::error!(
            "customresourcedefinitions are not a built-in kind; CRD controller not started"
        );
        return;
    };
    let mut controller = Controller {
        objects,
        registry,
        kind,
        crds: BTreeMap::new(),
    };
    while !shutdown.is_cancelled() {
        if let Err(error) = controller.list_and_watch(&shutdown).await {
            tracing::warn!(%error, "CRD watch failed; listing again");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

struct Controller {
    objects: ObjectStore,
    registry: Arc<Registry>,
    kind: Arc<ResourceType>,
    /// Every CRD, by name, as last seen.
    crds: BTreeMap<String, Value>,
}

/// Whether a CRD's names are accepted, and if not, why.
type Acceptance = Result<(), String>;

impl Controller {
    /// Lists the CRDs and follows their changes; returns `Ok` on shutdown, an error when
    /// the watch breaks.
    async fn list_and_watch(&mut self, shutdown: &CancellationToken) -> Result<(), RegistryError> {
        let mut listed = self.list().await?;
        let mut events = self.objects.watch(&self.kind, None, &listed).await?;
        // A list of an empty datastore is at revision "0", and a watch from "0" starts at
        // whatever is current when it starts: list again so a CRD created in between is
        // seen, and skip the events that list already holds.
        let mut seen_through = 0;
        if listed == "0" {
            listed = self.list().await?;
            seen_through = listed.parse::<i64>().unwrap_or(0);
        }
        let mut pending = self.reconcile().await;
        let mut retry = tokio::time::interval(RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = retry.tick(), if pending => pending = self.reconcile().await,
                event = events.next() => {
                    let event = match event {
                        Some(Ok(event)) => event,
                        Some(Err(error)) => return Err(RegistryError::Expired(error.to_string())),
                        None => return Err(RegistryError::Expired("the watch ended".to_string())),
                    };
                    let Some(name) = meta(&event.object).name() else {
                        continue;
                    };
                    let revision = event.resource_version().and_then(|v| v.parse::<i64>().ok());
                    if revision.is_some_and(|r| r <= seen_through) {
                        continue;
                    }
                    match event.kind {
                        WatchEventType::Added | WatchEventType::Modified => {
                            self.crds.insert(name.to_string(), event.object);
                        }
                        WatchEventType::Deleted => {
                            self.crds.remove(name);
                        }
                        WatchEventType::Bookmark => continue,
                    }
                    pending = self.reconcile().await;
                }
            }
        }
    }

    /// Replaces the known CRDs with a fresh list; returns the list's resourceVersion.
    async fn list(&mut self) -> Result<String, RegistryError> {
        let listed = self
            .objects
            .list(&self.kind, None, &ListOptions::default())
            .await?;
        self.crds = listed
            .items
            .into_iter()
            .filter_map(|crd| Some((meta(&crd).name()?.to_string(), crd)))
            .collect();
        Ok(listed.resource_version)
    }

    /// Serves the accepted CRDs and brings every CRD to its wanted state; returns whether
    /// some work is left for a retry.
    async fn reconcile(&mut self) -> bool {
        let verdicts = accept_names(&self.crds);
        let mut served = Vec::new();
        for (name, crd) in &self.crds {
            if matches!(verdicts.get(name), Some(Ok(())))
                && let Ok(types) = resource_types(crd)
            {
                served.extend(types);
            }
        }
        self.registry.set_custom(served);
        let mut pending = false;
        let crds: Vec<(String, Value)> = self
            .crds
            .iter()
            .map(|(name, crd)| (name.clone(), crd.clone()))
            .collect();
        for (name, crd) in crds {
            let acceptance = verdicts.get(&name).cloned().unwrap_or(Ok(()));
            let outcome = if meta(&crd).is_deleting() {
                self.clean_up(&name, &crd).await
            } else if resource_types(&crd).is_err() {
                // Refused by `validate_crd` on the API path; one written some other way
                // serves nothing and is not reported Established.
                Ok(true)
            } else {
                self.establish(&name, &crd, &acceptance).await
            };
            match outcome {
                Ok(done) => pending |= !done,
                Err(RegistryError::NotFound { .. } | RegistryError::Conflict { .. }) => {
                    pending = true;
                }
                Err(error) => {
                    tracing::warn!(crd = %name, %error, "CRD reconcile failed; retrying");
                    pending = true;
                }
            }
        }
        pending
    }

    /// Adds the cleanup finalizer and writes the status, when either is missing.
    async fn establish(
        &self,
        name: &str,
        crd: &Value,
        acceptance: &Acceptance,
    ) -> Result<bool, RegistryError> {
        let options = WriteOptions::default();
        if !has_cleanup_finalizer(crd) {
            self.objects
                .update(&self.kind, None, name, Part::Main, &options, |current| {
                    let mut next = current.clone();
                    if !has_cleanup_finalizer(&next) {
                        add_cleanup_finalizer(&mut next);
                    }
                    Ok(next)
                })
                .await?;
        }
        let now = timestamp(SystemTime::now());
        if wanted_status(crd, acceptance, &now) != crd["status"] {
            self.objects
                .update(&self.kind, None, name, Part::Status, &options, |current| {
                    let mut next = current.clone();
                    next["status"] = wanted_status(current, acceptance, &now);
                    Ok(next)
                })
                .await?;
        }
        Ok(true)
    }

    /// Deletes the objects of a CRD being deleted, then its finalizer; returns whether it
    /// is done (false while objects wait for their own finalizers).
    async fn clean_up(&self, name: &str, crd: &Value) -> Result<bool, RegistryError> {
        if !has_cleanup_finalizer(crd) {
            return Ok(true);
        }
        if let Some(kind) = storage_kind(crd) {
            let listed = self
                .objects
                .list(&kind, None, &ListOptions::default())
                .await?;
            let mut remaining = 0;
            for object in &listed.items {
                let namespace = meta(object).namespace();
                let object_name = meta(object).name().unwrap_or("");
                match self
                    .objects
                    .delete(&kind, namespace, object_name, &DeleteOptions::default())
                    .await
                {
                    Ok(DeleteOutcome::Deleted(_)) | Err(RegistryError::NotFound { .. }) => {}
                    Ok(DeleteOutcome::Pending(_)) => remaining += 1,
                    Err(error) => return Err(error),
                }
            }
            if remaining > 0 {
                return Ok(false);
            }
            // Objects created while we deleted (by a client of a server that still serves
            // the kind) must go too before the CRD does.
            let again = self
                .objects
                .list(&kind, None, &ListOptions::default())
                .await?;
            if !again.items.is_empty() {
                return Ok(false);
            }
        }
        let options = WriteOptions::default();
        self.objects
            .update(&self.kind, None, name, Part::Main, &options, |current| {
                let mut next = current.clone();
                meta_mut(&mut next).remove_finalizer(CLEANUP_FINALIZER);
                Ok(next)
            })
            .await?;
        tracing::info!(crd = %name, "custom objects deleted; CRD released");
        Ok(true)
    }
}

/// A kind of `crd` that reaches its stored objects, served or not: every version's
/// objects live under the same key prefix.
fn storage_kind(crd: &Value) -> Option<ResourceType> {
    let mut all_served = crd.clone();
    if let Some(versions) = all_served["spec"]["versions"].as_array_mut() {
        for version in versions {
            version["served"] = json!(true);
        }
    }
    resource_types(&all_served).ok()?.into_iter().next()
}

fn has_cleanup_finalizer(crd: &Value) -> bool {
    meta(crd).has_finalizer(CLEANUP_FINALIZER)
}

/// The verdict on every CRD's names: the oldest claim wins, built-in kinds win over all.
fn accept_names(crds: &BTreeMap<String, Value>) -> HashMap<String, Acceptance> {
    let mut claimed: HashMap<(String, String), String> = HashMap::new();
    for builtin in builtin_types() {
        claimed.insert(
            (builtin.group.clone(), builtin.resource.clone()),
            String::new(),
        );
        claimed.insert((builtin.group.clone(), builtin.kind.clone()), String::new());
    }
    let mut order: Vec<(&String, &Value)> = crds.iter().collect();
    // Names already accepted stay with their CRD (as upstream, which checks the other
    // CRDs' acceptedNames); among the rest, creationTimestamp has second resolution, so
    // the name breaks ties the same way on every server.
    order.sort_by_key(|(name, crd)| {
        let created = meta(crd).creation_timestamp().unwrap_or("");
        (!names_accepted(crd), created.to_string(), (*name).clone())
    });
    let mut verdicts = HashMap::new();
    for (name, crd) in order {
        let group = crd["spec"]["group"].as_str().unwrap_or("").to_string();
        let names = CrdNames::of(crd);
        let mut wanted = vec![
            ("plural", names.plural.clone()),
            ("singular", names.singular.clone()),
            ("kind", names.kind.clone()),
            ("listKind", names.list_kind.clone()),
        ];
        wanted.extend(names.short_names.iter().map(|s| ("shortNames", s.clone())));
        let conflict = wanted.iter().find(|(_, value)| {
            claimed
                .get(&(group.clone(), value.clone()))
                .is_some_and(|owner| owner != name)
        });
        let verdict = match conflict {
            Some((field, value)) => Err(format!("{field} \"{value}\" is already in use")),
            None => {
                for (_, value) in wanted {
                    claimed.insert((group.clone(), value), name.clone());
                }
                Ok(())
            }
        };
        verdicts.insert(name.clone(), verdict);
    }
    verdicts
}

fn names_accepted(crd: &Value) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|all| {
        all.iter()
            .any(|c| c["type"] == "NamesAccepted" && c["status"] == "True")
    })
}

/// The status `crd` should have: its current status with the conditions, accepted names
/// and stored versions brought up to date (times kept for conditions that did not change).
fn wanted_status(crd: &Value, acceptance: &Acceptance, now: &str) -> Value {
    let mut status = match &crd["status"] {
        Value::Object(_) => crd["status"].clone(),
        _ => json!({}),
    };
    let (accepted, established) = match acceptance {
        Ok(()) => (
            ("True", "NoConflicts", "no conflicts found".to_string()),
            (
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted".to_string(),
            ),
        ),
        Err(conflict) => (
            ("False", "NameConflict", conflict.clone()),
            (
                "False",
                "NotAccepted",
                "not all names are accepted".to_string(),
            ),
        ),
    };
    let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    set_condition(&mut conditions, "NamesAccepted", accepted, now);
    set_condition(&mut conditions, "Established", established, now);
    status["conditions"] = Value::Array(conditions);
    if acceptance.is_ok() {
        status["acceptedNames"] = CrdNames::of(crd).to_json();
    } else if !status["acceptedNames"].is_object() {
        status["acceptedNames"] = json!({"plural": "", "kind": ""});
    }
    let mut stored: Vec<Value> = status["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(version) = storage_version(crd)
        && !stored.iter().any(|v| *v == version)
    {
        stored.push(json!(version));
    }
    status["storedVersions"] = Value::Array(stored);
    status
}

fn set_condition(
    conditions: &mut Vec<Value>,
    condition_type: &str,
    (status, reason, message): (&str, &str, String),
    now: &str,
) {
    let wanted = |time: &Value| {
        json!({"type": condition_type, "status": status, "lastTransitionTime": time,
            "reason": reason, "message": message})
    };
    match conditions.iter_mut().find(|c| c["type"] == condition_type) {
        Some(existing) if existing["status"] == status => {
            let time = existing["lastTransitionTime"].clone();
            *existing = wanted(&time);
        }
        Some(existing) => *existing = wanted(&json!(now)),
        None => conditions.push(wanted(&json!(now))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(name: &str, plural: &str, kind: &str, created: &str) -> Value {
        json!({"metadata": {"name": format!("{plural}.example.com"), "creationTimestamp": created},
            "spec": {"group": "example.com", "names": {"plural": plural, "kind": kind}},
            "x": name})
    }

    #[test]
    fn the_oldest_claim_to_a_name_wins() {
        let mut crds = BTreeMap::new();
        crds.insert(
            "a".to_string(),
            crd("a", "widgets", "Widget", "2024-01-02T00:00:00Z"),
        );
        crds.insert(
            "b".to_string(),
            crd("b", "gadgets", "Widget", "2024-01-01T00:00:00Z"),
        );
        let verdicts = accept_names(&crds);
        assert_eq!(verdicts["b"], Ok(()));
        assert!(
            verdicts["a"]
                .as_ref()
                .is_err_and(|m| m == "singular \"widget\" is already in use")
        );
    }

    #[test]
    fn an_unchanged_status_is_left_as_is() {
        let crd = crd("a", "widgets", "Widget", "2024-01-01T00:00:00Z");
        let first = wanted_status(&crd, &Ok(()), "2024-01-01T00:00:01Z");
        let mut stored = crd.clone();
        stored["status"] = first.clone();
        assert_eq!(
            wanted_status(&stored, &Ok(()), "2030-01-01T00:00:00Z"),
            first
        );
        assert_eq!(first["conditions"][1]["reason"], "InitialNamesAccepted");
    }
}
