//! The bounds every patch is applied under, so that one small request cannot make the server
//! build a huge document or spin for minutes: the size of the document while a JSON patch
//! runs (every operation) and of every engine's result, the bytes JSON-patch `copy`
//! operations may add up to, the number of JSON-patch operations, and the work (steps) an
//! engine may do. The defaults are kube-apiserver's: a 3 MiB document (its request-body
//! limit), 10,000 operations, 3 MiB of copies (`JSONPatchMaxCopyBytes`).

use serde_json::Value;

use super::PatchError;

/// The largest document a patch may produce, in (estimated) serialised bytes.
pub const MAX_DOCUMENT_BYTES: usize = 3 * 1024 * 1024;
/// The most operations one JSON patch may hold.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;
/// The most bytes all `copy` operations of one JSON patch may copy together.
pub const MAX_COPY_BYTES: usize = 3 * 1024 * 1024;
/// The most steps (values visited, compared or cloned) one patch may take: about a second
/// of work, far above what any real patch of a 3 MiB document needs.
pub const MAX_STEPS: u64 = 50_000_000;

/// The limits of one patch and what it has used of them.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The largest document allowed, during and after the patch.
    pub max_document_bytes: usize,
    /// The most JSON-patch operations.
    pub max_operations: usize,
    /// The most bytes JSON-patch `copy` operations may add up to.
    pub max_copy_bytes: usize,
    /// The most steps.
    pub max_steps: u64,
    steps: u64,
    copied: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(
            MAX_DOCUMENT_BYTES,
            MAX_JSON_PATCH_OPERATIONS,
            MAX_COPY_BYTES,
            MAX_STEPS,
        )
    }
}

impl Budget {
    /// A budget with these limits, nothing used yet.
    pub fn new(
        max_document_bytes: usize,
        max_operations: usize,
        max_copy_bytes: usize,
        max_steps: u64,
    ) -> Budget {
        Budget {
            max_document_bytes,
            max_operations,
            max_copy_bytes,
            max_steps,
            steps: 0,
            copied: 0,
        }
    }

    /// The steps taken so far.
    pub fn steps_used(&self) -> u64 {
        self.steps
    }

    /// Takes `steps` more steps, or fails when that goes over the limit.
    pub(crate) fn charge(&mut self, steps: usize) -> Result<(), PatchError> {
        self.steps = self.steps.saturating_add(steps as u64);
        if self.steps > self.max_steps {
            return Err(PatchError::TooExpensive {
                limit: self.max_steps,
            });
        }
        Ok(())
    }

    /// Records a JSON-patch `copy` of `bytes`, or fails when the copies add up to more than
    /// the limit.
    pub(crate) fn copy(&mut self, index: usize, bytes: usize) -> Result<(), PatchError> {
        self.copied = self.copied.saturating_add(bytes);
        if self.copied > self.max_copy_bytes {
            return Err(PatchError::CopyLimit {
                index,
                accumulated: self.copied,
                limit: self.max_copy_bytes,
            });
        }
        self.charge(bytes)
    }

    /// Checks the size of a document (during or after a patch), charging the walk.
    pub(crate) fn check_document(&mut self, document: &Value) -> Result<(), PatchError> {
        match size_within(document, self.max_document_bytes) {
            Some(size) => self.charge(size / 16 + 1),
            None => Err(PatchError::TooLarge {
                limit: self.max_document_bytes,
            }),
        }
    }
}

/// Roughly how many bytes `value` takes as compact JSON (strings are counted without their
/// escapes); `None` as soon as it is known to exceed `limit`, so the walk of a huge value
/// stops early.
pub fn size_within(value: &Value, limit: usize) -> Option<usize> {
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        total += match value {
            Value::Null => 4,
            Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                stack.extend(items.iter());
                items.len() + 2
            }
            Value::Object(map) => {
                for (key, child) in map {
                    total += key.len() + 4;
                    stack.push(child);
                }
                2
            }
        };
        if total > limit {
            return None;
        }
    }
    Some(total)
}

/// [`size_within`] with no useful limit.
pub fn size_of(value: &Value) -> usize {
    size_within(value, usize::MAX).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_are_close_to_the_serialised_length_and_stop_at_the_limit() {
        let value = json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "data": ["a", 1, true, null]});
        let actual = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
        let estimate = size_of(&value);
        assert!(
            estimate >= actual / 2 && estimate <= actual * 2,
            "{estimate} vs {actual}"
        );
        assert_eq!(size_within(&value, 10), None);
    }

    #[test]
    fn copies_and_steps_are_bounded() {
        let mut budget = Budget::new(1000, 10, 100, 1000);
        assert!(budget.copy(0, 60).is_ok());
        assert!(matches!(
            budget.copy(1, 60),
            Err(PatchError::CopyLimit {
                index: 1,
                accumulated: 120,
                limit: 100
            })
        ));
        assert!(matches!(
            budget.charge(2000),
            Err(PatchError::TooExpensive { limit: 1000 })
        ));
        assert!(matches!(
            budget.check_document(&json!({"a": "x".repeat(2000)})),
            Err(PatchError::TooLarge { limit: 1000 })
        ));
    }
}
