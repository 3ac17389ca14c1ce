//! The request timeout, as kube-apiserver's `WithRequestDeadline` and
//! `WithTimeoutForNonLongRunningRequests` together: a request that is not long-running
//! gets `--request-timeout` (60 s by default) to produce its response head; a client's
//! `?timeout=` shorter than that wins (0, or longer, leaves the server's). Past it the
//! handler's future is dropped, which cancels its datastore calls and, in the layers around
//! this one, gives back the in-flight slot, and the client gets upstream's Status: 504,
//! reason `Timeout`.
//!
//! Long-running requests (watches, exec/attach/log/portforward/proxy) are not cut: a watch
//! ends at its own `timeoutSeconds`. The clock starts when the request gets here, after its
//! body arrived (the body has its own timeout, `read_body.rs`), where upstream counts from
//! the first byte of the request.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use capstan_machinery::time::parse_duration;

use super::request_info::RequestInfo;
use crate::api::error::ApiError;

/// `--request-timeout`: the longest a request that is not long-running is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout(pub Duration);

impl RequestTimeout {
    /// The timeout of a request with `query`: the client's `timeout=` if it is shorter
    /// (and not 0), else this one. A malformed value is left to the handler to refuse
    /// (400, from the query parser) and does not change the timeout.
    fn for_query(self, query: Option<&str>) -> Duration {
        let RequestTimeout(server) = self;
        query
            .and_then(|query| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("timeout="))
            })
            .and_then(parse_duration)
            .filter(|client| !client.is_zero() && *client < server)
            .unwrap_or(server)
    }
}

/// The layer: runs the request within its timeout, or answers 504.
pub async fn enforce(
    State(timeout): State<RequestTimeout>,
    Extension(info): Extension<Arc<RequestInfo>>,
    request: Request,
    next: Next,
) -> Response {
    if info.long_running {
        return next.run(request).await;
    }
    let limit = timeout.for_query(request.uri().query());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout {
            mutating: info.mutating,
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shorter_client_timeout_wins_and_zero_or_longer_leaves_the_servers() {
        let server = RequestTimeout(Duration::from_secs(60));
        assert_eq!(server.for_query(None), Duration::from_secs(60));
        assert_eq!(server.for_query(Some("timeout=5s")), Duration::from_secs(5));
        assert_eq!(
            server.for_query(Some("limit=10&timeout=250ms")),
            Duration::from_millis(250)
        );
        for unchanged in [
            "timeout=0s",
            "timeout=2m",
            "timeout=abc",
            "timeoutSeconds=5",
        ] {
            assert_eq!(
                server.for_query(Some(unchanged)),
                Duration::from_secs(60),
                "{unchanged}"
            );
        }
    }
}
