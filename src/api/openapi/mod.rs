//! OpenAPI documents: `/openapi/v3` (index and one document per group/version), and
//! `/openapi/v2` as JSON and as gnostic protobuf.
//!
//! Every document is a pure function of a [`Catalog`]. Both versions share one route model
//! ([`routes`]): the paths and operations of a kind, with the query parameters kubectl checks
//! for (it only uses server-side field validation when a kind's PATCH operations declare
//! `fieldValidation`, and dry-run when they declare `dryRun`). Building them takes a few
//! milliseconds, so [`documents`] computes them once per catalog snapshot and the HTTP layer
//! serves the cached copies.

mod gnostic;
mod v2;
mod v3;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;

use crate::api::discovery::subresources;
use crate::registry::{Catalog, ResourceType, SchemaSource, definition_name};

pub use v2::{v2_document, v2_protobuf};
pub use v3::{v3_document, v3_index};

/// The `Content-Type` kubectl ≤ 1.26 asks for at `/openapi/v2`.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// Every document of one catalog snapshot.
#[derive(Debug)]
pub struct Documents {
    /// `/openapi/v3`.
    pub v3_index: Value,
    /// `/openapi/v3/<path>` by path (`api/v1`, `apis/apps/v1`).
    pub v3: BTreeMap<String, Value>,
    /// `/openapi/v2` as JSON.
    pub v2: Value,
    /// `/openapi/v2` as gnostic protobuf.
    pub v2_protobuf: Vec<u8>,
}

/// The documents of `catalog`, built on the first call for this snapshot and cached until
/// another snapshot is asked for (the registry swaps snapshots only when CRDs change).
pub fn documents(catalog: &Arc<Catalog>) -> Arc<Documents> {
    type Cached = Option<(Weak<Catalog>, Arc<Documents>)>;
    static CACHE: Mutex<Cached> = Mutex::new(None);
    let mut cache = match CACHE.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some((weak, built)) = cache.as_ref()
        && weak.upgrade().is_some_and(|c| Arc::ptr_eq(&c, catalog))
    {
        return built.clone();
    }
    let v3 = v3::all_documents(catalog);
    let v2 = v2_document(catalog);
    let built = Arc::new(Documents {
        v3_index: v3::index_of(&v3),
        v2_protobuf: v2_protobuf(&v2),
        v3,
        v2,
    });
    *cache = Some((Arc::downgrade(catalog), built.clone()));
    built
}

/// The URL path of a group/version without the leading slash: `api/v1`, `apis/apps/v1`.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// The object itself (create, replace), by definition name.
    Object(String),
    /// A patch document; `strategic` when strategic merge patch is accepted.
    Patch { strategic: bool },
    /// `DeleteOptions`.
    DeleteOptions,
}

/// One operation of one path.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    /// `get`, `put`, `post`, `patch`, `delete`.
    pub method: &'static str,
    /// `readAppsV1NamespacedDeployment`, as upstream names them.
    pub id: String,
    /// `x-kubernetes-action`.
    pub action: &'static str,
    /// `x-kubernetes-group-version-kind` (an object on operations).
    pub gvk: (String, String, String),
    /// Query parameter names (see [`QUERY_PARAMETERS`]).
    pub query: &'static [&'static str],
    pub body: Option<Body>,
    /// The definition of a successful response.
    pub response: String,
    /// Success status codes.
    pub codes: &'static [&'static str],
    pub description: String,
}

/// One path and its operations.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    /// Absolute, with `{namespace}`/`{name}` placeholders.
    pub path: String,
    pub path_parameters: Vec<&'static str>,
    pub operations: Vec<Operation>,
}

/// Query parameters: name, type, description.
pub(crate) const QUERY_PARAMETERS: &[(&str, &str, &str)] = &[
    (
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    ),
    (
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. Valid values: All.",
    ),
    (
        "fieldManager",
        "string",
        "A name associated with the actor or entity that is making these changes.",
    ),
    (
        "fieldValidation",
        "string",
        "How the server handles unknown or duplicate fields: Ignore, Warn (default) or Strict.",
    ),
    (
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests: re-acquire conflicting fields owned by other people.",
    ),
    (
        "labelSelector",
        "string",
        "A selector to restrict the list of returned objects by their labels.",
    ),
    (
        "fieldSelector",
        "string",
        "A selector to restrict the list of returned objects by their fields.",
    ),
    (
        "limit",
        "integer",
        "The maximum number of responses to return for a list call.",
    ),
    (
        "continue",
        "string",
        "The continue option should be set when retrieving more results from the server.",
    ),
    (
        "resourceVersion",
        "string",
        "Constrains what resource versions a request may be served from.",
    ),
    (
        "resourceVersionMatch",
        "string",
        "Determines how resourceVersion is applied to list calls.",
    ),
    (
        "timeoutSeconds",
        "integer",
        "Timeout for the list/watch call.",
    ),
    (
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
    ),
    (
        "allowWatchBookmarks",
        "boolean",
        "Requests watch events with type \"BOOKMARK\".",
    ),
    (
        "sendInitialEvents",
        "boolean",
        "Begin a watch stream with synthetic events for the current state.",
    ),
    (
        "gracePeriodSeconds",
        "integer",
        "The duration in seconds before the object should be deleted.",
    ),
    (
        "orphanDependents",
        "boolean",
        "Deprecated: please use the PropagationPolicy.",
    ),
    (
        "propagationPolicy",
        "string",
        "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
    ),
];

const READ: &[&str] = &["pretty"];
const WRITE: &[&str] = &["pretty", "dryRun", "fieldManager", "fieldValidation"];
const PATCH: &[&str] = &[
    "pretty",
    "dryRun",
    "fieldManager",
    "fieldValidation",
    "force",
];
const LIST: &[&str] = &[
    "pretty",
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const DELETE: &[&str] = &[
    "pretty",
    "dryRun",
    "gracePeriodSeconds",
    "orphanDependents",
    "propagationPolicy",
];
const DELETE_COLLECTION: &[&str] = &[
    "pretty",
    "dryRun",
    "gracePeriodSeconds",
    "orphanDependents",
    "propagationPolicy",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: upstream's operation-id infix.
fn group_version_id(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.trim_end_matches(".k8s.io")
    };
    let mut id = String::new();
    for word in group.split(['.', '-']).chain([version]) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.extend(first.to_uppercase());
            id.push_str(chars.as_str());
        }
    }
    id
}

const STATUS_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const WATCH_EVENT_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";

/// The paths and operations of one kind, subresources included.
pub(crate) fn routes(kind: &ResourceType) -> Vec<Route> {
    let base = format!("/{}", group_version_path(&kind.group, &kind.version));
    let gv = group_version_id(&kind.group, &kind.version);
    let scoped = if kind.namespaced {
        format!("Namespaced{}", kind.kind)
    } else {
        kind.kind.clone()
    };
    let prefix = if kind.namespaced {
        format!("{base}/namespaces/{{namespace}}")
    } else {
        base.clone()
    };
    let watch_prefix = if kind.namespaced {
        format!("{base}/watch/namespaces/{{namespace}}")
    } else {
        format!("{base}/watch")
    };
    let scope_parameters: Vec<&'static str> = if kind.namespaced {
        vec!["namespace"]
    } else {
        Vec::new()
    };
    let with_name = |mut p: Vec<&'static str>| {
        p.insert(0, "name");
        p
    };
    let definition = definition_name(kind);
    let list_definition = format!("{definition}List");
    let gvk = (kind.group.clone(), kind.version.clone(), kind.kind.clone());
    let op =
        |method, id: String, action, query, body: Option<Body>, response: &str, codes| Operation {
            method,
            description: format!("{action} {}", kind.kind),
            id,
            action,
            gvk: gvk.clone(),
            query,
            body,
            response: response.to_string(),
            codes,
        };
    let patch_body = Body::Patch {
        strategic: kind.strategic_merge,
    };
    let mut routes = vec![
        Route {
            path: format!("{prefix}/{}", kind.resource),
            path_parameters: scope_parameters.clone(),
            operations: vec![
                op(
                    "get",
                    format!("list{gv}{scoped}"),
                    "list",
                    LIST,
                    None,
                    &list_definition,
                    &["200"],
                ),
                op(
                    "post",
                    format!("create{gv}{scoped}"),
                    "post",
                    WRITE,
                    Some(Body::Object(definition.clone())),
                    &definition,
                    &["200", "201", "202"],
                ),
                op(
                    "delete",
                    format!("delete{gv}Collection{scoped}"),
                    "deletecollection",
                    DELETE_COLLECTION,
                    Some(Body::DeleteOptions),
                    STATUS_DEFINITION,
                    &["200"],
                ),
            ],
        },
        Route {
            path: format!("{prefix}/{}/{{name}}", kind.resource),
            path_parameters: with_name(scope_parameters.clone()),
            operations: vec![
                op(
                    "get",
                    format!("read{gv}{scoped}"),
                    "get",
                    READ,
                    None,
                    &definition,
                    &["200"],
                ),
                op(
                    "put",
                    format!("replace{gv}{scoped}"),
                    "put",
                    WRITE,
                    Some(Body::Object(definition.clone())),
                    &definition,
                    &["200", "201"],
                ),
                op(
                    "patch",
                    format!("patch{gv}{scoped}"),
                    "patch",
                    PATCH,
                    Some(patch_body.clone()),
                    &definition,
                    &["200", "201"],
                ),
                op(
                    "delete",
                    format!("delete{gv}{scoped}"),
                    "delete",
                    DELETE,
                    Some(Body::DeleteOptions),
                    &definition,
                    &["200", "202"],
                ),
            ],
        },
        Route {
            path: format!("{watch_prefix}/{}", kind.resource),
            path_parameters: scope_parameters.clone(),
            operations: vec![op(
                "get",
                format!("watch{gv}{scoped}List"),
                "watchlist",
                LIST,
                None,
                WATCH_EVENT_DEFINITION,
                &["200"],
            )],
        },
    ];
    if kind.namespaced {
        routes.push(Route {
            path: format!("{base}/{}", kind.resource),
            path_parameters: Vec::new(),
            operations: vec![op(
                "get",
                format!("list{gv}{}ForAllNamespaces", kind.kind),
                "list",
                LIST,
                None,
                &list_definition,
                &["200"],
            )],
        });
    }
    for sub in subresources(kind) {
        let suffix = capitalized(sub.name);
        let path = format!("{prefix}/{}/{{name}}/{}", kind.resource, sub.name);
        let parameters = with_name(scope_parameters.clone());
        let (sub_definition, sub_gvk) = match sub.name {
            "scale" => (
                "io.k8s.api.autoscaling.v1.Scale".to_string(),
                (
                    "autoscaling".to_string(),
                    "v1".to_string(),
                    "Scale".to_string(),
                ),
            ),
            "binding" => (
                "io.k8s.api.core.v1.Binding".to_string(),
                (String::new(), "v1".to_string(), "Binding".to_string()),
            ),
            _ => (definition.clone(), gvk.clone()),
        };
        let sub_op = |method, verb: &str, action, query, body: Option<Body>, codes| {
            let mut o = op(
                method,
                format!("{verb}{gv}{scoped}{suffix}"),
                action,
                query,
                body,
                &sub_definition,
                codes,
            );
            o.gvk = sub_gvk.clone();
            o
        };
        let operations = match sub.name {
            "binding" => vec![sub_op(
                "post",
                "create",
                "post",
                WRITE,
                Some(Body::Object(sub_definition.clone())),
                &["200", "201", "202"][..],
            )],
            "finalize" => vec![sub_op(
                "put",
                "replace",
                "put",
                WRITE,
                Some(Body::Object(sub_definition.clone())),
                &["200", "201"][..],
            )],
            _ => vec![
                sub_op("get", "read", "get", READ, None, &["200"][..]),
                sub_op(
                    "put",
                    "replace",
                    "put",
                    WRITE,
                    Some(Body::Object(sub_definition.clone())),
                    &["200", "201"][..],
                ),
                sub_op(
                    "patch",
                    "patch",
                    "patch",
                    PATCH,
                    Some(Body::Patch {
                        strategic: kind.strategic_merge,
                    }),
                    &["200", "201"][..],
                ),
            ],
        };
        routes.push(Route {
            path,
            path_parameters: parameters,
            operations,
        });
    }
    routes
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The definitions a set of routes needs as roots (bodies and responses).
pub(crate) fn route_definitions(routes: &[Route]) -> Vec<String> {
    let mut roots = vec![
        STATUS_DEFINITION.to_string(),
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".to_string(),
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".to_string(),
    ];
    for operation in routes.iter().flat_map(|r| &r.operations) {
        roots.push(operation.response.clone());
        if let Some(Body::Object(definition)) = &operation.body {
            roots.push(definition.clone());
        }
    }
    roots.sort();
    roots.dedup();
    roots
}

/// The custom-resource definitions (object and list) of `kinds`, in OpenAPI v3 form: the CRD
/// schema with `apiVersion`, `kind` and an `ObjectMeta` `metadata`, and the GVK extension.
pub(crate) fn custom_definitions(kinds: &[Arc<ResourceType>]) -> BTreeMap<String, Value> {
    use crate::registry::{V3_REF_PREFIX, group_version_kind, list_schema};
    use serde_json::json;
    let mut out = BTreeMap::new();
    for kind in kinds {
        let SchemaSource::Inline(schema) = &kind.schema else {
            continue;
        };
        let name = definition_name(kind);
        let mut schema = schema.as_ref().clone();
        if !schema.is_object() {
            schema = json!({ "type": "object" });
        }
        if !schema["properties"].is_object() {
            schema["properties"] = json!({});
        }
        schema["type"] = json!("object");
        schema["properties"]["apiVersion"] = json!({ "type": "string" });
        schema["properties"]["kind"] = json!({ "type": "string" });
        schema["properties"]["metadata"] = json!({
            "allOf": [{ "$ref": format!("{V3_REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta") }],
            "description": "Standard object's metadata.",
        });
        schema["x-kubernetes-group-version-kind"] =
            group_version_kind(&kind.group, &kind.version, &kind.kind);
        let list_kind = format!("{}List", kind.kind);
        out.insert(
            format!("{name}List"),
            list_schema(&name, &kind.group, &kind.version, &list_kind),
        );
        out.insert(name, schema);
    }
    out
}

/// A stable hash of a document, for `?hash=` in the v3 index (clients cache by URL).
pub(crate) fn document_hash(document: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in document.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016X}")
}
