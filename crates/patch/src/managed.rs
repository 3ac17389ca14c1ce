//! `metadata.managedFields`: who owns which fields, and its bookkeeping after an ordinary
//! write (create, update, any patch but apply).
//!
//! Each entry is one manager's set for one operation (`Apply` or `Update`) and, for
//! updates, one API version; its fields are a [`FieldSet`] in FieldsV1 form. An update makes
//! the writer own what it changed and takes those fields from everyone else; removed fields
//! leave every set; entries whose set becomes empty are dropped, so the list stays valid.
//! Fields the server sets (`metadata.uid`, `resourceVersion`, …), `apiVersion`/`kind`, and on
//! kinds with a status subresource `status` (or, on that subresource, everything else) are
//! never owned.

use serde_json::{Map, Value, json};

use super::fieldset::leaves;
use super::{FieldSet, PathElement, SchemaRef};

/// The writer whose ownership is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldManager {
    /// The field manager name (`kubectl`, `kube-controller-manager`, …).
    pub name: String,
    /// The API version of the request (`apps/v1`).
    pub api_version: String,
    /// When the write happens, RFC 3339 (`2026-11-24T20:00:00Z`).
    pub time: String,
    /// The subresource written (`status`, `scale`), `None` for the main resource.
    pub subresource: Option<String>,
}

/// What the engines need to know about the kind being written.
#[derive(Debug, Clone, Copy)]
pub struct ObjectType<'a> {
    /// The schema of the whole object.
    pub schema: SchemaRef<'a>,
    /// Whether the kind has a `status` subresource: then the main resource never owns
    /// `status`, and the status subresource owns nothing else.
    pub status_subresource: bool,
}

impl<'a> ObjectType<'a> {
    /// A kind without a status subresource.
    pub fn new(schema: SchemaRef<'a>) -> Self {
        ObjectType {
            schema,
            status_subresource: false,
        }
    }

    /// The same kind, with a status subresource.
    pub fn with_status_subresource(self) -> Self {
        ObjectType {
            status_subresource: true,
            ..self
        }
    }
}

/// Metadata the server sets: never owned by a manager.
const SERVER_SET_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

pub(crate) const APPLY: &str = "Apply";
pub(crate) const UPDATE: &str = "Update";

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone)]
pub(crate) struct ManagedEntry {
    pub(crate) manager: String,
    pub(crate) operation: String,
    pub(crate) api_version: String,
    pub(crate) time: Option<String>,
    pub(crate) subresource: Option<String>,
    pub(crate) fields: FieldSet,
}

impl ManagedEntry {
    pub(crate) fn new(manager: &FieldManager, operation: &str, fields: FieldSet) -> Self {
        ManagedEntry {
            manager: manager.name.clone(),
            operation: operation.to_owned(),
            api_version: manager.api_version.clone(),
            time: Some(manager.time.clone()),
            subresource: manager.subresource.clone(),
            fields,
        }
    }

    /// Reads one entry; `None` for entries that are not FieldsV1 or cannot be read (the
    /// server wrote them, so a bad one is dropped rather than failing every later write).
    fn parse(value: &Value) -> Option<Self> {
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        if text("fieldsType").is_some_and(|t| t != "FieldsV1") {
            return None;
        }
        Some(ManagedEntry {
            manager: text("manager").unwrap_or_default(),
            operation: text("operation")?,
            api_version: text("apiVersion").unwrap_or_default(),
            time: text("time"),
            subresource: text("subresource"),
            fields: FieldSet::from_fields_v1(value.get("fieldsV1")?).ok()?,
        })
    }

    fn to_value(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), json!(self.manager));
        entry.insert("operation".into(), json!(self.operation));
        entry.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            entry.insert("time".into(), json!(time));
        }
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            entry.insert("subresource".into(), json!(subresource));
        }
        Value::Object(entry)
    }

    /// Whether this is `manager`'s entry for `operation` (Apply entries are one per manager
    /// whatever the version, as upstream; Update entries one per version).
    pub(crate) fn belongs_to(&self, manager: &FieldManager, operation: &str) -> bool {
        self.manager == manager.name
            && self.operation == operation
            && self.subresource == manager.subresource
            && (operation == APPLY || self.api_version == manager.api_version)
    }
}

/// The entries of `object`'s `metadata.managedFields`, `None` when the field is absent.
pub(crate) fn read_managed_fields(object: &Value) -> Option<Vec<ManagedEntry>> {
    let entries = object.get("metadata")?.get("managedFields")?.as_array()?;
    Some(entries.iter().filter_map(ManagedEntry::parse).collect())
}

/// Sets `object`'s `metadata.managedFields`, dropping entries that own nothing.
pub(crate) fn write_managed_fields(object: &mut Value, entries: &[ManagedEntry]) {
    let Value::Object(object) = object else {
        return;
    };
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(metadata) = metadata {
        let entries = managed_fields_value(entries);
        if entries.as_array().is_some_and(Vec::is_empty) {
            metadata.remove("managedFields");
        } else {
            metadata.insert("managedFields".into(), entries);
        }
    }
}

fn managed_fields_value(entries: &[ManagedEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|entry| !entry.fields.is_empty())
            .map(ManagedEntry::to_value)
            .collect(),
    )
}

/// The fields of `object` a manager writing `subresource` can own.
pub(crate) fn owned_fields(
    object: &Value,
    object_type: ObjectType<'_>,
    subresource: Option<&str>,
) -> FieldSet {
    let mut set = FieldSet::from_object(object, object_type.schema);
    strip_unowned(&mut set, object_type, subresource);
    set
}

fn strip_unowned(set: &mut FieldSet, object_type: ObjectType<'_>, subresource: Option<&str>) {
    let field = |name: &str| PathElement::Field(name.to_owned());
    set.remove_subtree(&[field("apiVersion")]);
    set.remove_subtree(&[field("kind")]);
    for name in SERVER_SET_METADATA {
        set.remove_subtree(&[field("metadata"), field(name)]);
    }
    if object_type.status_subresource {
        let status = field("status");
        match subresource {
            None => set.remove_subtree(&[status]),
            Some(_) => set.retain_top_level(|element| *element == status),
        }
    }
}

/// What a write from `before` to `after` changed: fields added or given another value, and
/// fields removed, both limited to what `subresource` can own.
pub(crate) fn changed_fields(
    before: &Value,
    after: &Value,
    object_type: ObjectType<'_>,
    subresource: Option<&str>,
) -> (FieldSet, FieldSet) {
    let after_set = FieldSet::from_object(after, object_type.schema);
    if before.as_object().is_some_and(Map::is_empty) {
        // A create: everything set is changed (leaves are members of the set too), nothing
        // removed; no need to walk the object again for its leaf values.
        let mut changed = after_set;
        strip_unowned(&mut changed, object_type, subresource);
        return (changed, FieldSet::new());
    }
    let before_set = FieldSet::from_object(before, object_type.schema);
    let before_leaves = leaves(before, object_type.schema);
    let mut changed = after_set.difference(&before_set);
    for (path, value) in leaves(after, object_type.schema) {
        if before_leaves.get(&path) != Some(&value) {
            changed.insert(&path);
        }
    }
    let mut removed = before_set.difference(&after_set);
    strip_unowned(&mut changed, object_type, subresource);
    strip_unowned(&mut removed, object_type, subresource);
    (changed, removed)
}

/// `metadata.managedFields` after a write that is not an apply (operation `Update`): what
/// `manager` changed becomes its own (everything set, on create) and leaves the other
/// managers' sets; removed fields leave every set. The managed fields start from `new`'s
/// when it carries them (an explicit `[]` clears them, as upstream), else from `old`'s.
pub fn record_update(
    old: Option<&Value>,
    new: &Value,
    manager: &FieldManager,
    object_type: ObjectType<'_>,
) -> Value {
    let mut entries = read_managed_fields(new)
        .or_else(|| old.and_then(read_managed_fields))
        .unwrap_or_default();
    let empty = Value::Object(Map::new());
    let before = old.unwrap_or(&empty);
    let subresource = manager.subresource.as_deref();
    let (changed, removed) = changed_fields(before, new, object_type, subresource);
    for entry in entries.iter_mut() {
        if !entry.belongs_to(manager, UPDATE) {
            entry.fields = entry.fields.difference(&changed).difference(&removed);
        }
    }
    match entries.iter_mut().find(|e| e.belongs_to(manager, UPDATE)) {
        Some(entry) => {
            let fields = entry.fields.union(&changed).difference(&removed);
            if fields != entry.fields {
                entry.fields = fields;
                entry.time = Some(manager.time.clone());
            }
        }
        None => entries.push(ManagedEntry::new(manager, UPDATE, changed)),
    }
    managed_fields_value(&entries)
}
