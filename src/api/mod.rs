//! The Kubernetes API over HTTPS (ARCHITECTURE.md `api/`): one axum router whose fallback
//! parses every path against the registry (`path.rs`), so the REST logic is written once
//! for all kinds (`rest.rs`, `watch.rs`), and cross-cutting concerns (authentication,
//! authorization, max-in-flight) are layers around it. Every request is measured once, in
//! [`dispatch`], from the parsed route (`metrics.rs`).

pub mod auth;
pub mod authz;
pub mod body;
pub mod discovery;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod path;
pub mod protobuf;
mod rest;
pub mod selector;
pub mod table;
pub mod tls;
mod validation;
mod watch;

use std::sync::Arc;

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
    /// The max-in-flight budget: requests served at once (watches excluded, they are
    /// long-running), over which the server answers 429 with Retry-After, as
    /// kube-apiserver's max-in-flight filter does.
    pub in_flight: Semaphore,
}

impl ApiState {
    /// State over `objects` and `registry`.
    pub fn new(
        objects: ObjectStore,
        registry: Arc<Registry>,
        token_generation: tokio::sync::watch::Receiver<i64>,
        server_address: String,
        shutdown: CancellationToken,
        max_in_flight: usize,
    ) -> ApiState {
        ApiState {
            objects,
            registry,
            token_generation,
            server_address,
            shutdown,
            in_flight: Semaphore::new(max_in_flight.max(1)),
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
    let _permit = if long_running {
        None
    } else {
        match state.in_flight.try_acquire() {
            Ok(permit) => Some(permit),
            Err(_) => {
                let response = ApiError::TooManyRequests.into_response();
                timer.finish(response.status());
                return response;
            }
        }
    };
    let method = request.method().clone();
    let result = match route {
        Route::Resource(target) => rest::handle(state.clone(), target, request).await,
        Route::Health(check) => Ok(health(&state, check).await),
        _ if method != Method::GET => Err(ApiError::MethodNotAllowed),
        Route::Version => Ok(json_response(&version())),
        Route::Metrics => Ok(metrics()),
        Route::NotFound => Err(ApiError::NoSuchPath),
        other => rest::discovery(&state, &catalog, other, request.headers()),
    };
    let response = result.unwrap_or_else(IntoResponse::into_response);
    timer.finish(response.status());
    response
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

fn metrics() -> Response {
    use prometheus::Encoder as _;
    let encoder = prometheus::TextEncoder::new();
    let mut buffer = Vec::new();
    match encoder.encode(&prometheus::gather(), &mut buffer) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buffer,
        )
            .into_response(),
        Err(error) => ApiError::Internal(error.to_string()).into_response(),
    }
}
