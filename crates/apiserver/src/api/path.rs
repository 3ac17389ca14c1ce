//! URL paths of the Kubernetes API, parsed once into a [`Route`]. Resource paths are
//! parsed against the catalog (`/api/v1/namespaces/x/finalize` is a namespace's
//! subresource, `/api/v1/namespaces/x/pods` a list of pods).

use std::sync::Arc;

use crate::registry::{Catalog, ResourceType};

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// `/version`.
    Version,
    /// `/livez`, `/readyz`, `/healthz` (and their `/…/<check>` forms).
    Health(HealthCheck),
    /// `/api`.
    LegacyRoot,
    /// `/apis`.
    GroupsRoot,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`.
    GroupVersion(String, String),
    /// `/openapi/v2`.
    OpenApiV2,
    /// `/openapi/v3`.
    OpenApiV3Index,
    /// `/openapi/v3/<api/v1 | apis/g/v>`.
    OpenApiV3(String),
    /// `/metrics`.
    Metrics,
    /// A resource, collection or subresource.
    Resource(ResourcePath),
    /// Nothing here.
    NotFound,
}

/// Which health endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheck {
    /// The process runs.
    Live,
    /// The process serves (the datastore answers).
    Ready,
    /// Legacy `/healthz`: like ready.
    Healthz,
}

/// A parsed resource path.
#[derive(Debug, Clone)]
pub struct ResourcePath {
    /// The kind served there.
    pub kind: Arc<ResourceType>,
    /// The namespace in the path, for namespaced kinds (`None` for all namespaces).
    pub namespace: Option<String>,
    /// The object's name, absent for collections.
    pub name: Option<String>,
    /// The subresource (`status`, `scale`, `binding`, `finalize`).
    pub subresource: Option<String>,
    /// The legacy `/watch/` prefix was used.
    pub watch_prefix: bool,
}

/// Parses `path` against `catalog`. Each segment is percent-decoded after the path is split,
/// as Go's net/http does before kube-apiserver sees it: clients escape `:` in names such as
/// `system:node` (`capstan%3Anode`), and an escaped `/` stays inside its segment.
pub fn parse(path: &str, catalog: &Catalog) -> Route {
    let trimmed = path.trim_end_matches('/');
    let mut decoded = Vec::new();
    for segment in trimmed.split('/').skip(1) {
        match percent_encoding::percent_decode_str(segment).decode_utf8() {
            Ok(text) => decoded.push(text),
            Err(_) => return Route::NotFound,
        }
    }
    let segments: Vec<&str> = decoded.iter().map(|s| s.as_ref()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["livez", ..] => Route::Health(HealthCheck::Live),
        ["readyz", ..] => Route::Health(HealthCheck::Ready),
        ["healthz", ..] => Route::Health(HealthCheck::Healthz),
        ["metrics"] => Route::Metrics,
        ["api"] => Route::LegacyRoot,
        ["apis"] => Route::GroupsRoot,
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Index,
        ["openapi", "v3", rest @ ..] if !rest.is_empty() => Route::OpenApiV3(rest.join("/")),
        ["api", version] => Route::GroupVersion(String::new(), (*version).to_string()),
        ["apis", group] => Route::Group((*group).to_string()),
        ["apis", group, version] => {
            Route::GroupVersion((*group).to_string(), (*version).to_string())
        }
        ["api", version, rest @ ..] => resource(catalog, "", version, rest),
        ["apis", group, version, rest @ ..] => resource(catalog, group, version, rest),
        _ => Route::NotFound,
    }
}

fn resource(catalog: &Catalog, group: &str, version: &str, rest: &[&str]) -> Route {
    let (watch_prefix, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let found = |resource: &str| catalog.lookup(group, version, resource);
    let build = |kind: Arc<ResourceType>,
                 namespace: Option<&str>,
                 name: Option<&str>,
                 sub: Option<&str>| {
        Route::Resource(ResourcePath {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
            watch_prefix,
        })
    };
    match rest {
        // A namespace's own subresource (`namespaces/x/status`) unless a namespaced kind
        // of that name exists (`namespaces/x/pods`).
        ["namespaces", name, sub] if found(sub).is_none_or(|k| !k.namespaced) => {
            match found("namespaces") {
                Some(kind) => build(kind, None, Some(name), Some(sub)),
                None => Route::NotFound,
            }
        }
        ["namespaces", namespace, resource, tail @ ..] => match found(resource) {
            Some(kind) if kind.namespaced => match tail {
                [] => build(kind, Some(namespace), None, None),
                [name] => build(kind, Some(namespace), Some(name), None),
                [name, sub] => build(kind, Some(namespace), Some(name), Some(sub)),
                _ => Route::NotFound,
            },
            _ => Route::NotFound,
        },
        [resource, tail @ ..] => match found(resource) {
            Some(kind) => match tail {
                [] => build(kind, None, None, None),
                [name] if !kind.namespaced => build(kind, None, Some(name), None),
                [name, sub] if !kind.namespaced => build(kind, None, Some(name), Some(sub)),
                _ => Route::NotFound,
            },
            None => Route::NotFound,
        },
        [] => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn route(path: &str) -> Route {
        parse(path, &Registry::new().catalog())
    }

    #[test]
    fn resource_paths_name_kind_namespace_name_and_subresource() {
        let Route::Resource(p) = route("/apis/apps/v1/namespaces/default/deployments/web/scale")
        else {
            panic!("not a resource")
        };
        assert_eq!(p.kind.kind, "Deployment");
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("scale"));

        let Route::Resource(p) = route("/api/v1/namespaces/kube-system/finalize") else {
            panic!("not a resource")
        };
        assert_eq!(p.kind.kind, "Namespace");
        assert_eq!(p.name.as_deref(), Some("kube-system"));
        assert_eq!(p.subresource.as_deref(), Some("finalize"));

        let Route::Resource(p) = route("/api/v1/namespaces/x/pods") else {
            panic!("not a resource")
        };
        assert_eq!(p.kind.kind, "Pod");
        assert!(p.name.is_none());

        let Route::Resource(p) = route("/api/v1/watch/namespaces/x/configmaps") else {
            panic!("not a resource")
        };
        assert!(p.watch_prefix);
        assert!(matches!(route("/api/v1/widgets"), Route::NotFound));
        assert!(
            matches!(route("/api/v1/configmaps/x"), Route::NotFound),
            "namespaced kind without namespace"
        );
    }

    #[test]
    fn escaped_segments_are_decoded_after_the_path_is_split() {
        let Route::Resource(p) =
            route("/apis/rbac.authorization.k8s.io/v1/clusterroles/capstan%3Anode")
        else {
            panic!("not a resource")
        };
        assert_eq!(p.name.as_deref(), Some("capstan:node"));
        let Route::Resource(p) = route("/api/v1/namespaces/a%2Fb/configmaps/c") else {
            panic!("not a resource")
        };
        assert_eq!(
            p.namespace.as_deref(),
            Some("a/b"),
            "an escaped / stays in its segment"
        );
        assert!(matches!(
            route("/api/v1/namespaces/%ff/configmaps"),
            Route::NotFound
        ));
    }
}
