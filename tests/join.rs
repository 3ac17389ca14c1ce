//! Registration as an agent sees it (issue 4): `/cacerts` and `/ping` without credentials,
//! the websocket at `/v1-capstan/connect` with the cluster token and the node password, the
//! welcome's client certificate working against the API, the password Secret holding a
//! hash and never the password, refusals that change nothing, the Secret following its
//! Node, and the connection record following the connection.
//!
//! One in-process server on a throwaway Postgres database; the test opens a second store
//! on that database (as another server would) to read the connection records.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use capstan_cluster::agents::{AgentRecord, record_key};
use capstan_datastore::{Engine, Store};
use capstan_machinery::join::{
    AgentMessage, CACERTS_PATH, CONNECT_PATH, DEAD_AFTER, NODE_NAME_HEADER, NODE_PASSWORD_HEADER,
    PING_INTERVAL, PING_PATH, ServerMessage, ca_hash,
};
use capstan_pki::certs::{IssuedCert, admin_kubeconfig};
use common::TestDatabase;
use common::server::{TestServer, anonymous_client, client_from_kubeconfig};
use futures::{SinkExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long the server may take to act on a change (a controller, a closed socket).
const SETTLE: Duration = Duration::from_secs(15);

/// Where the server runs: in this process, or as a child process (to measure its memory).
enum Running {
    InProcess(Box<TestServer>),
    Child(ServerProcess),
}

/// `capstan server` as a child process on a given datastore, killed when dropped.
struct ServerProcess {
    child: std::process::Child,
    data_dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Peak resident memory of the server process, from /proc (Linux).
    fn peak_rss_bytes(&self) -> u64 {
        peak_rss_of(&format!("/proc/{}/status", self.child.id()))
    }
}

/// A server with the database it runs on and what an agent needs to reach it.
struct Cluster {
    running: Running,
    /// An admin client.
    client: kube::Client,
    /// `https://127.0.0.1:<port>`.
    url: String,
    kubeconfig: std::path::PathBuf,
    data_dir: std::path::PathBuf,
    database: TestDatabase,
    store: Store,
    token: String,
    ca_pem: String,
}

impl Cluster {
    async fn start() -> Cluster {
        let database = TestDatabase::create(Engine::Postgres).await;
        let endpoint = database.endpoint().to_string();
        let server = TestServer::start_with(Engine::Postgres, |config| {
            config.datastore_endpoint = endpoint
        })
        .await;
        let token = std::fs::read_to_string(server.data_dir().join("server/token"))
            .expect("the server wrote its token")
            .trim()
            .to_string();
        let (client, url) = (server.client.clone(), server.url.clone());
        let kubeconfig = server.kubeconfig.clone();
        let data_dir = server.data_dir().to_path_buf();
        let running = Running::InProcess(Box::new(server));
        Cluster::finish(running, client, url, kubeconfig, data_dir, database, token).await
    }

    /// A server started as a child process (the binary cargo built).
    async fn start_process() -> Cluster {
        common::install_crypto_provider();
        let database = TestDatabase::create(Engine::Postgres).await;
        let data_dir = tempfile::tempdir().expect("a temporary data dir");
        let port = common::process::free_port();
        let token = format!("{:032x}", rand::random::<u128>());
        let log_path = data_dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("a log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--bind-address", "127.0.0.1", "--node-name", "load-server"])
            .args(["--https-listen-port", &port.to_string()])
            .args(["--datastore-endpoint", database.endpoint()])
            .args(["--token", &token])
            // Hundreds of agents register from this one address at once.
            .args(["--registration-rate", "0"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("the log file can be duplicated"))
            .stderr(log)
            .spawn()
            .expect("the capstan binary starts");
        let process = ServerProcess { child, data_dir };
        let kubeconfig = process.data_dir.path().join("server/admin.kubeconfig");
        let started = Instant::now();
        let client = loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the server process did not become ready: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            if kubeconfig.exists()
                && let Ok(client) = client_from_kubeconfig(&kubeconfig).await
                && client
                    .request_text(
                        http::Request::get("/readyz")
                            .body(Vec::new())
                            .expect("a request"),
                    )
                    .await
                    .is_ok()
            {
                break client;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let url = format!("https://127.0.0.1:{port}");
        let data_dir = process.data_dir.path().to_path_buf();
        let running = Running::Child(process);
        Cluster::finish(running, client, url, kubeconfig, data_dir, database, token).await
    }

    async fn finish(
        running: Running,
        client: kube::Client,
        url: String,
        kubeconfig_path: std::path::PathBuf,
        data_dir: std::path::PathBuf,
        database: TestDatabase,
        token: String,
    ) -> Cluster {
        let store = database.open().await;
        let kubeconfig = std::fs::read_to_string(&kubeconfig_path).expect("the kubeconfig");
        let parsed: serde_json::Value =
            serde_saphyr::from_str(&kubeconfig).expect("the kubeconfig is YAML");
        let ca_data = parsed
            .pointer("/clusters/0/cluster/certificate-authority-data")
            .and_then(|v| v.as_str())
            .expect("the kubeconfig carries the CA");
        let ca_pem = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(ca_data)
                .expect("base64 CA"),
        )
        .expect("a PEM CA");
        Cluster {
            running,
            client,
            url,
            kubeconfig: kubeconfig_path,
            data_dir,
            database,
            store,
            token,
            ca_pem,
        }
    }

    async fn stop(self) {
        match self.running {
            Running::InProcess(server) => server.stop().await,
            Running::Child(process) => drop(process),
        }
        self.database.cleanup().await;
    }

    /// Opens the registration websocket as an agent would.
    async fn connect(
        &self,
        token: &str,
        node: &str,
        password: &str,
    ) -> Result<Socket, tungstenite::Error> {
        let url = format!(
            "{}{CONNECT_PATH}",
            self.url.replacen("https://", "wss://", 1)
        );
        let mut request = url.into_client_request().expect("a websocket request");
        let headers = request.headers_mut();
        headers.insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a header value"),
        );
        headers.insert(NODE_NAME_HEADER, node.parse().expect("a header value"));
        headers.insert(
            NODE_PASSWORD_HEADER,
            password.parse().expect("a header value"),
        );
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(cert.expect("the CA parses"))
                .expect("the CA is a root");
        }
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            false,
            Some(Connector::Rustls(Arc::new(tls))),
        )
        .await
        .map(|(socket, _)| socket)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), "kube-system")
    }

    async fn password_secret(&self, node: &str) -> Option<Secret> {
        self.secrets()
            .get_opt(&format!("{node}.node-password.capstan"))
            .await
            .expect("reading the Secret works")
    }

    async fn record(&self, node: &str) -> Option<AgentRecord> {
        self.store
            .get(&record_key(node))
            .await
            .expect("reading the record works")
            .map(|kv| serde_json::from_slice(&kv.value).expect("the record is JSON"))
    }
}

/// A connected agent: a task reads the socket all the time (so the library answers the
/// server's pings, as a live agent does) and hands server messages over a channel.
struct Agent {
    sink: futures::stream::SplitSink<Socket, Message>,
    messages: tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
    reader: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn new(socket: Socket) -> Agent {
        let (sink, mut stream) = socket.split();
        let (sender, messages) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::Text(text) = frame {
                    let message = serde_json::from_str(text.as_str()).expect("a server message");
                    if sender.send(message).is_err() {
                        return;
                    }
                }
            }
        });
        Agent {
            sink,
            messages,
            reader,
        }
    }

    async fn next_message(&mut self) -> ServerMessage {
        tokio::time::timeout(SETTLE, self.messages.recv())
            .await
            .expect("a message within the timeout")
            .expect("the connection stays open")
    }

    async fn send_text(&mut self, text: String) {
        self.sink
            .send(Message::Text(text.into()))
            .await
            .expect("send a message");
    }

    async fn close(mut self) {
        self.sink.close().await.expect("close the connection");
        let _ = tokio::time::timeout(SETTLE, self.reader).await;
    }
}

/// The HTTP status and body of a refused upgrade.
fn refusal(result: Result<Socket, tungstenite::Error>) -> (u16, String) {
    match result {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the websocket opened"),
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < SETTLE,
            "{what} did not happen within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the series `series` (name with labels) in Prometheus text, 0 if absent.
/// Tests of this file share the process's metrics: assert lower bounds only.
fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn get_text(client: &kube::Client, path: &str) -> String {
    let request = http::Request::get(path)
        .body(Vec::new())
        .expect("a GET request builds");
    client
        .request_text(request)
        .await
        .expect("the GET succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_gets_a_working_certificate_and_leaves_no_trace_when_it_goes() {
    let cluster = Cluster::start().await;
    let anonymous = anonymous_client(&cluster.kubeconfig).await;

    // No credentials needed for the CA bundle and the health check; the API still wants them.
    let served_ca = get_text(&anonymous, CACERTS_PATH).await;
    assert_eq!(ca_hash(&served_ca), ca_hash(&cluster.ca_pem));
    assert_eq!(get_text(&anonymous, PING_PATH).await, "pong");
    let nodes_anonymously = anonymous
        .request_text(
            http::Request::get("/api/v1/nodes")
                .body(Vec::new())
                .expect("a GET request builds"),
        )
        .await;
    assert!(
        nodes_anonymously.is_err(),
        "the API must still refuse anonymous requests"
    );

    let password = "a6f0c3e1d2b4958776a1b2c3d4e5f60718293a4b5c6d7e8f9012345678abcdef";
    let mut agent = Agent::new(
        cluster
            .connect(&cluster.token, "worker-1", password)
            .await
            .expect("the right token and a new node are accepted"),
    );
    let ServerMessage::Welcome {
        server_id,
        node_name,
        peers,
        client_cert_pem,
        client_key_pem,
    } = agent.next_message().await
    else {
        panic!("the first message must be the welcome");
    };
    assert_eq!(node_name, "worker-1");
    let port = cluster.url.rsplit(':').next().expect("a port");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].id, server_id);
    assert_eq!(peers[0].address, format!("127.0.0.1:{port}"));

    // The node's certificate is accepted by the API.
    let node_kubeconfig = cluster.data_dir.join("worker-1.kubeconfig");
    let node_cert = IssuedCert {
        cert_pem: client_cert_pem,
        key_pem: client_key_pem,
    };
    std::fs::write(
        &node_kubeconfig,
        admin_kubeconfig(&cluster.url, &cluster.ca_pem, &node_cert),
    )
    .expect("write the node's kubeconfig");
    let node_client = client_from_kubeconfig(&node_kubeconfig)
        .await
        .expect("a client from the node certificate");
    let nodes = get_text(&node_client, "/api/v1/nodes").await;
    assert!(nodes.contains("NodeList"), "{nodes}");

    // The password Secret holds an Argon2 hash, never the password.
    let secret = cluster
        .password_secret("worker-1")
        .await
        .expect("the first registration created the password Secret");
    assert_eq!(secret.type_.as_deref(), Some("capstan.io/node-password"));
    let data = secret.data.clone().expect("the Secret has data");
    let hash = String::from_utf8(data.get("hash").expect("a hash entry").0.clone())
        .expect("the hash is text");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let whole = serde_json::to_string(&secret).expect("the Secret serializes");
    let encoded = base64::engine::general_purpose::STANDARD.encode(password);
    assert!(!whole.contains(password) && !whole.contains(&encoded));
    assert!(!hash.contains(password));

    // While connected, the record names this server.
    let record = cluster
        .record("worker-1")
        .await
        .expect("a connection record while connected");
    assert_eq!(record.server_id, server_id);
    assert_eq!(record.server_address, format!("127.0.0.1:{port}"));

    // Reports are accepted and counted; unknown messages are ignored.
    let report = AgentMessage::Report {
        active_server: Some(server_id.clone()),
        failovers: 2,
    };
    agent
        .send_text(serde_json::to_string(&report).expect("a report"))
        .await;
    agent
        .send_text(r#"{"type":"fromTheFuture"}"#.to_string())
        .await;
    eventually("the report reaching the metrics", || async {
        let metrics = get_text(&cluster.client, "/metrics").await;
        metric(&metrics, "capstan_agent_lb_failovers_total") >= 2.0
    })
    .await;
    let metrics = get_text(&cluster.client, "/metrics").await;
    assert!(
        metric(
            &metrics,
            "capstan_join_registrations_total{result=\"accepted\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "capstan_join_agents_connected") >= 1.0,
        "{metrics}"
    );

    // The same agent reconnects with its password: accepted again.
    let mut again = Agent::new(
        cluster
            .connect(&cluster.token, "worker-1", password)
            .await
            .expect("the same password is accepted again"),
    );
    assert!(matches!(
        again.next_message().await,
        ServerMessage::Welcome { .. }
    ));
    again.close().await;

    // Closing the connection removes the record (the second connection's close, which
    // replaced it, removed it; the first one's close must not leave or restore anything).
    agent.close().await;
    eventually("the connection record's removal", || async {
        cluster.record("worker-1").await.is_none()
    })
    .await;

    // Deleting the Node deletes the password Secret.
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-1"}
    }))
    .expect("a Node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create the Node");
    nodes
        .delete("worker-1", &DeleteParams::default())
        .await
        .expect("delete the Node");
    eventually("the password Secret's deletion", || async {
        cluster.password_secret("worker-1").await.is_none()
    })
    .await;

    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_registrations_say_why_and_change_nothing() {
    let cluster = Cluster::start().await;

    // A wrong token: 401, and no Secret for the node.
    let (code, _) = refusal(cluster.connect("not-the-token", "worker-2", "pw-one").await);
    assert_eq!(code, 401);
    assert!(cluster.password_secret("worker-2").await.is_none());
    assert!(cluster.record("worker-2").await.is_none());

    // A malformed node name: 400.
    let (code, body) = refusal(
        cluster
            .connect(&cluster.token, "Not_A_Name", "pw-one")
            .await,
    );
    assert_eq!(code, 400, "{body}");

    // The first registration of the name wins it.
    let first = Agent::new(
        cluster
            .connect(&cluster.token, "worker-2", "pw-one")
            .await
            .expect("the first registration is accepted"),
    );
    let before = cluster
        .password_secret("worker-2")
        .await
        .expect("the password Secret exists");

    // Another password for the same name: 403 with both likely causes, Secret unchanged.
    let (code, body) = refusal(cluster.connect(&cluster.token, "worker-2", "pw-two").await);
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("a Status body");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 403);
    let message = status["message"].as_str().expect("a message");
    assert!(message.contains("--with-node-id"), "{message}");
    assert!(message.contains("--node-name"), "{message}");
    assert!(message.contains("same node name"), "{message}");
    assert!(message.contains("node/password"), "{message}");
    assert!(
        message.contains("kube-system/worker-2.node-password.capstan"),
        "{message}"
    );
    let after = cluster
        .password_secret("worker-2")
        .await
        .expect("the password Secret still exists");
    assert_eq!(
        before.metadata.resource_version,
        after.metadata.resource_version
    );
    assert_eq!(before.data, after.data);
    let record = cluster
        .record("worker-2")
        .await
        .expect("the accepted agent's record stays");
    assert!(!record.server_id.is_empty());

    let metrics = get_text(&cluster.client, "/metrics").await;
    for result in ["bad_token", "bad_password", "invalid_request"] {
        let series = format!("capstan_join_registrations_total{{result=\"{result}\"}}");
        assert!(metric(&metrics, &series) >= 1.0, "{series} in:\n{metrics}");
    }

    first.close().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_dropped_and_its_record_removed() {
    let cluster = Cluster::start().await;
    // Connected, then never read again: the library cannot answer the server's pings.
    let silent = cluster
        .connect(&cluster.token, "worker-3", "pw-three")
        .await
        .expect("the registration is accepted");
    eventually("the connection record", || async {
        cluster.record("worker-3").await.is_some()
    })
    .await;
    let started = Instant::now();
    eventually("the silent agent's removal", || async {
        cluster.record("worker-3").await.is_none()
    })
    .await;
    assert!(
        started.elapsed() >= DEAD_AFTER - PING_INTERVAL,
        "the server must wait for {DEAD_AFTER:?} of silence, not close at once"
    );
    drop(silent);
    cluster.stop().await;
}

/// Peak resident memory (VmHWM) in a /proc status file (Linux).
fn peak_rss_of(path: &str) -> u64 {
    let status = std::fs::read_to_string(path).expect("a /proc status file");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("VmHWM in kB")
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_agents_register_at_once_within_bounded_memory() {
    const AGENTS: usize = 500;
    let cluster = Cluster::start_process().await;
    let cluster = Arc::new(cluster);
    let started = Instant::now();
    let mut joins = tokio::task::JoinSet::new();
    for index in 0..AGENTS {
        let cluster = cluster.clone();
        joins.spawn(async move {
            let node = format!("load-{index}");
            let mut agent = Agent::new(
                cluster
                    .connect(&cluster.token, &node, &format!("password-{index}"))
                    .await
                    .unwrap_or_else(|error| panic!("{node} registers: {error}")),
            );
            let welcome = agent.next_message().await;
            assert!(matches!(welcome, ServerMessage::Welcome { .. }), "{node}");
            agent
        });
    }
    let mut agents = Vec::new();
    while let Some(joined) = joins.join_next().await {
        agents.push(joined.expect("an agent task"));
    }
    let elapsed = started.elapsed();
    let Running::Child(process) = &cluster.running else {
        panic!("the load test runs the server as a child process");
    };
    let peak = process.peak_rss_bytes();
    eprintln!(
        "{AGENTS} registrations in {elapsed:?}; peak memory of the server: {} MiB",
        peak / (1024 * 1024)
    );
    assert!(
        elapsed < Duration::from_secs(60),
        "{AGENTS} registrations took {elapsed:?}"
    );
    assert!(
        peak < 200 * 1024 * 1024,
        "peak memory {} MiB",
        peak / (1024 * 1024)
    );
    let metrics = get_text(&cluster.client, "/metrics").await;
    assert!(
        metric(&metrics, "capstan_join_agents_connected") >= AGENTS as f64,
        "{metrics}"
    );
    for agent in agents {
        agent.close().await;
    }
    let cluster = Arc::into_inner(cluster).expect("every agent task ended");
    cluster.stop().await;
}

/// The registration routes merged in front of the API router, served without TLS, with a
/// peer list the test controls: changes reach connected agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_list_changes_reach_connected_agents() {
    use capstan_apiserver::api::{ApiState, router as api_router};
    use capstan_apiserver::registry::{ObjectStore, Registry};
    use capstan_apiserver::storage::Storage;
    use capstan_cluster::join::{JoinConfig, JoinState, router as join_router};
    use capstan_machinery::join::Peer;
    use capstan_pki::certs::CertificateAuthority;

    let database = TestDatabase::create(Engine::Sqlite).await;
    let objects = ObjectStore::new(Storage::new(database.open().await));
    let registry = Arc::new(Registry::new());
    capstan_controllers::ensure_default_namespaces(&objects, &registry)
        .await
        .expect("default namespaces");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let me = Peer {
        id: "server-a".to_string(),
        address: "127.0.0.2:6443".to_string(),
    };
    let (peers, peers_seen) = tokio::sync::watch::channel(vec![me.clone()]);
    let (_generation, current_generation) = tokio::sync::watch::channel(1);
    let join = Arc::new(JoinState::new(JoinConfig {
        objects: objects.clone(),
        registry: registry.clone(),
        secret: "s3cret".to_string(),
        ca: Arc::new(CertificateAuthority::generate("test-ca").expect("a CA")),
        token_generation: 1,
        current_generation: current_generation.clone(),
        registrations_per_second: 5,
        registration_burst: 20,
        server_id: me.id.clone(),
        server_address: me.address.clone(),
        peers: peers_seen,
        shutdown: shutdown.clone(),
    }));
    let api = Arc::new(ApiState::new(
        objects,
        registry,
        current_generation,
        me.address.clone(),
        shutdown.clone(),
        capstan_apiserver::api::RequestLimits {
            max_requests_inflight: 100,
            ..capstan_apiserver::api::RequestLimits::default()
        },
        prometheus::Registry::new(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("an address");
    let app = join_router(join.clone()).merge(api_router(api));
    let served = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        })
    };

    // The merged router: registration routes need no credentials, the API still does.
    let plain = |path: &str| format!("http://{address}{path}");
    let http_get = |url: String| async move {
        let (mut socket, path) = {
            let rest = url.trim_start_matches("http://");
            let (host, path) = rest.split_once('/').expect("a path");
            (
                tokio::net::TcpStream::connect(host).await.expect("connect"),
                format!("/{path}"),
            )
        };
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        socket.read_to_string(&mut answer).await.expect("read");
        answer
    };
    let ping = http_get(plain(PING_PATH)).await;
    assert!(
        ping.starts_with("HTTP/1.1 200") && ping.ends_with("pong"),
        "{ping}"
    );
    let nodes = http_get(plain("/api/v1/nodes")).await;
    assert!(nodes.starts_with("HTTP/1.1 401"), "{nodes}");

    let mut request = format!("ws://{address}{CONNECT_PATH}")
        .into_client_request()
        .expect("a websocket request");
    let headers = request.headers_mut();
    headers.insert("authorization", "Bearer s3cret".parse().expect("a value"));
    headers.insert(NODE_NAME_HEADER, "edge-1".parse().expect("a value"));
    headers.insert(NODE_PASSWORD_HEADER, "pw".parse().expect("a value"));
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the registration is accepted");
    let mut agent = Agent::new(socket);
    let ServerMessage::Welcome { peers: first, .. } = agent.next_message().await else {
        panic!("the first message must be the welcome");
    };
    assert_eq!(first, vec![me.clone()]);

    let other = Peer {
        id: "server-b".to_string(),
        address: "127.0.0.3:6443".to_string(),
    };
    peers.send_replace(vec![other.clone(), me.clone()]);
    assert_eq!(
        agent.next_message().await,
        ServerMessage::Peers {
            peers: vec![me.clone(), other.clone()]
        },
        "a new server reaches the agent, sorted"
    );
    peers.send_replace(vec![other.clone()]);
    assert_eq!(
        agent.next_message().await,
        ServerMessage::Peers { peers: vec![other] },
        "a server leaving reaches the agent"
    );
    assert_eq!(join.connected_agents().len(), 1);

    // Shutdown closes the connection and waits for it.
    shutdown.cancel();
    tokio::time::timeout(SETTLE, join.wait_for_connections(SETTLE))
        .await
        .expect("connections close at shutdown");
    assert!(join.connected_agents().is_empty());
    served
        .await
        .expect("the server task")
        .expect("the server stops cleanly");
    drop(agent);
    database.cleanup().await;
}
