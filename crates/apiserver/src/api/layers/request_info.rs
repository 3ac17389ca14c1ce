//! What a request is, worked out once from its method, path and query before any other
//! layer runs (kube-apiserver's `WithRequestInfo` filter): the route parsed against the
//! registry's catalog, the metric labels (verb and bounded resource), whether it is a
//! watch, and whether it is long-running. The layers after it and the dispatcher read the
//! [`RequestInfo`] extension instead of parsing the path again.
//!
//! Long-running is kube-apiserver's check (`BasicLongRunningRequestCheck` with the verbs
//! `watch` and `proxy` and the subresources `attach`, `exec`, `log`, `portforward` and
//! `proxy`): such requests are outside the max-in-flight budgets and the request timeout.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::api::metrics::RequestLabels;
use crate::api::path::{self, Route};
use crate::registry::{Catalog, Registry};

/// Subresources whose requests stream for as long as the client wants.
const LONG_RUNNING_SUBRESOURCES: &[&str] = &["attach", "exec", "log", "portforward", "proxy"];

/// A request, classified (see the module doc). Shared by the layers as an
/// `Arc<RequestInfo>` request extension.
#[derive(Debug)]
pub struct RequestInfo {
    /// Where the request goes.
    pub route: Route,
    /// The catalog `route` was parsed against (discovery answers from the same one).
    pub catalog: Arc<Catalog>,
    /// The metric labels: Kubernetes verb and bounded resource.
    pub labels: RequestLabels,
    /// A watch (`?watch=true` or the `/watch/` prefix).
    pub watch: bool,
    /// Exempt from max-in-flight and the request timeout.
    pub long_running: bool,
    /// Counted against the mutating budget (anything but GET, HEAD and OPTIONS), with its
    /// body read before it takes a slot.
    pub mutating: bool,
}

impl RequestInfo {
    /// Classifies `request` against `catalog`.
    pub fn of(request: &Request, catalog: Arc<Catalog>) -> RequestInfo {
        let route = path::parse(request.uri().path(), &catalog);
        let watch = is_watch(request, &route);
        let long_running = watch
            || matches!(&route, Route::Resource(target)
                if target.subresource.as_deref().is_some_and(|sub| LONG_RUNNING_SUBRESOURCES.contains(&sub)));
        let labels = RequestLabels::new(request.method(), &route, watch);
        RequestInfo {
            route,
            catalog,
            labels,
            watch,
            long_running,
            mutating: is_mutating(request.method()),
        }
    }

    /// Whether this is a health check (`/livez`, `/readyz`, `/healthz`): served even when
    /// the server is full, so a busy server still says whether it is alive.
    pub fn is_health(&self) -> bool {
        matches!(self.route, Route::Health(_))
    }
}

/// Whether kube-apiserver counts a request with `method` against the mutating budget.
fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `request` to `route` is a watch.
fn is_watch(request: &Request, route: &Route) -> bool {
    match route {
        Route::Resource(target) => {
            target.watch_prefix
                || request.uri().query().is_some_and(|query| {
                    query
                        .split('&')
                        .any(|pair| matches!(pair, "watch=true" | "watch=1" | "watch=True"))
                })
        }
        _ => false,
    }
}

/// The layer: attaches the [`RequestInfo`].
pub async fn resolve(
    State(registry): State<Arc<Registry>>,
    mut request: Request,
    next: Next,
) -> Response {
    let info = RequestInfo::of(&request, registry.catalog());
    request.extensions_mut().insert(Arc::new(info));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, uri: &str) -> RequestInfo {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(axum::body::Body::empty())
            .expect("a valid request");
        RequestInfo::of(&request, Registry::new().catalog())
    }

    #[test]
    fn watches_and_streaming_subresources_are_long_running() {
        let watch = info(Method::GET, "/api/v1/namespaces/a/pods?watch=true");
        assert!(watch.watch && watch.long_running);
        assert_eq!(watch.labels.verb, "watch");
        let prefixed = info(Method::GET, "/api/v1/watch/namespaces/a/pods");
        assert!(prefixed.watch && prefixed.long_running);
        for sub in ["exec", "attach", "log", "portforward", "proxy"] {
            let streaming = info(Method::GET, &format!("/api/v1/namespaces/a/pods/x/{sub}"));
            assert!(streaming.long_running && !streaming.watch, "{sub}");
        }
        for ordinary in [
            "/api/v1/namespaces/a/pods",
            "/api/v1/namespaces/a/pods/x",
            "/api/v1/namespaces/a/pods/x/status",
            "/api/v1/namespaces/a/pods?watch=false",
            "/readyz",
            "/apis",
        ] {
            assert!(!info(Method::GET, ordinary).long_running, "{ordinary}");
        }
    }

    #[test]
    fn reads_and_writes_are_told_apart_and_health_checks_known() {
        assert!(!info(Method::GET, "/api/v1/namespaces/a/pods").mutating);
        assert!(!info(Method::HEAD, "/api/v1/namespaces/a/pods").mutating);
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(info(method, "/api/v1/namespaces/a/pods/x").mutating);
        }
        assert!(info(Method::GET, "/readyz").is_health());
        assert!(info(Method::GET, "/livez/ping").is_health());
        assert!(!info(Method::GET, "/version").is_health());
    }
}
