//! The values that cross the datastore's public face: keys, stored values, write
//! operations and their outcomes, watch events and list pages.

use bytes::Bytes;
use std::time::{Duration, Instant};

use super::DatastoreError;

/// Longest key accepted, in bytes. Kubernetes keys are
/// `/registry/<group>/<resource>/<namespace>/<name>`, far below this; the limit keeps the
/// key column indexable on every engine (MySQL's index prefix limit is 3072 bytes).
pub const MAX_KEY_BYTES: usize = 1024;

/// Largest value accepted, in bytes (3 MiB, the API's request body limit).
pub const MAX_VALUE_BYTES: usize = 3 * 1024 * 1024;

/// Checks a key: non-empty, at most [`MAX_KEY_BYTES`], printable ASCII without spaces.
/// Byte order of such keys is the same under every engine's binary collation, which is
/// what makes continue tokens portable.
pub fn validate_key(key: &str) -> Result<(), DatastoreError> {
    if key.is_empty() {
        return Err(DatastoreError::InvalidKey {
            key: String::new(),
            reason: "key is empty",
        });
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(DatastoreError::InvalidKey {
            key: truncate_for_message(key),
            reason: "key is longer than 1024 bytes",
        });
    }
    if !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(DatastoreError::InvalidKey {
            key: truncate_for_message(key),
            reason: "key must be printable ASCII without spaces or control characters",
        });
    }
    Ok(())
}

/// Checks a value's size against [`MAX_VALUE_BYTES`].
pub fn validate_value(key: &str, value: &[u8]) -> Result<(), DatastoreError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(DatastoreError::ValueTooLarge {
            key: truncate_for_message(key),
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// The key as error messages show it: at most 80 characters. Errors print it with `{:?}`,
/// which escapes control and non-ASCII characters, so the key shown is unambiguous (a `?`
/// substitute would itself be a valid key byte).
fn truncate_for_message(key: &str) -> String {
    key.chars().take(80).collect()
}

/// The smallest key greater than every key starting with `prefix`: the exclusive end of a
/// prefix range. Keys are printable ASCII, so bumping the last byte never overflows.
pub fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0x7f {
            end.push(last + 1);
            return String::from_utf8(end).expect("ASCII bytes stay valid UTF-8");
        }
    }
    // An empty prefix (or one of only DEL bytes, which validation forbids) covers the
    // whole key space.
    "\u{7f}".to_string()
}

/// A half-open range of keys `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// Inclusive start.
    pub start: String,
    /// Exclusive end.
    pub end: String,
}

impl KeyRange {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &str) -> Self {
        KeyRange {
            start: prefix.to_string(),
            end: prefix_end(prefix),
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &str) -> bool {
        key >= self.start.as_str() && key < self.end.as_str()
    }
}

/// A stored key with its value, as of some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// Revision of the write that created the key (unchanged by updates).
    pub create_revision: i64,
    /// Revision of the key's last write: a Kubernetes object's resourceVersion.
    pub mod_revision: i64,
}

/// One write. Each is applied atomically; a failed comparison writes nothing and costs no
/// revision.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create `key`; fails with [`WriteOutcome::Conflict`] if it exists.
    Create {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
        /// Delete the key automatically after this long (stored as an absolute time).
        ttl: Option<Duration>,
    },
    /// Replace `key`'s value if its mod revision is `expected_revision`.
    Update {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
        /// The mod revision the key must have now.
        expected_revision: i64,
        /// New expiry; `None` removes any expiry.
        ttl: Option<Duration>,
    },
    /// Delete `key`, if its mod revision is `expected_revision` when one is given.
    Delete {
        /// The key.
        key: String,
        /// The mod revision the key must have now, or `None` for any.
        expected_revision: Option<i64>,
    },
}

impl WriteOp {
    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }

    /// Rejects bad keys and oversize values before they reach a transaction, so one bad
    /// operation never fails a batch of good ones.
    pub fn validate(&self) -> Result<(), DatastoreError> {
        validate_key(self.key())?;
        match self {
            WriteOp::Create { key, value, .. } | WriteOp::Update { key, value, .. } => {
                validate_value(key, value)
            }
            WriteOp::Delete { .. } => Ok(()),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Applied at `revision`.
    Applied {
        /// The revision the write got.
        revision: i64,
    },
    /// The comparison failed; nothing was written.
    Conflict {
        /// The key's mod revision now, or `None` if it does not exist.
        current_revision: Option<i64>,
    },
}

/// A write's outcome with the moment its transaction committed (for latency measurement).
#[derive(Debug, Clone)]
pub struct Committed {
    /// The outcome.
    pub outcome: WriteOutcome,
    /// When the committing transaction returned.
    pub committed_at: Instant,
}

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted (or expired).
    Delete,
}

/// One change, as delivered to watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The revision of this change.
    pub revision: i64,
    /// The key's create revision.
    pub create_revision: i64,
    /// The new value (empty for a delete).
    pub value: Bytes,
    /// The revision this change replaced (0 for a create).
    pub prev_revision: i64,
    /// The value this change replaced, when it has not been compacted away. For a delete,
    /// this is the object as it was when deleted.
    pub prev_value: Option<Bytes>,
}

impl Event {
    /// Roughly what the event holds in memory: what a watcher's queue is bounded by.
    pub fn size(&self) -> usize {
        const OVERHEAD: usize = 96;
        OVERHEAD
            + self.key.len()
            + self.value.len()
            + self.prev_value.as_ref().map_or(0, Bytes::len)
    }
}

/// A request for one page of a list.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// The keys to list.
    pub range: KeyRange,
    /// List as of this revision; `None` for the latest.
    pub revision: Option<i64>,
    /// At most this many items; 0 for no limit.
    pub limit: usize,
}

/// One page of a list, exact at `revision`.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The items, in key order.
    pub items: Vec<KeyValue>,
    /// The revision the page is exact at; a watch from it continues seamlessly.
    pub revision: i64,
    /// Whether more items follow the last one.
    pub more: bool,
}
