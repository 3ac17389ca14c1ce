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
use capstan::cluster::agents::{AgentRecord, record_key};
use capstan::cluster::certs::{IssuedCert, admin_kubeconfig};
use capstan::datastore::{Engine, Store};
use capstan::join::protocol::{
    AgentMessage, CACERTS_PATH, CONNECT_PATH, NODE_NAME_HEADER, NODE_PASSWORD_HEADER, PING_PATH,
    ServerMessage, ca_hash,
};
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

/// A server with the database it runs on and what an agent needs to reach it.
struct Cluster {
    server: TestServer,
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
        let store = database.open().await;
        let token = std::fs::read_to_string(server.data_dir().join("server/token"))
            .expect("the server wrote its token")
            .trim()
            .to_string();
        let kubeconfig = std::fs::read_to_string(&server.kubeconfig).expect("the kubeconfig");
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
            server,
            database,
            store,
            token,
            ca_pem,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
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
            self.server.url.replacen("https://", "wss://", 1)
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
        Api::namespaced(self.server.client.clone(), "kube-system")
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

/// The next server message (pings are answered by the library and skipped).
async fn next_message(socket: &mut Socket) -> ServerMessage {
    loop {
        let frame = tokio::time::timeout(SETTLE, socket.next())
            .await
            .expect("a message within the timeout")
            .expect("the connection stays open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(text.as_str()).expect("a server message");
        }
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
    let anonymous = anonymous_client(&cluster.server.kubeconfig).await;

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
    let mut socket = cluster
        .connect(&cluster.token, "worker-1", password)
        .await
        .expect("the right token and a new node are accepted");
    let ServerMessage::Welcome {
        server_id,
        node_name,
        peers,
        client_cert_pem,
        client_key_pem,
    } = next_message(&mut socket).await
    else {
        panic!("the first message must be the welcome");
    };
    assert_eq!(node_name, "worker-1");
    let port = cluster.server.url.rsplit(':').next().expect("a port");
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].id, server_id);
    assert_eq!(peers[0].address, format!("127.0.0.1:{port}"));

    // The node's certificate is accepted by the API.
    let node_kubeconfig = cluster.server.data_dir().join("worker-1.kubeconfig");
    let node_cert = IssuedCert {
        cert_pem: client_cert_pem,
        key_pem: client_key_pem,
    };
    std::fs::write(
        &node_kubeconfig,
        admin_kubeconfig(&cluster.server.url, &cluster.ca_pem, &node_cert),
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
    socket
        .send(Message::Text(
            serde_json::to_string(&report).expect("a report").into(),
        ))
        .await
        .expect("send a report");
    socket
        .send(Message::Text(r#"{"type":"fromTheFuture"}"#.into()))
        .await
        .expect("send an unknown message");
    eventually("the report reaching the metrics", || async {
        let metrics = get_text(&cluster.server.client, "/metrics").await;
        metric(&metrics, "capstan_agent_lb_failovers_total") >= 2.0
    })
    .await;
    let metrics = get_text(&cluster.server.client, "/metrics").await;
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
    let mut again = cluster
        .connect(&cluster.token, "worker-1", password)
        .await
        .expect("the same password is accepted again");
    assert!(matches!(
        next_message(&mut again).await,
        ServerMessage::Welcome { .. }
    ));
    again
        .close(None)
        .await
        .expect("close the second connection");

    // Closing the connection removes the record (the second connection's close, which
    // replaced it, removed it; the first one's close must not leave or restore anything).
    socket.close(None).await.expect("close the connection");
    eventually("the connection record's removal", || async {
        cluster.record("worker-1").await.is_none()
    })
    .await;

    // Deleting the Node deletes the password Secret.
    let nodes: Api<Node> = Api::all(cluster.server.client.clone());
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
    let first = cluster
        .connect(&cluster.token, "worker-2", "pw-one")
        .await
        .expect("the first registration is accepted");
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

    let metrics = get_text(&cluster.server.client, "/metrics").await;
    for result in ["bad_token", "bad_password", "invalid_request"] {
        let series = format!("capstan_join_registrations_total{{result=\"{result}\"}}");
        assert!(metric(&metrics, &series) >= 1.0, "{series} in:\n{metrics}");
    }

    drop(first);
    cluster.stop().await;
}
