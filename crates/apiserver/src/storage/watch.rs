//! Watch events: the datastore's change feed as Kubernetes sees it.
//!
//! A datastore `Put` whose create revision is its own revision is an object coming into
//! being (`Added`); any other `Put` is `Modified`; a `Delete` is `Deleted` and carries the
//! object as it was when deleted (the event's previous value), with the delete's revision as
//! its resourceVersion, as kube-apiserver reports it. Every object carries its
//! resourceVersion, so a client can resume a broken watch from the last one it saw.
//!
//! The feed delivers every change once and in revision order (see `datastore/feed.rs`), so
//! no reordering or deduplication happens here. `Bookmark` exists for the API layer, which
//! sends one when asked for progress; the datastore has no progress events of its own.

use std::pin::Pin;

use capstan_machinery::meta;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use super::error::{Result, StorageError};
use super::object;
use capstan_datastore::{Event, EventKind};

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was deleted; the object is its last state.
    Deleted,
    /// No change: the watch has seen everything up to the object's resourceVersion.
    Bookmark,
}

/// One watch event: its type and the object, carrying its resourceVersion.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// What happened.
    pub kind: WatchEventType,
    /// The object after the change (before it, for a delete).
    pub object: Value,
    /// The object before a change (`Modified`), when history still holds it: what a
    /// filtered watch needs to tell an object entering its selector from one moving in it.
    pub previous: Option<Value>,
}

impl WatchEvent {
    /// A bookmark at `revision`: an object holding only `metadata.resourceVersion`.
    pub fn bookmark(revision: i64) -> WatchEvent {
        WatchEvent {
            kind: WatchEventType::Bookmark,
            object: json!({"metadata": {"resourceVersion": revision.to_string()}}),
            previous: None,
        }
    }

    /// The object's resourceVersion.
    pub fn resource_version(&self) -> Option<&str> {
        meta(&self.object).resource_version()
    }

    /// The storage event for a datastore event; `None` for an object that cannot be
    /// decoded, which is reported and left out (as lists leave it out).
    pub(crate) fn from_event(event: &Event) -> Result<Option<WatchEvent>> {
        let (kind, bytes) = match event.kind {
            EventKind::Put if event.create_revision == event.revision => {
                (WatchEventType::Added, &event.value)
            }
            EventKind::Put => (WatchEventType::Modified, &event.value),
            EventKind::Delete => match &event.prev_value {
                Some(previous) => (WatchEventType::Deleted, previous),
                None => {
                    return Err(StorageError::InvalidObject {
                        key: event.key.clone(),
                        reason: format!(
                            "deleted at revision {} but its last state has been compacted; list again to resynchronise",
                            event.revision
                        ),
                    });
                }
            },
        };
        let previous = match (kind, &event.prev_value) {
            (WatchEventType::Modified, Some(previous)) => {
                object::decode(&event.key, previous, event.prev_revision).ok()
            }
            _ => None,
        };
        let Some(object) = object::decode_or_skip(&event.key, bytes, event.revision)? else {
            return Ok(None);
        };
        Ok(Some(WatchEvent {
            kind,
            object,
            previous,
        }))
    }
}

/// A stream of watch events. An item that is an error does not end the stream by itself;
/// a datastore error (compaction, a watcher cut off for being slow) is the last item.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

/// Maps a datastore event stream to storage events.
pub(crate) fn map_stream(
    events: impl Stream<Item = capstan_datastore::Result<Event>> + Send + 'static,
) -> WatchStream {
    Box::pin(events.filter_map(|item| {
        futures::future::ready(match item {
            Ok(event) => WatchEvent::from_event(&event).transpose(),
            Err(error) => Some(Err(StorageError::from_read(error))),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(kind: EventKind, revision: i64, create_revision: i64) -> Event {
        Event {
            kind,
            key: "/registry/core/pods/a/p".to_string(),
            revision,
            create_revision,
            value: Bytes::from_static(br#"{"metadata":{"name":"p"}}"#),
            prev_revision: 0,
            prev_value: Some(Bytes::from_static(br#"{"metadata":{"name":"old"}}"#)),
        }
    }

    #[test]
    fn datastore_events_map_to_kubernetes_types() {
        let added = WatchEvent::from_event(&event(EventKind::Put, 5, 5))
            .expect("decodes")
            .expect("an object");
        assert_eq!(added.kind, WatchEventType::Added);
        assert_eq!(added.resource_version(), Some("5"));
        let modified = WatchEvent::from_event(&event(EventKind::Put, 6, 5))
            .expect("decodes")
            .expect("an object");
        assert_eq!(modified.kind, WatchEventType::Modified);
        let deleted = WatchEvent::from_event(&event(EventKind::Delete, 7, 5))
            .expect("decodes")
            .expect("an object");
        assert_eq!(deleted.kind, WatchEventType::Deleted);
        assert_eq!(deleted.object["metadata"]["name"], "old");
        assert_eq!(deleted.resource_version(), Some("7"));
        assert_eq!(WatchEvent::bookmark(8).resource_version(), Some("8"));
    }
}
