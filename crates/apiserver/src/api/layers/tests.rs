//! The limits of the stack working together, around a handler that never answers (a
//! datastore that froze): the timeout answers 504 and drops the handler, which frees its
//! in-flight slot; watches are not cut; a request over the budget is 429 meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use tower::{ServiceBuilder, ServiceExt as _};

use super::max_in_flight::{self, InFlight};
use super::request_info;
use super::timeout::{self, RequestTimeout};
use crate::registry::Registry;

const TIMEOUT: Duration = Duration::from_millis(300);

/// Counts the handler futures alive.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: &Arc<AtomicUsize>) -> Alive {
        count.fetch_add(1, Ordering::SeqCst);
        Alive(count.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stack of one read slot and [`TIMEOUT`] around a handler that hangs, except for
/// watches, which answer after twice the timeout.
fn stack(alive: &Arc<AtomicUsize>) -> Router {
    let alive = alive.clone();
    let handler = move |request: Request| {
        let alive = Alive::new(&alive);
        async move {
            let _alive = alive;
            if request.uri().query() == Some("watch=true") {
                tokio::time::sleep(TIMEOUT * 2).await;
                return StatusCode::OK.into_response();
            }
            std::future::pending::<Response>().await
        }
    };
    Router::new().fallback(handler).layer(
        ServiceBuilder::new()
            .layer(from_fn_with_state(
                Arc::new(Registry::new()),
                request_info::resolve,
            ))
            .layer(from_fn_with_state(
                Arc::new(InFlight::new(1, 1)),
                max_in_flight::limit,
            ))
            .layer(from_fn_with_state(
                RequestTimeout(TIMEOUT),
                timeout::enforce,
            )),
    )
}

async fn get(router: &Router, uri: &str) -> (StatusCode, serde_json::Value, Duration) {
    let started = Instant::now();
    let request = Request::get(uri)
        .body(Body::empty())
        .expect("a valid request");
    let response = tokio::time::timeout(Duration::from_secs(10), router.clone().oneshot(request))
        .await
        .expect("every request is answered within 10 s")
        .expect("the router is infallible");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body is readable")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, body, started.elapsed())
}

const LIST: &str = "/api/v1/namespaces/a/configmaps";

#[tokio::test]
async fn a_request_past_its_timeout_is_504_and_gives_back_its_slot() {
    let alive = Arc::new(AtomicUsize::new(0));
    let router = stack(&alive);
    for round in 0..3 {
        let (status, body, took) = get(&router, LIST).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "round {round}: {body}");
        assert_eq!(body["reason"], "Timeout");
        assert_eq!(
            body["message"],
            "Timeout: request did not complete within the allotted timeout"
        );
        assert!(took >= TIMEOUT, "answered after {took:?}");
        assert_eq!(alive.load(Ordering::SeqCst), 0, "the handler was dropped");
    }
    // A client's shorter timeout wins.
    let (status, _, took) = get(&router, &format!("{LIST}?timeout=50ms")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(took < TIMEOUT, "answered after {took:?}");
}

#[tokio::test]
async fn watches_are_not_cut_and_take_no_slot_while_a_request_over_the_budget_is_429() {
    let alive = Arc::new(AtomicUsize::new(0));
    let router = stack(&alive);
    let hanging = tokio::spawn({
        let router = router.clone();
        async move { get(&router, LIST).await }
    });
    tokio::time::sleep(TIMEOUT / 3).await;
    let (status, body, _) = get(&router, LIST).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let (status, _, took) = get(&router, &format!("{LIST}?watch=true")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the watch outlived the request timeout"
    );
    assert!(took >= TIMEOUT * 2, "answered after {took:?}");
    let (status, _, _) = hanging.await.expect("the hanging request's task");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}
