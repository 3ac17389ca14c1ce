//! Authentication: who is asking. A client certificate signed by the cluster CA (verified
//! during the TLS handshake, `tls.rs`) names the user in its CN and the groups in its O
//! fields; a bearer token equal to the cluster token is the admin. Anything else is
//! anonymous and gets 401, except the health and version endpoints every load balancer
//! and client probes without credentials.
//!
//! Authorization is "authenticated = admin" for now (README says so): RBAC objects are
//! stored and served but not enforced.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use super::tls::PeerCertificate;
use rustls_pki_types::CertificateDer;

/// Paths served without credentials.
const ANONYMOUS_PATHS: &[&str] = &["/livez", "/readyz", "/healthz", "/version"];

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct User {
    /// The user name (`system:admin`).
    pub name: String,
    /// Its groups (`system:masters`, `system:authenticated`).
    pub groups: Vec<String>,
}

/// The user of a verified client certificate: CN and O fields.
pub(super) fn user_of_certificate(cert: &CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".to_string());
    Some(User { name, groups })
}

fn bearer_token(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Constant-time comparison, so response timing does not leak the token.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The middleware: attaches the [`User`] or answers 401.
pub async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if ANONYMOUS_PATHS.contains(&path)
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
    {
        return next.run(request).await;
    }
    let user = if let Some(cert) = request.extensions().get::<PeerCertificate>() {
        cert.0.as_deref().cloned()
    } else if let Some(token) = bearer_token(&request) {
        state
            .tokens
            .iter()
            .any(|accepted| !accepted.is_empty() && same_secret(accepted, token))
            .then(|| User {
                name: "system:admin".to_string(),
                groups: vec![
                    "system:masters".to_string(),
                    "system:authenticated".to_string(),
                ],
            })
    } else {
        None
    };
    match user {
        Some(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
