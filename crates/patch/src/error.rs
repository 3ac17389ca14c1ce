//! What can go wrong in the patch engines, said with the path and the problem. Patches come
//! from the network, so every malformed input ends here rather than in a panic.

use serde_json::Value;

/// A patch that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The JSON patch body is not a list of RFC 6902 operations.
    #[error(
        "invalid JSON patch: {reason} (expected a list of operations like {{\"op\":\"replace\",\"path\":\"/spec/replicas\",\"value\":3}})"
    )]
    InvalidJsonPatch {
        /// Why it could not be read.
        reason: String,
    },
    /// A `test` operation found a different value.
    #[error(
        "JSON patch operation {index} (test) failed at {path}: expected {expected}, found {found}"
    )]
    TestFailed {
        /// Index of the operation in the patch.
        index: usize,
        /// JSON pointer that was tested.
        path: String,
        /// The value the patch expected.
        expected: Value,
        /// The value found there (`null` when absent).
        found: Value,
    },
    /// An RFC 6902 operation could not be applied (missing path, bad index, …).
    #[error("JSON patch operation {index} ({op}) failed at {path}: {reason}")]
    OperationFailed {
        /// Index of the operation in the patch.
        index: usize,
        /// The operation name (`add`, `remove`, …).
        op: String,
        /// JSON pointer of the operation.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A JSON patch with more operations than allowed (413, as kube-apiserver answers).
    #[error("The allowed maximum operations in a JSON patch is {limit}, got {count}")]
    TooManyOperations {
        /// Operations in the patch.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The `copy` operations of a JSON patch copy more than allowed (422).
    #[error(
        "JSON patch operation {index} (copy): the copies of this patch add up to {accumulated} bytes, over the {limit}-byte limit"
    )]
    CopyLimit {
        /// The operation that went over.
        index: usize,
        /// Bytes copied up to and including it.
        accumulated: usize,
        /// The limit.
        limit: usize,
    },
    /// The document would grow past the size limit (413).
    #[error("the patched object would be larger than the {limit}-byte limit")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Applying the patch takes more work than allowed (422).
    #[error(
        "the patch takes more than {limit} steps to apply; send smaller patches, or replace the object with PUT"
    )]
    TooExpensive {
        /// The limit.
        limit: u64,
    },
    /// A merge or strategic merge patch is malformed at `path`.
    #[error("invalid patch at {path}: {reason}")]
    InvalidPatch {
        /// Dotted path in the object, e.g. `.spec.template.spec.containers`.
        path: String,
        /// What is wrong there.
        reason: String,
    },
}

impl PatchError {
    pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> Self {
        PatchError::InvalidPatch {
            path: if path.is_empty() {
                ".".to_owned()
            } else {
                path.to_owned()
            },
            reason: reason.into(),
        }
    }
}

/// A `fieldsV1` document (from `metadata.managedFields`) that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid fieldsV1 at {path}: {reason}")]
pub struct FieldSetError {
    /// Where in the fieldsV1 document, as a path of its keys.
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

/// A server-side apply that was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fields in the configuration are owned by other managers with other values; apply
    /// again with `force` to take them over, or drop them from the configuration.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The configuration is not an object.
    #[error("invalid apply configuration: {reason}")]
    InvalidConfiguration {
        /// What is wrong with it.
        reason: String,
    },
    /// The result is over the size limit ([`PatchError::TooLarge`]).
    #[error(transparent)]
    Limit(#[from] PatchError),
}

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The manager that owns the field.
    pub manager: String,
    /// The API version that manager wrote it with.
    pub api_version: String,
    /// The field, in upstream's path form (`.spec.replicas`).
    pub field: String,
}

/// Upstream's message: `Apply failed with 1 conflict: conflict with "kubectl" using
/// apps/v1: .spec.replicas`, one clause per manager, several fields as a `- ` list.
fn conflicts_message(conflicts: &[Conflict]) -> String {
    let mut groups: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for conflict in conflicts {
        let found = groups.iter_mut().find(|(manager, version, _)| {
            *manager == conflict.manager && *version == conflict.api_version
        });
        match found {
            Some((_, _, fields)) => fields.push(&conflict.field),
            None => groups.push((
                &conflict.manager,
                &conflict.api_version,
                vec![&conflict.field],
            )),
        }
    }
    let clauses: Vec<String> = groups
        .iter()
        .map(|(manager, version, fields)| match fields.as_slice() {
            [field] => format!("conflict with \"{manager}\" using {version}: {field}"),
            fields => format!(
                "conflicts with \"{manager}\" using {version}:\n- {}",
                fields.join("\n- ")
            ),
        })
        .collect();
    let plural = if conflicts.len() == 1 { "" } else { "s" };
    format!(
        "Apply failed with {} conflict{plural}: {}",
        conflicts.len(),
        clauses.join("\n")
    )
}
