//! `capstan server`: opens the datastore and runs this server's share of the cluster's
//! background work until told to stop.
//!
//! In start-up order: the datastore (writer, change feed, and the maintenance loop that
//! compacts and expires TTLs while this server holds the maintenance lock); the shared
//! bootstrap state and the token (`token.rs`, `cluster::bootstrap`); certificates; the
//! controllers every server runs; membership and leader election, with the singletons the
//! leader runs; and one HTTPS listener serving registration (`join`) beside the Kubernetes
//! API (`api`).
//!
//! Shutdown is a parameter: `main` cancels the token on SIGINT/SIGTERM, tests cancel their
//! own. The order is fixed: cancel, wait for every task (maintenance releases its lock so a
//! standby takes over at once), then close the store (pending writes fail, pool closes).

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use capstan_apiserver::api::connections::{self, ConnectionLimits};
use capstan_apiserver::api::{self, ApiState, tls::TlsError};
use capstan_apiserver::registry::{ObjectStore, Registry, RegistryError};
use capstan_apiserver::storage::Storage;
use capstan_cluster::join::{self, JoinConfig, JoinState};
use capstan_cluster::leader;
use capstan_cluster::membership::{self, Membership, ServerRecord};
use capstan_datastore::{DatastoreError, DatastoreMetrics, Store, masked};
use capstan_machinery::join::Peer;
use capstan_pki::files::PkiError;

pub mod token;

use token::ClusterTokenError;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data dir could not be created.
    #[error(
        "data dir {}: cannot create it: {source} (run as a user that may write there, or pass --data-dir ./data)",
        path.display()
    )]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// The certificates or the admin kubeconfig could not be prepared.
    #[error("{0}")]
    Pki(#[from] PkiError),
    /// TLS could not be configured.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The API port could not be opened.
    #[error(
        "cannot listen on {address}: {source} (is another capstan or kube-apiserver running there? pass --https-listen-port or --bind-address)"
    )]
    Listen {
        /// The address.
        address: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The cluster token or the shared bootstrap state could not be settled.
    #[error("{0}")]
    ClusterToken(#[from] ClusterTokenError),
    /// The default namespaces could not be created.
    #[error("cannot create the default namespaces: {0}")]
    Bootstrap(#[source] RegistryError),
    /// The datastore could not be opened.
    #[error("cannot open the datastore: {0}")]
    Datastore(#[source] DatastoreError),
    /// The server's metrics could not be registered.
    #[error("cannot register the datastore metrics: {0}")]
    Metrics(#[source] prometheus::Error),
}

/// Runs the server until `shutdown` is cancelled, then stops everything it started.
pub async fn run(config: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    private_data_dir(&config.data_dir)?;
    let datastore = config.datastore();
    let node_name = config.effective_node_name();
    tracing::info!(node = %node_name, data_dir = %config.data_dir.display(), endpoint = %masked(&datastore.endpoint), "starting capstan server");

    // The datastore's metrics are this server's own (several servers may share a process,
    // as the tests run them); `/metrics` serves them beside the process-global registry.
    let metrics = prometheus::Registry::new();
    let datastore_metrics = DatastoreMetrics::new(&metrics).map_err(ServerError::Metrics)?;
    let store = tokio::select! {
        opened = Store::open(&datastore, &datastore_metrics) => opened.map_err(ServerError::Datastore)?,
        () = shutdown.cancelled() => {
            tracing::info!("shutdown requested while opening the datastore");
            return Ok(());
        }
    };

    let tasks = TaskTracker::new();
    // The holder names this process, not just the node: a restarted server must not mistake
    // the lock of its previous life for its own.
    let holder = format!("{node_name}-{:08x}", rand::random::<u32>());
    tasks.spawn(capstan_datastore::run_maintenance(
        store.clone(),
        holder.clone(),
        shutdown.clone(),
    ));

    let served = tokio::select! {
        served = serve_api(&config, store.clone(), metrics, &node_name, &holder, &tasks, &shutdown) => served,
        // Bootstrap may wait for another server holding the bootstrap lock.
        () = shutdown.cancelled() => Ok(()),
    };
    tasks.close();
    if let Err(error) = served {
        shutdown.cancel();
        tasks.wait().await;
        store.close().await;
        return Err(error);
    }

    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping background tasks");
    tasks.wait().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates the data dir private to this user (0700), or tightens an existing one that other
/// users can enter: it holds the CA key, the token and (SQLite) every Secret.
fn private_data_dir(path: &std::path::Path) -> Result<(), ServerError> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let failed = |source| ServerError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(failed)?;
    let mode = std::fs::metadata(path)
        .map_err(failed)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the data dir is open to other users; restricting it to its owner");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    }
    Ok(())
}

/// The live servers as agents see them, following membership until shutdown.
fn peer_list(
    mut servers: tokio::sync::watch::Receiver<Vec<ServerRecord>>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> tokio::sync::watch::Receiver<Vec<Peer>> {
    let as_peers = |records: &[ServerRecord]| {
        let mut peers: Vec<Peer> = records
            .iter()
            .map(|record| Peer {
                id: record.id.clone(),
                address: record.address.clone(),
            })
            .collect();
        peers.sort();
        peers
    };
    let (publish, peers) = tokio::sync::watch::channel(as_peers(&servers.borrow_and_update()));
    tasks.spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = servers.changed() => if changed.is_err() { return },
            }
            let next = as_peers(&servers.borrow_and_update());
            publish.send_if_modified(|current| {
                let changed = *current != next;
                *current = next;
                changed
            });
        }
    });
    peers
}

/// Every name the serving certificate must carry.
fn serving_names(config: &ServerConfig, node_name: &str) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    names.push(format!(
        "kubernetes.default.svc.{}",
        token::cluster_settings(config).cluster_domain
    ));
    if !config.bind_address.is_unspecified() {
        names.push(config.bind_address.to_string());
    }
    if let Some(address) = config.advertise_address {
        names.push(address.to_string());
    }
    if rustls_pki_types::ServerName::try_from(node_name).is_ok() {
        names.push(node_name.to_string());
    }
    names.extend(config.tls_san.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// The listener's limits from `config`, the connection cap fitted to the open-files limit.
fn connection_limits(config: &ServerConfig) -> ConnectionLimits {
    ConnectionLimits {
        handshake_timeout: connections::seconds(config.tls_handshake_timeout_seconds),
        header_timeout: connections::seconds(config.request_header_timeout_seconds),
        idle_timeout: connections::seconds(config.idle_connection_timeout_seconds),
        max_connections: connections::fit_open_files_limit(
            config.max_connections,
            connections::open_files_limit(),
        ),
        max_connections_per_client: config.max_connections_per_client,
        http2_max_streams: config.http2_max_streams_per_connection.max(1),
    }
}

/// Starts the Kubernetes API and the controllers on `tasks`.
async fn serve_api(
    config: &ServerConfig,
    store: Store,
    metrics: prometheus::Registry,
    node_name: &str,
    holder: &str,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), ServerError> {
    let secrets = token::bootstrap(config, &store, holder).await?;
    let ca = Arc::new(secrets.state.ca().map_err(PkiError::from)?);
    let local_address: IpAddr = if config.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        config.bind_address
    };
    let server_url = format!(
        "https://{}",
        SocketAddr::new(local_address, config.https_listen_port)
    );
    let kubeconfig = config.effective_write_kubeconfig();
    // The address other servers' agents reach this one at; its certificate must name it,
    // since agents verify it when they connect to peers directly.
    let own_ip = membership::advertise_ip(config.advertise_address, config.bind_address);
    let mut names = serving_names(config, node_name);
    names.push(own_ip.to_string());
    names.sort();
    names.dedup();
    let pki = capstan_pki::files::prepare(ca, &config.data_dir, &names, &server_url, &kubeconfig)?;
    let tls = api::tls::server_config(&pki)?;
    let address = SocketAddr::new(config.bind_address, config.https_listen_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Listen { address, source })?;

    let objects = ObjectStore::new(Storage::new(store.clone()));
    let registry = Arc::new(Registry::new());
    capstan_controllers::ensure_default_namespaces(&objects, &registry)
        .await
        .map_err(ServerError::Bootstrap)?;
    {
        let objects = objects.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { objects.track_namespaces(shutdown).await });
    }
    tasks.spawn(capstan_controllers::run(
        objects.clone(),
        registry.clone(),
        shutdown.clone(),
    ));
    // Membership and leadership; the leader runs the singleton controllers.
    let leading = leader::start(store.clone(), holder.to_string(), tasks, shutdown.clone());
    let own = ServerRecord::new(
        holder,
        node_name,
        SocketAddr::new(own_ip, config.https_listen_port),
    );
    let current_generation = token::follow_token_generation(
        store.clone(),
        secrets.token_generation,
        tasks,
        shutdown.clone(),
    );
    let membership = Membership::start(store, own, leading.clone(), tasks, shutdown.clone());
    let manifests = capstan_controllers::deploy::manifests_dir(&config.data_dir);
    if let Err(error) = capstan_controllers::deploy::write_bundled(&manifests, &config.disable) {
        tracing::warn!(dir = %manifests.display(), %error, "cannot write the bundled manifests");
    }
    tasks.spawn(capstan_controllers::run_leader_singletons(
        objects.clone(),
        registry.clone(),
        membership.subscribe(),
        leading,
        capstan_controllers::LeaderSettings {
            https_port: config.https_listen_port,
            node_monitor_grace_period: std::time::Duration::from_secs(
                config.node_monitor_grace_period,
            ),
            deploy: capstan_controllers::deploy::DeploySettings {
                dir: manifests,
                disable: config.disable.clone(),
                server_id: holder.to_string(),
            },
        },
        shutdown.clone(),
    ));
    let advertised = SocketAddr::new(own_ip, config.https_listen_port).to_string();
    let peers = peer_list(membership.subscribe(), tasks, shutdown.clone());
    let join = Arc::new(JoinState::new(JoinConfig {
        objects: objects.clone(),
        registry: registry.clone(),
        secret: secrets.token.secret.clone(),
        ca: pki.ca.clone(),
        token_generation: secrets.token_generation,
        current_generation: current_generation.clone(),
        registrations_per_second: config.registration_rate,
        registration_burst: config.registration_burst,
        server_id: holder.to_string(),
        server_address: advertised.clone(),
        peers,
        shutdown: shutdown.clone(),
    }));
    {
        let join = join.clone();
        tasks.spawn(async move {
            join.wait_for_connections(std::time::Duration::from_secs(10))
                .await
        });
    }
    let state = Arc::new(ApiState::new(
        objects,
        registry,
        current_generation,
        advertised,
        shutdown.clone(),
        api::RequestLimits {
            max_requests_inflight: config.max_requests_inflight,
            max_mutating_requests_inflight: config.max_mutating_requests_inflight,
            body_timeout: connections::seconds(config.request_body_timeout_seconds),
            request_timeout: std::time::Duration::from_secs(config.request_timeout),
        },
        metrics,
    ));
    tracing::info!(%address, kubeconfig = %kubeconfig.display(), "serving the Kubernetes API");
    tasks.spawn(api::tls::serve(
        listener,
        tls,
        join::router(join).merge(api::router(state)),
        connection_limits(config),
        shutdown.clone(),
        std::time::Duration::from_secs(10),
    ));
    Ok(())
}
