//! Placeholder until the protobuf codec lands.
use serde_json::Value;

/// Protobuf could not be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[error("protobuf: {0}")]
pub struct ProtobufError(String);

/// Decodes a Kubernetes protobuf envelope.
pub fn decode_object(_body: &[u8]) -> Result<Value, ProtobufError> {
    Err(ProtobufError("not supported yet".to_string()))
}

/// Encodes an object as Kubernetes protobuf.
pub fn encode_object(_object: &Value) -> Result<Vec<u8>, ProtobufError> {
    Err(ProtobufError("not supported yet".to_string()))
}
