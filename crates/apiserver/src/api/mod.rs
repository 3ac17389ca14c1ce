//! The Kubernetes API over HTTPS (ARCHITECTURE.md `api/`): one axum router whose fallback
//! parses every path against the registry (`path.rs`), so the REST logic is written once
//! for all kinds (`rest.rs`, `watch.rs`), and cross-cutting concerns (authentication,
//! authorization, max-in-flight) are layers around it. Every request is measured once, in
//! [`dispatch`], from the parsed route (`metrics.rs`).
//!
//! Max-in-flight follows kube-apiserver: two budgets, one for read-only requests and one
//! for mutating ones, watches and health checks outside both (a full server still answers
//! `/readyz`). A request's body is read before it takes a slot, within the body timeout
//! and the size limit, so clients trickling bodies in hold no slot; connection-level limits
//! (caps, handshake, header and idle timeouts) are the listener's (`connections.rs`).

pub mod auth;
pub mod authz;
pub mod body;
pub mod connections;
pub mod discovery;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod path;
pub mod protobuf;
mod rest;
pub mod table;
pub mod tls;
mod validation;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::registry::{ObjectStore, Registry};
use error::ApiError;
use path::{HealthCheck, Route};

/// The Kubernetes version this server speaks.
pub const KUBERNETES_MINOR: &str = "37";

/// What every request handler shares.
pub struct ApiState {
    /// Objects, with Kubernetes semantics.
    pub objects: ObjectStore,
    /// The served kinds.
    pub registry: Arc<Registry>,
    /// The cluster token's generation, followed from the datastore: node certificates of
    /// an earlier one are refused (`auth.rs`).
    pub token_generation: tokio::sync::watch::Receiver<i64>,
    /// `host:port` clients reach this server at (for `/api`).
    pub server_address: String,
    /// Cancelled at shutdown: watches end.
    pub shutdown: CancellationToken,
    /// The max-in-flight budget of read-only requests (watches excluded, they are
    /// long-running), over which the server answers 429 with Retry-After, as
    /// kube-apiserver's max-in-flight filter does.
    pub in_flight: Semaphore,
    /// The max-in-flight budget of mutating requests.
    pub mutating_in_flight: Semaphore,
    /// How long a request body may take to arrive (`None`: no limit).
    pub body_timeout: Option<Duration>,
    /// This server's own metrics (the datastore's), served at `/metrics` beside the
    /// process-global registry's.
    pub metrics: prometheus::Registry,
}

/// The request-level limits (the server flags of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// `--max-requests-inflight`: read-only requests served at once.
    pub max_requests_inflight: usize,
    /// `--max-mutating-requests-inflight`: mutating requests served at once.
    pub max_mutating_requests_inflight: usize,
    /// `--request-body-timeout-seconds`; `None` for no limit.
    pub body_timeout: Option<Duration>,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            body_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl ApiState {
    /// State over `objects` and `registry`; `/metrics` serves `metrics` and the
    /// process-global registry.
    pub fn new(
        objects: ObjectStore,
        registry: Arc<Registry>,
        token_generation: tokio::sync::watch::Receiver<i64>,
        server_address: String,
        shutdown: CancellationToken,
        limits: RequestLimits,
        metrics: prometheus::Registry,
    ) -> ApiState {
        ApiState {
            objects,
            registry,
            token_generation,
            server_address,
            shutdown,
            in_flight: Semaphore::new(limits.max_requests_inflight.max(1)),
            mutating_in_flight: Semaphore::new(limits.max_mutating_requests_inflight.max(1)),
            body_timeout: limits.body_timeout,
            metrics,
        }
    }
}

/// The router: authentication, then authorization, around the dispatcher.
pub fn router(state: Arc<ApiState>) -> Router {
    metrics::touch();
    Router::new()
        .fallback(dispatch)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authz::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}

async fn dispatch(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    let catalog = state.registry.catalog();
    let route = path::parse(request.uri().path(), &catalog);
    let long_running = matches!(&route, Route::Resource(_)) && watch::is_watch(&request, &route);
    let timer = metrics::RequestLabels::new(request.method(), &route, long_running).start();
    if let Route::Health(check) = route {
        // Outside max-in-flight: a busy server must still say whether it is alive.
        let response = health(&state, check).await;
        timer.finish(response.status());
        return response;
    }
    let method = request.method().clone();
    let mutating = is_mutating(&method);
    let request = if mutating {
        match read_body_first(&state, request).await {
            Ok(request) => request,
            Err(response) => {
                timer.finish(response.status());
                return response;
            }
        }
    } else {
        request
    };
    let budget = if mutating {
        &state.mutating_in_flight
    } else {
        &state.in_flight
    };
    let _permit = if long_running {
        None
    } else {
        match budget.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let response = ApiError::TooManyRequests.into_response();
                timer.finish(response.status());
                return response;
            }
        }
    };
    let result = match route {
        Route::Resource(target) => rest::handle(state.clone(), target, request).await,
        _ if method != Method::GET => Err(ApiError::MethodNotAllowed),
        Route::Version => Ok(json_response(&version())),
        Route::Metrics => Ok(metrics(&state.metrics)),
        Route::NotFound => Err(ApiError::NoSuchPath),
        other => rest::discovery(&state, &catalog, other, request.headers()),
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    timer.finish(response.status());
    response
}

/// Whether kube-apiserver counts a request with `method` against the mutating budget.
fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `request` with its body read in full (within the body timeout and the size limit), so
/// the handler after it neither waits for the client nor holds a slot while it does. A body
/// too slow is answered 408, and an HTTP/1.1 connection is closed: what is left of the body
/// may still be on its way.
async fn read_body_first(state: &ApiState, request: Request) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let read = body::read_body(&parts.headers, body);
    let read = match state.body_timeout {
        Some(timeout) => tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| timeout),
        None => Ok(read.await),
    };
    match read {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
        Ok(Err(error)) => Err(error.into_response()),
        Err(timeout) => {
            let mut response = ApiError::BodyTimeout(timeout.as_secs()).into_response();
            if parts.version < axum::http::Version::HTTP_2 {
                response.headers_mut().insert(
                    header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            Err(response)
        }
    }
}

fn json_response(value: &serde_json::Value) -> Response {
    body::respond(StatusCode::OK, value, body::BodyFormat::Json)
}

/// `/version`.
pub fn version() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0+capstan.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }),
    })
}

async fn health(state: &ApiState, check: HealthCheck) -> Response {
    if check == HealthCheck::Live {
        return (StatusCode::OK, "ok").into_response();
    }
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.objects.storage().store().current_revision(),
    )
    .await;
    match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ok").into_response(),
        Ok(Err(error)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]datastore failed: {error}\nreadyz check failed"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "[-]datastore failed: no answer within 5s\nreadyz check failed",
        )
            .into_response(),
    }
}

/// The process-global families and the server's own, in one exposition sorted by name.
fn metrics(own: &prometheus::Registry) -> Response {
    use prometheus::Encoder as _;
    let encoder = prometheus::TextEncoder::new();
    let mut families = prometheus::gather();
    families.extend(own.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut buffer = Vec::new();
    match encoder.encode(&families, &mut buffer) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buffer,
        )
            .into_response(),
        Err(error) => ApiError::Internal(error.to_string()).into_response(),
    }
}
