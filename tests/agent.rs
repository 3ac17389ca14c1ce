//! `capstan agent` against fake registration servers that speak `join::protocol`: the CA
//! check before any credential, the files a Welcome leaves, peer updates, restarts while the
//! registration address is down, and the node's stable password and id.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use capstan_agent::{AgentConfig, AgentError};
use capstan_machinery::join::{
    AUTHORIZATION_HEADER, AgentMessage, CACERTS_PATH, CONNECT_PATH, ClusterToken, NODE_NAME_HEADER,
    NODE_PASSWORD_HEADER, PING_PATH, Peer, ServerMessage,
};
use capstan_pki::certs::CertificateAuthority;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const SECRET: &str = "s3cret-token";

/// One certificate authority and serving certificate shared by every fake server.
struct Cluster {
    ca: Arc<CertificateAuthority>,
    tls: Arc<rustls::ServerConfig>,
}

impl Cluster {
    fn new() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = CertificateAuthority::generate("capstan-ca@agent-test").expect("a CA");
        let names = [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "localhost",
        ]
        .map(String::from);
        let serving = ca.issue_serving(&names).expect("a serving certificate");
        let chain =
            vec![CertificateDer::from_pem_slice(serving.cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).expect("key");
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("a TLS configuration");
        Cluster {
            ca: Arc::new(ca),
            tls: Arc::new(tls),
        }
    }

    fn full_token(&self) -> String {
        ClusterToken::bare(SECRET).full(self.ca.cert_pem())
    }
}

/// What a fake server saw.
#[derive(Default)]
struct Seen {
    /// Requests to the connect endpoint, whatever their credentials.
    connects: usize,
    /// (node name, password) of each connect request.
    nodes: Vec<(String, String)>,
    /// Reports agents sent.
    reports: Vec<AgentMessage>,
}

struct FakeState {
    id: String,
    ca: Arc<CertificateAuthority>,
    peers: Mutex<Vec<Peer>>,
    refuse: Option<(StatusCode, String)>,
    seen: Mutex<Seen>,
    pushes: broadcast::Sender<Vec<Peer>>,
    /// Ends the websocket sessions (axum runs them in tasks of their own).
    killed: CancellationToken,
    /// TCP connections accepted.
    accepted: std::sync::atomic::AtomicUsize,
}

/// A registration server speaking `join::protocol` on `address` until stopped.
struct FakeServer {
    address: String,
    state: Arc<FakeState>,
    task: JoinHandle<()>,
}

impl FakeServer {
    async fn start(
        cluster: &Cluster,
        host: &str,
        refuse: Option<(StatusCode, String)>,
    ) -> FakeServer {
        let listener = TcpListener::bind((host, 0))
            .await
            .expect("bind the fake server");
        let address = listener.local_addr().expect("address").to_string();
        let state = Arc::new(FakeState {
            id: format!("server-{host}"),
            ca: cluster.ca.clone(),
            peers: Mutex::new(vec![Peer {
                id: format!("server-{host}"),
                address: address.clone(),
            }]),
            refuse,
            seen: Mutex::new(Seen::default()),
            pushes: broadcast::channel(16).0,
            killed: CancellationToken::new(),
            accepted: Default::default(),
        });
        let router = Router::new()
            .route(CACERTS_PATH, get(cacerts))
            .route(PING_PATH, get(|| async { "pong" }))
            .route(CONNECT_PATH, get(connect))
            .with_state(state.clone());
        let task = tokio::spawn(serve(listener, cluster.tls.clone(), router, state.clone()));
        FakeServer {
            address,
            state,
            task,
        }
    }

    fn set_peers(&self, peers: Vec<Peer>) {
        *self.state.peers.lock().expect("lock") = peers;
    }

    fn push_peers(&self, peers: Vec<Peer>) {
        self.set_peers(peers.clone());
        let _ = self.state.pushes.send(peers);
    }

    fn peer(&self) -> Peer {
        Peer {
            id: self.state.id.clone(),
            address: self.address.clone(),
        }
    }

    fn connects(&self) -> usize {
        self.state.seen.lock().expect("lock").connects
    }

    fn nodes(&self) -> Vec<(String, String)> {
        self.state.seen.lock().expect("lock").nodes.clone()
    }

    /// Stops listening and drops every connection, like a killed server.
    fn stop(&self) {
        self.task.abort();
        self.state.killed.cancel();
    }
}

async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    state: Arc<FakeState>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        state
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (acceptor, router) = (acceptor.clone(), router.clone());
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let _ = Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn cacerts(State(state): State<Arc<FakeState>>) -> String {
    state.ca.cert_pem().to_string()
}

async fn connect(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let node = header(NODE_NAME_HEADER);
    {
        let mut seen = state.seen.lock().expect("lock");
        seen.connects += 1;
        seen.nodes
            .push((node.clone(), header(NODE_PASSWORD_HEADER)));
    }
    if header(AUTHORIZATION_HEADER) != format!("Bearer {SECRET}") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if let Some((status, message)) = &state.refuse {
        let body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": status.as_u16()});
        return (*status, body.to_string()).into_response();
    }
    upgrade.on_upgrade(move |socket| session(state, node, socket))
}

async fn session(state: Arc<FakeState>, node: String, mut socket: WebSocket) {
    let client = state
        .ca
        .issue_client(&format!("system:node:{node}"), &["system:nodes"])
        .expect("a node certificate");
    let welcome = ServerMessage::Welcome {
        server_id: state.id.clone(),
        node_name: node,
        peers: state.peers.lock().expect("lock").clone(),
        client_cert_pem: client.cert_pem,
        client_key_pem: client.key_pem,
    };
    let text = serde_json::to_string(&welcome).expect("serializes");
    if socket.send(Message::Text(text.into())).await.is_err() {
        return;
    }
    let mut pushes = state.pushes.subscribe();
    loop {
        tokio::select! {
            () = state.killed.cancelled() => return,
            pushed = pushes.recv() => {
                let Ok(peers) = pushed else { return };
                let text = serde_json::to_string(&ServerMessage::Peers { peers }).expect("serializes");
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            received = socket.recv() => match received {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(report) = serde_json::from_str::<AgentMessage>(&text) {
                        state.seen.lock().expect("lock").reports.push(report);
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

fn config(servers: &[&FakeServer], token: &str, node: &str, data_dir: &Path) -> AgentConfig {
    AgentConfig {
        servers: servers
            .iter()
            .map(|server| server.address.clone())
            .collect(),
        token: token.parse().expect("a valid token"),
        node_name: node.to_string(),
        with_node_id: false,
        data_dir: data_dir.to_path_buf(),
        lb_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        heartbeats: false,
    }
}

/// A running agent and the way to stop it.
struct RunningAgent {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    fn start(config: AgentConfig) -> RunningAgent {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(capstan_agent::run(config, shutdown.clone()));
        RunningAgent { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the agent stops within 5 s")
            .expect("the agent task does not panic");
        assert!(outcome.is_ok(), "the agent stopped with {outcome:?}");
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The load balancer's `host:port`, from the server URL of the agent's kubeconfig.
fn load_balancer(kubeconfig: &str) -> String {
    let port = kubeconfig
        .split("server: https://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("the load balancer port");
    format!("127.0.0.1:{port}")
}

fn saved_peers(data_dir: &Path) -> Vec<Peer> {
    let text = read(&data_dir.join("agent/servers.json"));
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| serde_json::from_value(value["peers"].clone()).ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_another_ca_is_refused_before_any_credential_is_sent() {
    let cluster = Cluster::new();
    let other = Cluster::new();
    let server = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let data = tempfile::tempdir().expect("temp dir");
    let outcome = tokio::time::timeout(
        Duration::from_secs(15),
        capstan_agent::run(
            config(&[&server], &other.full_token(), "n1", data.path()),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the agent gives up at once");
    let error = outcome.expect_err("a CA mismatch is fatal").to_string();
    let expected = capstan_machinery::join::ca_hash(other.ca.cert_pem());
    let actual = capstan_machinery::join::ca_hash(cluster.ca.cert_pem());
    assert!(
        error.contains(&expected) && error.contains(&actual),
        "{error}"
    );
    assert!(error.contains("wrong --server"), "{error}");
    assert_eq!(
        server.connects(),
        0,
        "the connect endpoint must not be reached"
    );
    assert!(!data.path().join("agent/server-ca.crt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_welcome_leaves_kubeconfig_and_servers_and_peer_updates_rewrite_them() {
    let cluster = Cluster::new();
    let a = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let b = FakeServer::start(&cluster, "127.0.0.3", None).await;
    a.set_peers(vec![a.peer(), b.peer()]);
    let data = tempfile::tempdir().expect("temp dir");
    let agent = RunningAgent::start(config(&[&a], &cluster.full_token(), "n1", data.path()));

    let kubeconfig = data.path().join("agent/kubeconfig");
    eventually("the kubeconfig is written", || kubeconfig.exists()).await;
    let text = read(&kubeconfig);
    assert!(text.contains("server: https://127.0.0.1:"), "{text}");
    use base64::Engine as _;
    let ca_data = base64::engine::general_purpose::STANDARD.encode(cluster.ca.cert_pem());
    assert!(
        text.contains(&ca_data),
        "the kubeconfig trusts the cluster CA"
    );
    assert!(text.contains("client-certificate-data:") && text.contains("client-key-data:"));
    assert_eq!(
        std::fs::metadata(&kubeconfig).expect("kubeconfig").mode() & 0o777,
        0o600
    );
    assert_eq!(
        read(&data.path().join("agent/server-ca.crt")),
        cluster.ca.cert_pem()
    );
    let key = data.path().join("agent/client-node.key");
    assert_eq!(
        std::fs::metadata(&key).expect("node key").mode() & 0o777,
        0o600
    );
    assert_eq!(saved_peers(data.path()), vec![a.peer(), b.peer()]);

    // Local clients reach a server through the load balancer named in the kubeconfig.
    let verified = capstan_agent::tls::verifying(cluster.ca.cert_pem()).expect("CA");
    let pong = capstan_agent::tls::get(
        verified,
        &load_balancer(&text),
        PING_PATH,
        Duration::from_secs(5),
    )
    .await
    .expect("a ping through the load balancer");
    assert_eq!(pong, b"pong");

    // The server hears which server the load balancer uses.
    eventually("the agent reports its active server", || {
        a.state
            .seen
            .lock()
            .expect("lock")
            .reports
            .iter()
            .any(|report| {
                matches!(report, AgentMessage::Report { active_server: Some(active), failovers: 0 }
                if *active == a.address || *active == b.address)
            })
    })
    .await;

    let c = Peer {
        id: "server-c".into(),
        address: "127.0.0.4:1".into(),
    };
    a.push_peers(vec![a.peer(), c.clone()]);
    eventually("servers.json follows the Peers message", || {
        saved_peers(data.path()) == vec![a.peer(), c.clone()]
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_reaches_saved_peers_while_the_registration_address_is_down() {
    let cluster = Cluster::new();
    let registration = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let peer = FakeServer::start(&cluster, "127.0.0.3", None).await;
    registration.set_peers(vec![peer.peer()]);
    peer.set_peers(vec![peer.peer()]);
    let data = tempfile::tempdir().expect("temp dir");
    // A bare token: the CA is trusted on first use and saved.
    let config = config(&[&registration], SECRET, "n1", data.path());

    let agent = RunningAgent::start(config.clone());
    eventually("the first run saves the peers", || {
        saved_peers(data.path()) == vec![peer.peer()]
    })
    .await;
    assert_eq!(
        read(&data.path().join("agent/server-ca.crt")),
        cluster.ca.cert_pem()
    );
    agent.stop().await;
    let before = peer.connects();

    registration.stop();
    let agent = RunningAgent::start(config);
    eventually("the restarted agent connects to the saved peer", || {
        peer.connects() > before
    })
    .await;
    assert!(!agent.task.is_finished(), "the agent keeps running");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_password_and_id_survive_restarts() {
    let cluster = Cluster::new();
    let server = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = config(&[&server], &cluster.full_token(), "worker", data.path());
    config.with_node_id = true;

    for run in 1..=2 {
        let agent = RunningAgent::start(config.clone());
        eventually("the agent connects", || server.connects() >= run).await;
        agent.stop().await;
    }
    let nodes = server.nodes();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0], nodes[1], "same name and password after a restart");
    let (name, password) = &nodes[0];
    let suffix = name
        .strip_prefix("worker-")
        .expect("the name keeps its base");
    assert_eq!(suffix.len(), 8);
    assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    assert_eq!(read(&data.path().join("node/id")).trim(), suffix);
    let password_file = data.path().join("node/password");
    assert_eq!(read(&password_file).trim(), password);
    assert_eq!(password.len(), 64);
    assert_eq!(
        std::fs::metadata(&password_file).expect("password").mode() & 0o777,
        0o600
    );
    let distinct: HashSet<_> = nodes.iter().collect();
    assert_eq!(distinct.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_stop_the_agent_with_the_server_reason() {
    let cluster = Cluster::new();
    let server = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let data = tempfile::tempdir().expect("temp dir");
    let wrong_secret = ClusterToken::bare("not-the-secret").full(cluster.ca.cert_pem());
    let error = capstan_agent::run(
        config(&[&server], &wrong_secret, "n1", data.path()),
        CancellationToken::new(),
    )
    .await
    .expect_err("a wrong secret is fatal")
    .to_string();
    assert!(error.contains("token rejected"), "{error}");

    let reason = "node n1 is already registered with another password (duplicate hostname?)";
    let refusing = FakeServer::start(
        &cluster,
        "127.0.0.3",
        Some((StatusCode::FORBIDDEN, reason.into())),
    )
    .await;
    let data = tempfile::tempdir().expect("temp dir");
    let error = capstan_agent::run(
        config(&[&refusing], &cluster.full_token(), "n1", data.path()),
        CancellationToken::new(),
    )
    .await
    .expect_err("a refusal is fatal")
    .to_string();
    assert!(error.contains(reason), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_join_registers_every_simulated_agent_and_counts_them_per_server() {
    let cluster = Cluster::new();
    let a = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let b = FakeServer::start(&cluster, "127.0.0.3", None).await;
    let args = capstan::bench::join::JoinBenchArgs {
        servers: vec![
            format!("https://{}", a.address),
            format!("https://{}", b.address),
        ],
        token: cluster.full_token(),
        agents: 40,
        concurrency: 8,
        hold: 1,
        json: true,
    };
    let report = tokio::time::timeout(Duration::from_secs(30), capstan::bench::join::run(args))
        .await
        .expect("the bench finishes")
        .expect("the bench runs");
    assert_eq!(report.joined, 40, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.agents_per_server.get("server-127.0.0.2"), Some(&20));
    assert_eq!(report.agents_per_server.get("server-127.0.0.3"), Some(&20));
    assert!(report.join_p50_ms <= report.join_p99_ms);
    assert_eq!(report.dropped_during_hold, 0);
    let names: HashSet<String> = a
        .nodes()
        .into_iter()
        .chain(b.nodes())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names.len(), 40);
    assert!(names.contains("sim-0") && names.contains("sim-39"));

    let refused = capstan::bench::join::JoinBenchArgs {
        servers: vec![format!("https://{}", a.address)],
        token: ClusterToken::bare("wrong").full(cluster.ca.cert_pem()),
        agents: 3,
        concurrency: 2,
        hold: 0,
        json: false,
    };
    let report = capstan::bench::join::run(refused)
        .await
        .expect("the bench runs");
    assert_eq!(report.joined, 0);
    assert_eq!(report.failures.get("token rejected"), Some(&3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failover_is_reported_to_the_surviving_server() {
    let cluster = Cluster::new();
    let a = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let b = FakeServer::start(&cluster, "127.0.0.3", None).await;
    a.set_peers(vec![a.peer(), b.peer()]);
    b.set_peers(vec![a.peer(), b.peer()]);
    let data = tempfile::tempdir().expect("temp dir");
    // Registration through both, so the agent can re-register on the survivor.
    let agent = RunningAgent::start(config(&[&a, &b], &cluster.full_token(), "n1", data.path()));

    let reported_active = |server: &FakeServer| {
        server
            .state
            .seen
            .lock()
            .expect("lock")
            .reports
            .iter()
            .rev()
            .map(|report| match report {
                AgentMessage::Report {
                    active_server,
                    failovers,
                } => (active_server.clone(), *failovers),
            })
            .next()
    };
    eventually("the agent reports an active server", || {
        reported_active(&a).is_some_and(|(active, _)| active.is_some())
    })
    .await;
    let (active, _) = reported_active(&a).expect("a report");
    let (dead, survivor) = if active.as_deref() == Some(a.address.as_str()) {
        (&a, &b)
    } else {
        (&b, &a)
    };

    dead.stop();
    let survivor_address = survivor.address.clone();
    eventually("the survivor hears of the failover", || {
        reported_active(survivor) == Some((Some(survivor_address.clone()), 1))
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_reuse_one_connection_and_fail_when_the_server_dies() {
    let cluster = Cluster::new();
    let server = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let verified = capstan_agent::tls::verifying(cluster.ca.cert_pem()).expect("CA");
    let mut pinger = capstan_agent::tls::Pinger::new(verified, &server.address);
    for _ in 0..5 {
        assert!(pinger.ping(PING_PATH, Duration::from_secs(2)).await);
    }
    let accepted = server
        .state
        .accepted
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(accepted, 1, "five pings, one connection");
    server.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!pinger.ping(PING_PATH, Duration::from_secs(2)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_closes_proxied_connections_before_the_agent_returns() {
    let cluster = Cluster::new();
    let server = FakeServer::start(&cluster, "127.0.0.2", None).await;
    let data = tempfile::tempdir().expect("temp dir");
    let agent = RunningAgent::start(config(&[&server], &cluster.full_token(), "n1", data.path()));
    let kubeconfig = data.path().join("agent/kubeconfig");
    eventually("the kubeconfig is written", || kubeconfig.exists()).await;

    // A TLS connection to the server through the load balancer, which the server keeps
    // open after answering (HTTP/1.1 keep-alive): only the agent can close it.
    let tcp = TcpStream::connect(load_balancer(&read(&kubeconfig)))
        .await
        .expect("connect to the load balancer");
    let verified = capstan_agent::tls::verifying(cluster.ca.cert_pem()).expect("CA");
    let name = ServerName::try_from("127.0.0.2").expect("a server name");
    let mut proxied = TlsConnector::from(verified)
        .connect(name, tcp)
        .await
        .expect("a TLS handshake with the server through the load balancer");
    let request = format!("GET {PING_PATH} HTTP/1.1\r\nHost: 127.0.0.2\r\n\r\n");
    proxied
        .write_all(request.as_bytes())
        .await
        .expect("send a ping");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 512];
    while !String::from_utf8_lossy(&answer).contains("pong") {
        let n = tokio::time::timeout(Duration::from_secs(5), proxied.read(&mut buffer))
            .await
            .expect("an answer in time")
            .expect("an answer");
        assert!(n > 0, "the connection closed before the answer");
        answer.extend_from_slice(&buffer[..n]);
    }

    agent.shutdown.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(2), agent.task)
        .await
        .expect("the agent returns within 2 s of shutdown")
        .expect("the agent task does not panic");
    assert!(outcome.is_ok(), "the agent stopped with {outcome:?}");
    let read = tokio::time::timeout(Duration::from_millis(100), proxied.read(&mut buffer))
        .await
        .expect("the proxied connection is closed by the time the agent returned");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
