//! Typed views of an object's `metadata`, for code that handles objects as
//! `serde_json::Value` (so that kinds stay data).
//!
//! `meta(&object).name()` instead of `object["metadata"]["name"].as_str()`: the keys are
//! spelt once, here, so a typo is a compile error rather than a field that silently reads
//! as missing, and every accessor returns an `Option`, so what a missing field means is
//! decided at the call site (`unwrap_or("")`, `?`, an error), never by accident.
//!
//! [`Meta`] reads; [`MetaMut`] writes, creating `metadata` (and `labels`, `annotations`,
//! `finalizers`) on the first write that needs it, and never creating anything for a
//! removal. A value that is not a JSON object has no metadata: it reads as empty and writes
//! to it are dropped (the object store refuses such bodies before anything writes to them).

use serde_json::{Map, Value};

/// The `metadata` of `object`, to read.
pub fn meta(object: &Value) -> Meta<'_> {
    Meta {
        fields: object.get("metadata").and_then(Value::as_object),
    }
}

/// The `metadata` of `object`, to write.
pub fn meta_mut(object: &mut Value) -> MetaMut<'_> {
    MetaMut { object }
}

/// A read-only view of one object's `metadata`; cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    fields: Option<&'a Map<String, Value>>,
}

impl<'a> Meta<'a> {
    /// The field `key` of `metadata`, as stored.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.fields?.get(key)
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        self.get(key)?.as_str()
    }

    /// `metadata.name`.
    pub fn name(&self) -> Option<&'a str> {
        self.text("name")
    }

    /// `metadata.generateName`, the prefix of a server-generated name.
    pub fn generate_name(&self) -> Option<&'a str> {
        self.text("generateName")
    }

    /// `metadata.namespace`.
    pub fn namespace(&self) -> Option<&'a str> {
        self.text("namespace")
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> Option<&'a str> {
        self.text("uid")
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(&self) -> Option<&'a str> {
        self.text("resourceVersion")
    }

    /// `metadata.generation`.
    pub fn generation(&self) -> Option<i64> {
        self.get("generation")?.as_i64()
    }

    /// `metadata.creationTimestamp` (RFC 3339).
    pub fn creation_timestamp(&self) -> Option<&'a str> {
        self.text("creationTimestamp")
    }

    /// `metadata.deletionTimestamp` (RFC 3339): set once a delete has been asked for.
    pub fn deletion_timestamp(&self) -> Option<&'a str> {
        self.text("deletionTimestamp")
    }

    /// Whether a delete has been asked for (`deletionTimestamp` is set).
    pub fn is_deleting(&self) -> bool {
        self.deletion_timestamp().is_some()
    }

    /// `metadata.deletionGracePeriodSeconds`.
    pub fn deletion_grace_period_seconds(&self) -> Option<i64> {
        self.get("deletionGracePeriodSeconds")?.as_i64()
    }

    /// `metadata.labels`.
    pub fn labels(&self) -> Option<&'a Map<String, Value>> {
        self.get("labels")?.as_object()
    }

    /// The label `key`.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.labels()?.get(key)?.as_str()
    }

    /// `metadata.annotations`.
    pub fn annotations(&self) -> Option<&'a Map<String, Value>> {
        self.get("annotations")?.as_object()
    }

    /// The annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations()?.get(key)?.as_str()
    }

    /// `metadata.finalizers` (the entries that are strings; none when absent).
    pub fn finalizers(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.list("finalizers").iter().filter_map(Value::as_str)
    }

    /// Whether `metadata.finalizers` lists anything.
    pub fn has_finalizers(&self) -> bool {
        !self.list("finalizers").is_empty()
    }

    /// Whether `finalizer` is listed in `metadata.finalizers`.
    pub fn has_finalizer(&self, finalizer: &str) -> bool {
        self.finalizers().any(|f| f == finalizer)
    }

    /// `metadata.ownerReferences` (none when absent).
    pub fn owner_references(&self) -> impl Iterator<Item = OwnerRef<'a>> + use<'a> {
        self.list("ownerReferences").iter().map(OwnerRef)
    }

    /// `metadata.managedFields`, as stored.
    pub fn managed_fields(&self) -> Option<&'a Value> {
        self.get("managedFields")
    }

    /// A copy of the whole `metadata` (`null` when the object has none), for responses that
    /// carry an object's metadata without the rest of it.
    pub fn to_value(&self) -> Value {
        self.fields
            .map_or(Value::Null, |m| Value::Object(m.clone()))
    }

    fn list(&self, key: &str) -> &'a [Value] {
        self.get(key)
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

/// One entry of `metadata.ownerReferences`.
#[derive(Debug, Clone, Copy)]
pub struct OwnerRef<'a>(&'a Value);

impl<'a> OwnerRef<'a> {
    fn text(&self, key: &str) -> Option<&'a str> {
        self.0.get(key)?.as_str()
    }

    /// The owner's `apiVersion`.
    pub fn api_version(&self) -> Option<&'a str> {
        self.text("apiVersion")
    }

    /// The owner's kind.
    pub fn kind(&self) -> Option<&'a str> {
        self.text("kind")
    }

    /// The owner's name.
    pub fn name(&self) -> Option<&'a str> {
        self.text("name")
    }

    /// The owner's uid: the reference holds only while it matches.
    pub fn uid(&self) -> Option<&'a str> {
        self.text("uid")
    }

    /// Whether the owner is the managing controller.
    pub fn controller(&self) -> bool {
        self.0.get("controller").and_then(Value::as_bool) == Some(true)
    }

    /// The entry as stored.
    pub fn as_value(&self) -> &'a Value {
        self.0
    }
}

/// A view of one object's `metadata` that writes.
#[derive(Debug)]
pub struct MetaMut<'a> {
    object: &'a mut Value,
}

impl MetaMut<'_> {
    /// Reads, as [`meta`] does.
    pub fn read(&self) -> Meta<'_> {
        meta(self.object)
    }

    /// `metadata` when it exists.
    fn existing(&mut self) -> Option<&mut Map<String, Value>> {
        self.object.get_mut("metadata")?.as_object_mut()
    }

    /// `metadata`, created (and replacing anything that is not a map) when missing; `None`
    /// only when the object itself is not a JSON object.
    fn fields(&mut self) -> Option<&mut Map<String, Value>> {
        if self.object.is_null() {
            *self.object = Value::Object(Map::new());
        }
        let entry = self
            .object
            .as_object_mut()?
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        entry.as_object_mut()
    }

    /// The map at `metadata.<key>`, created when missing or not a map.
    fn map(&mut self, key: &str) -> Option<&mut Map<String, Value>> {
        let entry = self
            .fields()?
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        entry.as_object_mut()
    }

    /// The list at `metadata.<key>`, created when missing or not a list.
    fn list(&mut self, key: &str) -> Option<&mut Vec<Value>> {
        let entry = self
            .fields()?
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()));
        if !entry.is_array() {
            *entry = Value::Array(Vec::new());
        }
        entry.as_array_mut()
    }

    /// Sets the field `key` of `metadata`.
    pub fn set(&mut self, key: &str, value: Value) {
        if let Some(fields) = self.fields() {
            fields.insert(key.to_string(), value);
        }
    }

    /// Removes the field `key` of `metadata`, returning it.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.existing()?.remove(key)
    }

    /// Sets `metadata.name`.
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.set("name", Value::String(name.into()));
    }

    /// Sets `metadata.namespace`.
    pub fn set_namespace(&mut self, namespace: impl Into<String>) {
        self.set("namespace", Value::String(namespace.into()));
    }

    /// Removes `metadata.namespace` (cluster-scoped objects have none).
    pub fn remove_namespace(&mut self) {
        self.remove("namespace");
    }

    /// Sets `metadata.uid`.
    pub fn set_uid(&mut self, uid: impl Into<String>) {
        self.set("uid", Value::String(uid.into()));
    }

    /// Sets `metadata.resourceVersion`.
    pub fn set_resource_version(&mut self, version: impl Into<String>) {
        self.set("resourceVersion", Value::String(version.into()));
    }

    /// Removes `metadata.resourceVersion` (so that a write is not conditional on it).
    pub fn remove_resource_version(&mut self) {
        self.remove("resourceVersion");
    }

    /// Sets `metadata.generation`.
    pub fn set_generation(&mut self, generation: i64) {
        self.set("generation", Value::from(generation));
    }

    /// Sets `metadata.creationTimestamp`.
    pub fn set_creation_timestamp(&mut self, timestamp: impl Into<String>) {
        self.set("creationTimestamp", Value::String(timestamp.into()));
    }

    /// Sets `metadata.deletionTimestamp` and `metadata.deletionGracePeriodSeconds`.
    pub fn set_deletion(&mut self, timestamp: impl Into<String>, grace_period_seconds: i64) {
        self.set("deletionTimestamp", Value::String(timestamp.into()));
        self.set(
            "deletionGracePeriodSeconds",
            Value::from(grace_period_seconds),
        );
    }

    /// Sets `metadata.managedFields`, or removes it when `managed` is not a non-empty list.
    pub fn set_managed_fields(&mut self, managed: Value) {
        if managed.as_array().is_none_or(Vec::is_empty) {
            self.remove("managedFields");
        } else {
            self.set("managedFields", managed);
        }
    }

    /// Sets the label `key` (creating `labels`).
    pub fn set_label(&mut self, key: &str, value: Value) {
        if let Some(labels) = self.map("labels") {
            labels.insert(key.to_string(), value);
        }
    }

    /// Removes the label `key`, returning its value.
    pub fn remove_label(&mut self, key: &str) -> Option<Value> {
        self.existing()?
            .get_mut("labels")?
            .as_object_mut()?
            .remove(key)
    }

    /// Sets the annotation `key` (creating `annotations`).
    pub fn set_annotation(&mut self, key: &str, value: Value) {
        if let Some(annotations) = self.map("annotations") {
            annotations.insert(key.to_string(), value);
        }
    }

    /// Removes the annotation `key`, returning its value.
    pub fn remove_annotation(&mut self, key: &str) -> Option<Value> {
        self.existing()?
            .get_mut("annotations")?
            .as_object_mut()?
            .remove(key)
    }

    /// Adds `finalizer` to `metadata.finalizers` unless listed; whether it was added.
    pub fn add_finalizer(&mut self, finalizer: &str) -> bool {
        let Some(list) = self.list("finalizers") else {
            return false;
        };
        if list.iter().any(|f| f == finalizer) {
            return false;
        }
        list.push(Value::String(finalizer.to_string()));
        true
    }

    /// Removes `finalizer` from `metadata.finalizers` (an emptied list stays, empty);
    /// whether it was listed.
    pub fn remove_finalizer(&mut self, finalizer: &str) -> bool {
        let Some(list) = self
            .existing()
            .and_then(|m| m.get_mut("finalizers"))
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let before = list.len();
        list.retain(|f| f != finalizer);
        list.len() != before
    }

    /// Keeps the owner references `keep` accepts, removing `ownerReferences` when none
    /// is left.
    pub fn retain_owner_references(&mut self, mut keep: impl FnMut(OwnerRef<'_>) -> bool) {
        let Some(fields) = self.existing() else {
            return;
        };
        let Some(list) = fields
            .get_mut("ownerReferences")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        list.retain(|reference| keep(OwnerRef(reference)));
        if list.is_empty() {
            fields.remove("ownerReferences");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_read_as_stored_and_missing_ones_as_none() {
        let object = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1",
            "resourceVersion": "7", "generation": 3, "labels": {"app": "web"},
            "finalizers": ["a", 5, "b"], "deletionTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [{"uid": "o1", "kind": "ReplicaSet", "controller": true}]}});
        let m = meta(&object);
        assert_eq!(m.name(), Some("web"));
        assert_eq!(m.namespace(), Some("default"));
        assert_eq!(m.uid(), Some("u1"));
        assert_eq!(m.resource_version(), Some("7"));
        assert_eq!(m.generation(), Some(3));
        assert_eq!(m.label("app"), Some("web"));
        assert_eq!(m.label("tier"), None);
        assert_eq!(m.annotations(), None);
        assert_eq!(m.finalizers().collect::<Vec<_>>(), ["a", "b"]);
        assert!(m.has_finalizer("b") && !m.has_finalizer("c"));
        assert!(m.is_deleting());
        let owner = m.owner_references().next().expect("one owner");
        assert_eq!(
            (owner.uid(), owner.kind(), owner.controller()),
            (Some("o1"), Some("ReplicaSet"), true)
        );
        assert_eq!(m.generate_name(), None);
        assert_eq!(m.creation_timestamp(), None);
    }

    #[test]
    fn objects_without_metadata_read_as_empty() {
        for object in [json!({}), json!(null), json!([1]), json!({"metadata": "x"})] {
            let m = meta(&object);
            assert_eq!(m.name(), None, "{object}");
            assert!(!m.has_finalizers());
            assert_eq!(m.owner_references().count(), 0);
            assert!(!m.is_deleting());
        }
        assert_eq!(meta(&json!({})).to_value(), Value::Null);
    }

    #[test]
    fn writes_create_what_they_need_and_removals_create_nothing() {
        let mut object = json!({"kind": "ConfigMap"});
        meta_mut(&mut object).remove_resource_version();
        meta_mut(&mut object).remove_finalizer("x");
        assert_eq!(object, json!({"kind": "ConfigMap"}));

        let mut m = meta_mut(&mut object);
        m.set_name("web");
        m.set_label("app", json!("web"));
        m.set_annotation("note", json!("hi"));
        assert!(m.add_finalizer("a"));
        assert!(!m.add_finalizer("a"));
        m.set_generation(2);
        m.set_deletion("2026-01-01T00:00:00Z", 30);
        assert_eq!(
            object,
            json!({"kind": "ConfigMap", "metadata": {"name": "web", "labels": {"app": "web"},
                "annotations": {"note": "hi"}, "finalizers": ["a"], "generation": 2,
                "deletionTimestamp": "2026-01-01T00:00:00Z", "deletionGracePeriodSeconds": 30}})
        );
        let mut m = meta_mut(&mut object);
        assert!(m.remove_finalizer("a"));
        assert_eq!(m.remove_label("app"), Some(json!("web")));
        assert_eq!(object["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn writes_to_a_value_that_is_not_an_object_are_dropped() {
        let mut list = json!([1, 2]);
        meta_mut(&mut list).set_name("x");
        assert!(!meta_mut(&mut list).add_finalizer("a"));
        assert_eq!(list, json!([1, 2]));
        let mut broken = json!({"metadata": "not a map"});
        meta_mut(&mut broken).set_name("x");
        assert_eq!(broken, json!({"metadata": {"name": "x"}}));
    }

    #[test]
    fn owner_references_go_when_the_last_one_is_dropped() {
        let mut object = json!({"metadata": {"ownerReferences": [{"uid": "a"}, {"uid": "b"}]}});
        meta_mut(&mut object).retain_owner_references(|r| r.uid() != Some("a"));
        assert_eq!(object["metadata"]["ownerReferences"], json!([{"uid": "b"}]));
        meta_mut(&mut object).retain_owner_references(|_| false);
        assert_eq!(object, json!({"metadata": {}}));
    }

    #[test]
    fn empty_managed_fields_are_left_out() {
        let mut object = json!({"metadata": {"managedFields": [{"manager": "kubectl"}]}});
        meta_mut(&mut object).set_managed_fields(json!([]));
        assert_eq!(object, json!({"metadata": {}}));
        meta_mut(&mut object).set_managed_fields(json!([{"manager": "x"}]));
        assert_eq!(
            meta(&object).managed_fields(),
            Some(&json!([{"manager": "x"}]))
        );
    }
}
