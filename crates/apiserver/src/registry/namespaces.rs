//! Which namespaces exist and which are terminating, kept from a watch, so a create need
//! not read its namespace from the datastore (kube-apiserver's NamespaceLifecycle admission
//! uses an informer the same way). Under create load that read was one query (and the
//! pool's ping after it) per request: the biggest share of the database's work per create.
//!
//! The cache only ever answers "this namespace is open" or "this one is terminating"; a
//! name it does not know (not listed yet, deleted, or the watch is down) is read live, so a
//! namespace made a moment ago on another server is never refused. Every entry carries the
//! revision it was seen at and only a newer one replaces it: this server's own namespace
//! writes are noted at once (so a delete followed by a create on the same server is refused
//! without waiting for the watch), and a watch event that arrives later for an older
//! revision cannot undo them. A namespace marked terminating on another server is seen
//! after the change feed's delay (milliseconds); the namespace controller's repeated passes
//! remove anything created in that window, as upstream's do for informer lag.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use capstan_machinery::meta;
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::storage::{KeyPrefix, ListOptions, ResourceKey, Storage, WatchEventType};

/// Objects read per page when listing namespaces.
const PAGE: usize = 500;
/// Wait before listing again after the watch or a list failed.
const RETRY: Duration = Duration::from_secs(1);

/// What is known about one namespace, as of `revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    revision: i64,
    /// `None`: deleted (kept until the watch has passed `revision`).
    terminating: Option<bool>,
}

#[derive(Debug, Default)]
struct State {
    /// False until the first list, and again while the watch is being re-established.
    synced: bool,
    entries: HashMap<String, Entry>,
}

/// The namespace cache of one server; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct NamespaceCache {
    state: RwLock<State>,
}

/// The cache's answer for one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Open,
    Terminating,
    /// Read it from the datastore.
    Unknown,
}

impl NamespaceCache {
    pub(crate) fn lookup(&self, name: &str) -> Known {
        let Ok(state) = self.state.read() else {
            return Known::Unknown;
        };
        if !state.synced {
            return Known::Unknown;
        }
        match state.entries.get(name).and_then(|entry| entry.terminating) {
            Some(false) => Known::Open,
            Some(true) => Known::Terminating,
            None => Known::Unknown,
        }
    }

    /// Records `namespace` as stored at its resourceVersion (`deleted`: its last state),
    /// unless something newer is known already.
    pub(crate) fn note(&self, namespace: &Value, deleted: bool) {
        let (Some(name), Some(revision)) = (name_of(namespace), revision_of(namespace)) else {
            return;
        };
        let terminating = (!deleted).then(|| is_terminating(namespace));
        if let Ok(mut state) = self.state.write() {
            note_entry(&mut state.entries, name, revision, terminating);
        }
    }

    /// A watch event: like [`NamespaceCache::note`], and a deletion the watch has now
    /// delivered needs no tombstone (the watch cannot bring back anything older).
    fn watched(&self, namespace: &Value, deleted: bool) {
        let (Some(name), Some(revision)) = (name_of(namespace), revision_of(namespace)) else {
            return;
        };
        let Ok(mut state) = self.state.write() else {
            return;
        };
        if deleted {
            if state
                .entries
                .get(name)
                .is_some_and(|entry| entry.revision <= revision)
            {
                state.entries.remove(name);
            }
        } else {
            note_entry(
                &mut state.entries,
                name,
                revision,
                Some(is_terminating(namespace)),
            );
        }
    }

    /// Replaces what the cache knows with a complete list taken at `revision`; entries
    /// newer than the list (this server's own writes since) stay.
    fn listed(&self, namespaces: &[Value], revision: i64) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        state.entries.retain(|_, entry| entry.revision > revision);
        for namespace in namespaces {
            if let (Some(name), Some(at)) = (name_of(namespace), revision_of(namespace)) {
                note_entry(
                    &mut state.entries,
                    name,
                    at,
                    Some(is_terminating(namespace)),
                );
            }
        }
        state.synced = true;
    }

    fn unsynced(&self) {
        if let Ok(mut state) = self.state.write() {
            state.synced = false;
        }
    }

    /// Lists and watches namespaces until `shutdown`, listing again whenever the watch
    /// ends; meanwhile lookups go to the datastore.
    pub(crate) async fn run(&self, storage: Storage, shutdown: CancellationToken) {
        let prefix = match ResourceKey::cluster_scoped("core", "namespaces") {
            Ok(resource) => resource.all_prefix(),
            Err(error) => {
                tracing::error!(%error, "cannot name the namespaces' keys; no namespace cache");
                return;
            }
        };
        loop {
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                ended = self.list_and_watch(&storage, &prefix) => ended,
            };
            self.unsynced();
            tracing::debug!(error = %ended, "namespace cache: watch ended; listing again");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    /// Returns why it stopped (it runs as long as the watch does).
    async fn list_and_watch(&self, storage: &Storage, prefix: &KeyPrefix) -> String {
        let mut items = Vec::new();
        let mut continue_token = None;
        let revision = loop {
            let options = ListOptions {
                limit: PAGE,
                continue_token: continue_token.take(),
                ..ListOptions::default()
            };
            let page = match storage.list(prefix, &options).await {
                Ok(page) => page,
                Err(error) => return error.to_string(),
            };
            items.extend(page.items);
            continue_token = page.continue_token;
            if continue_token.is_none() {
                break page.resource_version;
            }
        };
        let Ok(at) = revision.parse::<i64>() else {
            return format!("the list returned resourceVersion {revision:?}");
        };
        let mut watch = match storage.watch(prefix, &revision).await {
            Ok(watch) => watch,
            Err(error) => return error.to_string(),
        };
        self.listed(&items, at);
        while let Some(event) = watch.next().await {
            match event {
                Ok(event) => match event.kind {
                    WatchEventType::Added | WatchEventType::Modified => {
                        self.watched(&event.object, false);
                    }
                    WatchEventType::Deleted => self.watched(&event.object, true),
                    WatchEventType::Bookmark => {}
                },
                Err(error) => return error.to_string(),
            }
        }
        "the watch closed".to_string()
    }
}

fn note_entry(
    entries: &mut HashMap<String, Entry>,
    name: &str,
    revision: i64,
    terminating: Option<bool>,
) {
    match entries.get_mut(name) {
        Some(entry) if entry.revision >= revision => {}
        Some(entry) => {
            *entry = Entry {
                revision,
                terminating,
            }
        }
        None => {
            entries.insert(
                name.to_string(),
                Entry {
                    revision,
                    terminating,
                },
            );
        }
    }
}

fn name_of(namespace: &Value) -> Option<&str> {
    meta(namespace).name()
}

fn revision_of(namespace: &Value) -> Option<i64> {
    meta(namespace)
        .resource_version()
        .and_then(|rv| rv.parse().ok())
}

/// A namespace refuses new content once it is marked for deletion.
pub(crate) fn is_terminating(namespace: &Value) -> bool {
    meta(namespace).is_deleting() || namespace["status"]["phase"] == "Terminating"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn namespace(name: &str, revision: i64, terminating: bool) -> Value {
        let mut object =
            json!({"metadata": {"name": name, "resourceVersion": revision.to_string()}});
        if terminating {
            object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        object
    }

    #[test]
    fn knows_nothing_until_listed() {
        let cache = NamespaceCache::default();
        cache.note(&namespace("a", 5, false), false);
        assert_eq!(cache.lookup("a"), Known::Unknown);
        cache.listed(&[namespace("b", 3, false)], 10);
        // The own write at 5 predates the list at 10, which did not hold it: it went.
        assert_eq!(cache.lookup("a"), Known::Unknown);
        assert_eq!(cache.lookup("b"), Known::Open);
    }

    #[test]
    fn an_older_watch_event_cannot_undo_an_own_write() {
        let cache = NamespaceCache::default();
        cache.listed(&[namespace("a", 3, false)], 10);
        cache.note(&namespace("a", 12, true), false);
        assert_eq!(cache.lookup("a"), Known::Terminating);
        cache.watched(&namespace("a", 11, false), false);
        assert_eq!(cache.lookup("a"), Known::Terminating);
        // An own delete leaves a tombstone that an older event does not revive.
        cache.note(&namespace("a", 14, true), true);
        cache.watched(&namespace("a", 12, true), false);
        assert_eq!(cache.lookup("a"), Known::Unknown);
        cache.watched(&namespace("a", 14, true), true);
        assert_eq!(cache.lookup("a"), Known::Unknown);
        cache.watched(&namespace("a", 20, false), false);
        assert_eq!(cache.lookup("a"), Known::Open);
    }

    #[test]
    fn a_failed_watch_sends_lookups_to_the_datastore_until_listed_again() {
        let cache = NamespaceCache::default();
        cache.listed(&[namespace("a", 3, false)], 10);
        cache.unsynced();
        assert_eq!(cache.lookup("a"), Known::Unknown);
        cache.listed(&[namespace("a", 3, false), namespace("c", 15, true)], 20);
        assert_eq!(cache.lookup("a"), Known::Open);
        assert_eq!(cache.lookup("c"), Known::Terminating);
    }
}
