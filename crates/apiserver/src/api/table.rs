//! Table output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), what `kubectl get`
//! asks for: column definitions and one row of cells per object, as kube-apiserver renders
//! them, so kubectl prints the same screen against Capstan.
//!
//! The layout comes from the kind (`ResourceType::columns`), in the order upstream uses:
//! - a kind whose columns include the name itself (events: LAST SEEN first and NAME last,
//!   kinds shown as NAME + CREATED AT) lays out every column and gets nothing added;
//! - custom resources (columns read by `Path`, from `additionalPrinterColumns`) get NAME
//!   and exactly their columns, and a kind without columns NAME and an AGE of type `date`,
//!   as the apiextensions table convertor does;
//! - built-in kinds get NAME first, their columns, then AGE unless they placed it (pods put
//!   it before their `-o wide` columns).
//!
//! The server always renders the wide columns (priority > 0); kubectl hides them.
//!
//! Everything here is a pure function of the objects and `now`, so tests pin every cell.

use std::time::SystemTime;

use capstan_machinery::meta;
use serde_json::{Map, Value, json};

use capstan_machinery::time::{age, human_duration_between, parse_timestamp};

use crate::registry::{AGE_DESCRIPTION, Column, ColumnValue, NAME_DESCRIPTION, ResourceType};

/// What each row embeds (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object (`"object": null`).
    None,
    /// The object's metadata as a `PartialObjectMetadata` (the default; kubectl uses it for
    /// `--show-labels` and `-L`).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// The `includeObject` query parameter; `None` for a value kube-apiserver rejects.
    pub fn from_query(value: Option<&str>) -> Option<IncludeObject> {
        match value {
            None | Some("") | Some("Metadata") => Some(IncludeObject::Metadata),
            Some("None") => Some(IncludeObject::None),
            Some("Object") => Some(IncludeObject::Object),
            Some(_) => None,
        }
    }
}

/// The Table for a list: `list_metadata` is the list's `metadata` (`resourceVersion`,
/// `continue`, `remainingItemCount`), `now` the instant ages are measured from.
pub fn render_table(
    kind: &ResourceType,
    items: &[Value],
    include_object: IncludeObject,
    list_metadata: Value,
    now: SystemTime,
) -> Value {
    let columns = layout(kind);
    let rows: Vec<Value> = items
        .iter()
        .map(|item| row(&columns, item, include_object, now))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions(&columns),
        "rows": rows,
    })
}

/// The one-row Table for a single object: a GET, or one watch event (`kubectl get -w`
/// sends the object of every event as such a Table). kube-apiserver sends the column
/// definitions with the first watch event only: `include_headers` false leaves them null.
pub fn render_object_table(
    kind: &ResourceType,
    object: &Value,
    include_object: IncludeObject,
    include_headers: bool,
    now: SystemTime,
) -> Value {
    let columns = layout(kind);
    let mut metadata = Map::new();
    if let Some(version) = meta(object).resource_version() {
        metadata.insert("resourceVersion".to_string(), json!(version));
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": if include_headers { definitions(&columns) } else { Value::Null },
        "rows": [row(&columns, object, include_object, now)],
    })
}

/// The columns of a kind in display order, NAME and AGE included.
pub fn layout(kind: &ResourceType) -> Vec<Column> {
    let own = &kind.columns;
    if own.iter().any(|c| matches!(c.value, ColumnValue::Name)) {
        return own.clone();
    }
    let mut columns = Vec::with_capacity(own.len() + 2);
    columns.push(Column {
        name: "Name".to_string(),
        column_type: "string".to_string(),
        format: "name".to_string(),
        description: NAME_DESCRIPTION.to_string(),
        priority: 0,
        value: ColumnValue::Name,
    });
    columns.extend(own.iter().cloned());
    let custom = own.iter().any(|c| matches!(c.value, ColumnValue::Path(_)));
    let places_age = own.iter().any(|c| matches!(c.value, ColumnValue::Age));
    if !custom && !places_age {
        columns.push(Column {
            name: "Age".to_string(),
            // A custom resource without printer columns gets a `date` AGE upstream.
            column_type: if own.is_empty() { "date" } else { "string" }.to_string(),
            format: String::new(),
            description: AGE_DESCRIPTION.to_string(),
            priority: 0,
            value: ColumnValue::Age,
        });
    }
    columns
}

fn definitions(columns: &[Column]) -> Value {
    columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.column_type,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

fn row(
    columns: &[Column],
    object: &Value,
    include_object: IncludeObject,
    now: SystemTime,
) -> Value {
    let cells: Vec<Value> = columns.iter().map(|c| cell(c, object, now)).collect();
    let embedded = match include_object {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => object.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    };
    json!({ "cells": cells, "object": embedded })
}

/// One cell of one object.
pub fn cell(column: &Column, object: &Value, now: SystemTime) -> Value {
    match &column.value {
        ColumnValue::Name => json!(meta(object).name().unwrap_or("")),
        ColumnValue::Age => json!(age(meta(object).creation_timestamp(), now)),
        ColumnValue::Path(path) => match lookup_path(object, path) {
            Some(value) => typed_cell(&column.column_type, value, now),
            None => Value::Null,
        },
        ColumnValue::Computed(compute) => compute(object),
    }
}

/// A CRD `additionalPrinterColumns` value as its declared type, as the apiextensions table
/// convertor does: `date` becomes an age, a mismatched type an empty cell.
fn typed_cell(column_type: &str, value: &Value, now: SystemTime) -> Value {
    match (column_type, value) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(s)) => json!(s),
        ("string", other) => json!(other.to_string()),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => json!(i),
            None => n.as_f64().map_or(Value::Null, |f| json!(f as i64)),
        },
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, |f| json!(f)),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => match parse_timestamp(s) {
            Some(then) => json!(human_duration_between(then, now)),
            None => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

/// The value at a simple JSONPath as CRDs give it: `.spec.replicas`, `.status.items[0].name`,
/// optionally in braces. Filters and wildcards are not supported (the cell stays empty).
pub fn lookup_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current = object;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (field, mut indexes) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if !field.is_empty() {
            current = current.get(field)?;
        }
        while let Some(rest) = indexes.strip_prefix('[') {
            let end = rest.find(']')?;
            let index: usize = rest[..end].trim().parse().ok()?;
            current = current.get(index)?;
            indexes = &rest[end + 1..];
        }
        if !indexes.is_empty() {
            return None;
        }
    }
    Some(current)
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
