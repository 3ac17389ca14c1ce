//! The request metrics (`metrics.rs`): every request that authorization let through is
//! counted by verb, resource and status code once its response head is ready, timed unless
//! it is long-running, and counted in flight meanwhile. It sits outside the body limit,
//! max-in-flight and the request timeout, so their 408, 413, 429 and 504 answers are
//! counted like any other; a request whose client went away leaves the in-flight count
//! without being counted as answered.

use std::sync::Arc;

use axum::Extension;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use super::request_info::RequestInfo;

/// The layer.
pub async fn measure(
    Extension(info): Extension<Arc<RequestInfo>>,
    request: Request,
    next: Next,
) -> Response {
    let timer = info.labels.clone().start();
    let response = next.run(request).await;
    timer.finish(response.status());
    response
}
