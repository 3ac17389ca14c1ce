//! `capstan agent` (ARCHITECTURE.md `agent/`): joins through the registration address,
//! keeps the list of servers, and serves a local load balancer over them. It imports only
//! `join::protocol` from the server side.
//!
//! The agent checks the cluster CA against the token before sending any secret, keeps its
//! registration connection open (reconnecting to the registration address, then to the saved
//! peers, so a restart works while the registration address is down), keeps the load
//! balancer's server list current, and sends the node's heartbeats through it.

pub mod client;
mod files;
pub mod heartbeat;
pub mod lb;
pub mod settings;
pub mod tls;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use capstan_machinery::join::{
    AgentMessage, CACERTS_PATH, ClusterToken, Peer, TokenError, ca_hash,
};
use capstan_machinery::kubeconfig::{Kubeconfig, Material};
use client::{Credentials, Ended, JoinError, Registration};
use files::StateFiles;
use lb::{LbStatus, LoadBalancer};
pub use settings::{AgentFlags, AgentSettings};

/// How long one `/cacerts` request or registration may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between rounds of reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// The API port assumed when `--server` names none.
const DEFAULT_SERVER_PORT: u16 = 6443;

/// The agent's settings, checked.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Registration addresses, `host:port`.
    pub servers: Vec<String>,
    /// The cluster token.
    pub token: ClusterToken,
    /// The node name before any `--with-node-id` suffix.
    pub node_name: String,
    /// Whether to append the stored random suffix to the node name.
    pub with_node_id: bool,
    /// The agent's state directory.
    pub data_dir: PathBuf,
    /// Where the local load balancer listens.
    pub lb_bind: SocketAddr,
    /// Whether to send Node and Lease heartbeats (tests against fake servers turn them off).
    pub heartbeats: bool,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A flag is wrong.
    #[error("{0}")]
    Flag(String),
    /// The token cannot be read.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// `/cacerts` served a CA other than the token's.
    #[error(
        "{address} serves a cluster CA with hash {actual}, but the token expects {expected}: wrong --server, or a token from another cluster; no credential was sent"
    )]
    CaMismatch {
        /// The server asked.
        address: String,
        /// The token's hash.
        expected: String,
        /// The served CA's hash.
        actual: String,
    },
    /// The servers refused the node.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// The agent's state files.
    #[error("{what} {path}: {source}")]
    File {
        /// What the agent was doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The cluster CA is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The load balancer cannot listen.
    #[error("the load balancer cannot listen on {bind}: {source}")]
    Listen {
        /// The address.
        bind: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

impl AgentConfig {
    /// Loads the layered configuration (process environment, files, `flags`) and checks it.
    pub fn from_flags(flags: &AgentFlags) -> Result<AgentConfig, AgentError> {
        let loaded = settings::load(flags).map_err(|error| AgentError::Flag(error.to_string()))?;
        AgentConfig::from_settings(&loaded.config)
    }

    /// Checks loaded settings.
    pub fn from_settings(flags: &AgentSettings) -> Result<AgentConfig, AgentError> {
        let servers = flags
            .server
            .iter()
            .map(|server| server.trim())
            .filter(|server| !server.is_empty())
            .map(server_address)
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(AgentError::Flag(
                "no registration address: set `server` (--server, CAPSTAN_URL or the config file)"
                    .into(),
            ));
        }
        if flags.token.trim().is_empty() {
            return Err(AgentError::Flag(
                "no cluster token: set `token` (--token, CAPSTAN_TOKEN or the config file)".into(),
            ));
        }
        let node_name = match flags.node_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => host_name(),
        };
        if node_name.is_empty() {
            return Err(AgentError::Flag(
                "the node name is empty (pass --node-name)".into(),
            ));
        }
        Ok(AgentConfig {
            servers,
            token: flags.token.parse()?,
            node_name,
            with_node_id: flags.with_node_id,
            data_dir: flags.data_dir.clone(),
            lb_bind: SocketAddr::from((Ipv4Addr::LOCALHOST, flags.lb_server_port)),
            heartbeats: true,
        })
    }
}

/// `https://host[:port][/]` (or `host:port`) → `host:port`.
pub fn server_address(url: &str) -> Result<String, AgentError> {
    let bad = |why: &str| AgentError::Flag(format!("--server {url:?}: {why}"));
    if url.starts_with("http://") {
        return Err(bad("the registration address must be https://"));
    }
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("expected https://host[:port]"));
    }
    let address = if tls::host_of(authority).is_some() {
        authority.to_string()
    } else if authority.ends_with(']') || !authority.contains(':') {
        format!("{authority}:{DEFAULT_SERVER_PORT}")
    } else {
        return Err(bad("the port is not a number"));
    };
    tls::host_of(&address)
        .map(|_| address.clone())
        .ok_or_else(|| bad("expected https://host[:port]"))
}

/// The host name, lowercase (Kubernetes node names are).
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The node's credentials, loading or creating the password (and the id suffix).
pub fn node_credentials(config: &AgentConfig) -> Result<Credentials, AgentError> {
    let files = StateFiles::new(&config.data_dir);
    let node_password = files.node_password()?;
    let node_name = if config.with_node_id {
        format!("{}-{}", config.node_name, files.node_id()?)
    } else {
        config.node_name.clone()
    };
    Ok(Credentials {
        secret: config.token.secret.clone(),
        node_name,
        node_password,
    })
}

/// Reads `/cacerts` from the first of `servers` that answers (without verifying it) and
/// checks it against `token`. `Ok(None)` when none answered.
pub async fn fetch_ca(
    servers: &[String],
    token: &ClusterToken,
) -> Result<Option<String>, AgentError> {
    for address in servers {
        match tls::get(tls::unverified(), address, CACERTS_PATH, JOIN_TIMEOUT).await {
            Ok(bytes) => {
                let ca_pem = String::from_utf8_lossy(&bytes).into_owned();
                if !token.accepts_ca(&ca_pem) {
                    return Err(AgentError::CaMismatch {
                        address: address.clone(),
                        expected: token.ca_hash.clone().unwrap_or_default(),
                        actual: ca_hash(&ca_pem),
                    });
                }
                // Fails early if the bundle is not usable.
                tls::verifying(&ca_pem)?;
                return Ok(Some(ca_pem));
            }
            Err(error) => tracing::warn!(%error, "cannot read the cluster CA"),
        }
    }
    Ok(None)
}

/// Runs the agent until `shutdown`; returns early only on errors retrying cannot fix
/// (CA mismatch, token rejected, node refused, unusable data directory). Either way it
/// returns only once every task it started has ended: the load balancer and the
/// connections it proxies, the status reports, the heartbeats.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    // The tasks stop with the agent, also when it gives up on an error.
    let stop = shutdown.child_token();
    let tasks = TaskTracker::new();
    let outcome = serve(&config, &tasks, &stop).await;
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("agent stopped");
    outcome
}

/// The agent's work: trust the CA, start the load balancer, then register and hold the
/// registration connection, reconnecting, until `shutdown`. Tasks go on `tasks`.
async fn serve(
    config: &AgentConfig,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    let files = StateFiles::new(&config.data_dir);
    let credentials = node_credentials(config)?;
    tracing::info!(node = %credentials.node_name, servers = ?config.servers, "agent starting");

    let Some(ca_pem) = trust(config, &files, shutdown).await? else {
        return Ok(());
    };
    let verified = tls::verifying(&ca_pem)?;

    let mut peers = files.load_peers();
    let lb = LoadBalancer::start(
        config.lb_bind,
        &credentials.node_name,
        config.servers.clone(),
        addresses(&peers),
        lb::https_check(verified.clone()),
        tasks,
        shutdown.clone(),
    )
    .await
    .map_err(|source| AgentError::Listen {
        bind: config.lb_bind,
        source,
    })?;
    tracing::info!(address = %lb.local_addr(), "load balancer listening");

    let (reports_tx, reports) = watch::channel(report(&lb.status().borrow()));
    tasks.spawn(forward_reports(lb.status(), reports_tx, shutdown.clone()));

    let mut heartbeats: Option<(watch::Sender<heartbeat::NodeFacts>, watch::Sender<String>)> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut candidates = config.servers.clone();
        for address in addresses(&peers) {
            if !candidates.contains(&address) {
                candidates.push(address);
            }
        }
        let mut joined = false;
        for address in &candidates {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let registration = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                registration = client::connect(address, verified.clone(), &credentials, JOIN_TIMEOUT) => registration,
            };
            let registration = match registration {
                Ok(registration) => registration,
                Err(error) if error.is_fatal() => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(%error, "registration failed; trying the next server");
                    continue;
                }
            };
            joined = true;
            backoff = Duration::from_secs(1);
            welcome(&files, &ca_pem, &lb, &registration, &mut peers)?;
            let facts = heartbeat::NodeFacts {
                name: credentials.node_name.clone(),
                internal_ip: registration.local_addr.map(|addr| addr.ip()),
            };
            let node_kubeconfig = kubeconfig(lb.local_addr().port(), &ca_pem, &registration);
            match &heartbeats {
                Some((facts_tx, kubeconfig_tx)) => {
                    facts_tx.send_replace(facts);
                    // A new certificate (after a server restart or upgrade) replaces the old.
                    kubeconfig_tx.send_if_modified(|current| {
                        let changed = *current != node_kubeconfig;
                        *current = node_kubeconfig;
                        changed
                    });
                }
                None if config.heartbeats => {
                    let (facts_tx, facts_rx) = watch::channel(facts);
                    let (kubeconfig_tx, kubeconfig_rx) = watch::channel(node_kubeconfig);
                    tasks.spawn(heartbeat::run(kubeconfig_rx, facts_rx, shutdown.clone()));
                    heartbeats = Some((facts_tx, kubeconfig_tx));
                }
                None => {}
            }
            let server = registration.address.clone();
            let peer_files = files.clone();
            let peer_lb = lb.clone();
            let (peers_tx, mut peers_rx) = watch::channel(peers.clone());
            let ended = registration
                .hold(
                    shutdown,
                    move |update: Vec<Peer>| {
                        tracing::info!(peers = ?update, "the servers changed");
                        if let Err(error) = peer_files.save_peers(&update) {
                            tracing::warn!(%error, "cannot save the server list");
                        }
                        peer_lb.set_peers(addresses(&update));
                        peers_tx.send_replace(update);
                    },
                    Some(reports.clone()),
                )
                .await;
            peers = peers_rx.borrow_and_update().clone();
            match ended {
                Ended::Shutdown => return Ok(()),
                Ended::Dropped(reason) => {
                    tracing::warn!(%server, %reason, "registration connection lost; reconnecting");
                }
            }
            break;
        }
        let pause = if joined {
            Duration::from_secs(1)
        } else {
            backoff
        };
        if !joined {
            backoff = (backoff * 2).min(MAX_BACKOFF);
            tracing::warn!(retry_in = ?pause, "no server accepted the registration");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The cluster CA: the saved one if the token accepts it, else fetched (and saved) from the
/// registration addresses, retrying until one answers. `None` on shutdown.
async fn trust(
    config: &AgentConfig,
    files: &StateFiles,
    shutdown: &CancellationToken,
) -> Result<Option<String>, AgentError> {
    if let Some(saved) = files.load_ca()
        && config.token.accepts_ca(&saved)
    {
        return Ok(Some(saved));
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        let fetched = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            fetched = fetch_ca(&config.servers, &config.token) => fetched?,
        };
        if let Some(ca_pem) = fetched {
            if config.token.ca_hash.is_none() {
                tracing::warn!(
                    hash = %ca_hash(&ca_pem),
                    "bare token: trusting the cluster CA on first use (a full K10… token would check it)"
                );
            }
            files.save_ca(&ca_pem)?;
            return Ok(Some(ca_pem));
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Saves what a Welcome brings: the node's certificate, the kubeconfig, the servers.
fn welcome(
    files: &StateFiles,
    ca_pem: &str,
    lb: &LoadBalancer,
    registration: &Registration,
    peers: &mut Vec<Peer>,
) -> Result<(), AgentError> {
    tracing::info!(
        server = %registration.address,
        server_id = %registration.server_id,
        node = %registration.node_name,
        peers = registration.peers.len(),
        "registered"
    );
    files.save_client(&registration.client_cert_pem, &registration.client_key_pem)?;
    files.save_kubeconfig(&kubeconfig(lb.local_addr().port(), ca_pem, registration))?;
    files.save_peers(&registration.peers)?;
    lb.set_peers(addresses(&registration.peers));
    peers.clone_from(&registration.peers);
    Ok(())
}

fn addresses(peers: &[Peer]) -> Vec<String> {
    peers.iter().map(|peer| peer.address.clone()).collect()
}

fn report(status: &LbStatus) -> AgentMessage {
    AgentMessage::Report {
        active_server: status.active.clone(),
        failovers: status.failovers,
    }
}

async fn forward_reports(
    mut status: watch::Receiver<LbStatus>,
    reports: watch::Sender<AgentMessage>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = status.changed() => if changed.is_err() { return },
        }
        let current = status.borrow_and_update().clone();
        tracing::info!(
            active = current.active.as_deref().unwrap_or("none"),
            failovers = current.failovers,
            "load balancer status"
        );
        reports.send_replace(report(&current));
    }
}

/// A kubeconfig for local clients: the load balancer, the cluster CA, the node's certificate.
fn kubeconfig(lb_port: u16, ca_pem: &str, registration: &Registration) -> String {
    Kubeconfig {
        server: &format!("https://127.0.0.1:{lb_port}"),
        certificate_authority: Material::Pem(ca_pem),
        client_certificate: Material::Pem(&registration.client_cert_pem),
        client_key: Material::Pem(&registration.client_key_pem),
        cluster: "capstan",
        user: "node",
        context: "capstan",
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_become_addresses() {
        assert_eq!(
            server_address("https://127.0.0.2:6443/").expect("ok"),
            "127.0.0.2:6443"
        );
        assert_eq!(
            server_address("https://api.example.org").expect("ok"),
            "api.example.org:6443"
        );
        assert_eq!(
            server_address("10.0.0.1:7443").expect("ok"),
            "10.0.0.1:7443"
        );
        assert_eq!(server_address("https://[::1]").expect("ok"), "[::1]:6443");
        assert!(server_address("http://10.0.0.1:6443").is_err());
        assert!(server_address("https://host:port").is_err());
    }

    #[test]
    fn flags_read_comma_separated_servers_and_full_tokens() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            flags: AgentFlags,
        }
        let token = format!("K10{}::server:s3cret", "ab".repeat(32));
        let cli = Cli::try_parse_from([
            "agent",
            "--server",
            "https://127.0.0.2:6443,https://127.0.0.3:6443",
            "--token",
            &token,
            "--node-name",
            "n1",
        ])
        .expect("flags parse");
        let config = AgentConfig::from_flags(&cli.flags).expect("valid");
        assert_eq!(config.servers, ["127.0.0.2:6443", "127.0.0.3:6443"]);
        assert_eq!(config.token.secret, "s3cret");
        assert_eq!(config.lb_bind.port(), 6444);
    }
}
