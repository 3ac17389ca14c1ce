//! A real Capstan server for client-level tests: `capstan::server::run` in this process on
//! a loopback port, with a data dir of its own and a datastore on the chosen engine, and a
//! `kube::Client` built from the admin kubeconfig the server wrote — the same path a user's
//! kubectl or controller takes.
//!
//! SQLite servers keep their database in the data dir (the default endpoint); Postgres and
//! MySQL servers get a throwaway database from [`TestDatabase`]. [`TestServer::stop`]
//! cancels the server, waits for it to finish (a hang fails the test) and drops the
//! database; a test that panics first leaves the task to die with its runtime and the
//! database to `TestDatabase`'s `Drop`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan::config::ServerConfig;
use capstan::server::ServerError;
use capstan_datastore::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::TestDatabase;

/// How long a server may take to answer `/readyz` after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server may take to stop after its token is cancelled.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// One running server and what a test needs to talk to it.
pub struct TestServer {
    /// A client authenticated as the admin through the written kubeconfig.
    pub client: kube::Client,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The admin kubeconfig the server wrote.
    pub kubeconfig: PathBuf,
    engine: Engine,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
    /// The database, when this server owns it (dropped after the server stops).
    database: Option<TestDatabase>,
    data_dir: tempfile::TempDir,
}

/// A free loopback port: bound with port 0, then released for the server to take.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding port 0 on 127.0.0.1 gives a free port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

/// Shows the server's logs when a test runs with `RUST_LOG` set.
fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// An admin client from the kubeconfig at `path`.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, String> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|error| error.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| error.to_string())?;
    kube::Client::try_from(config).map_err(|error| error.to_string())
}

/// A client that trusts the server's CA but presents no credentials at all.
pub async fn anonymous_client(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("the admin kubeconfig parses");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("the admin kubeconfig makes a client config");
    config.auth_info = Default::default();
    kube::Client::try_from(config).expect("a client without credentials")
}

impl TestServer {
    /// Starts a server on a fresh datastore of `engine` and waits until it is ready.
    pub async fn start(engine: Engine) -> TestServer {
        TestServer::start_with(engine, |_| {}).await
    }

    /// Starts a server with `adjust` applied to the fixture's config (for settings such as
    /// compaction that a test needs to turn).
    pub async fn start_with(engine: Engine, adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        match engine {
            Engine::Sqlite => TestServer::start_on(engine, String::new(), None, adjust).await,
            Engine::Postgres | Engine::MySql => {
                let database = TestDatabase::create(engine).await;
                let endpoint = database.endpoint().to_string();
                TestServer::start_on(engine, endpoint, Some(database), adjust).await
            }
        }
    }

    /// Starts two servers on one fresh database of `engine` (a server engine: they share
    /// it). The first owns the database: stop the second first.
    pub async fn start_pair(engine: Engine) -> (TestServer, TestServer) {
        assert!(
            engine != Engine::Sqlite,
            "two servers share a database only on a database server"
        );
        let database = TestDatabase::create(engine).await;
        let endpoint = database.endpoint().to_string();
        let first = TestServer::start_on(engine, endpoint.clone(), Some(database), |_| {}).await;
        // Later servers join with the cluster's token, as an operator passes it on.
        let token = std::fs::read_to_string(first.data_dir().join("server").join("token"))
            .expect("the first server wrote its token");
        let second = TestServer::start_on(engine, endpoint, None, |config| {
            config.token = token.trim().to_string();
        })
        .await;
        (first, second)
    }

    async fn start_on(
        engine: Engine,
        endpoint: String,
        database: Option<TestDatabase>,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        super::install_crypto_provider();
        init_tracing();
        let data_dir = tempfile::tempdir().expect("a temporary data dir");
        let mut config = ServerConfig {
            data_dir: data_dir.path().to_path_buf(),
            datastore_endpoint: endpoint,
            // Tests run in parallel on shared database servers: keep pools small.
            datastore_max_connections: 6,
            bind_address: IpAddr::from(Ipv4Addr::LOCALHOST),
            https_listen_port: free_port(),
            node_name: Some("test-node".to_string()),
            ..ServerConfig::default()
        };
        adjust(&mut config);
        assert!(
            config.bind_address.is_loopback(),
            "test servers listen on loopback only"
        );
        let port = config.https_listen_port;
        let kubeconfig = config.effective_write_kubeconfig();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(capstan::server::run(config, shutdown.clone()));
        let url = format!("https://{}", SocketAddr::from((Ipv4Addr::LOCALHOST, port)));

        let client = wait_until_ready(&task, &kubeconfig).await;
        TestServer {
            client,
            url,
            kubeconfig,
            engine,
            shutdown,
            task,
            database,
            data_dir,
        }
    }

    /// The engine of the server's datastore.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Cancels the server, waits for it to stop, then drops its database (if it owns one).
    pub async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(STOP_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => panic!("the server failed: {error}"),
            Ok(Err(join_error)) => panic!("the server task panicked: {join_error}"),
            Err(_) => panic!("the server did not stop within {STOP_TIMEOUT:?} of shutdown"),
        }
        if let Some(database) = self.database {
            database.cleanup().await;
        }
    }
}

/// Waits until the kubeconfig is written and `/readyz` answers 200 through it (TLS, client
/// certificate and datastore all work); fails the test if the server exits or takes longer
/// than [`READY_TIMEOUT`].
async fn wait_until_ready(
    task: &JoinHandle<Result<(), ServerError>>,
    kubeconfig: &Path,
) -> kube::Client {
    let started = Instant::now();
    let mut last_problem = String::from("the kubeconfig was not written");
    loop {
        if task.is_finished() {
            panic!("the server exited while starting (last check: {last_problem})");
        }
        if started.elapsed() > READY_TIMEOUT {
            panic!("the server was not ready within {READY_TIMEOUT:?}: {last_problem}");
        }
        if kubeconfig.exists() {
            match client_from_kubeconfig(kubeconfig).await {
                Ok(client) => {
                    let request = axum::http::Request::get("/readyz")
                        .body(Vec::new())
                        .expect("a GET request builds");
                    match client.request_text(request).await {
                        Ok(_) => return client,
                        Err(error) => last_problem = format!("/readyz: {error}"),
                    }
                }
                Err(error) => last_problem = format!("kubeconfig: {error}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
