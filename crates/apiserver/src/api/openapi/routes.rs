//! The route model shared by the v2 and v3 documents: a kind's paths, their operations
//! (with upstream's operation ids and `x-kubernetes-action`s) and query parameters.

use super::group_version_path;
use crate::api::discovery::subresources;
use crate::registry::{ResourceType, definition_name};

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
