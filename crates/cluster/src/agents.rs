//! What a joined agent leaves in the datastore, named in one place because three parts of
//! the server read it: registration (`join/`) writes both, the node-password controller
//! deletes password Secrets whose Node is gone, and `capstan status` lists connections.
//!
//! - The node password Secret `kube-system/<node>.node-password.capstan` (type
//!   `capstan.io/node-password`, data `hash`: an Argon2id PHC string, never the password).
//! - The connection record: a plain datastore key `/capstan/agents/<node>` holding
//!   [`AgentRecord`] JSON while the agent's websocket is open on some server. It carries a
//!   TTL that the connected server refreshes, so the record of a server that crashed does
//!   not outlive it by more than [`RECORD_TTL`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The namespace of node password Secrets.
pub const PASSWORD_NAMESPACE: &str = "kube-system";
/// The `type` of node password Secrets.
pub const PASSWORD_SECRET_TYPE: &str = "capstan.io/node-password";
/// What follows the node name in a password Secret's name.
pub const PASSWORD_SECRET_SUFFIX: &str = ".node-password.capstan";
/// The data key of the hash in a password Secret.
pub const PASSWORD_HASH_KEY: &str = "hash";

/// Where connection records live (one key per node below it).
pub const AGENTS_PREFIX: &str = "/capstan/agents/";
/// How long a connection record outlives the last refresh by its server.
pub const RECORD_TTL: Duration = Duration::from_secs(180);
/// How often the connected server refreshes a record's TTL.
pub const RECORD_REFRESH: Duration = Duration::from_secs(60);

/// The name of `node`'s password Secret.
pub fn password_secret_name(node: &str) -> String {
    format!("{node}{PASSWORD_SECRET_SUFFIX}")
}

/// The node a password Secret named `secret` belongs to, if it is one.
pub fn node_of_password_secret(secret: &str) -> Option<&str> {
    secret
        .strip_suffix(PASSWORD_SECRET_SUFFIX)
        .filter(|node| !node.is_empty())
}

/// The datastore key of `node`'s connection record.
pub fn record_key(node: &str) -> String {
    format!("{AGENTS_PREFIX}{node}")
}

/// An agent's open registration connection, as `/capstan/agents/<node>` stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    /// The node's name.
    pub node_name: String,
    /// The id of the server holding the connection.
    pub server_id: String,
    /// That server's advertised `host:port`.
    pub server_address: String,
    /// When the connection was accepted (RFC 3339).
    pub connected_at: String,
    /// The server the agent's load balancer uses, as the agent last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_server: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_round_trip() {
        let name = password_secret_name("worker-1.example");
        assert_eq!(name, "worker-1.example.node-password.capstan");
        assert_eq!(node_of_password_secret(&name), Some("worker-1.example"));
        assert_eq!(node_of_password_secret("other-secret"), None);
        assert_eq!(node_of_password_secret(".node-password.capstan"), None);
    }
}
