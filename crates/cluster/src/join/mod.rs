//! Registration (ARCHITECTURE.md `join/`): how agents join the cluster through the
//! registration address. `protocol.rs` holds the wire format both sides speak; this file
//! the routes (`/cacerts`, `/ping`, `/v1-capstan/connect`) and the checks made before a
//! websocket is opened; `password.rs` the node password Secret; `session.rs` an accepted
//! connection (welcome, peer list pushes, pings, the connection record); `metrics.rs` the
//! counters and gauges.
//!
//! Every refusal is a plain HTTP answer with a Kubernetes `Status` body, made before the
//! upgrade and before anything is written: 429 (with Retry-After) over the per-address
//! registration rate (`limit.rs`), checked first so guesses are throttled too; 401 for a
//! wrong token; 503 when the cluster token was rotated since this server started (it must
//! be restarted with the new one, and the agent tries another server); 400 for a malformed
//! node name or password; 403 for a node password that does not match the registered one.
//! The node certificate is issued before the password check, so the only write, the
//! password Secret of a new node, happens last and only for a registration that succeeds.
//!
//! Node certificates carry this server's token generation (`cluster::bootstrap`), so a
//! later `capstan token rotate` retires them (`api::auth`).
//!
//! The routes need no API credentials (an agent has none yet): [`router`] is merged in
//! front of the API router, whose authentication wraps only its own fallback.

pub mod limit;
pub mod metrics;
pub mod password;
mod session;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::{PASSWORD_NAMESPACE, password_secret_name};
use capstan_apiserver::registry::validate::check_subdomain;
use capstan_apiserver::registry::{ObjectStore, Registry};
use capstan_machinery::join::{
    AUTHORIZATION_HEADER, CACERTS_PATH, CONNECT_PATH, ClusterToken, NODE_NAME_HEADER,
    NODE_PASSWORD_HEADER, PING_PATH, Peer,
};
use capstan_pki::certs::CertificateAuthority;
use limit::RateLimit;
use metrics::Outcome;
use password::{PasswordError, Passwords};

/// Largest websocket message accepted from an agent (reports are tiny).
const MAX_AGENT_MESSAGE: usize = 64 * 1024;
/// Read buffer of one agent's websocket.
const SOCKET_BUFFER: usize = 8 * 1024;
/// Longest node password accepted (agents generate 64 hex characters).
const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest Kubernetes object name; the password Secret's name must fit.
const MAX_NAME_BYTES: usize = 253;

/// What [`JoinState::new`] needs.
pub struct JoinConfig {
    /// Objects (the node password Secrets) and the datastore under them (the connection
    /// records).
    pub objects: ObjectStore,
    /// The served kinds (to find `v1 Secret`).
    pub registry: Arc<Registry>,
    /// The cluster token's secret part (agents send `Authorization: Bearer <secret>`).
    pub secret: String,
    /// The cluster CA: `/cacerts` serves its certificate, node certificates are issued by it.
    pub ca: Arc<CertificateAuthority>,
    /// The token generation `secret` opened at start; node certificates carry it.
    pub token_generation: i64,
    /// The cluster's token generation now (it moves on `capstan token rotate`).
    pub current_generation: watch::Receiver<i64>,
    /// Registrations accepted per second from one source address (0: no limit).
    pub registrations_per_second: u32,
    /// Registrations one source address may make at once before the rate applies.
    pub registration_burst: u32,
    /// This server's id (unique to the process, as in its membership lease).
    pub server_id: String,
    /// This server's advertised `host:port`.
    pub server_address: String,
    /// The live servers; each change is pushed to every connected agent.
    pub peers: watch::Receiver<Vec<Peer>>,
    /// Cancelled at shutdown: connections close and remove their records.
    pub shutdown: CancellationToken,
}

/// What an agent last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// The server its load balancer uses.
    pub active_server: Option<String>,
    /// Its load balancer's failovers since it started.
    pub failovers: u64,
    /// When the report arrived.
    pub received_at: SystemTime,
}

/// The registration side of one server; shared by every request and connection.
pub struct JoinState {
    objects: ObjectStore,
    secret: String,
    ca: Arc<CertificateAuthority>,
    ca_pem: String,
    token_generation: i64,
    current_generation: watch::Receiver<i64>,
    limit: RateLimit,
    server_id: String,
    server_address: String,
    peers: watch::Receiver<Vec<Peer>>,
    shutdown: CancellationToken,
    passwords: Passwords,
    sessions: TaskTracker,
    /// Connected nodes: the id of the connection and what its agent last reported.
    reports: Mutex<HashMap<String, (u64, Option<AgentReport>)>>,
    /// The last failover count each node reported here (kept across connections).
    failovers_seen: Mutex<HashMap<String, u64>>,
}

impl JoinState {
    /// The state for `config`.
    pub fn new(config: JoinConfig) -> JoinState {
        metrics::touch();
        JoinState {
            passwords: Passwords::new(config.objects.clone(), config.registry),
            objects: config.objects,
            secret: config.secret,
            ca_pem: config.ca.cert_pem().to_string(),
            ca: config.ca,
            token_generation: config.token_generation,
            current_generation: config.current_generation,
            limit: RateLimit::new(config.registrations_per_second, config.registration_burst),
            server_id: config.server_id,
            server_address: config.server_address,
            peers: config.peers,
            shutdown: config.shutdown,
            sessions: TaskTracker::new(),
            reports: Mutex::new(HashMap::new()),
            failovers_seen: Mutex::new(HashMap::new()),
        }
    }

    /// The agents connected to this server now, with what each last reported (`None`
    /// before its first report), sorted by node name.
    pub fn connected_agents(&self) -> Vec<(String, Option<AgentReport>)> {
        let reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        let mut agents: Vec<_> = reports
            .iter()
            .map(|(node, (_, report))| (node.clone(), report.clone()))
            .collect();
        agents.sort_by(|a, b| a.0.cmp(&b.0));
        agents
    }

    /// Waits (after shutdown was requested) until every connection closed and removed its
    /// record, or `limit` passed.
    pub async fn wait_for_connections(&self, limit: Duration) {
        self.shutdown.cancelled().await;
        self.sessions.close();
        if tokio::time::timeout(limit, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::warn!("agent connections still open after {limit:?}; leaving them");
        }
    }
}

/// The registration routes, without authentication: merge them with the API router
/// (`join::router(join).merge(api::router(api))`).
pub fn router(state: Arc<JoinState>) -> Router {
    Router::new()
        .route(CACERTS_PATH, get(cacerts))
        .route(PING_PATH, get(ping))
        .route(CONNECT_PATH, get(connect))
        .with_state(state)
}

/// `GET /cacerts`: the CA bundle exactly as `capstan_machinery::join::ca_hash` hashes it.
async fn cacerts(State(state): State<Arc<JoinState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        state.ca_pem.clone(),
    )
        .into_response()
}

/// `GET /ping`: the agents' load balancer health check.
async fn ping() -> &'static str {
    "pong"
}

/// A Kubernetes `Status` answer.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut response = (code, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A registration over its address's rate: 429 with Retry-After, counted, logged at debug
/// (a flood must not flood the log).
fn throttle(source: IpAddr, wait: Duration) -> Response {
    metrics::registration(Outcome::Throttled);
    tracing::debug!(%source, "throttled an agent registration");
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = status(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        &format!(
            "too many registrations from {source}; retry in {seconds}s (the server's --registration-rate and --registration-burst set the limit)"
        ),
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A refused registration: counted, logged, answered.
fn refuse(outcome: Outcome, code: StatusCode, reason: &str, message: &str) -> Response {
    metrics::registration(outcome);
    tracing::info!(result = ?outcome, %message, "refused an agent registration");
    status(code, reason, message)
}

/// Constant-time comparison, so response timing does not leak the secret.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn authorized(headers: &HeaderMap, secret: &str) -> bool {
    let Some(value) = headers
        .get(AUTHORIZATION_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    // The full `K10<hash>::server:<secret>` form is accepted as well as the bare secret.
    let sent = token
        .parse::<ClusterToken>()
        .map_or_else(|_| token.trim().to_string(), |parsed| parsed.secret);
    scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty() && same_secret(&sent, secret)
}

/// Why the node name header is not usable, if it is not.
fn check_node_name(node: &str) -> Option<String> {
    if let Some(problem) = check_subdomain(node) {
        return Some(format!(
            "invalid node name {node:?} in {NODE_NAME_HEADER}: {problem} (pass --node-name)"
        ));
    }
    if password_secret_name(node).len() > MAX_NAME_BYTES {
        return Some(format!(
            "node name {node:?} is too long: the name of its password Secret must fit in {MAX_NAME_BYTES} characters (pass a shorter --node-name)"
        ));
    }
    None
}

/// `GET /v1-capstan/connect`: checks the rate, token, node name and node password, then
/// upgrades.
async fn connect(
    State(state): State<Arc<JoinState>>,
    connected_from: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Without the connection's address (a router served without it), one shared budget.
    let source = connected_from.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.0.ip());
    if let Err(wait) = state.limit.admit(source) {
        return throttle(source, wait);
    }
    if !authorized(&headers, &state.secret) {
        return refuse(
            Outcome::BadToken,
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the cluster token is missing or wrong (pass the token of <data-dir>/server/token on a server as --token)",
        );
    }
    let current = *state.current_generation.borrow();
    if current > state.token_generation {
        return refuse(
            Outcome::StaleToken,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the cluster token was rotated since this server started; it registers no agents until it is restarted with the new token (try another server)",
        );
    }
    let header_text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let node = header_text(NODE_NAME_HEADER).unwrap_or("").to_string();
    if let Some(problem) = check_node_name(&node) {
        return refuse(
            Outcome::InvalidRequest,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &problem,
        );
    }
    let password = header_text(NODE_PASSWORD_HEADER).unwrap_or("").to_string();
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return refuse(
            Outcome::InvalidRequest,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "{NODE_PASSWORD_HEADER} must hold the node password (1 to {MAX_PASSWORD_BYTES} bytes of <data-dir>/node/password)"
            ),
        );
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            metrics::registration(Outcome::InvalidRequest);
            return rejection.into_response();
        }
    };
    // Issued first: once the password check has written a new node's Secret, nothing
    // may fail.
    let certificate = match state.ca.issue_node(&node, state.token_generation) {
        Ok(certificate) => certificate,
        Err(error) => {
            tracing::warn!(%node, %error, "could not issue a node certificate");
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("could not issue a client certificate for node {node:?}"),
            );
        }
    };
    match state.passwords.check(&node, &password).await {
        Ok(()) => {}
        Err(PasswordError::Mismatch { .. }) => {
            let secret = password_secret_name(&node);
            return refuse(
                Outcome::BadPassword,
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "node password rejected for node {node:?}: it does not match the password registered in Secret {PASSWORD_NAMESPACE}/{secret}. Either another host is already registered with the same node name (give each host its own name with --with-node-id or --node-name), or <data-dir>/node/password changed on this agent (to re-register the node, delete the Secret {PASSWORD_NAMESPACE}/{secret})"
                ),
            );
        }
        Err(error) => {
            tracing::warn!(%node, %error, "could not check a node password");
            return status(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &format!("could not check the node password of {node:?}: {error}"),
            );
        }
    }
    metrics::registration(Outcome::Accepted);
    tracing::info!(%node, "agent registered");
    let sessions = state.sessions.clone();
    // Small buffers (the defaults are 128 KiB each way): hundreds of mostly idle agents
    // per server exchange messages of a few kilobytes at most.
    upgrade
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_AGENT_MESSAGE)
        .max_frame_size(MAX_AGENT_MESSAGE)
        .on_upgrade(move |socket| {
            sessions.track_future(session::run(state, node, certificate, socket))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_secret_is_authorized() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "s3cret"));
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        assert!(authorized(&headers, "s3cret"));
        assert!(!authorized(&headers, "s3cre"));
        let full = format!("Bearer K10{}::server:s3cret", "a".repeat(64));
        headers.insert(
            "authorization",
            HeaderValue::from_str(&full).expect("a valid header"),
        );
        assert!(authorized(&headers, "s3cret"));
        assert!(!authorized(&headers, ""));
        headers.insert("authorization", HeaderValue::from_static("Basic s3cret"));
        assert!(!authorized(&headers, "s3cret"));
    }

    #[test]
    fn node_names_must_be_subdomains_whose_secret_name_fits() {
        assert_eq!(check_node_name("worker-1.lab"), None);
        assert!(check_node_name("").is_some());
        assert!(check_node_name("Worker_1").is_some());
        let long = "a".repeat(240);
        let problem = check_node_name(&long).expect("too long for the Secret name");
        assert!(problem.contains("too long"), "{problem}");
    }
}
