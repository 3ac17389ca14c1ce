//! Watch: a chunked HTTP response of JSON lines (`{"type":…,"object":…}\n`).
//!
//! The stream starts with the current state as synthetic `ADDED` events when the client
//! gives no resourceVersion (or `0`, or asks for `sendInitialEvents`), taken from one list
//! at revision R, then follows the change feed from R, so nothing falls between the list
//! and the watch. Selectors are applied per event; an object that stops matching is sent
//! as `DELETED` and one that starts matching as `ADDED`, as kube-apiserver does. A
//! resourceVersion older than compaction is an HTTP 200 stream holding one `ERROR` event
//! with a 410 `Expired` Status: clients (kube-rs, client-go) re-list on that, while a bare
//! HTTP 410 makes some of them retry the same watch forever.
//!
//! The stream is a `futures::stream::unfold` over the watch state, polled by the
//! connection itself: no task is spawned, so a closed connection drops everything.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use capstan_machinery::meta;
use futures::StreamExt;
use serde_json::{Value, json};

use super::Call;
use super::read::{Filter, include_object};
use crate::api::body::Representation;
use crate::api::error::ApiError;
use crate::api::metrics::WatcherGauge;
use crate::api::table::{IncludeObject, render_object_table};
use crate::registry::ResourceType;
use crate::storage::{ListOptions, StorageError, WatchEventType, WatchStream};

/// The longest a watch lasts when the client gives no `timeoutSeconds`; clients re-watch
/// from their last resourceVersion (kube-apiserver picks 30-60 minutes at random).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often an idle watch gets a BOOKMARK when the client allows them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);
/// Page size of the initial list.
const INITIAL_PAGE: usize = 1000;

struct WatchState {
    kind: std::sync::Arc<ResourceType>,
    filter: Filter,
    name: Option<String>,
    representation: Representation,
    include_object: IncludeObject,
    headers_sent: bool,
    /// Keys known to match the selectors; authoritative after an initial list.
    matching: HashSet<String>,
    known_state: bool,
    pending: VecDeque<Bytes>,
    events: Option<WatchStream>,
    bookmarks: bool,
    last_version: String,
    deadline: tokio::time::Instant,
    shutdown: tokio_util::sync::CancellationToken,
    done: bool,
    /// Counts this stream as open (until dropped with the response body) and its events.
    gauge: Option<WatcherGauge>,
}

fn object_key(object: &Value) -> String {
    format!(
        "{}/{}",
        meta(object).namespace().unwrap_or(""),
        meta(object).name().unwrap_or("")
    )
}

impl WatchState {
    fn selected(&self, object: &Value) -> bool {
        self.name
            .as_deref()
            .is_none_or(|name| meta(object).name() == Some(name))
            && self.filter.matches(object)
    }

    fn encode(&mut self, event_type: &str, object: &Value) -> Bytes {
        let converted = match self.representation {
            Representation::Table if event_type != "BOOKMARK" && event_type != "ERROR" => {
                let table = render_object_table(
                    &self.kind,
                    object,
                    self.include_object,
                    !self.headers_sent,
                    SystemTime::now(),
                );
                self.headers_sent = true;
                Some(table)
            }
            Representation::PartialObjectMetadata if event_type != "ERROR" => Some(json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta(object).to_value(),
            })),
            _ => None,
        };
        // Serialized by reference: every watcher of a busy kind encodes every event, and a
        // copy of the object per event per watcher was a good part of that cost.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            event_type: &'a str,
            object: &'a Value,
        }
        let line = Line {
            event_type,
            object: converted.as_ref().unwrap_or(object),
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_else(|_| {
            // Unreachable for a `Value` (its keys are strings); say so rather than go quiet.
            br#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","code":500,"message":"the event could not be encoded"}}"#.to_vec()
        });
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn bookmark(&mut self, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": self.last_version});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.kind.kind,
            "apiVersion": self.kind.api_version(),
            "metadata": metadata,
        });
        self.encode("BOOKMARK", &object)
    }

    /// The line for one change, if the client should see it.
    fn change(
        &mut self,
        kind: WatchEventType,
        object: &Value,
        previous: Option<&Value>,
    ) -> Option<Bytes> {
        if let Some(version) = meta(object).resource_version() {
            self.last_version = version.to_string();
        }
        let key = object_key(object);
        let selected = self.selected(object);
        // The previous state decides, when history has it; else what this watch has seen.
        let was_selected = match previous {
            Some(previous) => self.selected(previous),
            None => self.matching.contains(&key) || (!self.known_state && selected),
        };
        let event_type = match kind {
            WatchEventType::Added if selected => "ADDED",
            WatchEventType::Modified if selected && was_selected => "MODIFIED",
            WatchEventType::Modified if selected => "ADDED",
            WatchEventType::Modified if was_selected => "DELETED",
            WatchEventType::Deleted if selected || was_selected => "DELETED",
            WatchEventType::Bookmark => return Some(self.bookmark(false)),
            _ => return None,
        };
        if event_type == "DELETED" {
            self.matching.remove(&key);
        } else {
            self.matching.insert(key);
        }
        Some(self.encode(event_type, object))
    }

    fn error(&mut self, error: &StorageError) -> Bytes {
        let (code, reason, message) = match error {
            StorageError::Expired { requested, oldest } => (
                410,
                "Expired",
                format!("too old resource version: {requested} ({oldest})"),
            ),
            other => (
                410,
                "Expired",
                format!(
                    "the watch ended: {other}; list again and watch from the list's resourceVersion"
                ),
            ),
        };
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code,
        });
        self.encode("ERROR", &status)
    }

    /// The next chunk of the response, or `None` when the watch is over.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            let events = self.events.as_mut()?;
            let bookmark_at = tokio::time::Instant::now() + BOOKMARK_INTERVAL;
            tokio::select! {
                next = events.next() => match next {
                    Some(Ok(event)) => {
                        if let Some(line) = self.change(event.kind, &event.object, event.previous.as_ref()) {
                            return Some(line);
                        }
                    }
                    Some(Err(error)) => {
                        self.done = true;
                        return Some(self.error(&error));
                    }
                    None => return None,
                },
                () = tokio::time::sleep_until(bookmark_at), if self.bookmarks => {
                    return Some(self.bookmark(false));
                }
                () = tokio::time::sleep_until(self.deadline) => return None,
                () = self.shutdown.cancelled() => return None,
            }
        }
    }
}

/// Serves a watch request.
pub(super) async fn serve(call: Call) -> Result<Response, ApiError> {
    let kind = call.target.kind.clone();
    let filter = Filter::from_call(&call)?;
    let query = &call.query;
    let rv = query.resource_version.clone().unwrap_or_default();
    let initial = match query.send_initial_events {
        Some(send) => send,
        None => rv.is_empty() || rv == "0",
    };
    let timeout = query
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let mut state = WatchState {
        kind: kind.clone(),
        filter,
        name: call.target.name.clone(),
        representation: call.negotiated.representation,
        include_object: include_object(&call),
        headers_sent: false,
        matching: HashSet::new(),
        known_state: initial,
        pending: VecDeque::new(),
        events: None,
        bookmarks: query.allow_watch_bookmarks,
        last_version: rv.clone(),
        deadline: tokio::time::Instant::now() + timeout.min(DEFAULT_TIMEOUT),
        shutdown: call.state.shutdown.clone(),
        done: false,
        gauge: None,
    };
    let objects = &call.state.objects;
    let namespace = call.namespace();
    let start_from = if initial {
        // One list, exact at one revision, page by page; the watch continues from it.
        let mut options = ListOptions {
            limit: INITIAL_PAGE,
            ..ListOptions::default()
        };
        if !rv.is_empty() && rv != "0" {
            options.resource_version = Some(rv.clone());
        }
        let mut revision;
        loop {
            let page = objects.list(&kind, namespace, &options).await?;
            revision = page.resource_version.clone();
            for object in &page.items {
                if state.selected(object) {
                    state.matching.insert(object_key(object));
                    let line = state.encode("ADDED", object);
                    state.pending.push_back(line);
                }
            }
            match page.continue_token {
                Some(token) => {
                    options.continue_token = Some(token);
                    options.resource_version = None;
                }
                None => break,
            }
        }
        state.last_version = revision.clone();
        if query.send_initial_events == Some(true) && state.bookmarks {
            let line = state.bookmark(true);
            state.pending.push_back(line);
        }
        revision
    } else {
        rv
    };
    match objects.watch(&kind, namespace, &start_from).await {
        Ok(events) => state.events = Some(events),
        Err(crate::registry::RegistryError::Expired(message)) => {
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": "Expired", "code": 410,
            });
            let line = state.encode("ERROR", &status);
            state.pending.push_back(line);
            state.done = true;
        }
        Err(error) => return Err(error.into()),
    }
    state.gauge = Some(WatcherGauge::open(&kind.resource));
    let stream = futures::stream::unfold(state, |mut state| async move {
        let chunk = state.next_chunk().await?;
        if let Some(gauge) = &state.gauge {
            gauge.event_sent();
        }
        Some((Ok::<Bytes, std::io::Error>(chunk), state))
    });
    let mut response = (StatusCode::OK, Body::from_stream(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}
