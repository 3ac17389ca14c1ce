//! `capstan server`: opens the datastore and runs this server's share of the cluster's
//! background work until told to stop.
//!
//! Today that is the datastore alone (the store with its writer and change feed, and the
//! maintenance loop that compacts history and expires TTLs when this server holds the
//! maintenance lock). The Kubernetes API, joining and controllers come in later issues and
//! start here, between opening the store and waiting for shutdown.
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

use crate::api::{self, ApiState, tls::TlsError};
use crate::cluster::certs::CertificateAuthority;
use crate::cluster::pki::{self, PkiError};
use crate::controllers;
use crate::datastore::{self, DatastoreError, Store, masked};
use crate::join::protocol::{ClusterToken, Peer};
use crate::join::{self, JoinConfig, JoinState};
use crate::registry::{ObjectStore, Registry, RegistryError};
use crate::storage::Storage;

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
    /// The cluster token file could not be read or written.
    #[error("token file {}: {source} (check the permissions of --data-dir, or pass --token)", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The default namespaces could not be created.
    #[error("cannot create the default namespaces: {0}")]
    Bootstrap(#[source] RegistryError),
    /// The datastore could not be opened.
    #[error("cannot open the datastore: {0}")]
    Datastore(#[source] DatastoreError),
}

/// Runs the server until `shutdown` is cancelled, then stops everything it started.
pub async fn run(config: ServerConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let datastore = config.datastore();
    let node_name = config.effective_node_name();
    tracing::info!(node = %node_name, data_dir = %config.data_dir.display(), endpoint = %masked(&datastore.endpoint), "starting capstan server");

    let store = tokio::select! {
        opened = Store::open(&datastore) => opened.map_err(ServerError::Datastore)?,
        () = shutdown.cancelled() => {
            tracing::info!("shutdown requested while opening the datastore");
            return Ok(());
        }
    };

    let tasks = TaskTracker::new();
    // The holder names this process, not just the node: a restarted server must not mistake
    // the lock of its previous life for its own.
    let holder = format!("{node_name}-{:08x}", rand::random::<u32>());
    tasks.spawn(datastore::run_maintenance(
        store.clone(),
        holder.clone(),
        shutdown.clone(),
    ));

    let served = serve_api(
        &config,
        store.clone(),
        &node_name,
        &holder,
        &tasks,
        &shutdown,
    )
    .await;
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

/// The cluster token: the configured one, else the one a previous start wrote to
/// `<data-dir>/server/token`, else a new random one written there.
fn cluster_token(config: &ServerConfig) -> Result<String, ServerError> {
    if !config.token.trim().is_empty() {
        return Ok(config.token.trim().to_string());
    }
    let path = config.data_dir.join("server").join("token");
    let failed = |source| ServerError::Token {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed(error)),
    }
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(&path, format!("{secret}\n")).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    Ok(secret)
}

/// The cluster CA `pki::prepare` keeps in `<data-dir>/server/tls` (the node certificates
/// of registration are issued by it). To be replaced by the CA `ServerPki` carries once
/// the bootstrap stores it in the datastore.
fn cluster_ca(data_dir: &std::path::Path) -> Result<CertificateAuthority, PkiError> {
    let dir = data_dir.join("server").join("tls");
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| PkiError::Io { path, source })
    };
    Ok(CertificateAuthority::from_pem(
        &read("server-ca.crt")?,
        &read("server-ca.key")?,
    )?)
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
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
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

/// Starts the Kubernetes API and the controllers on `tasks`.
async fn serve_api(
    config: &ServerConfig,
    store: Store,
    node_name: &str,
    server_id: &str,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), ServerError> {
    let token = cluster_token(config)?;
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
    let pki = pki::prepare(
        &config.data_dir,
        &serving_names(config, node_name),
        &server_url,
        &kubeconfig,
    )?;
    let tls = api::tls::server_config(&pki)?;
    let address = SocketAddr::new(config.bind_address, config.https_listen_port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Listen { address, source })?;

    let objects = ObjectStore::new(Storage::new(store));
    let registry = Arc::new(Registry::new());
    controllers::ensure_default_namespaces(&objects, &registry)
        .await
        .map_err(ServerError::Bootstrap)?;
    tasks.spawn(controllers::run(
        objects.clone(),
        registry.clone(),
        shutdown.clone(),
    ));
    let advertised = config.advertise_address.unwrap_or(local_address);
    let advertised = SocketAddr::new(advertised, config.https_listen_port).to_string();
    // Until membership feeds it, the peer list is this server alone.
    let (_, peers) = tokio::sync::watch::channel(vec![Peer {
        id: server_id.to_string(),
        address: advertised.clone(),
    }]);
    let join = Arc::new(JoinState::new(JoinConfig {
        objects: objects.clone(),
        registry: registry.clone(),
        secret: token
            .parse::<ClusterToken>()
            .map_or_else(|_| token.clone(), |parsed| parsed.secret),
        ca: Arc::new(cluster_ca(&config.data_dir)?),
        server_id: server_id.to_string(),
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
        vec![token],
        advertised,
        shutdown.clone(),
        config.max_requests_inflight,
    ));
    tracing::info!(%address, kubeconfig = %kubeconfig.display(), "serving the Kubernetes API");
    tasks.spawn(api::tls::serve(
        listener,
        tls,
        join::router(join).merge(api::router(state)),
        shutdown.clone(),
        std::time::Duration::from_secs(10),
    ));
    Ok(())
}
