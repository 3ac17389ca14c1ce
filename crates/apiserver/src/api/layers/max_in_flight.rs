//! Max-in-flight, as kube-apiserver's `WithMaxInFlightLimit`: two budgets, one for
//! read-only requests (`--max-requests-inflight`) and one for mutating ones
//! (`--max-mutating-requests-inflight`). A request over its budget is answered 429 with
//! `Retry-After: 1` at once, never queued. Long-running requests (watches) and health
//! checks are outside both: a full server still answers `/readyz`.
//!
//! A slot is held while the layers inside run (the request timeout, the handler), and given
//! back when their future ends, answered or dropped: a request the timeout cut off frees
//! its slot at once.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::request_info::RequestInfo;
use crate::api::error::ApiError;

/// The two budgets.
#[derive(Debug)]
pub struct InFlight {
    reads: Semaphore,
    mutating: Semaphore,
}

impl InFlight {
    /// Budgets of `reads` read-only and `mutating` mutating requests (at least one each).
    pub fn new(reads: usize, mutating: usize) -> InFlight {
        InFlight {
            reads: Semaphore::new(reads.max(1)),
            mutating: Semaphore::new(mutating.max(1)),
        }
    }
}

/// The layer: runs the request in a slot of its budget, or answers 429.
pub async fn limit(
    State(in_flight): State<Arc<InFlight>>,
    Extension(info): Extension<Arc<RequestInfo>>,
    request: Request,
    next: Next,
) -> Response {
    if info.long_running || info.is_health() {
        return next.run(request).await;
    }
    let budget = if info.mutating {
        &in_flight.mutating
    } else {
        &in_flight.reads
    };
    match budget.try_acquire() {
        Ok(_slot) => next.run(request).await,
        Err(_) => ApiError::TooManyRequests.into_response(),
    }
}
