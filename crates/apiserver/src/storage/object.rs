//! Objects as the storage layer handles them: JSON with a `metadata` map, stored without
//! `metadata.resourceVersion` and given it on every read from the revision of the write
//! that produced the bytes (what kube-apiserver's etcd3 store does). Storing the version
//! inside the value would be redundant at best and wrong at worst: the revision is only
//! known once the write commits, and a stored copy would disagree with the key's mod
//! revision after any write that did not rewrite it.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::error::{Result, StorageError};
use capstan_datastore::MAX_VALUE_BYTES;

/// The deepest nesting of arrays and objects a stored object may have, counting what the
/// server adds (`metadata.managedFields` repeats the object's shape a few levels down).
/// It sits well below the JSON decoder's own limit of 128, so that whatever is accepted
/// can always be read back.
pub const MAX_NESTING_DEPTH: usize = 100;

/// Stored rows skipped by lists and watches because they do not decode.
static UNDECODABLE: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "capstan_storage_undecodable_objects_total",
        "Stored objects that could not be decoded and were left out of a list or watch"
    )
    .expect("the undecodable-objects counter is registered once")
});

/// Whether `value` nests arrays and objects deeper than `limit`; stops at the first branch
/// that does, without recursion.
fn nested_deeper_than(value: &Value, limit: usize) -> bool {
    let mut pending = vec![(value, 1usize)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        if depth > limit {
            return true;
        }
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    false
}

/// `object` as bytes for the datastore, with any `metadata.resourceVersion` removed (from
/// `object` too: the caller sets the new one once the write has a revision).
pub(crate) fn encode(key: &str, object: &mut Value) -> Result<Vec<u8>> {
    metadata_mut(key, object)?.remove("resourceVersion");
    if nested_deeper_than(object, MAX_NESTING_DEPTH) {
        return Err(StorageError::InvalidObject {
            key: key.to_string(),
            reason: format!(
                "nests objects and arrays more than {MAX_NESTING_DEPTH} levels deep (managed fields included)"
            ),
        });
    }
    let bytes = serde_json::to_vec(object).map_err(|error| StorageError::InvalidObject {
        key: key.to_string(),
        reason: format!("cannot be serialised: {error}"),
    })?;
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(StorageError::TooLarge {
            key: key.to_string(),
            size: bytes.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(bytes)
}

/// Stored bytes as an object carrying `revision` as its resourceVersion.
pub(crate) fn decode(key: &str, bytes: &[u8], revision: i64) -> Result<Value> {
    let undecodable = |reason: String| StorageError::Undecodable {
        key: key.to_string(),
        reason,
    };
    let mut object: Value =
        serde_json::from_slice(bytes).map_err(|error| undecodable(format!("not JSON: {error}")))?;
    set_resource_version(key, &mut object, revision)
        .map_err(|error| undecodable(error.to_string()))?;
    Ok(object)
}

/// [`decode`] for a row of a list or a watch: an undecodable row is logged, counted and
/// skipped (`None`), so one bad row cannot make a whole kind unreadable; any other error
/// is the caller's.
pub(crate) fn decode_or_skip(key: &str, bytes: &[u8], revision: i64) -> Result<Option<Value>> {
    match decode(key, bytes, revision) {
        Ok(object) => Ok(Some(object)),
        Err(error @ StorageError::Undecodable { .. }) => {
            UNDECODABLE.inc();
            tracing::warn!(%key, revision, %error, "skipping a stored object that cannot be decoded");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// What a delete of an undecodable object returns: its name (the key's last segment) and
/// the delete's revision, all that is known of it.
pub(crate) fn stand_in(key: &str, revision: i64) -> Value {
    let name = key.rsplit('/').next().unwrap_or_default();
    serde_json::json!({"metadata": {"name": name, "resourceVersion": revision.to_string()}})
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
    fn objects_nested_past_the_limit_are_refused_and_all_accepted_ones_read_back() {
        let nest = |levels: usize| {
            let mut value = json!("leaf");
            for _ in 0..levels {
                value = json!({"x": value});
            }
            value
        };
        // The object itself is one level, its "data" field another.
        let mut deep = json!({"metadata": {"name": "a"}, "data": nest(MAX_NESTING_DEPTH)});
        assert!(encode("/k", &mut deep).is_err());
        let mut fits = json!({"metadata": {"name": "a"}, "data": nest(MAX_NESTING_DEPTH - 2)});
        let bytes = encode("/k", &mut fits).expect("within the limit");
        assert!(decode("/k", &bytes, 2).is_ok());
        let mut wide = json!({"metadata": {"name": "a"}, "items": vec![nest(10); 1000]});
        assert!(encode("/k", &mut wide).is_ok());
    }

    #[test]
    fn non_objects_are_refused() {
        assert!(encode("/k", &mut json!([1])).is_err());
        assert!(encode("/k", &mut json!({"metadata": 3})).is_err());
        assert!(matches!(
            decode("/k", b"not json", 1),
            Err(StorageError::Undecodable { .. })
        ));
        assert_eq!(decode_or_skip("/k", b"[1]", 1).ok(), Some(None));
        assert!(parse_resource_version("abc").is_err());
        assert!(parse_resource_version("0").is_err());
        assert_eq!(parse_resource_version("12").ok(), Some(12));
    }
}
