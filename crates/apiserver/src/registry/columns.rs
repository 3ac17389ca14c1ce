//! Table columns of the built-in kinds, as `kubectl get` shows them: the column definitions
//! and cells of kube-apiserver's printers (pkg/printers/internalversion/printers.go), with
//! their header names (`Ready`, `Port(s)`; kubectl upper-cases them) and placeholders
//! (`<none>`, `<unset>`, `<pending>`).
//!
//! Cells that show a time relative to now (a CronJob's LAST SCHEDULE, an event's LAST SEEN,
//! a pod's `3 (5m ago)` restarts) read the wall clock: `ColumnValue::Computed` gets only the
//! object. AGE itself is `ColumnValue::Age`, measured from the `now` the table renderer gets.
//!
//! Each kind's set is a function (`columns::pod`) that its row in `builtin.rs` names; NAME
//! and AGE are added by the table renderer unless the set places them itself (AGE where it
//! is not last, as for pods and nodes; events and the default NAME + CREATED AT list every
//! column).

mod core_kinds;
mod events;
mod network;
mod storage;
mod workloads;

pub(crate) use core_kinds::{
    addon, config_map, lease, namespace, node, priority_class, resource_quota, role_binding,
    secret, service_account,
};
pub(crate) use events::event;
pub(crate) use network::{endpoint_slice, endpoints, service};
pub(crate) use storage::{persistent_volume, persistent_volume_claim};
pub(crate) use workloads::{cron_job, daemon_set, deployment, job, pod, replica_set, stateful_set};

use std::time::SystemTime;

use capstan_machinery::meta;
use serde_json::Value;

use super::kind::{Column, ColumnValue};

/// `metav1.ObjectMeta` documentation of `name`, the NAME column's description upstream.
pub const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta` documentation of `creationTimestamp`, the AGE column's description.
pub const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// NAME and CREATED AT (the RFC 3339 creation time), kube-apiserver's default table, for
/// kinds without a printer upstream.
pub(crate) fn created_at() -> Vec<Column> {
    vec![
        Column {
            name: "Name".to_string(),
            column_type: "string".to_string(),
            format: "name".to_string(),
            description: NAME_DESCRIPTION.to_string(),
            priority: 0,
            value: ColumnValue::Name,
        },
        computed("Created At", "date", 0, AGE_DESCRIPTION, |o| {
            Value::String(meta(o).creation_timestamp().unwrap_or("").to_string())
        }),
    ]
}

/// A computed column.
fn computed(
    name: &str,
    column_type: &str,
    priority: i32,
    description: &str,
    value: fn(&Value) -> Value,
) -> Column {
    Column {
        name: name.to_string(),
        column_type: column_type.to_string(),
        format: String::new(),
        description: description.to_string(),
        priority,
        value: ColumnValue::Computed(value),
    }
}

/// The AGE column, for kinds that place it before other columns.
fn age() -> Column {
    Column {
        name: "Age".to_string(),
        column_type: "string".to_string(),
        format: String::new(),
        description: AGE_DESCRIPTION.to_string(),
        priority: 0,
        value: ColumnValue::Age,
    }
}

/// The NAME column, for kinds that place it themselves.
fn name(priority: i32) -> Column {
    Column {
        priority,
        ..created_at().remove(0)
    }
}

/// The string at a JSON pointer, `""` when missing or not a string.
fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The integer at a JSON pointer, 0 when missing.
fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The array at a JSON pointer, empty when missing.
fn list<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The strings of the array at a JSON pointer.
fn strings(object: &Value, pointer: &str) -> Vec<String> {
    list(object, pointer)
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// The number of entries of the map at a JSON pointer.
fn count(object: &Value, pointer: &str) -> i64 {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len() as i64)
}

/// `value`, or `placeholder` when empty.
fn or(value: &str, placeholder: &str) -> Value {
    Value::String(if value.is_empty() { placeholder } else { value }.to_string())
}

/// A string cell.
fn cell(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

/// The age of a timestamp as of now (`<unknown>` when missing).
fn since(object: &Value, pointer: &str) -> String {
    let timestamp = object.pointer(pointer).and_then(Value::as_str);
    capstan_machinery::time::age(timestamp, SystemTime::now())
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, `<none>` when empty.
fn format_labels(object: &Value, pointer: &str) -> Value {
    let pairs: Vec<String> = object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|map| {
            let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            pairs
                .into_iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    or(&pairs.join(","), "<none>")
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when it selects everything
/// or nothing, `<error>` when malformed.
fn format_label_selector(object: &Value, pointer: &str) -> Value {
    let selector = object.pointer(pointer).unwrap_or(&Value::Null);
    match capstan_machinery::selector::LabelSelector::from_json(selector) {
        Ok(selector) => or(&selector.to_selector_string(), "<none>"),
        Err(_) => cell("<error>"),
    }
}
