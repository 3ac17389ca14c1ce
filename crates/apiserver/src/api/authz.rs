//! Authorization: what an authenticated user may do. A layer after authentication
//! (`auth.rs`), before the dispatcher; until RBAC is enforced it decides for node identities
//! only, as kube-apiserver's Node authorizer and NodeRestriction admission do together:
//!
//! - members of `system:masters` (the admin kubeconfig) may do everything;
//! - a node identity (`system:node:<name>`, group `system:nodes`) may do what a kubelet
//!   does, and nothing else: read nodes, pods, services, endpoints and namespaces
//!   (get/list/watch); create, update and patch its own Node `<name>` and its status; get,
//!   create, update and patch its own Lease `kube-node-lease/<name>`; create, update and
//!   patch events; update and patch the status of pods bound to it (`spec.nodeName ==
//!   <name>`) and delete them. Discovery, OpenAPI, version and health are open to it;
//!   `/metrics`, Secrets, ConfigMaps, RBAC objects and every other write answer 403 with
//!   the `Status` kube-apiserver sends (`nodes "x" is forbidden: User "system:node:a"
//!   cannot patch resource "nodes" in API group "" at the cluster scope: …`);
//! - every other authenticated user keeps today's behaviour, all-powerful: RBAC objects are
//!   stored and served but not evaluated yet (the authorization issue brings RBAC, and with
//!   it the Node authorizer's graph: Secrets and ConfigMaps of a node's own pods).
//!
//! A create names its object in the body, not the path: for the node's own Node and Lease
//! the layer lets the request through with a [`CreateOnlyNamed`] extension, which the
//! create handler checks once the body is decoded (as NodeRestriction does at admission).
//! Whether a pod is bound to the node is read from the stored pod before the write; an
//! unknown pod is forbidden rather than not found, so a node learns nothing of other pods'
//! existence through writes.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::ApiState;
use super::auth::User;
use super::error::ApiError;
use super::layers::request_info::RequestInfo;
use super::path::{ResourcePath, Route};
use crate::registry::RegistryError;

/// The namespace of node Leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What a node may read: `(API group, resource)`.
const NODE_READABLE: &[(&str, &str)] = &[
    ("", "nodes"),
    ("", "pods"),
    ("", "services"),
    ("", "endpoints"),
    ("", "namespaces"),
];

/// A create the authorizer allowed only for one object name; checked by the create handler
/// against the decoded body.
#[derive(Debug, Clone)]
pub struct CreateOnlyNamed {
    /// The one name the object may have.
    pub name: String,
    /// Who asked (for the message).
    pub user: String,
    /// Why only that name.
    pub reason: &'static str,
}

impl CreateOnlyNamed {
    /// Refuses `object` (of `target`'s kind) unless it carries the allowed name.
    pub(crate) fn check(&self, target: &ResourcePath, object: &Value) -> Result<(), ApiError> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name == self.name {
            return Ok(());
        }
        let attributes = Attributes::of(&Method::POST, target, false);
        Err(forbidden(
            &self.user,
            &Attributes {
                name: Some(name),
                ..attributes
            },
            self.reason,
        ))
    }
}

/// The middleware: lets the request through, or answers 403.
pub async fn authorize(
    State(state): State<Arc<ApiState>>,
    Extension(info): Extension<Arc<RequestInfo>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(user) = request.extensions().get::<User>().cloned() else {
        // Only the anonymous paths get here without a user.
        return next.run(request).await;
    };
    if !user.is_node() {
        return next.run(request).await;
    }
    let target = match &info.route {
        Route::Resource(target) => target,
        Route::Metrics | Route::NotFound => {
            return ApiError::Forbidden {
                message: format!(
                    "forbidden: User {:?} cannot {} path {:?}",
                    user.name,
                    request.method().as_str().to_ascii_lowercase(),
                    request.uri().path()
                ),
                details: None,
            }
            .into_response();
        }
        _ => return next.run(request).await,
    };
    let attributes = Attributes::of(request.method(), target, info.watch);
    match decide(&user, &attributes) {
        Decision::Allow => next.run(request).await,
        Decision::CreateOnly(limit) => {
            request.extensions_mut().insert(limit);
            next.run(request).await
        }
        Decision::IfPodBound(node) => match pod_node(&state, target).await {
            Ok(Some(bound)) if bound == node => next.run(request).await,
            Ok(_) => forbidden(
                &user.name,
                &attributes,
                "can only modify pods bound to the requesting node",
            )
            .into_response(),
            Err(error) => ApiError::from(error).into_response(),
        },
        Decision::Deny(reason) => forbidden(&user.name, &attributes, reason).into_response(),
    }
}

/// What a request does, as kube-apiserver's RequestInfo names it.
#[derive(Debug, Clone, Copy)]
struct Attributes<'a> {
    verb: &'static str,
    group: &'a str,
    resource: &'a str,
    subresource: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

impl<'a> Attributes<'a> {
    fn of(method: &Method, target: &'a ResourcePath, watching: bool) -> Attributes<'a> {
        let named = target.name.is_some();
        let verb = match *method {
            Method::GET | Method::HEAD if watching => "watch",
            Method::GET | Method::HEAD if named => "get",
            Method::GET | Method::HEAD => "list",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if named => "delete",
            Method::DELETE => "deletecollection",
            _ => "unknown",
        };
        Attributes {
            verb,
            group: &target.kind.group,
            resource: &target.kind.resource,
            subresource: target.subresource.as_deref(),
            namespace: target.namespace.as_deref(),
            name: target.name.as_deref(),
        }
    }

    fn reads(&self) -> bool {
        matches!(self.verb, "get" | "list" | "watch")
    }
}

#[derive(Debug)]
enum Decision {
    Allow,
    /// A create, for this one name.
    CreateOnly(CreateOnlyNamed),
    /// Allowed if the pod is bound to this node.
    IfPodBound(String),
    Deny(&'static str),
}

/// The kubelet's rules for node identity `user`.
fn decide(user: &User, request: &Attributes<'_>) -> Decision {
    let resource = (request.group, request.resource);
    if request.reads()
        && matches!(request.subresource, None | Some("status"))
        && NODE_READABLE.contains(&resource)
    {
        return Decision::Allow;
    }
    let Some(node) = user.node_name() else {
        return Decision::Deny("the user names no node (system:node:<name>)");
    };
    let own = request.name == Some(node);
    match (resource, request.subresource, request.verb) {
        (("", "nodes"), None, "create") => Decision::CreateOnly(CreateOnlyNamed {
            name: node.to_string(),
            user: user.name.clone(),
            reason: "a node may only create its own Node object",
        }),
        (("", "nodes"), None | Some("status"), "update" | "patch") if own => Decision::Allow,
        (("", "nodes"), _, _) => Decision::Deny("a node may only modify its own Node object"),
        (("coordination.k8s.io", "leases"), None, verb)
            if request.namespace == Some(NODE_LEASE_NAMESPACE) =>
        {
            match verb {
                "create" => Decision::CreateOnly(CreateOnlyNamed {
                    name: node.to_string(),
                    user: user.name.clone(),
                    reason: "can only access node lease with the same name as the requesting node",
                }),
                "get" | "update" | "patch" if own => Decision::Allow,
                _ => Decision::Deny(
                    "can only access node lease with the same name as the requesting node",
                ),
            }
        }
        (("", "events") | ("events.k8s.io", "events"), None, "create" | "update" | "patch") => {
            Decision::Allow
        }
        (("", "pods"), Some("status"), "update" | "patch") | (("", "pods"), None, "delete") => {
            Decision::IfPodBound(node.to_string())
        }
        _ => Decision::Deny(""),
    }
}

/// The node the pod at `target` is bound to (`spec.nodeName`); `None` if it is unbound or
/// does not exist.
async fn pod_node(
    state: &ApiState,
    target: &ResourcePath,
) -> Result<Option<String>, RegistryError> {
    let name = target.name.as_deref().unwrap_or("");
    match state
        .objects
        .get(&target.kind, target.namespace.as_deref(), name)
        .await
    {
        Ok(pod) => Ok(pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .map(str::to_string)),
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The 403 kube-apiserver answers, message and details worded as upstream's.
fn forbidden(user: &str, request: &Attributes<'_>, reason: &str) -> ApiError {
    let resource = match request.subresource {
        Some(subresource) => format!("{}/{subresource}", request.resource),
        None => request.resource.to_string(),
    };
    let scope = match request.namespace {
        Some(namespace) => format!("in the namespace {namespace:?}"),
        None => "at the cluster scope".to_string(),
    };
    let mut why = format!(
        "User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        request.verb, request.group
    );
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let qualified = if request.group.is_empty() {
        request.resource.to_string()
    } else {
        format!("{}.{}", request.resource, request.group)
    };
    let message = match request.name.filter(|name| !name.is_empty()) {
        Some(name) => format!("{qualified} {name:?} is forbidden: {why}"),
        None => format!("{qualified} is forbidden: {why}"),
    };
    ApiError::Forbidden {
        message,
        details: Some(serde_json::json!({
            "name": request.name.unwrap_or(""),
            "group": request.group,
            "kind": request.resource,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> User {
        User {
            name: format!("system:node:{name}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            token_generation: Some(1),
        }
    }

    fn request<'a>(
        verb: &'static str,
        (group, resource): (&'a str, &'a str),
        subresource: Option<&'a str>,
        namespace: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group,
            resource,
            subresource,
            namespace,
            name,
        }
    }

    fn allowed(decision: Decision) -> bool {
        matches!(decision, Decision::Allow)
    }

    #[test]
    fn a_node_reads_what_a_kubelet_reads_and_no_secrets() {
        let a = node("a");
        for resource in ["nodes", "pods", "services", "endpoints", "namespaces"] {
            for verb in ["get", "list", "watch"] {
                let attrs = request(verb, ("", resource), None, None, None);
                assert!(allowed(decide(&a, &attrs)), "{verb} {resource}");
            }
        }
        for resource in ["secrets", "configmaps", "serviceaccounts"] {
            let attrs = request("list", ("", resource), None, Some("kube-system"), None);
            assert!(!allowed(decide(&a, &attrs)), "{resource}");
        }
    }

    #[test]
    fn a_node_writes_only_its_own_node_and_lease() {
        let a = node("a");
        for (sub, verb) in [(None, "update"), (None, "patch"), (Some("status"), "patch")] {
            let own = request(verb, ("", "nodes"), sub, None, Some("a"));
            assert!(allowed(decide(&a, &own)), "{verb} {sub:?}");
            let other = request(verb, ("", "nodes"), sub, None, Some("b"));
            assert!(
                !allowed(decide(&a, &other)),
                "{verb} {sub:?} of another node"
            );
        }
        assert!(!allowed(decide(
            &a,
            &request("delete", ("", "nodes"), None, None, Some("b"))
        )));
        let lease = ("coordination.k8s.io", "leases");
        for verb in ["get", "update", "patch"] {
            let own = request(verb, lease, None, Some(NODE_LEASE_NAMESPACE), Some("a"));
            assert!(allowed(decide(&a, &own)), "{verb} own lease");
            let other = request(verb, lease, None, Some(NODE_LEASE_NAMESPACE), Some("b"));
            assert!(!allowed(decide(&a, &other)), "{verb} another lease");
        }
        let elsewhere = request("patch", lease, None, Some("kube-system"), Some("a"));
        assert!(!allowed(decide(&a, &elsewhere)));
        match decide(&a, &request("create", ("", "nodes"), None, None, None)) {
            Decision::CreateOnly(limit) => assert_eq!(limit.name, "a"),
            other => panic!("a node create is limited to its name: {other:?}"),
        }
    }

    #[test]
    fn rbac_and_secret_writes_are_forbidden_with_upstreams_message() {
        let a = node("a");
        let binding = request(
            "create",
            ("rbac.authorization.k8s.io", "clusterrolebindings"),
            None,
            None,
            None,
        );
        let Decision::Deny(reason) = decide(&a, &binding) else {
            panic!("a node cannot bind roles");
        };
        let error = forbidden(&a.name, &binding, reason);
        assert_eq!(error.status_code(), 403);
        assert_eq!(
            error.to_string(),
            "clusterrolebindings.rbac.authorization.k8s.io is forbidden: User \"system:node:a\" cannot create resource \"clusterrolebindings\" in API group \"rbac.authorization.k8s.io\" at the cluster scope"
        );
        let secret = request(
            "delete",
            ("", "secrets"),
            None,
            Some("kube-system"),
            Some("s"),
        );
        assert!(!allowed(decide(&a, &secret)));
        let lease = request(
            "patch",
            ("coordination.k8s.io", "leases"),
            None,
            Some(NODE_LEASE_NAMESPACE),
            Some("b"),
        );
        let Decision::Deny(reason) = decide(&a, &lease) else {
            panic!("another node's lease is forbidden");
        };
        assert_eq!(
            forbidden(&a.name, &lease, reason).to_string(),
            "leases.coordination.k8s.io \"b\" is forbidden: User \"system:node:a\" cannot patch resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\": can only access node lease with the same name as the requesting node"
        );
    }

    #[test]
    fn pod_status_and_deletes_wait_for_the_binding_and_events_are_open() {
        let a = node("a");
        let status = request(
            "patch",
            ("", "pods"),
            Some("status"),
            Some("default"),
            Some("p"),
        );
        assert!(matches!(decide(&a, &status), Decision::IfPodBound(node) if node == "a"));
        let spec = request("patch", ("", "pods"), None, Some("default"), Some("p"));
        assert!(
            !allowed(decide(&a, &spec)),
            "a pod's spec is not the node's"
        );
        let create = request("create", ("", "pods"), None, Some("default"), None);
        assert!(!allowed(decide(&a, &create)));
        for group in ["", "events.k8s.io"] {
            let event = request("create", (group, "events"), None, Some("default"), None);
            assert!(allowed(decide(&a, &event)), "events in {group:?}");
        }
    }

    #[test]
    fn a_nodes_group_member_without_a_node_name_may_only_read() {
        let nameless = User {
            name: "someone".into(),
            groups: vec!["system:nodes".into()],
            token_generation: Some(1),
        };
        assert!(allowed(decide(
            &nameless,
            &request("list", ("", "pods"), None, None, None)
        )));
        assert!(!allowed(decide(
            &nameless,
            &request("patch", ("", "nodes"), None, None, Some("someone"))
        )));
    }
}
