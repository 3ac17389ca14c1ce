//! The garbage collector's picture of the cluster: which objects exist (by uid), which
//! objects have owners, and which owners wait for their dependents (deleted with the
//! `orphan` or `foregroundDeletion` finalizer).
//!
//! It is fed by one list of every stored object and then one watch over all of them
//! (`gc.rs`), so it covers kinds the catalog does not know yet (CRDs being established).
//! It keeps only what the decisions need: a uid per object (to tell whether an owner
//! exists without reading it) and, for objects with owners, their owner references. The
//! picture lags the datastore by the watch's delay, so the collector uses it to find
//! candidates cheaply and reads the live objects before it writes anything.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

/// The finalizer asking the collector to delete dependents before the owner.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer asking the collector to orphan dependents before deleting the owner.
pub const ORPHAN: &str = "orphan";

/// The parts of a stored object the collector reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectMeta {
    /// `apiVersion`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// `kind`.
    #[serde(default)]
    pub kind: String,
    /// `metadata`.
    #[serde(default)]
    pub metadata: Metadata,
}

/// `metadata`, as far as ownership goes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The name.
    #[serde(default)]
    pub name: String,
    /// The namespace, for namespaced objects.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The uid.
    #[serde(default)]
    pub uid: String,
    /// Set once a delete has been asked for.
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
    /// What must happen before the object goes.
    #[serde(default)]
    pub finalizers: Option<Vec<String>>,
    /// The owners.
    #[serde(default)]
    pub owner_references: Option<Vec<OwnerReference>>,
}

/// One `metadata.ownerReferences` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// The owner's `apiVersion`.
    #[serde(default)]
    pub api_version: String,
    /// The owner's kind.
    #[serde(default)]
    pub kind: String,
    /// The owner's name (in the dependent's namespace when the owner is namespaced).
    #[serde(default)]
    pub name: String,
    /// The owner's uid: the reference holds only while it matches.
    #[serde(default)]
    pub uid: String,
    /// Whether a foreground delete of the owner waits for this dependent.
    #[serde(default)]
    pub block_owner_deletion: Option<bool>,
}

impl ObjectMeta {
    /// Reads a stored object; `None` when it is not a Kubernetes object with a uid.
    pub fn parse(bytes: &[u8]) -> Option<ObjectMeta> {
        serde_json::from_slice::<ObjectMeta>(bytes)
            .ok()
            .filter(|object| !object.metadata.uid.is_empty())
    }

    /// Reads an object already decoded.
    pub fn from_value(value: &serde_json::Value) -> Option<ObjectMeta> {
        ObjectMeta::deserialize(value)
            .ok()
            .filter(|object| !object.metadata.uid.is_empty())
    }

    /// The owner references (none when absent).
    pub fn owners(&self) -> &[OwnerReference] {
        self.metadata.owner_references.as_deref().unwrap_or(&[])
    }

    /// Whether `finalizer` is listed.
    pub fn has_finalizer(&self, finalizer: &str) -> bool {
        self.metadata
            .finalizers
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .any(|f| f == finalizer)
    }

    /// Whether a delete has been asked for.
    pub fn deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether the object waits for the collector (`orphan` or `foregroundDeletion`).
    pub fn waits_for_collector(&self) -> bool {
        self.deleting() && (self.has_finalizer(ORPHAN) || self.has_finalizer(FOREGROUND))
    }
}

/// What the collector knows of one stored object.
#[derive(Debug, Clone)]
struct Known {
    uid: String,
    /// Owners and identity, kept only for objects that have owners or wait for the
    /// collector (everything else needs only its uid).
    meta: Option<ObjectMeta>,
}

/// What a change means for the collector.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Consequences {
    /// Dependents (by key) whose owners may all be gone now.
    pub check: Vec<String>,
    /// Whether owners waiting for the collector should be looked at again.
    pub owners_due: bool,
}

/// The ownership picture; see the module doc.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every object, by storage key.
    objects: HashMap<String, Known>,
    /// Uids of every object.
    uids: HashSet<String>,
    /// Owner uid → keys of the objects naming it as an owner.
    dependents: HashMap<String, HashSet<String>>,
    /// Keys of the objects being deleted that wait for the collector.
    waiting: HashSet<String>,
}

impl Graph {
    /// Records the current state of the object at `key`.
    pub fn put(&mut self, key: &str, object: ObjectMeta) -> Consequences {
        let removed = self.remove(key);
        let uid = object.metadata.uid.clone();
        let mut consequences = Consequences::default();
        if removed.as_ref().is_some_and(|old| old.uid != uid) {
            // Another object under the same key: the old one's dependents lost it.
            consequences.check = self.dependents_of(removed.as_ref().map_or("", |o| &o.uid));
        }
        let waits = object.waits_for_collector();
        let keep = !object.owners().is_empty() || waits;
        if waits {
            self.waiting.insert(key.to_string());
            consequences.owners_due = true;
        }
        for owner in object.owners() {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(key.to_string());
        }
        self.uids.insert(uid.clone());
        let owned = !object.owners().is_empty();
        self.objects.insert(
            key.to_string(),
            Known {
                uid,
                meta: keep.then_some(object),
            },
        );
        // Events come in revision order, so an owner created before its dependent is
        // known by now: a dependent without a solid owner was born orphaned (or its
        // owner is being deleted in the foreground).
        if owned && !self.has_solid_owner(key) {
            consequences.check.push(key.to_string());
        }
        consequences
    }

    /// Records that the object at `key` is gone.
    pub fn delete(&mut self, key: &str) -> Consequences {
        let Some(gone) = self.remove(key) else {
            return Consequences::default();
        };
        // A dependent leaving may unblock an owner deleted in the foreground.
        let owners_due = gone
            .meta
            .as_ref()
            .is_some_and(|meta| !meta.owners().is_empty())
            && !self.waiting.is_empty();
        Consequences {
            check: self.dependents_of(&gone.uid),
            owners_due,
        }
    }

    fn remove(&mut self, key: &str) -> Option<Known> {
        let old = self.objects.remove(key)?;
        self.uids.remove(&old.uid);
        self.waiting.remove(key);
        if let Some(meta) = &old.meta {
            for owner in meta.owners() {
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(key);
                    if set.is_empty() {
                        self.dependents.remove(&owner.uid);
                    }
                }
            }
        }
        Some(old)
    }

    /// Whether an object with this uid exists, as far as the picture knows.
    pub fn exists(&self, uid: &str) -> bool {
        self.uids.contains(uid)
    }

    /// The keys of the objects naming `uid` as an owner, sorted.
    pub fn dependents_of(&self, uid: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .dependents
            .get(uid)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    /// Whether any object names `uid` as an owner.
    pub fn has_dependents(&self, uid: &str) -> bool {
        self.dependents.contains_key(uid)
    }

    /// The recorded object at `key`, when it has owners or waits for the collector.
    pub fn get(&self, key: &str) -> Option<&ObjectMeta> {
        self.objects.get(key).and_then(|known| known.meta.as_ref())
    }

    /// Keys of every object with owners, sorted.
    pub fn all_dependents(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .objects
            .iter()
            .filter(|(_, known)| known.meta.as_ref().is_some_and(|m| !m.owners().is_empty()))
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Keys of the objects waiting for the collector, sorted.
    pub fn waiting(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.waiting.iter().cloned().collect();
        keys.sort();
        keys
    }

    /// Whether any object waits for the collector.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether the object at `key` certainly still has an owner, judging by the picture:
    /// some owner exists and is not being deleted in the foreground. When this is true
    /// the collector need not read anything.
    pub fn has_solid_owner(&self, key: &str) -> bool {
        let Some(meta) = self.get(key) else {
            return true;
        };
        meta.owners()
            .iter()
            .any(|owner| self.exists(&owner.uid) && !self.deleting_in_foreground(&owner.uid))
    }

    fn deleting_in_foreground(&self, uid: &str) -> bool {
        self.waiting.iter().any(|key| {
            self.get(key)
                .is_some_and(|meta| meta.metadata.uid == uid && meta.has_finalizer(FOREGROUND))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(uid: &str, owners: &[&str]) -> ObjectMeta {
        let owners: Vec<_> = owners
            .iter()
            .map(|o| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": o, "uid": o}))
            .collect();
        ObjectMeta::from_value(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "ownerReferences": owners}}))
        .expect("an object with a uid")
    }

    #[test]
    fn deleting_an_owner_points_at_its_dependents() {
        let mut graph = Graph::default();
        graph.put("/o", object("o", &[]));
        assert!(graph.put("/d1", object("d1", &["o"])).check.is_empty());
        graph.put("/d2", object("d2", &["o", "p"]));
        let born_orphaned = graph.put("/d3", object("d3", &["never"]));
        assert_eq!(born_orphaned.check, vec!["/d3"]);
        graph.delete("/d3");
        assert!(graph.has_solid_owner("/d1"));
        assert!(!graph.has_solid_owner("/d2") || graph.exists("o"));
        let consequences = graph.delete("/o");
        assert_eq!(consequences.check, vec!["/d1", "/d2"]);
        assert!(!graph.has_solid_owner("/d1"));
        graph.delete("/d1");
        assert_eq!(graph.dependents_of("o"), vec!["/d2"]);
        assert_eq!(graph.all_dependents(), vec!["/d2"]);
    }

    #[test]
    fn owners_waiting_for_the_collector_are_tracked_until_they_go() {
        let mut graph = Graph::default();
        let mut owner = ObjectMeta::from_value(&json!({"metadata": {"name": "o", "uid": "o",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["foregroundDeletion"]}}))
        .expect("an object with a uid");
        assert!(graph.put("/o", owner.clone()).owners_due);
        graph.put("/d", object("d", &["o"]));
        assert!(
            !graph.has_solid_owner("/d"),
            "a foreground owner is not solid"
        );
        assert_eq!(graph.waiting(), vec!["/o"]);
        assert!(graph.delete("/d").owners_due);
        owner.metadata.finalizers = None;
        assert!(!graph.put("/o", owner).owners_due);
        assert!(graph.waiting().is_empty());
    }

    #[test]
    fn non_objects_are_ignored() {
        assert!(ObjectMeta::parse(b"not json").is_none());
        assert!(ObjectMeta::parse(br#"{"metadata":{"name":"x"}}"#).is_none());
    }
}
