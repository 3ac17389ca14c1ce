//! `capstan status`: the cluster as the datastore sees it, for an operator at a shell.
//!
//! It reads the datastore directly (the same configuration as `capstan server`), not the
//! API, so it works while every server is down or unreachable: which servers are alive and
//! which leads, which agents are connected where and when they last heart-beat, and how far
//! compaction lags behind the revision.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::ServerConfig;
use capstan_apiserver::registry::{ObjectStore, Registry, RegistryError};
use capstan_apiserver::storage::{ListOptions, Storage};
use capstan_cluster::agents::{AGENTS_PREFIX, AgentRecord};
use capstan_cluster::membership::{SERVERS_PREFIX, ServerRecord, live_servers, parse_time};
use capstan_datastore::{DatastoreError, DatastoreMetrics, KeyRange, ListRequest, Store};
use capstan_machinery::meta;

/// The namespace of node heartbeat leases.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The datastore could not be opened or read.
    #[error("datastore: {0}")]
    Datastore(#[from] DatastoreError),
    /// Nodes or leases could not be read.
    #[error("cannot read nodes or leases: {0}")]
    Registry(#[from] RegistryError),
    /// The status could not be encoded as JSON.
    #[error("cannot encode the status as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One live server.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// The server id.
    pub id: String,
    /// Its node name.
    pub node_name: String,
    /// Its advertise address (`ip:port`).
    pub address: String,
    /// Seconds since it last renewed its record.
    pub lease_age_seconds: f64,
    /// Whether it is the cluster leader.
    pub leader: bool,
    /// When it started.
    pub started_at: String,
}

/// One agent (or node).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// The node name.
    pub node_name: String,
    /// The server it is connected to, when connected.
    pub server_id: Option<String>,
    /// That server's address.
    pub server_address: Option<String>,
    /// When it connected.
    pub connected_at: Option<String>,
    /// The server its local load balancer sends traffic to, as the agent reported it.
    pub load_balancer_server: Option<String>,
    /// Its node Lease's last renewal.
    pub last_heartbeat: Option<String>,
    /// Seconds since then.
    pub heartbeat_age_seconds: Option<f64>,
    /// The node's Ready condition status (`True`, `False`, `Unknown`), when it has a Node.
    pub ready: Option<String>,
}

/// The datastore's state.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatastoreStatus {
    /// `postgres`, `mysql` or `sqlite`.
    pub engine: String,
    /// The endpoint, password masked.
    pub endpoint: String,
    /// The current revision.
    pub revision: i64,
    /// Revisions below this are compacted away.
    pub compact_revision: i64,
    /// Revisions of history kept: revision − compact revision.
    pub compaction_lag: i64,
}

/// Everything `capstan status` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Live servers, by id.
    pub servers: Vec<ServerStatus>,
    /// Agents and nodes, by node name.
    pub agents: Vec<AgentStatus>,
    /// The datastore.
    pub datastore: DatastoreStatus,
}

/// Opens the datastore of `config`, reads the status and renders it (text, or JSON when
/// `json`).
pub async fn run(config: &ServerConfig, json: bool) -> Result<String, StatusError> {
    let store = Store::open(&config.datastore(), &DatastoreMetrics::unscraped()).await?;
    let status = collect(&store).await;
    store.close().await;
    let status = status?;
    if json {
        Ok(serde_json::to_string_pretty(&status)? + "\n")
    } else {
        Ok(render_text(&status))
    }
}

async fn list_prefix(store: &Store, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StatusError> {
    let page = store
        .list(&ListRequest {
            range: KeyRange::prefix(prefix),
            revision: None,
            limit: 0,
        })
        .await?;
    Ok(page
        .items
        .into_iter()
        .map(|item| (item.key, item.value.to_vec()))
        .collect())
}

/// Reads the status from `store`.
pub async fn collect(store: &Store) -> Result<ClusterStatus, StatusError> {
    let now = SystemTime::now();
    let records: Vec<ServerRecord> = list_prefix(store, SERVERS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
        .collect();
    let servers = live_servers(&records, now)
        .into_iter()
        .map(|record| ServerStatus {
            lease_age_seconds: record.age(now).map_or(0.0, |age| age.as_secs_f64()),
            id: record.id,
            node_name: record.node_name,
            address: record.address,
            leader: record.leader,
            started_at: record.started_at,
        })
        .collect();

    let mut agents: BTreeMap<String, AgentStatus> = BTreeMap::new();
    let blank = |name: &str| AgentStatus {
        node_name: name.to_string(),
        server_id: None,
        server_address: None,
        connected_at: None,
        load_balancer_server: None,
        last_heartbeat: None,
        heartbeat_age_seconds: None,
        ready: None,
    };
    for (_, value) in list_prefix(store, AGENTS_PREFIX).await? {
        let Ok(record) = serde_json::from_slice::<AgentRecord>(&value) else {
            continue;
        };
        let entry = agents
            .entry(record.node_name.clone())
            .or_insert_with(|| blank(&record.node_name));
        entry.server_id = Some(record.server_id);
        entry.server_address = Some(record.server_address);
        entry.connected_at = Some(record.connected_at);
        entry.load_balancer_server = record.active_server;
    }
    let objects = ObjectStore::new(Storage::new(store.clone()));
    let catalog = Registry::new().catalog();
    if let Some(nodes) = catalog.by_kind("v1", "Node") {
        for node in objects
            .list(&nodes, None, &ListOptions::default())
            .await?
            .items
        {
            let Some(name) = meta(&node).name() else {
                continue;
            };
            let ready = node["status"]["conditions"]
                .as_array()
                .and_then(|conditions| {
                    conditions
                        .iter()
                        .find(|condition| condition["type"] == "Ready")
                        .and_then(|condition| condition["status"].as_str())
                        .map(str::to_string)
                });
            agents
                .entry(name.to_string())
                .or_insert_with(|| blank(name))
                .ready = ready;
        }
    }
    if let Some(leases) = catalog.by_kind("coordination.k8s.io/v1", "Lease") {
        let listed = objects
            .list(&leases, Some(NODE_LEASE_NAMESPACE), &ListOptions::default())
            .await?;
        for lease in listed.items {
            let (Some(name), Some(renewed)) =
                (meta(&lease).name(), lease["spec"]["renewTime"].as_str())
            else {
                continue;
            };
            let entry = agents
                .entry(name.to_string())
                .or_insert_with(|| blank(name));
            entry.last_heartbeat = Some(renewed.to_string());
            entry.heartbeat_age_seconds = parse_time(renewed).map(|time| {
                now.duration_since(time)
                    .map_or(0.0, |age| age.as_secs_f64())
            });
        }
    }

    let revision = store.current_revision().await?;
    let compaction = store.compaction_state().await?;
    Ok(ClusterStatus {
        servers,
        agents: agents.into_values().collect(),
        datastore: DatastoreStatus {
            engine: store.engine().name().to_string(),
            endpoint: store.endpoint().to_string(),
            revision,
            compact_revision: compaction.compact_revision,
            compaction_lag: revision - compaction.compact_revision,
        },
    })
}

/// Rows as aligned columns (two spaces apart), the first row being the header.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| format!("{cell:<width$}", width = widths[column]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn seconds(age: f64) -> String {
    format!("{age:.1}s")
}

/// The status as plain text with aligned columns.
pub fn render_text(status: &ClusterStatus) -> String {
    let dash = || "-".to_string();
    let mut out = String::from("SERVERS\n");
    let mut rows = vec![vec![
        "ID".to_string(),
        "ADDRESS".to_string(),
        "LEASE AGE".to_string(),
        "LEADER".to_string(),
    ]];
    for server in &status.servers {
        rows.push(vec![
            server.id.clone(),
            server.address.clone(),
            seconds(server.lease_age_seconds),
            if server.leader {
                "✓".to_string()
            } else {
                String::new()
            },
        ]);
    }
    out.push_str(&table(&rows));
    out.push_str("\nAGENTS\n");
    let mut rows = vec![vec![
        "NODE".to_string(),
        "READY".to_string(),
        "REGISTERED ON".to_string(),
        "LOAD BALANCER TO".to_string(),
        "CONNECTED".to_string(),
        "LAST HEARTBEAT".to_string(),
    ]];
    for agent in &status.agents {
        let server = match (&agent.server_id, &agent.server_address) {
            (Some(id), Some(address)) => format!("{id} ({address})"),
            (Some(id), None) => id.clone(),
            _ => dash(),
        };
        let heartbeat = match (&agent.last_heartbeat, agent.heartbeat_age_seconds) {
            (Some(time), Some(age)) => format!("{time} ({} ago)", seconds(age)),
            (Some(time), None) => time.clone(),
            _ => dash(),
        };
        rows.push(vec![
            agent.node_name.clone(),
            agent.ready.clone().unwrap_or_else(dash),
            server,
            agent.load_balancer_server.clone().unwrap_or_else(dash),
            agent.connected_at.clone().unwrap_or_else(dash),
            heartbeat,
        ]);
    }
    out.push_str(&table(&rows));
    let store = &status.datastore;
    out.push_str("\nDATASTORE\n");
    out.push_str(&table(&[
        vec!["engine".to_string(), store.engine.clone()],
        vec!["endpoint".to_string(), store.endpoint.clone()],
        vec!["revision".to_string(), store.revision.to_string()],
        vec![
            "compact revision".to_string(),
            store.compact_revision.to_string(),
        ],
        vec![
            "compaction lag".to_string(),
            store.compaction_lag.to_string(),
        ],
    ]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let text = table(&[
            vec!["ID".into(), "ADDRESS".into()],
            vec!["a-long-id".into(), "127.0.0.2:6443".into()],
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].find("ADDRESS"), lines[1].find("127.0.0.2"));
    }
}
