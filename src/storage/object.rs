//! Objects as the storage layer handles them: JSON with a `metadata` map, stored without
//! `metadata.resourceVersion` and given it on every read from the revision of the write
//! that produced the bytes (what kube-apiserver's etcd3 store does). Storing the version
//! inside the value would be redundant at best and wrong at worst: the revision is only
//! known once the write commits, and a stored copy would disagree with the key's mod
//! revision after any write that did not rewrite it.

use serde_json::{Map, Value};

use super::error::{Result, StorageError};

/// `object` as bytes for the datastore, with any `metadata.resourceVersion` removed (from
/// `object` too: the caller sets the new one once the write has a revision).
pub(crate) fn encode(key: &str, object: &mut Value) -> Result<Vec<u8>> {
    metadata_mut(key, object)?.remove("resourceVersion");
    serde_json::to_vec(object).map_err(|error| StorageError::InvalidObject {
        key: key.to_string(),
        reason: format!("cannot be serialised: {error}"),
    })
}

/// Stored bytes as an object carrying `revision` as its resourceVersion.
pub(crate) fn decode(key: &str, bytes: &[u8], revision: i64) -> Result<Value> {
    let mut object: Value =
        serde_json::from_slice(bytes).map_err(|error| StorageError::InvalidObject {
            key: key.to_string(),
            reason: format!("stored value is not JSON ({error}); the datastore holds data not written by Capstan's storage layer"),
        })?;
    set_resource_version(key, &mut object, revision)?;
    Ok(object)
}

/// Sets `metadata.resourceVersion` to `revision`.
pub(crate) fn set_resource_version(key: &str, object: &mut Value, revision: i64) -> Result<()> {
    metadata_mut(key, object)?.insert(
        "resourceVersion".to_string(),
        Value::String(revision.to_string()),
    );
    Ok(())
}

/// The object's `metadata`, created when missing; an error when the object is not a JSON
/// object or its metadata is not one.
fn metadata_mut<'a>(key: &str, object: &'a mut Value) -> Result<&'a mut Map<String, Value>> {
    let invalid = |reason: &str| StorageError::InvalidObject {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let fields = object
        .as_object_mut()
        .ok_or_else(|| invalid("is not a JSON object"))?;
    fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| invalid("metadata is not a JSON object"))
}

/// Parses a resourceVersion string: a positive revision.
pub(crate) fn parse_resource_version(value: &str) -> Result<i64> {
    match value.parse::<i64>() {
        Ok(revision) if revision > 0 => Ok(revision),
        Ok(_) => Err(StorageError::InvalidResourceVersion {
            value: value.to_string(),
            reason: "must be a positive integer",
        }),
        Err(_) => Err(StorageError::InvalidResourceVersion {
            value: value.to_string(),
            reason: "must be an integer taken from a previous response",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resource_version_is_stripped_on_write_and_set_on_read() {
        let mut object = json!({"metadata": {"name": "a", "resourceVersion": "7"}, "spec": {}});
        let bytes = encode("/k", &mut object).expect("valid object");
        assert_eq!(object, json!({"metadata": {"name": "a"}, "spec": {}}));
        let stored: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(stored, json!({"metadata": {"name": "a"}, "spec": {}}));
        let read = decode("/k", &bytes, 9).expect("decodes");
        assert_eq!(read["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(encode("/k", &mut json!([1])).is_err());
        assert!(encode("/k", &mut json!({"metadata": 3})).is_err());
        assert!(decode("/k", b"not json", 1).is_err());
        assert!(parse_resource_version("abc").is_err());
        assert!(parse_resource_version("0").is_err());
        assert_eq!(parse_resource_version("12").ok(), Some(12));
    }
}
