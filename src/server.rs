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
use crate::datastore::{self, DatastoreError, Store, masked};

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
    tasks.close();

    tracing::warn!(
        engine = store.engine().name(),
        endpoint = store.endpoint(),
        maintenance_holder = %holder,
        "serving the datastore only: the Kubernetes API (HTTPS on {}:{}) is not implemented yet, nothing listens there",
        config.bind_address,
        config.https_listen_port,
    );

    shutdown.cancelled().await;
    tracing::info!("shutting down: stopping background tasks");
    tasks.wait().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}
