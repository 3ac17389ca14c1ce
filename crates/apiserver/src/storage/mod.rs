//! The Kubernetes storage interface: what the API layer calls to read and write objects.
//!
//! It is generic over kinds: objects are `serde_json::Value`s, keys come from
//! [`ResourceKey`] (`keys.rs`), and nothing here knows a Pod from a ConfigMap. It maps the
//! Kubernetes semantics onto the datastore's revisioned key-value log the way
//! kube-apiserver's etcd3 store maps them onto etcd:
//!
//! - **resourceVersion is the datastore revision** of the write that produced the object
//!   (`object.rs`): stripped before writing, set from the mod revision on every read.
//! - **Optimistic concurrency** is the datastore's compare-and-swap on that revision:
//!   `update` and `delete` take a resourceVersion precondition and fail with `Conflict` when
//!   it is stale; `guaranteed_update` re-reads and retries a bounded number of times.
//! - **Lists are exact at one revision** across all their pages: the continue token
//!   (`continue_token.rs`) carries the revision and the next key, and later pages read that
//!   revision from history. A token older than compaction is `Expired` (410).
//! - **Watches** (`watch.rs`) start after a resourceVersion, typically a list's, and see
//!   every later change once, in order.
//!
//! What this layer does not do: uid, creationTimestamp, generation, defaults, validation
//! and admission are the API layer's (`api/`, `registry/`); so are label and field
//! selectors, which filter items after they are read.

mod continue_token;
mod error;
mod keys;
mod object;
mod watch;

use std::sync::Arc;

use serde_json::Value;

use capstan_datastore::{KeyRange, ListRequest, Store, WriteOutcome, prefix_end};

pub use continue_token::ContinueToken;
pub use error::{Result, StorageError};
pub use keys::{CORE_GROUP, KeyPrefix, ObjectKey, ResourceKey};
pub use watch::{WatchEvent, WatchEventType, WatchStream};

use object::parse_resource_version;

/// How many times `guaranteed_update` tries before giving up with `Conflict`. Each failed
/// attempt means another writer committed in between, so a limit is only reached under
/// extreme contention on one object; kube-apiserver's loop is unbounded, ours reports it.
pub const GUARANTEED_UPDATE_ATTEMPTS: usize = 16;

/// How a list's `resource_version` is interpreted (Kubernetes' `resourceVersionMatch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResourceVersionMatch {
    /// Any state at least as new as `resource_version`; this layer always serves the latest.
    #[default]
    NotOlderThan,
    /// Exactly the state at `resource_version`.
    Exact,
}

/// Which objects a list returns, tested on each decoded object (label and field selectors).
#[derive(Clone)]
pub struct ItemFilter(pub Arc<dyn Fn(&Value) -> bool + Send + Sync>);

impl std::fmt::Debug for ItemFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ItemFilter")
    }
}

/// Rows read per datastore query while a filtered list looks for its page of matches.
const FILTERED_BATCH: usize = 500;

/// A list request's options.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// At most this many items per page; 0 for all.
    pub limit: usize,
    /// Only objects this accepts count towards `limit` and are returned. The page then
    /// reads on until it has `limit` matches or the range ends, as kube-apiserver does, so
    /// a selective list costs one request, not one per `limit` objects scanned; and it has
    /// no `remaining_item_count` (kube-apiserver leaves it out for selectors too).
    pub filter: Option<ItemFilter>,
    /// Continue a previous list from its token.
    pub continue_token: Option<String>,
    /// The list's resourceVersion constraint; `None` (or `""`) for the latest state.
    pub resource_version: Option<String>,
    /// How to interpret `resource_version`.
    pub resource_version_match: ResourceVersionMatch,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListResult {
    /// The objects, in key order, each with its resourceVersion.
    pub items: Vec<Value>,
    /// The revision the page (and every page of the list) is exact at.
    pub resource_version: String,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
    /// How many items the later pages hold, when known exactly (no write happened in the
    /// range while counting).
    pub remaining_item_count: Option<i64>,
}

/// The storage interface over one datastore; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    store: Store,
}

impl Storage {
    /// Storage on `store`.
    pub fn new(store: Store) -> Storage {
        Storage { store }
    }

    /// The datastore underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Creates the object at `key`; `AlreadyExists` if the key is taken. Returns the object
    /// as stored, with its resourceVersion.
    pub async fn create(&self, key: &ObjectKey, mut object: Value) -> Result<Value> {
        let bytes = object::encode(key.as_str(), &mut object)?;
        match self.store.create(key.as_str(), bytes).await? {
            WriteOutcome::Applied { revision } => {
                // The stored bytes are `object` exactly; no need to parse them back.
                object::set_resource_version(key.as_str(), &mut object, revision)?;
                Ok(object)
            }
            WriteOutcome::Conflict { .. } => Err(StorageError::AlreadyExists {
                key: key.to_string(),
            }),
        }
    }

    /// The current object at `key`; `NotFound` if there is none.
    pub async fn get(&self, key: &ObjectKey) -> Result<Value> {
        match self.store.get(key.as_str()).await? {
            Some(found) => object::decode(key.as_str(), &found.value, found.mod_revision),
            None => Err(not_found(key)),
        }
    }

    /// The object at `key` as of `resource_version`; `Expired` when that has been
    /// compacted, `TooLargeResourceVersion` when it is in the future.
    pub async fn get_at(&self, key: &ObjectKey, resource_version: &str) -> Result<Value> {
        let revision = parse_resource_version(resource_version)?;
        let found = self
            .store
            .get_at(key.as_str(), revision)
            .await
            .map_err(StorageError::from_read)?;
        match found {
            Some(found) => object::decode(key.as_str(), &found.value, found.mod_revision),
            None => Err(not_found(key)),
        }
    }

    /// Replaces the object at `key` if its resourceVersion is still `expected`: `Conflict`
    /// when someone changed it since, `NotFound` when it is gone.
    pub async fn update(
        &self,
        key: &ObjectKey,
        mut object: Value,
        expected: &str,
    ) -> Result<Value> {
        let expected_revision = parse_resource_version(expected)?;
        let bytes = object::encode(key.as_str(), &mut object)?;
        self.update_at(key, object, bytes, expected_revision).await
    }

    /// Writes `bytes` (the encoding of `object`) over revision `expected`.
    async fn update_at(
        &self,
        key: &ObjectKey,
        mut object: Value,
        bytes: Vec<u8>,
        expected: i64,
    ) -> Result<Value> {
        let outcome = self.store.update(key.as_str(), bytes, expected).await?;
        match outcome {
            WriteOutcome::Applied { revision } => {
                object::set_resource_version(key.as_str(), &mut object, revision)?;
                Ok(object)
            }
            WriteOutcome::Conflict {
                current_revision: Some(current),
            } => Err(StorageError::Conflict {
                key: key.to_string(),
                current: current.to_string(),
            }),
            WriteOutcome::Conflict {
                current_revision: None,
            } => Err(not_found(key)),
        }
    }

    /// Reads the object at `key`, applies `mutate` to it and writes the result, re-reading
    /// and re-applying when another writer got in first, at most
    /// [`GUARANTEED_UPDATE_ATTEMPTS`] times. `mutate` may be called more than once and
    /// should be a pure function of the object it is given; an error from it ends the loop.
    /// A mutation that changes nothing writes nothing and returns the current object.
    pub async fn guaranteed_update<F>(&self, key: &ObjectKey, mut mutate: F) -> Result<Value>
    where
        F: FnMut(Value) -> Result<Value> + Send,
    {
        let mut last_conflict = None;
        for _ in 0..GUARANTEED_UPDATE_ATTEMPTS {
            let Some(current) = self.store.get(key.as_str()).await? else {
                return Err(not_found(key));
            };
            let before = object::decode(key.as_str(), &current.value, current.mod_revision)?;
            let mut after = mutate(before.clone())?;
            let bytes = object::encode(key.as_str(), &mut after)?;
            if bytes == current.value {
                return Ok(before);
            }
            match self
                .update_at(key, after, bytes, current.mod_revision)
                .await
            {
                Err(conflict @ StorageError::Conflict { .. }) => last_conflict = Some(conflict),
                other => return other,
            }
        }
        Err(last_conflict.unwrap_or_else(|| not_found(key)))
    }

    /// Deletes the object at `key`, if its resourceVersion is `precondition` when one is
    /// given, and returns its last state with the delete's revision as resourceVersion (as
    /// the watch event reports it).
    pub async fn delete(&self, key: &ObjectKey, precondition: Option<&str>) -> Result<Value> {
        let precondition = precondition.map(parse_resource_version).transpose()?;
        for _ in 0..GUARANTEED_UPDATE_ATTEMPTS {
            // Read first: the datastore's delete does not return the value it removed.
            let Some(current) = self.store.get(key.as_str()).await? else {
                return Err(not_found(key));
            };
            let conflict = || StorageError::Conflict {
                key: key.to_string(),
                current: current.mod_revision.to_string(),
            };
            if precondition.is_some_and(|expected| expected != current.mod_revision) {
                return Err(conflict());
            }
            match self
                .store
                .delete(key.as_str(), Some(current.mod_revision))
                .await?
            {
                WriteOutcome::Applied { revision } => {
                    return match object::decode(key.as_str(), &current.value, revision) {
                        Err(StorageError::Undecodable { .. }) => {
                            Ok(object::stand_in(key.as_str(), revision))
                        }
                        decoded => decoded,
                    };
                }
                // Changed between our read and the delete: with a precondition that is the
                // caller's conflict; without one, delete whatever is there now.
                WriteOutcome::Conflict { .. } if precondition.is_some() => return Err(conflict()),
                WriteOutcome::Conflict { .. } => continue,
            }
        }
        Err(StorageError::Conflict {
            key: key.to_string(),
            current: "(changing too often to delete)".to_string(),
        })
    }

    /// One page of the objects under `prefix`. See [`ListOptions`]; the result's
    /// resourceVersion is what a watch should start from to miss nothing.
    pub async fn list(&self, prefix: &KeyPrefix, options: &ListOptions) -> Result<ListResult> {
        let resource_version = options
            .resource_version
            .as_deref()
            .filter(|value| !value.is_empty());
        // An empty token is no token, as in kube-apiserver.
        let continue_token = options
            .continue_token
            .as_deref()
            .filter(|token| !token.is_empty());
        let (start, revision) = match (continue_token, resource_version) {
            (Some(_), Some(_)) => {
                return Err(StorageError::InvalidContinue {
                    reason:
                        "a continue token already fixes the resourceVersion; send one or the other"
                            .to_string(),
                });
            }
            (Some(token), None) => {
                let token = ContinueToken::decode(token)?;
                (format!("{prefix}{}", token.start), Some(token.revision))
            }
            (None, Some(value)) => {
                let requested = match (value, options.resource_version_match) {
                    // "0" means "any state"; the latest is one.
                    ("0", ResourceVersionMatch::NotOlderThan) => 0,
                    _ => parse_resource_version(value)?,
                };
                match options.resource_version_match {
                    ResourceVersionMatch::Exact => (prefix.to_string(), Some(requested)),
                    ResourceVersionMatch::NotOlderThan => {
                        let current = self.store.current_revision().await?;
                        if requested > current {
                            return Err(StorageError::TooLargeResourceVersion {
                                requested,
                                current,
                            });
                        }
                        (prefix.to_string(), None)
                    }
                }
            }
            (None, None) => (prefix.to_string(), None),
        };
        let end = prefix_end(prefix.as_str());
        if let Some(filter) = &options.filter {
            return self
                .list_filtered(prefix, start, end, revision, options.limit, filter)
                .await;
        }
        let page = self
            .store
            .list(&ListRequest {
                range: KeyRange {
                    start,
                    end: end.clone(),
                },
                revision,
                limit: options.limit,
            })
            .await
            .map_err(StorageError::from_read)?;
        let mut items = Vec::with_capacity(page.items.len());
        for found in &page.items {
            items.extend(object::decode_or_skip(
                &found.key,
                &found.value,
                found.mod_revision,
            )?);
        }
        let (continue_token, remaining_item_count) = match page.items.last() {
            Some(last) if page.more => {
                let (next, token) = continue_after(prefix, &last.key, page.revision);
                let remaining = self
                    .remaining_at(KeyRange { start: next, end }, page.revision)
                    .await?;
                (Some(token), remaining)
            }
            _ => (None, None),
        };
        Ok(ListResult {
            items,
            resource_version: page.revision.to_string(),
            continue_token,
            remaining_item_count,
        })
    }

    /// A page of `limit` objects that `filter` accepts (all of them for 0), read from
    /// `start` in batches at one revision.
    async fn list_filtered(
        &self,
        prefix: &KeyPrefix,
        mut start: String,
        end: String,
        mut revision: Option<i64>,
        limit: usize,
        filter: &ItemFilter,
    ) -> Result<ListResult> {
        let batch = if limit == 0 {
            0
        } else {
            limit.max(FILTERED_BATCH)
        };
        let mut items = Vec::new();
        loop {
            let page = self
                .store
                .list(&ListRequest {
                    range: KeyRange {
                        start,
                        end: end.clone(),
                    },
                    revision,
                    limit: batch,
                })
                .await
                .map_err(StorageError::from_read)?;
            // Every later batch reads at the first one's revision: one consistent list.
            revision = Some(page.revision);
            let read = page.items.len();
            for (index, found) in page.items.iter().enumerate() {
                let Some(object) =
                    object::decode_or_skip(&found.key, &found.value, found.mod_revision)?
                else {
                    continue;
                };
                if !(filter.0)(&object) {
                    continue;
                }
                items.push(object);
                if limit > 0 && items.len() == limit {
                    let more = index + 1 < read || page.more;
                    let continue_token =
                        more.then(|| continue_after(prefix, &found.key, page.revision).1);
                    return Ok(ListResult {
                        items,
                        resource_version: page.revision.to_string(),
                        continue_token,
                        remaining_item_count: None,
                    });
                }
            }
            match page.items.last() {
                Some(last) if page.more => start = format!("{}!", last.key),
                _ => {
                    return Ok(ListResult {
                        items,
                        resource_version: page.revision.to_string(),
                        continue_token: None,
                        remaining_item_count: None,
                    });
                }
            }
        }
    }

    /// How many keys `range` holds at `revision`, when that can be counted exactly: the
    /// datastore counts the current state, which equals the state at `revision` only when
    /// nothing was committed since (checked before and after counting).
    async fn remaining_at(&self, range: KeyRange, revision: i64) -> Result<Option<i64>> {
        let (counted_at, count) = self.store.count(&range).await?;
        if counted_at != revision {
            return Ok(None);
        }
        let now = self.store.current_revision().await?;
        Ok((now == revision).then_some(count))
    }

    /// Every change under `prefix` after `resource_version` (from the latest state when it
    /// is empty or `"0"`: the API layer lists first and watches from the list's version).
    /// A version older than compaction yields `Expired` as the stream's only item.
    pub async fn watch(&self, prefix: &KeyPrefix, resource_version: &str) -> Result<WatchStream> {
        let after = match resource_version {
            "" | "0" => None,
            value => {
                let requested = parse_resource_version(value)?;
                let current = self.store.current_revision().await?;
                if requested > current {
                    return Err(StorageError::TooLargeResourceVersion { requested, current });
                }
                Some(requested)
            }
        };
        let events = self
            .store
            .watch(KeyRange::prefix(prefix.as_str()), after)
            .await
            .into_stream();
        Ok(watch::map_stream(events))
    }
}

fn not_found(key: &ObjectKey) -> StorageError {
    StorageError::NotFound {
        key: key.to_string(),
    }
}

/// The first key after `key` and the continue token that resumes a list there at
/// `revision`. Keys are printable ASCII from '!' (0x21) up, so appending the smallest byte
/// gives the successor, and the token stays free of bytes some engines cannot store.
fn continue_after(prefix: &KeyPrefix, key: &str, revision: i64) -> (String, String) {
    let next = format!("{key}!");
    let relative = next.strip_prefix(prefix.as_str()).unwrap_or(&next);
    let token = ContinueToken::new(revision, relative.to_string()).encode();
    (next, token)
}
