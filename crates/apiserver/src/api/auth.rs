//! Authentication: who is asking. A client certificate signed by the cluster CA (verified
//! during the TLS handshake, `tls.rs`) names the user in its CN and the groups in its O
//! fields. Anything else is anonymous and gets 401, except the health and version endpoints
//! every load balancer and client probes without credentials.
//!
//! No bearer token is accepted. In particular the cluster (join) token, which every agent
//! keeps on disk, is a join credential only (`join/`), never an API one, as in K3s: the
//! admin uses the client certificate of the admin kubeconfig.
//!
//! Node certificates (`system:node:<name>` in `system:nodes`) carry the token generation
//! they were issued under (`cluster::certs::issue_node`); one older than the cluster's
//! current generation (the token was rotated since) is refused with 401, on every request,
//! so a long-lived connection loses its access too. What an accepted user may do is
//! `authz.rs`'s decision.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use capstan_pki::certs::{NODE_USER_PREFIX, NODES_GROUP, TOKEN_GENERATION_UNIT};
use rustls_pki_types::CertificateDer;

/// Paths served without credentials.
const ANONYMOUS_PATHS: &[&str] = &["/livez", "/readyz", "/healthz", "/version"];

/// The group whose members may do everything (the admin kubeconfig's certificate).
pub const MASTERS_GROUP: &str = "system:masters";

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct User {
    /// The user name (`system:admin`).
    pub name: String,
    /// Its groups (`system:masters`, `system:authenticated`).
    pub groups: Vec<String>,
    /// The token generation a node certificate was issued under, if it names one.
    pub token_generation: Option<i64>,
}

impl User {
    /// Whether the user is in `system:masters`.
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|group| group == MASTERS_GROUP)
    }

    /// Whether this is a node identity (named `system:node:…` or in `system:nodes`) that
    /// is not also a master: such a user is held to what a kubelet does.
    pub fn is_node(&self) -> bool {
        !self.is_master()
            && (self.name.starts_with(NODE_USER_PREFIX)
                || self.groups.iter().any(|group| group == NODES_GROUP))
    }

    /// The node a node identity speaks for (`system:node:<name>`), if its name says.
    pub fn node_name(&self) -> Option<&str> {
        self.name
            .strip_prefix(NODE_USER_PREFIX)
            .filter(|name| !name.is_empty())
    }
}

/// Who the client certificate of a connection (verified against the cluster CA during the
/// handshake, `tls.rs`) names; read once per connection, not once per request, and handed
/// to every request of the connection as an extension.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Option<Arc<User>>);

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
    let token_generation = subject
        .iter_organizational_unit()
        .filter_map(|unit| unit.as_str().ok())
        .find_map(|unit| unit.strip_prefix(TOKEN_GENERATION_UNIT)?.parse().ok());
    Some(User {
        name,
        groups,
        token_generation,
    })
}

/// Whether `user` may be accepted when the cluster's token generation is `current`: a node
/// identity only with a certificate of this generation or a later one (a server that has
/// not seen a rotation yet must not refuse the new certificates).
fn still_valid(user: &User, current: i64) -> bool {
    !user.is_node()
        || user
            .token_generation
            .is_some_and(|generation| generation >= current)
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
    let user = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|cert| cert.0.as_deref().cloned());
    let current = *state.token_generation.borrow();
    let user = match user {
        Some(user) if !still_valid(&user, current) => {
            tracing::debug!(
                user = %user.name,
                generation = ?user.token_generation,
                current,
                "refused a node certificate issued under an earlier cluster token"
            );
            None
        }
        other => other,
    };
    if user.is_none() && request.headers().contains_key(header::AUTHORIZATION) {
        tracing::debug!(
            "refused a request with an Authorization header: no bearer tokens are accepted"
        );
    }
    match user {
        Some(user) => {
            super::layers::trace::record_user(&user.name);
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use capstan_pki::certs::CertificateAuthority;
    use rustls_pki_types::pem::PemObject as _;

    fn user_of(pem: &str) -> User {
        user_of_certificate(&CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn a_node_certificate_names_the_node_and_its_token_generation() {
        let ca = CertificateAuthority::generate("test-ca").unwrap();
        let node = user_of(&ca.issue_node("worker-1", 42).unwrap().cert_pem);
        assert_eq!(node.name, "system:node:worker-1");
        assert!(node.groups.iter().any(|group| group == "system:nodes"));
        assert!(
            !node.groups.iter().any(|group| group.contains("generation")),
            "the generation is not a group: {:?}",
            node.groups
        );
        assert_eq!(node.token_generation, Some(42));
        assert!(node.is_node() && !node.is_master());
        assert_eq!(node.node_name(), Some("worker-1"));
    }

    #[test]
    fn node_certificates_of_an_earlier_token_are_no_longer_valid() {
        let ca = CertificateAuthority::generate("test-ca").unwrap();
        let node = user_of(&ca.issue_node("worker-1", 42).unwrap().cert_pem);
        assert!(still_valid(&node, 42));
        assert!(still_valid(&node, 41), "a server behind on the rotation");
        assert!(!still_valid(&node, 43));
        // A node certificate without a generation (an older server's) is never valid.
        let unstamped = user_of(
            &ca.issue_client("system:node:worker-1", &["system:nodes"])
                .unwrap()
                .cert_pem,
        );
        assert!(!still_valid(&unstamped, 1));
        // The admin and other users do not depend on the token.
        let admin = user_of(
            &ca.issue_client("system:admin", &["system:masters"])
                .unwrap()
                .cert_pem,
        );
        assert!(admin.is_master() && !admin.is_node());
        assert!(still_valid(&admin, 1_000));
        let someone = user_of(&ca.issue_client("jane", &["developers"]).unwrap().cert_pem);
        assert!(still_valid(&someone, 1_000));
    }
}
