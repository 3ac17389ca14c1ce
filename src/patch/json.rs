//! RFC 6902 JSON patch (`application/json-patch+json`), delegated to the `json-patch` crate
//! (the version kube uses); this file only turns its errors into ones that say which
//! operation failed where, and for `test` what was expected and what was found.

use serde_json::Value;

use super::PatchError;

/// Applies an RFC 6902 patch (a JSON list of operations) to `target`. All operations apply
/// or none do: they apply to a copy, dropped on error. (`json_patch::patch` undoes applied
/// operations on error instead, and panics when an undo fails, e.g. after moving a value to
/// the root `""`; found by fuzzing, so it is not used.)
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| PatchError::InvalidJsonPatch {
            reason: e.to_string(),
        })?;
    let mut result = target.clone();
    json_patch::patch_unsafe(&mut result, &operations.0).map_err(|e| {
        let index = e.operation;
        let path = e.path.to_string();
        let operation = operations.0.get(index);
        match (&e.kind, operation) {
            (
                json_patch::PatchErrorKind::TestFailed,
                Some(json_patch::PatchOperation::Test(test)),
            ) => PatchError::TestFailed {
                index,
                found: test.path.resolve(target).cloned().unwrap_or(Value::Null),
                expected: test.value.clone(),
                path,
            },
            (kind, _) => PatchError::OperationFailed {
                index,
                op: operation
                    .map(operation_name)
                    .unwrap_or("unknown")
                    .to_owned(),
                path,
                reason: kind.to_string(),
            },
        }
    })?;
    Ok(result)
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
