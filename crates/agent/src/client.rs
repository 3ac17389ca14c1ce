//! The registration connection, shared by the agent and `capstan bench join`: open the
//! websocket with the node's credentials, wait for the Welcome, then hold the connection
//! (pings both ways, peer list updates, reports) until it drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use capstan_machinery::join::{
    AUTHORIZATION_HEADER, AgentMessage, CONNECT_PATH, DEAD_AFTER, NODE_NAME_HEADER,
    NODE_PASSWORD_HEADER, PING_INTERVAL, Peer, ServerMessage,
};

/// What a node presents when it connects.
#[derive(Clone)]
pub struct Credentials {
    /// The token's secret part.
    pub secret: String,
    /// The node's name.
    pub node_name: String,
    /// The node's password (`<data-dir>/node/password`).
    pub node_password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// Why a registration failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No connection, no TLS, or no websocket (worth retrying elsewhere or later).
    #[error("cannot reach {address}: {reason}")]
    Unreachable {
        /// The server.
        address: String,
        /// What failed.
        reason: String,
    },
    /// 401: the token's secret is not this cluster's.
    #[error(
        "{address}: token rejected (401): the secret in --token/CAPSTAN_TOKEN is not this cluster's"
    )]
    TokenRejected {
        /// The server.
        address: String,
    },
    /// 403: the server refused this node (duplicate name, changed password…).
    #[error("{address} refused node registration (403): {message}")]
    Refused {
        /// The server.
        address: String,
        /// The server's explanation (its Status message).
        message: String,
    },
    /// The server answered something the protocol does not allow.
    #[error("{address}: {reason}")]
    Protocol {
        /// The server.
        address: String,
        /// What was wrong.
        reason: String,
    },
}

impl JoinError {
    /// Whether retrying cannot help (the credentials are wrong).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            JoinError::TokenRejected { .. } | JoinError::Refused { .. }
        )
    }

    /// A short label for counting failures (`capstan bench join`).
    pub fn kind(&self) -> &'static str {
        match self {
            JoinError::Unreachable { .. } => "unreachable",
            JoinError::TokenRejected { .. } => "token rejected",
            JoinError::Refused { .. } => "refused",
            JoinError::Protocol { .. } => "protocol",
        }
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An accepted registration: the Welcome's contents and the open connection.
pub struct Registration {
    /// The server connected to (`host:port`).
    pub address: String,
    /// The id of that server (from the Welcome).
    pub server_id: String,
    /// The node name the server registered.
    pub node_name: String,
    /// The live servers.
    pub peers: Vec<Peer>,
    /// The node's client certificate, PEM.
    pub client_cert_pem: String,
    /// Its key, PEM.
    pub client_key_pem: String,
    /// This side's address on the connection: the node's IP as the servers see it.
    pub local_addr: Option<SocketAddr>,
    socket: Socket,
}

/// How a held connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Shutdown was requested; the agent closed the connection.
    Shutdown,
    /// The connection dropped or went silent, for the reason given.
    Dropped(String),
}

/// Connects to `address` (`host:port`), presents `credentials`, and waits up to `timeout`
/// for the Welcome.
pub async fn connect(
    address: &str,
    tls: Arc<ClientConfig>,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<Registration, JoinError> {
    match tokio::time::timeout(timeout, connect_inner(address, tls, credentials)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(JoinError::Unreachable {
            address: address.to_string(),
            reason: format!("no Welcome within {timeout:?}"),
        }),
    }
}

async fn connect_inner(
    address: &str,
    tls: Arc<ClientConfig>,
    credentials: &Credentials,
) -> Result<Registration, JoinError> {
    let protocol = |reason: String| JoinError::Protocol {
        address: address.to_string(),
        reason,
    };
    let mut request = format!("wss://{address}{CONNECT_PATH}")
        .into_client_request()
        .map_err(|error| protocol(format!("bad server address: {error}")))?;
    let header = |value: &str, what: &str| {
        HeaderValue::from_str(value)
            .map_err(|_| protocol(format!("the {what} is not a valid header value")))
    };
    let headers = request.headers_mut();
    headers.insert(
        AUTHORIZATION_HEADER,
        header(&format!("Bearer {}", credentials.secret), "token")?,
    );
    headers.insert(
        NODE_NAME_HEADER,
        header(&credentials.node_name, "node name")?,
    );
    headers.insert(
        NODE_PASSWORD_HEADER,
        header(&credentials.node_password, "node password")?,
    );
    let connected = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        true,
        Some(Connector::Rustls(tls)),
    )
    .await;
    let mut socket = match connected {
        Ok((socket, _)) => socket,
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response.body().as_deref().unwrap_or_default();
            return Err(match status {
                401 => JoinError::TokenRejected {
                    address: address.to_string(),
                },
                403 => JoinError::Refused {
                    address: address.to_string(),
                    message: status_message(body),
                },
                _ => JoinError::Unreachable {
                    address: address.to_string(),
                    reason: format!("HTTP {status}: {}", status_message(body)),
                },
            });
        }
        Err(error) => {
            return Err(JoinError::Unreachable {
                address: address.to_string(),
                reason: error.to_string(),
            });
        }
    };
    let local_addr = match socket.get_ref() {
        MaybeTlsStream::Rustls(tls) => tls.get_ref().0.local_addr().ok(),
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().ok(),
        _ => None,
    };
    loop {
        let message = match socket.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                return Err(JoinError::Unreachable {
                    address: address.to_string(),
                    reason: format!("connection lost before the Welcome: {error}"),
                });
            }
            None => {
                return Err(JoinError::Unreachable {
                    address: address.to_string(),
                    reason: "connection closed before the Welcome".into(),
                });
            }
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                return Err(JoinError::Unreachable {
                    address: address.to_string(),
                    reason: format!(
                        "closed before the Welcome: {}",
                        frame.map(|f| f.reason.to_string()).unwrap_or_default()
                    ),
                });
            }
            _ => continue,
        };
        match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::Welcome {
                server_id,
                node_name,
                peers,
                client_cert_pem,
                client_key_pem,
            }) => {
                return Ok(Registration {
                    address: address.to_string(),
                    server_id,
                    node_name,
                    peers,
                    client_cert_pem,
                    client_key_pem,
                    local_addr,
                    socket,
                });
            }
            Ok(other) => {
                return Err(protocol(format!("expected a Welcome first, got {other:?}")));
            }
            // Unknown messages from newer servers are ignored.
            Err(error) => tracing::debug!(%error, "ignoring an unknown message before the Welcome"),
        }
    }
}

/// The `message` of a Kubernetes Status body, or the body itself.
fn status_message(body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    if let Some(message) = parsed
        .as_ref()
        .and_then(|value| value.get("message"))
        .and_then(|value| value.as_str())
    {
        return message.to_string();
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        "no explanation given".into()
    } else {
        text
    }
}

impl Registration {
    /// Holds the connection until it drops, goes silent for [`DEAD_AFTER`], or `shutdown`
    /// fires: pings every [`PING_INTERVAL`] (pongs to the server's pings go out
    /// automatically), hands peer list updates to `on_peers`, and sends each new value of
    /// `reports` (and the current one at once).
    pub async fn hold(
        mut self,
        shutdown: &CancellationToken,
        mut on_peers: impl FnMut(Vec<Peer>),
        mut reports: Option<watch::Receiver<AgentMessage>>,
    ) -> Ended {
        if let Some(reports) = reports.as_mut() {
            let current = reports.borrow_and_update().clone();
            if let Err(error) = self.send(&current).await {
                return Ended::Dropped(error);
            }
        }
        let mut ticker = tokio::time::interval(PING_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            let report_changed = async {
                match reports.as_mut() {
                    Some(reports) => reports.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = self.socket.close(None).await;
                    return Ended::Shutdown;
                }
                _ = ticker.tick() => {
                    if last_heard.elapsed() > DEAD_AFTER {
                        return Ended::Dropped(format!("no word from the server for {DEAD_AFTER:?}"));
                    }
                    // A stalled connection must not hold the loop past DEAD_AFTER.
                    match tokio::time::timeout(DEAD_AFTER, self.socket.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => return Ended::Dropped(error.to_string()),
                        Err(_) => return Ended::Dropped(format!("a ping could not be sent for {DEAD_AFTER:?}")),
                    }
                }
                changed = report_changed => {
                    if !changed {
                        reports = None;
                        continue;
                    }
                    let Some(current) = reports.as_mut().map(|r| r.borrow_and_update().clone()) else {
                        continue;
                    };
                    if let Err(error) = self.send(&current).await {
                        return Ended::Dropped(error);
                    }
                }
                message = self.socket.next() => {
                    last_heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                            Ok(ServerMessage::Peers { peers }) => on_peers(peers),
                            Ok(ServerMessage::Welcome { .. }) => tracing::debug!("ignoring a second Welcome"),
                            Err(error) => tracing::debug!(%error, "ignoring an unknown message"),
                        },
                        Some(Ok(Message::Close(frame))) => {
                            return Ended::Dropped(format!(
                                "the server closed the connection{}",
                                frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                            ));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(error)) => return Ended::Dropped(error.to_string()),
                        None => return Ended::Dropped("the connection closed".into()),
                    }
                }
            }
        }
    }

    async fn send(&mut self, message: &AgentMessage) -> Result<(), String> {
        let text = serde_json::to_string(message).map_err(|error| error.to_string())?;
        match tokio::time::timeout(DEAD_AFTER, self.socket.send(Message::Text(text.into()))).await {
            Ok(sent) => sent.map_err(|error| error.to_string()),
            Err(_) => Err(format!("a report could not be sent for {DEAD_AFTER:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_messages_are_read_from_status_bodies() {
        let body =
            br#"{"kind":"Status","message":"node name a is taken by another password","code":403}"#;
        assert_eq!(
            status_message(body),
            "node name a is taken by another password"
        );
        assert_eq!(status_message(b"plain words\n"), "plain words");
        assert_eq!(status_message(b""), "no explanation given");
    }
}
