//! API request metrics, registered next to the dispatcher that records them (Prometheus
//! default registry, served at `/metrics`).
//!
//! Labels follow kube-apiserver's `apiserver_request_total`: the verb as Kubernetes names
//! it, the resource's plural (with the subresource: `pods/status`), and the status code.
//! Every label value comes from a fixed set or from the registry's catalog, never from the
//! raw path, a name or a namespace, so the number of series stays bounded whatever clients
//! send: unknown paths are all `resource=""`, unknown subresources `<plural>/other`,
//! unknown methods `verb="other"`.
//!
//! Watches are long-running: they are counted when the stream starts, tracked by the
//! `capstan_apiserver_watchers` gauge while open, and left out of the latency histogram
//! and the in-flight gauge (as kube-apiserver leaves long-running requests out of both).

use std::sync::LazyLock;
use std::time::Instant;

use axum::http::{Method, StatusCode};
use prometheus::{
    HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, register_histogram_vec,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
};

use super::path::Route;

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "capstan_apiserver_requests_total",
        "API requests by verb, resource and HTTP status code (watches counted when the stream starts).",
        &["verb", "resource", "code"]
    )
    .expect("api metric names are registered once")
});

static REQUEST_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "capstan_apiserver_request_duration_seconds",
        "Latency of API requests by verb and resource, until the response head is ready (watches excluded).",
        &["verb", "resource"],
        vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
        ]
    )
    .expect("api metric names are registered once")
});

static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "capstan_apiserver_requests_in_flight",
        "API requests being served now, watches excluded (health checks and requests whose body is still arriving included; the max-in-flight limits count neither)."
    )
    .expect("api metric names are registered once")
});

static WATCHERS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "capstan_apiserver_watchers",
        "Watch streams open on this server, by resource.",
        &["resource"]
    )
    .expect("api metric names are registered once")
});

static WATCH_EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "capstan_apiserver_watch_events_sent_total",
        "Watch events written to clients (initial ADDED events, changes, bookmarks and errors), by resource.",
        &["resource"]
    )
    .expect("api metric names are registered once")
});

/// Subresources that keep their name in the `resource` label; any other is `other`.
const KNOWN_SUBRESOURCES: &[&str] = &[
    "status",
    "scale",
    "binding",
    "finalize",
    "approval",
    "eviction",
    "ephemeralcontainers",
    "resize",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "token",
];

/// The labels of one request, fixed once its route is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLabels {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete,
    /// deletecollection, or `other` for methods the API does not serve.
    pub verb: &'static str,
    /// The resource's plural with its subresource, or the class of a non-resource path.
    pub resource: String,
    long_running: bool,
}

impl RequestLabels {
    /// The labels for a request with `method` to `route`; `watching` when it asks for a
    /// watch (the long-running case).
    pub fn new(method: &Method, route: &Route, watching: bool) -> RequestLabels {
        let resource = resource_label(route);
        let verb = match route {
            Route::Resource(target) => {
                let named = target.name.is_some();
                match *method {
                    Method::GET if watching => "watch",
                    Method::GET | Method::HEAD if named => "get",
                    Method::GET | Method::HEAD => "list",
                    Method::POST => "create",
                    Method::PUT => "update",
                    Method::PATCH => "patch",
                    Method::DELETE if named => "delete",
                    Method::DELETE => "deletecollection",
                    _ => "other",
                }
            }
            _ => match *method {
                Method::GET | Method::HEAD => "get",
                Method::POST => "create",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "other",
            },
        };
        RequestLabels {
            verb,
            resource,
            long_running: watching,
        }
    }

    /// Starts measuring a request: counts it in flight (unless long-running) until the
    /// returned timer is finished or dropped.
    pub fn start(self) -> RequestTimer {
        if !self.long_running {
            IN_FLIGHT.inc();
        }
        RequestTimer {
            labels: self,
            started: Instant::now(),
            finished: false,
        }
    }
}

/// One request being measured (see [`RequestLabels::start`]).
#[derive(Debug)]
pub struct RequestTimer {
    labels: RequestLabels,
    started: Instant,
    finished: bool,
}

impl RequestTimer {
    /// Records the request's outcome: its count by `status` and, unless long-running,
    /// its latency.
    pub fn finish(mut self, status: StatusCode) {
        let labels = &self.labels;
        REQUESTS
            .with_label_values(&[labels.verb, labels.resource.as_str(), status.as_str()])
            .inc();
        if !labels.long_running {
            REQUEST_SECONDS
                .with_label_values(&[labels.verb, labels.resource.as_str()])
                .observe(self.started.elapsed().as_secs_f64());
        }
        self.release();
    }

    fn release(&mut self) {
        if !self.finished && !self.labels.long_running {
            IN_FLIGHT.dec();
        }
        self.finished = true;
    }
}

impl Drop for RequestTimer {
    /// A request whose handler was cancelled (client gone) leaves the in-flight count
    /// without being counted as answered.
    fn drop(&mut self) {
        self.release();
    }
}

/// The `resource` label of `route`: bounded (see the module doc).
pub fn resource_label(route: &Route) -> String {
    match route {
        Route::Resource(target) => match target.subresource.as_deref() {
            None => target.kind.resource.clone(),
            Some(sub) if KNOWN_SUBRESOURCES.contains(&sub) => {
                format!("{}/{sub}", target.kind.resource)
            }
            Some(_) => format!("{}/other", target.kind.resource),
        },
        Route::Version => "version".to_string(),
        Route::Health(_) => "health".to_string(),
        Route::LegacyRoot | Route::GroupsRoot | Route::Group(_) | Route::GroupVersion(..) => {
            "discovery".to_string()
        }
        Route::OpenApiV2 | Route::OpenApiV3Index | Route::OpenApiV3(_) => "openapi".to_string(),
        Route::Metrics => "metrics".to_string(),
        Route::NotFound => String::new(),
    }
}

/// One open watch stream: counted in `capstan_apiserver_watchers` while it lives.
#[derive(Debug)]
pub struct WatcherGauge {
    resource: String,
}

impl WatcherGauge {
    /// Counts a watch on `resource` (a plural) as open.
    pub fn open(resource: &str) -> WatcherGauge {
        WATCHERS.with_label_values(&[resource]).inc();
        WatcherGauge {
            resource: resource.to_string(),
        }
    }

    /// Counts one event written to this watch's client.
    pub fn event_sent(&self) {
        WATCH_EVENTS
            .with_label_values(&[self.resource.as_str()])
            .inc();
    }
}

impl Drop for WatcherGauge {
    fn drop(&mut self) {
        WATCHERS.with_label_values(&[self.resource.as_str()]).dec();
    }
}

/// Registers every API family so `/metrics` shows it from the start, before the first
/// request of each kind.
pub fn touch() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_SECONDS);
    LazyLock::force(&IN_FLIGHT);
    LazyLock::force(&WATCHERS);
    LazyLock::force(&WATCH_EVENTS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::path;
    use crate::registry::Registry;

    fn labels(method: Method, uri: &str, watching: bool) -> RequestLabels {
        let route = path::parse(uri, &Registry::new().catalog());
        RequestLabels::new(&method, &route, watching)
    }

    #[test]
    fn verbs_are_named_as_kubernetes_names_them() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/configmaps/x",
                false,
                "get",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/configmaps",
                false,
                "list",
            ),
            (Method::GET, "/api/v1/configmaps", true, "watch"),
            (
                Method::POST,
                "/api/v1/namespaces/a/configmaps",
                false,
                "create",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/a/configmaps/x",
                false,
                "update",
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/a/pods/x/status",
                false,
                "patch",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/pods/x",
                false,
                "delete",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/pods",
                false,
                "deletecollection",
            ),
            (Method::OPTIONS, "/api/v1/namespaces/a/pods", false, "other"),
        ];
        for (method, uri, watching, verb) in cases {
            assert_eq!(labels(method, uri, watching).verb, verb, "{uri}");
        }
    }

    #[test]
    fn label_values_stay_bounded_whatever_the_path() {
        let resource = |uri: &str| labels(Method::GET, uri, false).resource;
        assert_eq!(
            resource("/api/v1/namespaces/a/pods/x/status"),
            "pods/status"
        );
        assert_eq!(
            resource("/apis/apps/v1/namespaces/a/deployments/web/scale"),
            "deployments/scale"
        );
        assert_eq!(resource("/api/v1/namespaces/a/configmaps/x"), "configmaps");
        // Names, namespaces and made-up subresources never reach a label.
        assert_eq!(
            resource("/api/v1/namespaces/a/pods/x/made-up-9f2c"),
            "pods/other"
        );
        assert_eq!(
            resource("/api/v1/namespaces/ns-8431/configmaps/name-77"),
            "configmaps"
        );
        for unknown in [
            "/no/such/path/1234",
            "/api/v1/widgets-5521",
            "/apis/example.com/v9/things/abc",
            "/favicon.ico",
        ] {
            assert_eq!(resource(unknown), "", "{unknown}");
        }
        assert_eq!(resource("/apis/apps/v1"), "discovery");
        assert_eq!(resource("/openapi/v3/apis/apps/v1"), "openapi");
        assert_eq!(resource("/readyz/etcd"), "health");
        let strange = labels(
            Method::from_bytes(b"BREW").expect("a valid token"),
            "/x",
            false,
        );
        assert_eq!(strange.verb, "other");
    }

    #[test]
    fn watches_stay_out_of_in_flight_and_latency() {
        touch();
        let watch = labels(Method::GET, "/api/v1/namespaces/w/secrets", true);
        assert!(watch.long_running);
        watch.start().finish(StatusCode::OK);
        assert_eq!(
            REQUEST_SECONDS
                .with_label_values(&["watch", "secrets"])
                .get_sample_count(),
            0
        );
        assert!(
            REQUESTS
                .with_label_values(&["watch", "secrets", "200"])
                .get()
                >= 1
        );
    }
}
