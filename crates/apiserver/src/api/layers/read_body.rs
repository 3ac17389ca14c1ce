//! The body limit: a mutating request's body is read in full here, before the request
//! takes an in-flight slot, within `--request-body-timeout-seconds` and the 3 MiB limit
//! (`body::read_body`, which drains an oversized body up to a bound so an HTTP/1.1 client
//! still sending sees the 413 instead of a reset). The handlers after it neither wait for
//! the client nor hold a slot while it trickles a body in.
//!
//! A body too slow is answered 408 `Timeout`, and an HTTP/1.1 connection is closed: what is
//! left of the body may still be on its way. A body too large is answered 413
//! `RequestEntityTooLarge`. Read-only requests and health checks pass untouched.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::request_info::RequestInfo;
use crate::api::body::read_body;
use crate::api::error::ApiError;

/// `--request-body-timeout-seconds`; `None` for no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub Option<Duration>);

/// The layer: passes a mutating request on with its body read, or answers 408 or 413.
pub async fn read_first(
    State(BodyTimeout(timeout)): State<BodyTimeout>,
    Extension(info): Extension<Arc<RequestInfo>>,
    request: Request,
    next: Next,
) -> Response {
    if !info.mutating || info.is_health() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let read = read_body(&parts.headers, body);
    let read = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| timeout),
        None => Ok(read.await),
    };
    match read {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(error)) => error.into_response(),
        Err(timeout) => {
            let mut response = ApiError::BodyTimeout(timeout.as_secs()).into_response();
            if parts.version < Version::HTTP_2 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}
