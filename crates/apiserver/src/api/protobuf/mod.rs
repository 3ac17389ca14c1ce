//! Kubernetes protobuf bodies (`application/vnd.kubernetes.protobuf`) to and from JSON.
//!
//! kubectl 1.32+ sends built-in objects as protobuf, and clients may ask for protobuf
//! answers. Capstan's core works on JSON, so this module converts at the edge:
//! [`decode_object`] turns a request body into the JSON the Kubernetes API server would
//! have accepted for the same object, and [`encode_object`] turns a JSON object (a
//! resource, a `...List` or a `Status`) into a protobuf response body.
//!
//! The body is an envelope: the magic `k8s\0` and a `runtime.Unknown` message holding the
//! apiVersion/kind and the object's own encoding in `raw`. Objects are converted by walking
//! a schema table (`schema.rs`, generated from k8s-pb and k8s-openapi), not by generated
//! Rust types per kind: one decoder and one encoder serve every kind, and a kind added
//! upstream is a regenerated table, not new code.
//!
//! Presence: proto2 fields that are on the wire appear in JSON, so `replicas: 0` sent by a
//! client survives. The exception is Go's always-written zero values that mean "unset":
//! an empty string or byte string and a zero `Time` (an empty message) are omitted, as
//! Go's `omitempty` would. Zero numbers and `false` are kept: the table cannot tell Go
//! pointer fields (where `0`/`false` is a value) from plain ones (where it means unset and
//! JSON `0` decodes the same as absence), so a Go client's body yields e.g.
//! `"paused": false` where kubectl's JSON would leave the key out. The cost of the string
//! rule is the converse: a Go `*string` explicitly set to `""` (a PVC's
//! `storageClassName: ""`) arrives as absent.
//!
//! Encoding ignores JSON keys the table does not know (as Go's JSON decoder does), writes
//! fields in tag order and repeated scalars unpacked, as Kubernetes' Go code does.

mod decode;
mod encode;
mod schema;
mod time;
mod wire;

#[cfg(test)]
mod tests;

use serde_json::Value;

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// The content type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Nesting deeper than this is refused (a crafted body could otherwise exhaust the stack;
/// real objects, even CRD schemas, stay far below).
const MAX_DEPTH: usize = 100;

/// Why a protobuf body could not be decoded, or a JSON object not encoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error(
        "protobuf body: missing k8s magic prefix (expected the 4 bytes 6b 38 73 00 before the runtime.Unknown envelope)"
    )]
    MissingMagic,
    /// The body ended inside a value.
    #[error("protobuf body: truncated {0}")]
    Truncated(&'static str),
    /// The bytes are not valid protobuf.
    #[error("protobuf body: {0}")]
    Malformed(String),
    /// A field arrived with a wire type its declaration does not allow.
    #[error("protobuf body: field {tag} of {message}: wire type {wire_type}, expected {expected}")]
    WireType {
        /// The field number.
        tag: u32,
        /// The full name of the message holding the field.
        message: String,
        /// The wire type found.
        wire_type: u8,
        /// The wire type(s) the field allows.
        expected: &'static str,
    },
    /// A field's value is not what its type allows (bad UTF-8, bad embedded JSON, ...).
    #[error("protobuf body: field {field} of {message}: {problem}")]
    InvalidValue {
        /// The field's JSON name.
        field: String,
        /// The full name of the message holding the field.
        message: String,
        /// What was wrong.
        problem: String,
    },
    /// The apiVersion/kind has no protobuf message.
    #[error(
        "protobuf body: unknown kind {api_version} {kind} (send it as application/json instead)"
    )]
    UnknownKind {
        /// The apiVersion from the envelope or object.
        api_version: String,
        /// The kind from the envelope or object.
        kind: String,
    },
    /// A JSON object could not be encoded.
    #[error("protobuf encoding of {kind}: field {path}: {problem}")]
    InvalidJson {
        /// The object's kind.
        kind: String,
        /// The JSON path of the offending field, e.g. `spec.replicas`.
        path: String,
        /// What was wrong.
        problem: String,
    },
}

/// Whether objects of this apiVersion and kind can be converted.
pub fn supports(api_version: &str, kind: &str) -> bool {
    schema::SCHEMA.kind(api_version, kind).is_some()
}

/// Decode a protobuf request body (magic + `runtime.Unknown`) into the object's JSON, with
/// `apiVersion` and `kind` set.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    decode::decode_body(body, 0)
}

/// Encode a JSON object (with `apiVersion` and `kind`) as a protobuf response body.
pub fn encode_object(object: &Value) -> Result<Vec<u8>, ProtobufError> {
    let invalid = |kind: &str, path: &str, problem: &str| ProtobufError::InvalidJson {
        kind: kind.to_string(),
        path: path.to_string(),
        problem: problem.to_string(),
    };
    let Some(map) = object.as_object() else {
        return Err(invalid("object", "(root)", "expected a JSON object"));
    };
    let text = |name: &str| map.get(name).and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
        return Err(invalid(
            "object",
            "apiVersion/kind",
            "both must be set to strings",
        ));
    };
    let message =
        schema::SCHEMA
            .kind(api_version, kind)
            .ok_or_else(|| ProtobufError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })?;
    let raw = encode::encode_message(message, map, &mut encode::Path::new(kind))?;
    Ok(encode::wrap_envelope(api_version, kind, &raw))
}
