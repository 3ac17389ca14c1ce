//! The Kubernetes API over HTTPS (ARCHITECTURE.md `api/`): one axum router whose fallback
//! parses every path against the registry (`path.rs`), so the REST logic is written once
//! for all kinds (`rest/`), and cross-cutting concerns are tower layers around it
//! (`layers/`: request info, tracing, authentication, authorization, metrics, the body
//! limit, max-in-flight and the request timeout, in that order).

pub mod auth;
pub mod authz;
pub mod body;
pub mod connections;
pub mod discovery;
pub mod error;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod path;
pub mod protobuf;
mod rest;
pub mod table;
pub mod tls;
mod validation;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::registry::{ObjectStore, Registry};
use error::ApiError;
use layers::max_in_flight::InFlight;
use layers::read_body::BodyTimeout;
use layers::request_info::RequestInfo;
use layers::timeout::RequestTimeout;
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
    /// The request-level limits, enforced by the layers of [`router`].
    pub limits: RequestLimits,
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
    /// `--request-timeout`: how long a request that is not long-running may take.
    pub request_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            body_timeout: Some(Duration::from_secs(60)),
            request_timeout: Duration::from_secs(60),
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
            limits,
            metrics,
        }
    }
}

/// The router: the layers of `layers/` around the dispatcher, outermost first. The
/// max-in-flight budgets belong to the router: build one per server.
pub fn router(state: Arc<ApiState>) -> Router {
    metrics::touch();
    let limits = &state.limits;
    let in_flight = Arc::new(InFlight::new(
        limits.max_requests_inflight,
        limits.max_mutating_requests_inflight,
    ));
    let stack = ServiceBuilder::new()
        .layer(from_fn_with_state(
            state.registry.clone(),
            layers::request_info::resolve,
        ))
        .layer(layers::trace::layer())
        .layer(from_fn_with_state(state.clone(), auth::authenticate))
        .layer(from_fn_with_state(state.clone(), authz::authorize))
        .layer(from_fn(layers::measure::measure))
        .layer(from_fn_with_state(
            BodyTimeout(limits.body_timeout),
            layers::read_body::read_first,
        ))
        .layer(from_fn_with_state(in_flight, layers::max_in_flight::limit))
        .layer(from_fn_with_state(
            RequestTimeout(limits.request_timeout),
            layers::timeout::enforce,
        ));
    Router::new()
        .fallback(dispatch)
        .layer(stack)
        .with_state(state)
}

/// Routes a request the layers let through.
async fn dispatch(
    State(state): State<Arc<ApiState>>,
    Extension(info): Extension<Arc<RequestInfo>>,
    request: Request,
) -> Response {
    let result = match &info.route {
        Route::Health(check) => Ok(health(&state, *check).await),
        Route::Resource(target) => rest::handle(state.clone(), target.clone(), request).await,
        _ if request.method() != Method::GET => Err(ApiError::MethodNotAllowed),
        Route::Version => Ok(json_response(&version())),
        Route::Metrics => Ok(metrics(&state.metrics)),
        Route::NotFound => Err(ApiError::NoSuchPath),
        other => rest::discovery(&state, &info.catalog, other.clone(), request.headers()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
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
