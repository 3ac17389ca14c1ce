//! Placeholder until the discovery documents land.
use serde_json::{Value, json};

use crate::registry::Catalog;

/// Discovery response formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFormat {
    /// Legacy.
    Legacy,
    /// Aggregated v2.
    AggregatedV2,
}
impl DiscoveryFormat {
    /// Content type.
    pub fn content_type(&self) -> &'static str {
        "application/json"
    }
}
/// Negotiate.
pub fn negotiate(_accept: &str) -> DiscoveryFormat {
    DiscoveryFormat::Legacy
}
/// `/api`.
pub fn api_versions(address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]})
}
/// `/apis`.
pub fn api_group_list(_catalog: &Catalog) -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
}
/// `/apis/<g>`.
pub fn api_group(_catalog: &Catalog, _group: &str) -> Option<Value> {
    None
}
/// `/apis/<g>/<v>`.
pub fn api_resource_list(_catalog: &Catalog, _group: &str, _version: &str) -> Option<Value> {
    None
}
/// Aggregated.
pub fn aggregated(_catalog: &Catalog, _core: bool, _format: DiscoveryFormat) -> Value {
    json!({})
}
