//! One accepted registration connection, from the upgrade to the close.
//!
//! The server sends the welcome (its id, the peers, the node's client certificate), then the
//! peer list again each time it changes. It pings every `PING_INTERVAL` and closes after
//! `DEAD_AFTER` of silence (any frame from the agent counts as life). While the connection
//! is open, `/capstan/agents/<node>` names this server; the record is written on accept
//! (replacing a previous connection's), its TTL refreshed, and deleted on close only if it
//! is still the one this connection wrote (compare-and-swap on its revision), so a closing
//! stale connection never erases the record of the agent's new one.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::ws::{Message, WebSocket};
use tokio::time::MissedTickBehavior;

use super::{AgentReport, JoinState, metrics};
use crate::agents::{AgentRecord, RECORD_REFRESH, RECORD_TTL, record_key};
use capstan_apiserver::registry::timestamp;
use capstan_datastore::{Store, WriteOp, WriteOutcome};
use capstan_machinery::join::{AgentMessage, DEAD_AFTER, PING_INTERVAL, ServerMessage};
use capstan_pki::certs::IssuedCert;

/// Attempts at writing the record when other servers keep replacing it.
const RECORD_ATTEMPTS: usize = 5;

/// Serves one agent until it goes away, goes silent, or the server shuts down.
pub(super) async fn run(
    state: Arc<JoinState>,
    node: String,
    certificate: IssuedCert,
    mut socket: WebSocket,
) {
    metrics::AGENTS_CONNECTED.inc();
    let session = Session::open(&state, &node);
    let store = state.objects.storage().store().clone();
    let mut record = AgentRecord {
        node_name: node.clone(),
        server_id: state.server_id.clone(),
        server_address: state.server_address.clone(),
        connected_at: timestamp(SystemTime::now()),
        active_server: None,
    };
    let mut revision = match claim(&store, &record).await {
        Ok(revision) => Some(revision),
        Err(error) => {
            tracing::warn!(%node, %error, "could not write the agent's connection record");
            None
        }
    };

    let mut peers = state.peers.clone();
    let welcome = ServerMessage::Welcome {
        server_id: state.server_id.clone(),
        node_name: node.clone(),
        peers: sorted(peers.borrow_and_update().clone()),
        client_cert_pem: certificate.cert_pem,
        client_key_pem: certificate.key_pem,
    };
    let mut alive = send(&mut socket, &welcome).await;
    let mut peers_open = true;
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(RECORD_REFRESH);
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    refresh.reset();

    while alive {
        tokio::select! {
            () = state.shutdown.cancelled() => {
                let _ = tokio::time::timeout(DEAD_AFTER, socket.send(Message::Close(None))).await;
                break;
            }
            changed = peers.changed(), if peers_open => {
                if changed.is_err() {
                    peers_open = false;
                    continue;
                }
                let list = sorted(peers.borrow_and_update().clone());
                alive = send(&mut socket, &ServerMessage::Peers { peers: list }).await;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > DEAD_AFTER {
                    tracing::info!(%node, "agent silent for {DEAD_AFTER:?}; closing its connection");
                    break;
                }
                alive = tokio::time::timeout(DEAD_AFTER, socket.send(Message::Ping(Default::default())))
                    .await
                    .is_ok_and(|sent| sent.is_ok());
            }
            _ = refresh.tick() => {
                if let Some(ours) = revision {
                    revision = rewrite(&store, &record, ours).await;
                }
            }
            received = socket.recv() => match received {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(message)) => {
                    last_heard = Instant::now();
                    if let Message::Text(text) = message
                        && let Ok(AgentMessage::Report { active_server, failovers }) =
                            serde_json::from_str::<AgentMessage>(text.as_str())
                    {
                        session.report(&state, active_server.clone(), failovers);
                        if record.active_server != active_server {
                            record.active_server = active_server;
                            if let Some(ours) = revision {
                                revision = rewrite(&store, &record, ours).await;
                            }
                        }
                    }
                    // Anything else (pongs, unknown messages of later agents) is just life.
                }
            },
        }
    }

    if let Some(ours) = revision
        && let Err(error) = store.delete(&record_key(&node), Some(ours)).await
    {
        tracing::warn!(%node, %error, "could not remove the agent's connection record");
    }
    session.close(&state);
    metrics::AGENTS_CONNECTED.dec();
    tracing::info!(%node, "agent disconnected");
}

/// This connection's entry in the state's report table.
struct Session {
    node: String,
    id: u64,
}

impl Session {
    fn open(state: &JoinState, node: &str) -> Session {
        let id = rand::random::<u64>();
        let mut sessions = state.reports.lock().unwrap_or_else(|e| e.into_inner());
        sessions.insert(node.to_string(), (id, None));
        Session {
            node: node.to_string(),
            id,
        }
    }

    /// Records a report and counts the failovers it adds (see `metrics.rs`).
    fn report(&self, state: &JoinState, active_server: Option<String>, failovers: u64) {
        let mut sessions = state.reports.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = state
            .failovers_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let previous = seen.insert(self.node.clone(), failovers).unwrap_or(0);
        let added = if failovers >= previous {
            failovers - previous
        } else {
            failovers
        };
        metrics::LB_FAILOVERS.inc_by(added);
        if let Some((id, report)) = sessions.get_mut(&self.node)
            && *id == self.id
        {
            *report = Some(AgentReport {
                active_server,
                failovers,
                received_at: SystemTime::now(),
            });
        }
    }

    fn close(&self, state: &JoinState) {
        let mut sessions = state.reports.lock().unwrap_or_else(|e| e.into_inner());
        if sessions
            .get(&self.node)
            .is_some_and(|(id, _)| *id == self.id)
        {
            sessions.remove(&self.node);
        }
    }
}

fn sorted(mut peers: Vec<super::Peer>) -> Vec<super::Peer> {
    peers.sort();
    peers.dedup();
    peers
}

/// Sends one message (bounded by `DEAD_AFTER`); false when the connection is gone.
async fn send(socket: &mut WebSocket, message: &ServerMessage) -> bool {
    let Ok(text) = serde_json::to_string(message) else {
        return false;
    };
    tokio::time::timeout(DEAD_AFTER, socket.send(Message::Text(text.into())))
        .await
        .is_ok_and(|sent| sent.is_ok())
}

/// Writes `record` over whatever record the node has; returns the revision written.
async fn claim(store: &Store, record: &AgentRecord) -> Result<i64, String> {
    let key = record_key(&record.node_name);
    let value = bytes::Bytes::from(serde_json::to_vec(record).unwrap_or_default());
    for _ in 0..RECORD_ATTEMPTS {
        let op = match store.get(&key).await.map_err(|e| e.to_string())? {
            Some(current) => WriteOp::Update {
                key: key.clone(),
                value: value.clone(),
                expected_revision: current.mod_revision,
                ttl: Some(RECORD_TTL),
            },
            None => WriteOp::Create {
                key: key.clone(),
                value: value.clone(),
                ttl: Some(RECORD_TTL),
            },
        };
        let written = store.write(op).await.map_err(|e| e.to_string())?;
        if let WriteOutcome::Applied { revision } = written.outcome {
            return Ok(revision);
        }
    }
    Err(format!(
        "the connection record {key} kept changing while being written"
    ))
}

/// Rewrites our record (new content, fresh TTL) if it is still ours; the new revision, or
/// `None` once another connection replaced it (then it is theirs to keep and delete).
async fn rewrite(store: &Store, record: &AgentRecord, ours: i64) -> Option<i64> {
    let op = WriteOp::Update {
        key: record_key(&record.node_name),
        value: serde_json::to_vec(record).unwrap_or_default().into(),
        expected_revision: ours,
        ttl: Some(RECORD_TTL),
    };
    match store.write(op).await.map(|committed| committed.outcome) {
        Ok(WriteOutcome::Applied { revision }) => Some(revision),
        Ok(WriteOutcome::Conflict { .. }) => None,
        Err(error) => {
            tracing::debug!(node = %record.node_name, %error, "could not refresh the connection record");
            Some(ours)
        }
    }
}
