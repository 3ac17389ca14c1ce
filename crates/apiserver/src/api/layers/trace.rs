//! One `tracing` span per request (tower-http's `TraceLayer`), named `request`, with the
//! method, path, Kubernetes verb and bounded resource when it starts, the user once
//! authentication accepted one (`auth.rs` records it), and the status and latency when the
//! response head is ready. Everything logged while the request is served (a failed
//! datastore call, a 5xx) carries these fields, and the span stays entered while a watch's
//! body streams.
//!
//! Nothing is logged per request at `info`: the span is only context. At `debug`
//! (`RUST_LOG=capstan_apiserver::api=debug`) one `served` line closes each request.
//! Failures are not logged here: `ApiError` logs 5xx answers where they are made.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing::field::Empty;

use super::request_info::RequestInfo;

/// The trace layer with Capstan's span and outcome.
pub type RequestTrace = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request) -> Span,
    (),
    fn(&Response, Duration, &Span),
    (),
    (),
    (),
>;

/// The layer.
pub fn layer() -> RequestTrace {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request) -> Span)
        .on_request(())
        .on_response(record_outcome as fn(&Response, Duration, &Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// The span of `request`; its user, status and latency are filled in later.
fn request_span(request: &Request) -> Span {
    let (verb, resource) = match request.extensions().get::<Arc<RequestInfo>>() {
        Some(info) => (info.labels.verb, info.labels.resource.as_str()),
        None => ("", ""),
    };
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        verb,
        resource,
        user = Empty,
        status = Empty,
        latency_ms = Empty,
    )
}

/// Records the status and latency on the request's span.
fn record_outcome(response: &Response, latency: Duration, span: &Span) {
    span.record("status", response.status().as_u16());
    span.record(
        "latency_ms",
        u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
    );
    tracing::debug!("served");
}

/// Records the authenticated user on the current request's span (called by
/// authentication, which runs inside it).
pub fn record_user(name: &str) {
    Span::current().record("user", name);
}
