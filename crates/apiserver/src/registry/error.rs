//! What can go wrong with an object, in Kubernetes' terms. The API layer renders each as a
//! `Status` with the matching reason and code (`api/error.rs`).

use crate::storage::StorageError;

/// One invalid field of an object (a `StatusCause`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `metadata.name`.
    pub field: String,
    /// The cause type, e.g. `FieldValueInvalid`, `FieldValueRequired`.
    pub cause: &'static str,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A `FieldValueInvalid` cause.
    pub fn invalid(field: &str, value: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            cause: "FieldValueInvalid",
            message: format!("Invalid value: \"{value}\": {detail}"),
        }
    }

    /// A `FieldValueRequired` cause.
    pub fn required(field: &str, detail: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            cause: "FieldValueRequired",
            message: format!("Required value: {detail}"),
        }
    }

    /// A `FieldValueNotSupported` or unknown-field cause (strict field validation).
    pub fn unknown(field: &str) -> FieldError {
        FieldError {
            field: field.to_string(),
            cause: "FieldValueInvalid",
            message: format!("unknown field \"{field}\""),
        }
    }
}

/// An object operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The object (or its namespace) does not exist.
    #[error("{qualified} \"{name}\" not found")]
    NotFound {
        /// `resource.group`, e.g. `deployments.apps`, or `configmaps`.
        qualified: String,
        /// The object's name.
        name: String,
    },
    /// The name is taken.
    #[error("{qualified} \"{name}\" already exists")]
    AlreadyExists {
        /// `resource.group`.
        qualified: String,
        /// The object's name.
        name: String,
    },
    /// A resourceVersion precondition failed or a write lost a race.
    #[error("Operation cannot be fulfilled on {qualified} \"{name}\": {reason}")]
    Conflict {
        /// `resource.group`.
        qualified: String,
        /// The object's name.
        name: String,
        /// Why, e.g. "the object has been modified; please apply your changes to the latest
        /// version and try again".
        reason: String,
    },
    /// A server-side apply met fields other managers own.
    #[error("{message}")]
    ApplyConflict {
        /// Upstream's message naming the managers and fields.
        message: String,
        /// One cause per conflicting field (`FieldManagerConflict`).
        causes: Vec<FieldError>,
    },
    /// The object is invalid.
    #[error(
        "{} \"{name}\" is invalid: {}",
        qualified_kind(kind, group_suffix),
        summarize(causes)
    )]
    Invalid {
        /// The kind, e.g. `ConfigMap`.
        kind: String,
        /// The group (`` for core; the message then reads `ConfigMap "x"`).
        group_suffix: String,
        /// The object's name.
        name: String,
        /// Every invalid field.
        causes: Vec<FieldError>,
    },
    /// The request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request is refused (e.g. creating in a terminating namespace).
    #[error("{message}")]
    Forbidden {
        /// The full message.
        message: String,
    },
    /// The data asked for is gone (compacted).
    #[error("{0}")]
    Expired(String),
    /// The request asked for the future.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion {
        /// What was asked.
        requested: i64,
        /// The newest revision.
        current: i64,
    },
    /// The object (or a patch's result) is over a size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The datastore failed; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// The datastore is overloaded or unreachable for now.
    #[error("the datastore is unavailable: {0}")]
    Unavailable(String),
}

/// kube-apiserver's words for an object over the storage limit.
fn too_large(size: usize, limit: usize) -> String {
    format!(
        "Request entity too large: the object is {size} bytes once stored, over the {limit}-byte limit"
    )
}

fn qualified_kind(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

fn summarize(causes: &[FieldError]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    if parts.len() == 1 {
        parts.join("")
    } else {
        format!("[{}]", parts.join(", "))
    }
}

/// The error of `storage` in terms of a kind's qualified resource name and an object name.
pub fn from_storage(error: StorageError, qualified: &str, name: &str) -> RegistryError {
    match error {
        StorageError::NotFound { .. } => RegistryError::NotFound {
            qualified: qualified.to_string(),
            name: name.to_string(),
        },
        StorageError::AlreadyExists { .. } => RegistryError::AlreadyExists {
            qualified: qualified.to_string(),
            name: name.to_string(),
        },
        StorageError::Conflict { .. } => RegistryError::Conflict {
            qualified: qualified.to_string(),
            name: name.to_string(),
            reason: "the object has been modified; please apply your changes to the latest version and try again".to_string(),
        },
        StorageError::Expired { .. } => RegistryError::Expired(error.to_string()),
        StorageError::TooLargeResourceVersion { requested, current } => {
            RegistryError::TooLargeResourceVersion { requested, current }
        }
        StorageError::InvalidContinue { .. } | StorageError::InvalidResourceVersion { .. } => {
            RegistryError::BadRequest(error.to_string())
        }
        StorageError::Undecodable { .. } => RegistryError::Internal(error.to_string()),
        StorageError::InvalidKey { .. } | StorageError::InvalidObject { .. } => {
            RegistryError::BadRequest(error.to_string())
        }
        StorageError::TooLarge { size, limit, .. } => {
            RegistryError::TooLarge(too_large(size, limit))
        }
        StorageError::Datastore(inner) => {
            tracing::error!(error = %inner, "datastore error");
            RegistryError::Unavailable(inner.to_string())
        }
    }
}
