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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::registry::{Column, ColumnValue, ResourceType};

/// `metav1.ObjectMeta` documentation of `name`, the NAME column's description upstream.
pub const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta` documentation of `creationTimestamp`, the AGE column's description.
pub const AGE_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

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
    if let Some(version) = object.pointer("/metadata/resourceVersion") {
        metadata.insert("resourceVersion".to_string(), version.clone());
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
        ColumnValue::Name => object
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or_else(|| json!("")),
        ColumnValue::Age => json!(age(
            object
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        )),
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

/// `kubectl`'s age of a timestamp: `<unknown>` when missing or unreadable.
pub fn age(timestamp: Option<&str>, now: SystemTime) -> String {
    match timestamp.and_then(parse_timestamp) {
        Some(then) => human_duration_between(then, now),
        None => "<unknown>".to_string(),
    }
}

/// [`human_duration`] of `now - then`, tolerating up to a second of clock skew into the
/// future (`0s`) and showing `<invalid>` beyond, as upstream.
pub fn human_duration_between(then: SystemTime, now: SystemTime) -> String {
    match now.duration_since(then) {
        Ok(elapsed) => human_duration(elapsed),
        Err(ahead) if ahead.duration().as_secs() < 2 => "0s".to_string(),
        Err(_) => "<invalid>".to_string(),
    }
}

/// k8s.io/apimachinery `duration.HumanDuration`: precise while short, coarser as it grows
/// (`45s`, `5m30s`, `3h10m`, `2d5h`, `300d`, `4y20d`, `9y`).
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{}y", days / 365),
            d => format!("{}y{d}d", days / 365),
        };
    }
    format!("{}y", days / 365)
}

/// An RFC 3339 timestamp as Kubernetes writes them (`2024-05-01T10:00:00Z`, fractions and
/// offsets accepted).
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<9}", &fraction[..digits.min(9)]);
        nanos = padded.parse().ok()?;
        rest = &fraction[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_seconds;
    let since_epoch = Duration::new(seconds.unsigned_abs(), 0);
    let whole = if seconds >= 0 {
        UNIX_EPOCH.checked_add(since_epoch)?
    } else {
        UNIX_EPOCH.checked_sub(since_epoch)?
    };
    whole.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
