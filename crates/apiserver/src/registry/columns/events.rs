//! Columns of events (`v1` and `events.k8s.io/v1`), following kube-apiserver's `printEvent`.

use serde_json::{Value, json};

use super::{cell, computed, name, since, text};
use crate::registry::kind::Column;

/// Events of `v1` and `events.k8s.io/v1` (whose fields are renamed: `regarding`, `note`,
/// `deprecated*`) print the same; NAME comes last and there is no AGE.
pub(crate) fn event() -> Vec<Column> {
    vec![
        computed(
            "Last Seen",
            "string",
            0,
            "The time at which the most recent occurrence of this event was recorded.",
            event_last_seen,
        ),
        computed(
            "Type",
            "string",
            0,
            "Type of this event (Normal, Warning).",
            |e| cell(text(e, "/type")),
        ),
        computed(
            "Reason",
            "string",
            0,
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            |e| cell(text(e, "/reason")),
        ),
        computed(
            "Object",
            "string",
            0,
            "The object that this event is about.",
            |e| {
                let object = e
                    .get("involvedObject")
                    .or(e.get("regarding"))
                    .unwrap_or(&Value::Null);
                let kind = text(object, "/kind").to_lowercase();
                match text(object, "/name") {
                    "" => cell(kind),
                    name => cell(format!("{kind}/{name}")),
                }
            },
        ),
        computed(
            "Subobject",
            "string",
            1,
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            |e| {
                let object = e
                    .get("involvedObject")
                    .or(e.get("regarding"))
                    .unwrap_or(&Value::Null);
                cell(text(object, "/fieldPath"))
            },
        ),
        computed(
            "Source",
            "string",
            1,
            "The component reporting this event.",
            event_source,
        ),
        computed(
            "Message",
            "string",
            0,
            "A human-readable description of the status of this operation.",
            |e| cell(first(e, &["/message", "/note"]).trim()),
        ),
        computed(
            "First Seen",
            "string",
            1,
            "The time at which the event was first recorded.",
            event_first_seen,
        ),
        computed(
            "Count",
            "string",
            1,
            "The number of times this event has occurred.",
            |e| {
                let count = e
                    .pointer("/series/count")
                    .or(e.pointer("/count"))
                    .or(e.pointer("/deprecatedCount"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                json!(if count == 0 { 1 } else { count })
            },
        ),
        name(1),
    ]
}

/// The first non-empty string among the pointers.
fn first<'a>(object: &'a Value, pointers: &[&str]) -> &'a str {
    pointers
        .iter()
        .map(|p| text(object, p))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

fn event_first_seen(event: &Value) -> Value {
    for pointer in ["/firstTimestamp", "/deprecatedFirstTimestamp", "/eventTime"] {
        if !text(event, pointer).is_empty() {
            return cell(since(event, pointer));
        }
    }
    cell("<unknown>")
}

fn event_last_seen(event: &Value) -> Value {
    for pointer in [
        "/series/lastObservedTime",
        "/lastTimestamp",
        "/deprecatedLastTimestamp",
    ] {
        if !text(event, pointer).is_empty() {
            return cell(since(event, pointer));
        }
    }
    event_first_seen(event)
}

fn event_source(event: &Value) -> Value {
    let component = first(
        event,
        &[
            "/source/component",
            "/deprecatedSource/component",
            "/reportingController",
        ],
    );
    let instance = first(
        event,
        &[
            "/source/host",
            "/deprecatedSource/host",
            "/reportingInstance",
        ],
    );
    match instance {
        "" => cell(component),
        _ => cell(format!("{component}, {instance}")),
    }
}
