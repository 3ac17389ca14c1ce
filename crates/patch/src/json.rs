//! RFC 6902 JSON patch (`application/json-patch+json`), delegated to the `json-patch` crate
//! (the version kube uses) one operation at a time, so that the document is measured after
//! every operation: `copy` can double a document per operation, and 40 of them would
//! otherwise build gigabytes before the result is ever looked at. This file also turns the
//! crate's errors into ones that say which operation failed where, and for `test` what was
//! expected and what was found.

use serde_json::Value;

use super::{Budget, PatchError};

/// Applies an RFC 6902 patch (a JSON list of operations) to `target` under the default
/// [`Budget`].
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    json_patch_within(target, patch, &mut Budget::default())
}

/// Applies an RFC 6902 patch to `target` within `budget`. All operations apply or none do:
/// they apply to a copy, dropped on error. (`json_patch::patch` undoes applied operations
/// on error instead, and panics when an undo fails, e.g. after moving a value to the root
/// `""`; found by fuzzing, so it is not used.)
pub fn json_patch_within(
    target: &Value,
    patch: &Value,
    budget: &mut Budget,
) -> Result<Value, PatchError> {
    if let Some(count) = patch.as_array().map(Vec::len)
        && count > budget.max_operations
    {
        return Err(PatchError::TooManyOperations {
            count,
            limit: budget.max_operations,
        });
    }
    let operations: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::InvalidJsonPatch {
            reason: e.to_string(),
        })?;
    budget.check_document(target)?;
    let mut result = target.clone();
    for (index, operation) in operations.0.iter().enumerate() {
        charge(budget, index, operation, &result)?;
        json_patch::patch_unsafe(&mut result, std::slice::from_ref(operation))
            .map_err(|e| failure(index, operation, &e, &result))?;
        if grows(operation) {
            budget.check_document(&result)?;
        }
    }
    Ok(result)
}

/// Charges the work of `operation` on `document` before it runs: what it clones.
fn charge(
    budget: &mut Budget,
    index: usize,
    operation: &json_patch::PatchOperation,
    document: &Value,
) -> Result<(), PatchError> {
    use json_patch::PatchOperation as Op;
    let limit = budget.max_document_bytes;
    let over = limit.saturating_add(1);
    match operation {
        Op::Copy(copy) => {
            let bytes = copy.from.resolve(document).map_or(0, |value| {
                super::budget::size_within(value, limit).unwrap_or(over)
            });
            budget.copy(index, bytes)
        }
        Op::Add(add) => budget.charge(super::budget::size_of(&add.value) + add.path.len()),
        Op::Replace(replace) => {
            budget.charge(super::budget::size_of(&replace.value) + replace.path.len())
        }
        Op::Test(test) => budget.charge(super::budget::size_of(&test.value) * 2 + test.path.len()),
        Op::Remove(remove) => budget.charge(remove.path.len() + 1),
        Op::Move(moved) => budget.charge(moved.path.len() + moved.from.len() + 1),
    }
}

/// Whether `operation` can make the document larger.
fn grows(operation: &json_patch::PatchOperation) -> bool {
    use json_patch::PatchOperation as Op;
    matches!(operation, Op::Add(_) | Op::Replace(_) | Op::Copy(_))
}

fn failure(
    index: usize,
    operation: &json_patch::PatchOperation,
    error: &json_patch::PatchError,
    document: &Value,
) -> PatchError {
    let path = error.path.to_string();
    match (&error.kind, operation) {
        (json_patch::PatchErrorKind::TestFailed, json_patch::PatchOperation::Test(test)) => {
            PatchError::TestFailed {
                index,
                found: test.path.resolve(document).cloned().unwrap_or(Value::Null),
                expected: test.value.clone(),
                path,
            }
        }
        (kind, _) => PatchError::OperationFailed {
            index,
            op: operation_name(operation).to_owned(),
            path,
            reason: kind.to_string(),
        },
    }
}

fn operation_name(operation: &json_patch::PatchOperation) -> &'static str {
    use json_patch::PatchOperation as Op;
    match operation {
        Op::Add(_) => "add",
        Op::Remove(_) => "remove",
        Op::Replace(_) => "replace",
        Op::Move(_) => "move",
        Op::Copy(_) => "copy",
        Op::Test(_) => "test",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn applies_operations_in_order() {
        let target = json!({"spec": {"replicas": 1, "args": ["a"]}});
        let patch = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/args/-", "value": "b"},
            {"op": "test", "path": "/spec/replicas", "value": 3},
        ]);
        assert_eq!(
            json_patch(&target, &patch).unwrap(),
            json!({"spec": {"replicas": 3, "args": ["a", "b"]}})
        );
    }

    #[test]
    fn failed_test_names_the_path_and_the_expected_value_and_changes_nothing() {
        let target = json!({"metadata": {"resourceVersion": "7"}, "spec": {"replicas": 1}});
        let patch = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "test", "path": "/metadata/resourceVersion", "value": "6"},
        ]);
        let error = json_patch(&target, &patch).unwrap_err();
        match &error {
            PatchError::TestFailed {
                index,
                path,
                expected,
                found,
            } => {
                assert_eq!(*index, 1);
                assert_eq!(path, "/metadata/resourceVersion");
                assert_eq!(expected, &json!("6"));
                assert_eq!(found, &json!("7"));
            }
            other => panic!("expected a test failure, got {other:?}"),
        }
        let message = error.to_string();
        assert!(message.contains("/metadata/resourceVersion"), "{message}");
        assert!(message.contains("expected \"6\""), "{message}");
    }

    #[test]
    fn bad_paths_and_bodies_are_errors() {
        let target = json!({"spec": {}});
        let error = json_patch(&target, &json!([{"op": "remove", "path": "/spec/nope"}]));
        assert!(error.unwrap_err().to_string().contains("/spec/nope"));
        assert!(matches!(
            json_patch(&target, &json!({"op": "add"})),
            Err(PatchError::InvalidJsonPatch { .. })
        ));
        assert!(json_patch(&target, &json!([{"op": "frobnicate", "path": "/a"}])).is_err());
    }

    /// The probe's patch: one `add` of a 1 KB map, then `copy` of the annotations into a key
    /// of themselves, doubling the document per operation (40 of them: a terabyte).
    #[test]
    fn doubling_copies_stop_at_the_copy_limit() {
        let target = json!({"metadata": {"name": "x"}});
        let mut ops = vec![json!({"op": "add", "path": "/metadata/annotations",
            "value": {"seed": "x".repeat(1000)}})];
        for i in 0..40 {
            ops.push(json!({"op": "copy", "from": "/metadata/annotations",
                "path": format!("/metadata/annotations/k{i}")}));
        }
        let error = json_patch(&target, &Value::Array(ops)).unwrap_err();
        assert!(
            matches!(
                error,
                PatchError::CopyLimit {
                    limit: crate::MAX_COPY_BYTES,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn too_many_operations_or_too_large_a_result_are_refused() {
        let target = json!({"spec": {}});
        let ops: Vec<Value> = (0..10_001)
            .map(|_| json!({"op": "test", "path": "/spec", "value": {}}))
            .collect();
        assert!(matches!(
            json_patch(&target, &Value::Array(ops)),
            Err(PatchError::TooManyOperations {
                count: 10_001,
                limit: 10_000
            })
        ));
        let mut budget = Budget::new(1000, 10, 1000, 1_000_000);
        let big = json!([{"op": "add", "path": "/spec/a", "value": "x".repeat(2000)}]);
        assert!(matches!(
            json_patch_within(&target, &big, &mut budget),
            Err(PatchError::TooLarge { limit: 1000 })
        ));
    }

    /// Found by fuzzing: a move to the root followed by a failing operation made the
    /// `json-patch` crate panic while undoing the move.
    #[test]
    fn a_failure_after_a_move_to_the_root_is_an_error_not_a_panic() {
        let target = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let patch = json!([
            {"op": "move", "from": "/metadata/labels", "path": ""},
            {"op": "copy", "from": "/spec/containers/0", "path": "/spec/containers/1"},
        ]);
        let error = json_patch(&target, &patch).unwrap_err();
        assert!(
            matches!(error, PatchError::OperationFailed { index: 1, .. }),
            "{error:?}"
        );
    }
}
