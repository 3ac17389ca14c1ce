//! Discovery documents: what clients read to learn which kinds exist and where.
//!
//! Two forms, both computed from a [`Catalog`] snapshot:
//! - legacy discovery (`/api`, `/apis`, `/apis/<g>`, `/api/v1`, `/apis/<g>/<v>`), one document
//!   per group and per group/version, used by older clients such as kubectl 1.20;
//! - aggregated discovery (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList` at `/api` and
//!   `/apis`), everything in two documents, which kubectl ≥ 1.26 asks for in its `Accept`
//!   header. [`negotiate`] reads that header and [`DiscoveryFormat::content_type`] gives the
//!   exact `Content-Type` to answer with (client-go checks it before decoding).
//!
//! These are pure functions; the HTTP layer routes to them.

use serde_json::{Value, json};

use crate::registry::{Catalog, ResourceType};

/// Verbs of every main resource (what the generic REST path serves).
pub const RESOURCE_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Verbs of `status` and `scale` subresources.
const READ_WRITE_VERBS: [&str; 3] = ["get", "patch", "update"];

/// The discovery representation a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFormat {
    /// Legacy `APIVersions`/`APIGroupList`/`APIResourceList` documents.
    Legacy,
    /// `apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`.
    AggregatedV2,
    /// `apidiscovery.k8s.io/v2beta1` `APIGroupDiscoveryList` (kubectl 1.26–1.29).
    AggregatedV2Beta1,
}

impl DiscoveryFormat {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryFormat::Legacy => "application/json",
            DiscoveryFormat::AggregatedV2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            DiscoveryFormat::AggregatedV2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            DiscoveryFormat::AggregatedV2Beta1 => "apidiscovery.k8s.io/v2beta1",
            _ => "apidiscovery.k8s.io/v2",
        }
    }
}

/// The format to answer `/api` or `/apis` with, from the request's `Accept` header: the first
/// JSON aggregated-discovery media range listed (parameters in any order, spaces allowed),
/// else legacy. Protobuf ranges are skipped: only JSON is served.
pub fn negotiate(accept: &str) -> DiscoveryFormat {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default();
        if !media_type.eq_ignore_ascii_case("application/json") {
            continue;
        }
        let (mut group, mut version, mut as_kind) = (None, None, None);
        for parameter in parts {
            let Some((key, value)) = parameter.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "g" => group = Some(value),
                "v" => version = Some(value),
                "as" => as_kind = Some(value),
                _ => {}
            }
        }
        if group != Some("apidiscovery.k8s.io") || as_kind != Some("APIGroupDiscoveryList") {
            continue;
        }
        match version {
            Some("v2") => return DiscoveryFormat::AggregatedV2,
            Some("v2beta1") => return DiscoveryFormat::AggregatedV2Beta1,
            _ => {}
        }
    }
    DiscoveryFormat::Legacy
}

/// `/api` (legacy): the core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            { "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }
        ],
    })
}

/// `/apis` (legacy): every named group.
pub fn api_group_list(catalog: &Catalog) -> Value {
    let groups: Vec<Value> = catalog
        .groups()
        .iter()
        .filter(|g| !g.group.is_empty())
        .map(|g| group_document(&g.group, &g.versions))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/<group>` (legacy); `None` when the group is not served.
pub fn api_group(catalog: &Catalog, group: &str) -> Option<Value> {
    let found = catalog
        .groups()
        .into_iter()
        .find(|g| g.group == group && !group.is_empty())?;
    let mut document = group_document(&found.group, &found.versions);
    document["kind"] = json!("APIGroup");
    document["apiVersion"] = json!("v1");
    Some(document)
}

fn group_document(group: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    let preferred = entries.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": entries, "preferredVersion": preferred })
}

/// `/api/v1` or `/apis/<group>/<version>` (legacy); `None` when nothing is served there.
pub fn api_resource_list(catalog: &Catalog, group: &str, version: &str) -> Option<Value> {
    let kinds = catalog.in_group_version(group, version);
    if kinds.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for kind in &kinds {
        resources.push(legacy_resource(kind));
        for sub in subresources(kind) {
            let mut entry = json!({
                "name": format!("{}/{}", kind.resource, sub.name),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": subresource_kind(kind, &sub),
                "verbs": sub.verbs,
            });
            if let Some((group, version)) = sub.group_version {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            resources.push(entry);
        }
    }
    let group_version = kinds[0].api_version();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn legacy_resource(kind: &ResourceType) -> Value {
    let mut entry = json!({
        "name": kind.resource,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": RESOURCE_VERBS,
        "storageVersionHash": storage_version_hash(kind),
    });
    if !kind.short_names.is_empty() {
        entry["shortNames"] = json!(kind.short_names);
    }
    if !kind.categories.is_empty() {
        entry["categories"] = json!(kind.categories);
    }
    entry
}

/// A stable opaque hash of group/version/kind (clients only compare it for equality).
fn storage_version_hash(kind: &ResourceType) -> String {
    // FNV-1a: tiny, stable across runs and builds (unlike std's SipHash keys).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{}/{}/{}", kind.group, kind.version, kind.kind).bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// One served subresource of a kind.
pub struct Subresource {
    /// `status`, `scale`, `binding`, `finalize`.
    pub name: &'static str,
    /// The kind it reads and writes; `None` for the parent's own kind (status, finalize).
    pub kind: Option<&'static str>,
    /// Its group and version when they differ from the parent's (`autoscaling`, `v1`).
    pub group_version: Option<(&'static str, &'static str)>,
    /// Allowed verbs.
    pub verbs: &'static [&'static str],
}

/// The subresources `kind` serves, in a fixed order.
pub fn subresources(kind: &ResourceType) -> Vec<Subresource> {
    let mut found = Vec::new();
    if kind.subresources.status {
        found.push(Subresource {
            name: "status",
            kind: None,
            group_version: None,
            verbs: &READ_WRITE_VERBS,
        });
    }
    if kind.subresources.scale.is_some() {
        found.push(Subresource {
            name: "scale",
            kind: Some("Scale"),
            group_version: Some(("autoscaling", "v1")),
            verbs: &READ_WRITE_VERBS,
        });
    }
    if kind.subresources.binding {
        found.push(Subresource {
            name: "binding",
            kind: Some("Binding"),
            group_version: None,
            verbs: &["create"],
        });
    }
    if kind.subresources.finalize {
        found.push(Subresource {
            name: "finalize",
            kind: None,
            group_version: None,
            verbs: &["update"],
        });
    }
    found
}

/// The kind a subresource reads and writes.
pub fn subresource_kind<'a>(parent: &'a ResourceType, sub: &Subresource) -> &'a str {
    sub.kind.unwrap_or(&parent.kind)
}

/// Aggregated discovery (`apidiscovery.k8s.io/v2`): the core group alone for `/api`
/// (`core`), every other group for `/apis`.
pub fn aggregated(catalog: &Catalog, core: bool) -> Value {
    aggregated_as(catalog, core, DiscoveryFormat::AggregatedV2)
}

/// Aggregated discovery in `format`'s API version (v2 or v2beta1, which share one shape).
pub fn aggregated_as(catalog: &Catalog, core: bool, format: DiscoveryFormat) -> Value {
    let items: Vec<Value> = catalog
        .groups()
        .iter()
        .filter(|g| g.group.is_empty() == core)
        .map(|g| {
            let versions: Vec<Value> = g
                .versions
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = catalog
                        .in_group_version(&g.group, version)
                        .iter()
                        .map(|kind| aggregated_resource(kind))
                        .collect();
                    json!({ "version": version, "resources": resources, "freshness": "Current" })
                })
                .collect();
            json!({
                "metadata": { "name": g.group, "creationTimestamp": null },
                "versions": versions,
            })
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format.api_version(),
        "metadata": {},
        "items": items,
    })
}

fn aggregated_resource(kind: &ResourceType) -> Value {
    let subresources: Vec<Value> = subresources(kind)
        .iter()
        .map(|sub| {
            let (group, version) = sub
                .group_version
                .unwrap_or((kind.group.as_str(), kind.version.as_str()));
            json!({
                "subresource": sub.name,
                "responseKind": {
                    "group": group,
                    "version": version,
                    "kind": subresource_kind(kind, sub),
                },
                "verbs": sub.verbs,
            })
        })
        .collect();
    let mut entry = json!({
        "resource": kind.resource,
        "responseKind": { "group": kind.group, "version": kind.version, "kind": kind.kind },
        "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": kind.singular,
        "verbs": RESOURCE_VERBS,
    });
    if !kind.short_names.is_empty() {
        entry["shortNames"] = json!(kind.short_names);
    }
    if !kind.categories.is_empty() {
        entry["categories"] = json!(kind.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtin_types;

    fn catalog() -> Catalog {
        Catalog::new(builtin_types())
    }

    #[test]
    fn kubectl_132_accept_header_gets_aggregated_v2() {
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
            application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
            application/json";
        assert_eq!(negotiate(accept), DiscoveryFormat::AggregatedV2);
        assert_eq!(
            negotiate(accept).content_type(),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
    }

    #[test]
    fn negotiation_ignores_parameter_order_spaces_and_protobuf() {
        let accept = "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;\
            as=APIGroupDiscoveryList, application/json; as=APIGroupDiscoveryList; v=v2beta1; \
            g=apidiscovery.k8s.io";
        assert_eq!(negotiate(accept), DiscoveryFormat::AggregatedV2Beta1);
        assert_eq!(negotiate("application/json, */*"), DiscoveryFormat::Legacy);
        assert_eq!(negotiate(""), DiscoveryFormat::Legacy);
    }

    #[test]
    fn legacy_apps_v1_lists_deployments_with_scale() {
        let list = api_resource_list(&catalog(), "apps", "v1").expect("apps/v1 served");
        let resources = list["resources"].as_array().expect("resources");
        let deployments = resources
            .iter()
            .find(|r| r["name"] == "deployments")
            .expect("deployments");
        assert_eq!(deployments["verbs"].as_array().map(Vec::len), Some(8));
        let scale = resources
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .expect("deployments/scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        let status = resources
            .iter()
            .find(|r| r["name"] == "deployments/status")
            .expect("deployments/status");
        assert_eq!(status["kind"], "Deployment");
        assert!(api_resource_list(&catalog(), "apps", "v9").is_none());
    }

    #[test]
    fn legacy_core_has_binding_and_finalize() {
        let list = api_resource_list(&catalog(), "", "v1").expect("v1 served");
        assert_eq!(list["groupVersion"], "v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"pods/binding"));
        assert!(names.contains(&"namespaces/finalize"));
    }

    #[test]
    fn aggregated_splits_core_from_named_groups() {
        let core = aggregated(&catalog(), true);
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(core["items"].as_array().map(Vec::len), Some(1));
        let named = aggregated(&catalog(), false);
        let apps = named["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .expect("apps group");
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "deployments")
            .expect("deployments");
        assert_eq!(deployments["scope"], "Namespaced");
        assert_eq!(deployments["shortNames"][0], "deploy");
        let scale = deployments["subresources"]
            .as_array()
            .expect("subresources")
            .iter()
            .find(|s| s["subresource"] == "scale")
            .expect("scale");
        assert_eq!(scale["responseKind"]["group"], "autoscaling");
        assert_eq!(apps["versions"][0]["freshness"], "Current");
    }

    #[test]
    fn group_documents() {
        let groups = api_group_list(&catalog());
        assert!(
            groups["groups"]
                .as_array()
                .expect("groups")
                .iter()
                .all(|g| g["name"] != "")
        );
        let apps = api_group(&catalog(), "apps").expect("apps");
        assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1");
        assert!(api_group(&catalog(), "").is_none());
    }
}
