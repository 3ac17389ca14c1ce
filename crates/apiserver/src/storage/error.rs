//! Errors of the storage layer. Each names the key or input that failed and what the caller
//! can do about it; the API layer maps them to Kubernetes `Status` codes (404, 409, 410,
//! 400, 504 and 500), which is why compaction and bad input each get a variant of their own
//! instead of hiding inside [`DatastoreError`].

use capstan_datastore::DatastoreError;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object does not exist (404).
    #[error("{key} not found")]
    NotFound {
        /// The object's key.
        key: String,
    },
    /// A create found the key taken (409, reason AlreadyExists).
    #[error("{key} already exists; update it, or delete it first")]
    AlreadyExists {
        /// The object's key.
        key: String,
    },
    /// A precondition on resourceVersion failed: someone else changed the object (409).
    #[error(
        "{key} has been modified (now at resourceVersion {current}); read the latest version and apply the change to it"
    )]
    Conflict {
        /// The object's key.
        key: String,
        /// The object's resourceVersion now.
        current: String,
    },
    /// The revision asked for has been compacted away (410 Gone).
    #[error(
        "resourceVersion {requested} is too old: history before {oldest} has been compacted; list again without resourceVersion or continue token and watch from the new list's resourceVersion"
    )]
    Expired {
        /// The revision asked for (a resourceVersion or a continue token's).
        requested: i64,
        /// The oldest revision that can still be read.
        oldest: i64,
    },
    /// The revision asked for is newer than anything committed (504 with retry in
    /// kube-apiserver).
    #[error(
        "resourceVersion {requested} is newer than the latest ({current}); retry later or omit resourceVersion"
    )]
    TooLargeResourceVersion {
        /// The revision asked for.
        requested: i64,
        /// The latest committed revision.
        current: i64,
    },
    /// The encoded object is larger than the datastore stores (413).
    #[error("{key} would be {size} bytes once stored, over the {limit}-byte limit")]
    TooLarge {
        /// The object's key.
        key: String,
        /// Its encoded size.
        size: usize,
        /// The datastore's limit.
        limit: usize,
    },
    /// Stored bytes do not decode into an object (written by something else, or by an older
    /// Capstan that accepted what it can no longer read). Lists and watches skip such rows
    /// and report them; a delete removes them.
    #[error(
        "the stored object at {key} cannot be decoded ({reason}); it is left out of lists and watches, and deleting it removes it"
    )]
    Undecodable {
        /// The object's key.
        key: String,
        /// What the decoder said.
        reason: String,
    },
    /// An object is not storable JSON, or stored bytes do not decode.
    #[error("object {key}: {reason}")]
    InvalidObject {
        /// The object's key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A name, namespace, group or resource cannot be a key segment (400).
    #[error("invalid key segment {segment:?} for {what}: {reason}")]
    InvalidKey {
        /// Which part of the key (name, namespace, ...).
        what: &'static str,
        /// The segment as given.
        segment: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A continue token that is not one this server issued (400).
    #[error("continue token is not valid: {reason}; restart the list without continue")]
    InvalidContinue {
        /// What is wrong with it.
        reason: String,
    },
    /// A resourceVersion that is not a revision (400).
    #[error("resourceVersion {value:?} is not valid: {reason}")]
    InvalidResourceVersion {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The datastore failed.
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
}

impl StorageError {
    /// Converts a datastore error of a read at a revision: compaction becomes
    /// [`StorageError::Expired`], a future revision [`StorageError::TooLargeResourceVersion`].
    pub(crate) fn from_read(error: DatastoreError) -> StorageError {
        match error {
            DatastoreError::Compacted {
                requested,
                compact_revision,
            } => StorageError::Expired {
                requested,
                oldest: compact_revision,
            },
            DatastoreError::FutureRevision { requested, current } => {
                StorageError::TooLargeResourceVersion { requested, current }
            }
            other => StorageError::Datastore(other),
        }
    }
}

/// Result of a storage call.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
