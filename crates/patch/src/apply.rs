//! Server-side apply: merge a manager's configuration into the live object and record that
//! the manager now owns exactly the fields of its configuration.
//!
//! The steps follow upstream's structured-merge-diff, on JSON and the schema cursor:
//!
//! 1. Merge the configuration into the live object as the schema says: objects merge,
//!    map-lists merge item by item on their keys, sets union, atomic lists and maps are
//!    replaced.
//! 2. Conflicts: fields the merge adds or changes that another manager owns. Applying the
//!    value another manager already set is not a conflict; both then own the field. With
//!    `force`, the conflicting fields move to the applier.
//! 3. Fields the applier owned at its previous apply but no longer sends are removed from the
//!    object, unless another manager owns them (or something below them).
//! 4. The applier's `Apply` entry becomes the configuration's field set.
//!
//! Simplifications, on purpose: `null` in a configuration is ignored (neither set nor owned);
//! no defaulting runs, so map-list keys must be present in the configuration; an object
//! that has no managed fields is first owned by `before-first-apply`, as upstream does.

use serde_json::{Map, Value};

use super::fieldset::{remove_at, value_at};
use super::managed::{
    APPLY, ManagedEntry, UPDATE, changed_fields, owned_fields, read_managed_fields,
    write_managed_fields,
};
use super::{
    ApplyError, Budget, Conflict, FieldManager, FieldPath, FieldSet, ListType, ObjectType,
    PathElement, SchemaRef, format_path,
};

/// The manager upstream gives the fields of an object that had none when first applied to.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Applies `config` for `manager` over `live` (`None` on create) and returns the new object
/// with `metadata.managedFields` updated, or the conflicts that stop it.
pub fn server_side_apply(
    live: Option<&Value>,
    config: &Value,
    manager: &FieldManager,
    force: bool,
    object_type: ObjectType<'_>,
) -> Result<Value, ApplyError> {
    let mut budget = Budget::default();
    server_side_apply_within(live, config, manager, force, object_type, &mut budget)
}

/// [`server_side_apply`] within `budget`: the configuration's walk is charged and the
/// result, managed fields included, measured.
pub fn server_side_apply_within(
    live: Option<&Value>,
    config: &Value,
    manager: &FieldManager,
    force: bool,
    object_type: ObjectType<'_>,
    budget: &mut Budget,
) -> Result<Value, ApplyError> {
    budget.charge(super::budget::size_of(config))?;
    if !config.is_object() {
        return Err(ApplyError::InvalidConfiguration {
            reason: "the configuration must be a JSON object".to_owned(),
        });
    }
    let config = without_nulls(config);
    let schema = object_type.schema;
    let subresource = manager.subresource.as_deref();
    let empty = Value::Object(Map::new());
    let base = live.unwrap_or(&empty);

    let mut entries = read_managed_fields(base).unwrap_or_default();
    if live.is_some() && entries.is_empty() {
        let fields = owned_fields(base, object_type, None);
        let mut entry = ManagedEntry::new(manager, UPDATE, fields);
        entry.manager = BEFORE_FIRST_APPLY.to_owned();
        entry.subresource = None;
        entries.push(entry);
    }

    let config_set = owned_fields(&config, object_type, subresource);
    let mut merged = merge_value(base.clone(), &config, schema);
    keep_unowned_parts(&mut merged, base, object_type, subresource);
    let (changed, _) = changed_fields(base, &merged, object_type, subresource);
    let changed = changed.intersection(&config_set);

    let mine = |entry: &ManagedEntry| entry.belongs_to(manager, APPLY);
    let mut conflicts = Vec::new();
    for entry in entries.iter().filter(|entry| !mine(entry)) {
        for path in entry.fields.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: entry.manager.clone(),
                api_version: entry.api_version.clone(),
                field: format_path(&path),
            });
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(ApplyError::Conflicts(conflicts));
        }
        for entry in entries.iter_mut().filter(|entry| !mine(entry)) {
            entry.fields = entry.fields.difference(&changed);
        }
    }

    let previous = entries
        .iter()
        .find(|entry| mine(entry))
        .map(|entry| entry.fields.clone())
        .unwrap_or_default();
    let others = entries
        .iter()
        .filter(|entry| !mine(entry))
        .fold(FieldSet::new(), |all, entry| all.union(&entry.fields));
    let owned = others.union(&config_set);
    for path in previous.difference(&config_set).paths() {
        let kept = owned.contains_at_or_below(&path) || is_key_field(&path);
        if !kept {
            remove_at(&mut merged, &path);
            remove_emptied_parents(&mut merged, &path, &owned);
        }
    }

    match entries.iter_mut().find(|entry| mine(entry)) {
        Some(entry) => {
            if entry.fields != config_set || merged != *base {
                entry.time = Some(manager.time.clone());
            }
            entry.fields = config_set;
            entry.api_version = manager.api_version.clone();
        }
        None => entries.push(ManagedEntry::new(manager, APPLY, config_set)),
    }
    write_managed_fields(&mut merged, &entries);
    budget.check_document(&merged)?;
    Ok(merged)
}

/// Removes the objects left empty by removing `path` (dropping the last label removes
/// `labels`, as a typed object's `omitempty` would), unless someone owns them.
fn remove_emptied_parents(object: &mut Value, path: &FieldPath, owned: &FieldSet) {
    for end in (1..path.len()).rev() {
        let parent = &path[..end];
        let emptied = matches!(parent.last(), Some(PathElement::Field(_)))
            && value_at(object, parent).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
            && !owned.contains_at_or_below(parent);
        if !emptied {
            return;
        }
        remove_at(object, parent);
    }
}

/// Whether `path` is a key field of a map-list item (`[name="web"].name`): it lives and
/// dies with its item.
fn is_key_field(path: &FieldPath) -> bool {
    match path.as_slice() {
        [.., PathElement::Key(key), PathElement::Field(name)] => {
            serde_json::from_str::<Map<String, Value>>(key).is_ok_and(|key| key.contains_key(name))
        }
        _ => false,
    }
}

/// Parts a manager cannot own keep their live value: `status` when written through the main
/// resource of a kind with a status subresource, everything but `status` through that
/// subresource.
fn keep_unowned_parts(
    merged: &mut Value,
    live: &Value,
    object_type: ObjectType<'_>,
    subresource: Option<&str>,
) {
    if !object_type.status_subresource {
        return;
    }
    let (Value::Object(merged_map), Value::Object(live_map)) = (&mut *merged, live) else {
        return;
    };
    match subresource {
        None => match live_map.get("status") {
            Some(status) => {
                merged_map.insert("status".to_owned(), status.clone());
            }
            None => {
                merged_map.remove("status");
            }
        },
        Some(_) => {
            let status = merged_map.remove("status");
            let mut restored = live_map.clone();
            match status {
                Some(status) => restored.insert("status".to_owned(), status),
                None => restored.remove("status"),
            };
            *merged_map = restored;
        }
    }
}

fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges `config` into `live` the way apply does (see the module doc).
fn merge_value(live: Value, config: &Value, schema: SchemaRef<'_>) -> Value {
    match (live, config) {
        (Value::Object(mut live), Value::Object(config)) if !schema.is_atomic_map() => {
            for (key, value) in config {
                let (field_schema, _) = schema.field(key);
                let current = live.remove(key).unwrap_or(Value::Null);
                live.insert(key.clone(), merge_value(current, value, field_schema));
            }
            Value::Object(live)
        }
        (Value::Array(live), Value::Array(config)) => match schema.list_type() {
            ListType::Atomic => Value::Array(config.clone()),
            ListType::Set => {
                let mut items = live;
                for item in config {
                    if !items.contains(item) {
                        items.push(item.clone());
                    }
                }
                Value::Array(items)
            }
            ListType::Map(keys) => merge_map_list(live, config, &keys, schema.items()),
        },
        (_, config) => config.clone(),
    }
}

/// Merges two map-lists on their keys. Items both have come in the configuration's order;
/// live-only items keep their place relative to them.
fn merge_map_list(
    live: Vec<Value>,
    config: &[Value],
    keys: &[String],
    item: SchemaRef<'_>,
) -> Value {
    let config_keys: Option<Vec<PathElement>> = config
        .iter()
        .map(|c| PathElement::key_of(c, keys, item))
        .collect();
    let Some(config_keys) = config_keys else {
        return Value::Array(config.to_vec());
    };
    let mut live: Vec<(Option<PathElement>, Option<Value>)> = live
        .into_iter()
        .map(|live_item| (PathElement::key_of(&live_item, keys, item), Some(live_item)))
        .collect();
    let mut result = Vec::with_capacity(live.len() + config.len());
    let (mut l, mut c) = (0, 0);
    loop {
        while l < live.len() && live[l].1.is_none() {
            l += 1;
        }
        let live_only = l < live.len()
            && live[l]
                .0
                .as_ref()
                .is_none_or(|key| !config_keys.contains(key));
        if live_only {
            result.extend(live[l].1.take());
            l += 1;
        } else if c < config.len() {
            let found = live
                .iter_mut()
                .find(|(key, value)| value.is_some() && key.as_ref() == Some(&config_keys[c]))
                .and_then(|(_, value)| value.take());
            result.push(merge_value(found.unwrap_or(Value::Null), &config[c], item));
            c += 1;
        } else {
            break;
        }
    }
    Value::Array(result)
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
