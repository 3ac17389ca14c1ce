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
