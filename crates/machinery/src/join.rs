//! What agents and servers say to each other when an agent joins: the cluster token format,
//! the paths and headers of the registration endpoints, and the websocket messages.
//!
//! This is the only part of the server an agent imports (ARCHITECTURE.md): keep it free of
//! server state, and change it only compatibly (new fields optional, unknown ones ignored).
//!
//! The exchange:
//! 1. `GET /cacerts` (no credentials): the cluster CA bundle, PEM. An agent given a full
//!    token hashes the bytes and compares with the token's hash before sending anything
//!    secret.
//! 2. `GET /v1-capstan/connect` with the headers below, upgraded to a websocket. The server
//!    checks the token (401 on mismatch) and the node password (403 on mismatch, before the
//!    upgrade, with a `Status` body saying why).
//! 3. The server sends [`ServerMessage::Welcome`] at once, then [`ServerMessage::Peers`]
//!    whenever the set of live servers changes. Both sides send websocket pings; a side that
//!    hears nothing for [`DEAD_AFTER`] closes the connection.
//!
//! `GET /ping` answers `pong` without credentials: the agent's load balancer health check.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The CA bundle, PEM, without credentials.
pub const CACERTS_PATH: &str = "/cacerts";
/// The load balancer's health check: `200 pong`, without credentials.
pub const PING_PATH: &str = "/ping";
/// The registration websocket.
pub const CONNECT_PATH: &str = "/v1-capstan/connect";

/// The node's name (after `--with-node-id` added its suffix).
pub const NODE_NAME_HEADER: &str = "Capstan-Node-Name";
/// The node's password, as stored in `<data-dir>/node/password`.
pub const NODE_PASSWORD_HEADER: &str = "Capstan-Node-Password";
/// The token travels as `Authorization: Bearer <secret>` (the secret part only).
pub const AUTHORIZATION_HEADER: &str = "Authorization";

/// How often each side pings.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
/// Silence after which a side declares the other dead and closes.
pub const DEAD_AFTER: Duration = Duration::from_secs(6);

/// The user part of a full token, as K3s writes it (`K10<hash>::server:<secret>`).
const SERVER_USER: &str = "server";
/// The prefix of a full token.
const FULL_PREFIX: &str = "K10";

/// A cluster token: the shared secret, and in its full form the hash of the cluster CA so a
/// joining agent can check it talks to the right cluster before sending the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterToken {
    /// The SHA-256 of the CA bundle, lowercase hex, when the token carries it.
    pub ca_hash: Option<String>,
    /// The secret every server and agent shares.
    pub secret: String,
}

/// Why a token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing was given.
    #[error("the token is empty (pass --token or set CAPSTAN_TOKEN)")]
    Empty,
    /// A full-form token whose parts are not where they belong.
    #[error(
        "the token is not in the form K10<sha256 of the CA>::server:<secret> nor a bare secret: {0} (copy it again from <data-dir>/server/token on a server)"
    )]
    Malformed(&'static str),
}

impl ClusterToken {
    /// A bare-secret token.
    pub fn bare(secret: impl Into<String>) -> ClusterToken {
        ClusterToken {
            ca_hash: None,
            secret: secret.into(),
        }
    }

    /// The full form for the CA `ca_pem`: `K10<sha256>::server:<secret>`.
    pub fn full(&self, ca_pem: &str) -> String {
        format!(
            "{FULL_PREFIX}{}::{SERVER_USER}:{}",
            ca_hash(ca_pem),
            self.secret
        )
    }

    /// Whether `ca_pem` is the CA this token names; a bare token names none and accepts any.
    pub fn accepts_ca(&self, ca_pem: &str) -> bool {
        self.ca_hash
            .as_deref()
            .is_none_or(|expected| expected.eq_ignore_ascii_case(&ca_hash(ca_pem)))
    }
}

/// Never print the secret.
impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterToken")
            .field("ca_hash", &self.ca_hash)
            .field("secret", &"***")
            .finish()
    }
}

impl FromStr for ClusterToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<ClusterToken, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        let Some(rest) = text
            .strip_prefix(FULL_PREFIX)
            .filter(|_| text.contains("::"))
        else {
            if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(TokenError::Malformed(
                    "a bare secret must not contain spaces or control characters",
                ));
            }
            return Ok(ClusterToken::bare(text));
        };
        let (hash, credentials) = rest
            .split_once("::")
            .ok_or(TokenError::Malformed("missing '::'"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::Malformed(
                "the CA hash must be 64 hexadecimal characters",
            ));
        }
        let (user, secret) = credentials
            .split_once(':')
            .ok_or(TokenError::Malformed("missing ':' between user and secret"))?;
        if user.is_empty() {
            return Err(TokenError::Malformed("the user before the secret is empty"));
        }
        if secret.is_empty() || secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenError::Malformed(
                "the secret is empty or contains spaces or control characters",
            ));
        }
        Ok(ClusterToken {
            ca_hash: Some(hash.to_ascii_lowercase()),
            secret: secret.to_string(),
        })
    }
}

/// SHA-256 of the CA bundle exactly as `/cacerts` serves it, lowercase hex.
pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

/// One live server, as agents need to know it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// A name unique to this server process (stable for its lifetime).
    pub id: String,
    /// `host:port` of its API, as advertised (`--advertise-address`, `--https-listen-port`).
    pub address: String,
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// Sent once, right after the upgrade.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// The id of the server the agent is connected to.
        server_id: String,
        /// The node name the server registered (what the agent sent).
        node_name: String,
        /// The live servers.
        peers: Vec<Peer>,
        /// A client certificate for the node (CN `system:node:<name>`, O `system:nodes`), PEM,
        /// for the agent's kubeconfig.
        client_cert_pem: String,
        /// Its private key, PEM.
        client_key_pem: String,
    },
    /// The live servers changed.
    Peers {
        /// The live servers, sorted.
        peers: Vec<Peer>,
    },
}

/// Agent → server. Agents only ping today; the type exists so the server can ignore
/// whatever later agents add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AgentMessage {
    /// What the agent sees (sent when it changes, for `capstan status`).
    #[serde(rename_all = "camelCase")]
    Report {
        /// The server the agent's load balancer uses now.
        active_server: Option<String>,
        /// Load balancer failovers since the agent started.
        failovers: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn full_tokens_round_trip_and_check_the_ca() {
        let token = ClusterToken::bare("s3cret");
        let full = token.full(CA);
        assert!(full.starts_with("K10"));
        assert!(full.ends_with("::server:s3cret"));
        let parsed: ClusterToken = full.parse().expect("full token parses");
        assert_eq!(parsed.secret, "s3cret");
        assert!(parsed.accepts_ca(CA));
        assert!(!parsed.accepts_ca("another CA"));
    }

    #[test]
    fn bare_secrets_accept_any_ca() {
        let parsed: ClusterToken = " abc123 \n".parse().expect("bare token parses");
        assert_eq!(parsed, ClusterToken::bare("abc123"));
        assert!(parsed.accepts_ca("whatever"));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        assert_eq!("".parse::<ClusterToken>(), Err(TokenError::Empty));
        for bad in [
            "K10abc::server:x",
            &format!("K10{}::server:", "a".repeat(64)),
            &format!("K10{}::server", "a".repeat(64)),
            &format!("K10{}:::x", "a".repeat(64)),
            "two words",
        ] {
            let error = bad.parse::<ClusterToken>().expect_err(bad);
            assert!(error.to_string().contains("token"), "{error}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", ClusterToken::bare("hunter2"));
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn messages_are_tagged_json() {
        let message = ServerMessage::Peers {
            peers: vec![Peer {
                id: "a".into(),
                address: "127.0.0.2:6443".into(),
            }],
        };
        let text = serde_json::to_string(&message).expect("serializes");
        assert_eq!(
            text,
            r#"{"type":"peers","peers":[{"id":"a","address":"127.0.0.2:6443"}]}"#
        );
        let back: ServerMessage = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, message);
    }
}
