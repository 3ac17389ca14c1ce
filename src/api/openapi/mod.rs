//! Placeholder until the OpenAPI documents land.
use serde_json::{Value, json};

use crate::registry::Catalog;

/// `/openapi/v2`.
pub fn v2_document(_catalog: &Catalog) -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.37.0"}, "paths": {}, "definitions": {}})
}
/// `/openapi/v2` as protobuf.
pub fn v2_protobuf(_document: &Value) -> Vec<u8> {
    Vec::new()
}
/// `/openapi/v3`.
pub fn v3_index(_catalog: &Catalog) -> Value {
    json!({"paths": {}})
}
/// `/openapi/v3/<path>`.
pub fn v3_document(_catalog: &Catalog, _path: &str) -> Option<Value> {
    None
}
