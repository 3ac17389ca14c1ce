//! The one HTTP error type of the API: every failure becomes a Kubernetes `Status` with the
//! reason and code clients switch on. Domain errors convert here (`From`), so handlers
//! just use `?`; internal details are logged, not sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::registry::RegistryError;

/// The largest request body accepted (kube-apiserver's limit).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The message of a read cut off by the request timeout (k8s.io/apiserver
/// `filters/timeout.go`, through `NewTimeoutError`).
pub const TIMEOUT_READ: &str = "Timeout: request did not complete within the allotted timeout";

/// The message of a write cut off by the request timeout (k8s.io/apiserver
/// `handlers/finisher`, with Go's `context deadline exceeded`).
pub const TIMEOUT_WRITE: &str =
    "Timeout: request did not complete within requested timeout - context deadline exceeded";

/// An API failure, rendered as a `Status`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// From the object layer.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No credentials, or credentials not accepted.
    #[error("Unauthorized")]
    Unauthorized,
    /// The user may not do this (authorization).
    #[error("{message}")]
    Forbidden {
        /// The full message, as kube-apiserver words it.
        message: String,
        /// The `details` of the Status (name, group, kind), if any.
        details: Option<Value>,
    },
    /// No such path or resource.
    #[error("the server could not find the requested resource")]
    NoSuchPath,
    /// The verb is not served at this path.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// A request body in a format we do not read.
    #[error(
        "the body of the request was in an unknown format - accepted media types include: {accepted}"
    )]
    UnsupportedMediaType {
        /// What this endpoint accepts.
        accepted: String,
    },
    /// The body is over [`MAX_BODY_BYTES`].
    #[error("the request body is too large: limit is {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// Over the max-in-flight limit.
    #[error("too many requests have been sent to the server; please wait and try again later")]
    TooManyRequests,
    /// The request body did not arrive within the body timeout.
    #[error(
        "the request body did not arrive within {0}s (--request-body-timeout-seconds); send it again at a steady pace"
    )]
    BodyTimeout(u64),
    /// The request did not complete within `--request-timeout` (or the client's shorter
    /// `?timeout=`). Worded as kube-apiserver: its timeout filter's message for reads, its
    /// REST handlers' (which give up on the same deadline) for writes.
    #[error("{}", if *mutating { TIMEOUT_WRITE } else { TIMEOUT_READ })]
    RequestTimeout {
        /// Whether the request was a write (the message differs upstream).
        mutating: bool,
    },
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The server cannot produce any of the accepted media types.
    #[error(
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    )]
    NotAcceptable,
    /// Something failed inside the server; logged where it happened.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A `BadRequest` with `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }

    /// The HTTP code and the Status reason.
    fn code_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Registry(error) => match error {
                RegistryError::NotFound { .. } => (StatusCode::NOT_FOUND, "NotFound"),
                RegistryError::AlreadyExists { .. } => (StatusCode::CONFLICT, "AlreadyExists"),
                RegistryError::Conflict { .. } | RegistryError::ApplyConflict { .. } => {
                    (StatusCode::CONFLICT, "Conflict")
                }
                RegistryError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid"),
                RegistryError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
                RegistryError::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
                RegistryError::Expired(_) => (StatusCode::GONE, "Expired"),
                RegistryError::TooLargeResourceVersion { .. } => {
                    (StatusCode::GATEWAY_TIMEOUT, "Timeout")
                }
                RegistryError::TooLarge(_) => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge")
                }
                RegistryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
                RegistryError::Unavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
                }
            },
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::NoSuchPath => (StatusCode::NOT_FOUND, "NotFound"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType")
            }
            ApiError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "Timeout"),
            ApiError::RequestTimeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "Timeout"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
            ApiError::NotAcceptable => (StatusCode::NOT_ACCEPTABLE, "NotAcceptable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        }
    }

    /// The HTTP status code.
    pub fn status_code(&self) -> StatusCode {
        self.code_and_reason().0
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let (code, reason) = self.code_and_reason();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason,
            "code": code.as_u16(),
        });
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }

    fn details(&self) -> Option<Value> {
        let split = |qualified: &str| match qualified.split_once('.') {
            Some((resource, group)) => (resource.to_string(), group.to_string()),
            None => (qualified.to_string(), String::new()),
        };
        match self {
            ApiError::Registry(
                RegistryError::NotFound { qualified, name }
                | RegistryError::AlreadyExists { qualified, name }
                | RegistryError::Conflict {
                    qualified, name, ..
                },
            ) => {
                let (kind, group) = split(qualified);
                Some(json!({"name": name, "group": group, "kind": kind}))
            }
            ApiError::Registry(RegistryError::Invalid {
                kind,
                group_suffix,
                name,
                causes,
            }) => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.cause, "message": c.message, "field": c.field}))
                    .collect();
                Some(json!({"name": name, "group": group_suffix, "kind": kind, "causes": causes}))
            }
            ApiError::Registry(RegistryError::ApplyConflict { causes, .. }) => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| json!({"reason": c.cause, "message": c.message, "field": c.field}))
                    .collect();
                Some(json!({"causes": causes}))
            }
            ApiError::Registry(RegistryError::TooLargeResourceVersion { .. }) => Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
            ApiError::TooManyRequests => Some(json!({"retryAfterSeconds": 1})),
            // `NewTimeoutError(message, 0)`: details with nothing set.
            ApiError::RequestTimeout { .. } => Some(json!({})),
            ApiError::Forbidden { details, .. } => details.clone(),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status_code();
        if code.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let body = self.to_status().to_string();
        let mut response = (code, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(
            self,
            ApiError::TooManyRequests
                | ApiError::Registry(RegistryError::TooLargeResourceVersion { .. })
        ) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::Unauthorized) {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"kubernetes-master\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_the_resource_and_group() {
        let error = ApiError::from(RegistryError::NotFound {
            qualified: "deployments.apps".to_string(),
            name: "web".to_string(),
        });
        let status = error.to_status();
        assert_eq!(status["code"], 404);
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["message"], "deployments.apps \"web\" not found");
        assert_eq!(status["details"]["group"], "apps");
        assert_eq!(status["details"]["kind"], "deployments");
    }

    #[test]
    fn a_request_timeout_is_upstreams_504_status() {
        let read = ApiError::RequestTimeout { mutating: false }.to_status();
        assert_eq!(read["code"], 504);
        assert_eq!(read["reason"], "Timeout");
        assert_eq!(
            read["message"],
            "Timeout: request did not complete within the allotted timeout"
        );
        assert_eq!(read["details"], json!({}));
        let write = ApiError::RequestTimeout { mutating: true }.to_status();
        assert_eq!(write["code"], 504);
        assert_eq!(
            write["message"],
            "Timeout: request did not complete within requested timeout - context deadline exceeded"
        );
    }
}
