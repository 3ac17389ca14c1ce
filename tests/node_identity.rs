//! What agent credentials open (issue 13 finding 12), against a real server process: the
//! cluster token on every agent's disk is a join credential only (401 as a bearer token);
//! the certificate a registration returns lets its node do what a kubelet does — its own
//! Node and Lease, status of pods bound to it — and nothing else (403 with the Status
//! kube-apiserver sends); `capstan token rotate` retires the certificates of the old token
//! (401), while agents register again with the new one; registrations are rate-limited per
//! source address (429) and the refused ones store nothing. For every refusal the server
//! stays up, within its memory headroom, and what is stored does not change.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_agent::heartbeat::{self, NodeFacts};
use capstan_machinery::join::{
    CONNECT_PATH, NODE_NAME_HEADER, NODE_PASSWORD_HEADER, ServerMessage,
};
use capstan_pki::certs::{IssuedCert, admin_kubeconfig};
use futures::StreamExt as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use common::probe::{
    admin_client, anonymous_client, assert_alive_and_bounded, rss_bytes, send, snapshot,
};
use common::process::Server;

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What refused requests must leave as it was.
const STORED: &[&str] = &[
    "/api/v1/secrets",
    "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "/apis/rbac.authorization.k8s.io/v1/rolebindings",
    "/api/v1/namespaces/default/pods",
];

fn ca_pem(server: &Server) -> String {
    std::fs::read_to_string(
        server
            .kubeconfig
            .with_file_name("tls")
            .join("server-ca.crt"),
    )
    .expect("the server wrote its CA")
}

fn full_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("server/token"))
        .expect("the server wrote its token")
        .trim()
        .to_string()
}

fn url(server: &Server) -> String {
    format!("https://127.0.0.1:{}", server.port)
}

/// A refused upgrade: its status, Retry-After and body.
struct Refusal {
    code: u16,
    retry_after: Option<String>,
    body: String,
}

/// Opens the registration websocket as an agent does.
async fn open(server: &Server, token: &str, node: &str, password: &str) -> Result<Socket, Refusal> {
    let address = format!("wss://127.0.0.1:{}{CONNECT_PATH}", server.port);
    let mut request = address.into_client_request().expect("a websocket request");
    let headers = request.headers_mut();
    let value = |text: &str| text.parse().expect("a header value");
    headers.insert("authorization", value(&format!("Bearer {token}")));
    headers.insert(NODE_NAME_HEADER, value(node));
    headers.insert(NODE_PASSWORD_HEADER, value(password));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem(server).as_bytes()) {
        roots.add(cert.expect("the CA parses")).expect("a root");
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connected = tokio_tungstenite::connect_async_tls_with_config(
        request,
        None,
        false,
        Some(Connector::Rustls(Arc::new(tls))),
    )
    .await;
    match connected {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(Refusal {
            code: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned(),
        }),
        Err(other) => panic!("the registration failed below HTTP: {other}"),
    }
}

/// Registers `node` and returns the certificate of its Welcome.
async fn register(server: &Server, token: &str, node: &str) -> IssuedCert {
    let mut socket = match open(server, token, node, &format!("password-of-{node}")).await {
        Ok(socket) => socket,
        Err(refusal) => panic!("{node} registers: {} {}", refusal.code, refusal.body),
    };
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a Welcome within 15 s")
            .expect("the connection stays open")
            .expect("a websocket frame");
        if let Message::Text(text) = frame {
            let ServerMessage::Welcome {
                client_cert_pem,
                client_key_pem,
                ..
            } = serde_json::from_str(text.as_str()).expect("a server message")
            else {
                panic!("the first message is the Welcome");
            };
            return IssuedCert {
                cert_pem: client_cert_pem,
                key_pem: client_key_pem,
            };
        }
    }
}

/// A kubeconfig for `server` authenticating with `cert`.
fn kubeconfig_for(server: &Server, cert: &IssuedCert) -> String {
    admin_kubeconfig(&url(server), &ca_pem(server), cert)
}

/// A client authenticating with `cert`.
async fn client_with(server: &Server, cert: &IssuedCert) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&kubeconfig_for(server, cert)).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client config");
    Client::try_from(config).expect("a client")
}

fn request(method: &str, path: &str, content_type: &str, body: Value) -> http::Request<Vec<u8>> {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(bytes)
        .expect("a valid request")
}

fn get(path: &str) -> http::Request<Vec<u8>> {
    request("GET", path, "application/json", Value::Null)
}

const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

/// Sends `request` with `Authorization: Bearer <token>` and no other credentials.
async fn with_bearer(client: &Client, token: &str, mut request: http::Request<Vec<u8>>) -> u16 {
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    send(client, request).await.0
}

/// Waits until the bundled RBAC manifests are applied: they land in the stored state the
/// tests snapshot, in the background after the server starts.
async fn bundled_rbac_applied(admin: &Client) {
    common::wait_for("the bundled RBAC manifests", Duration::from_secs(30), async || {
        let (binding, _) = send(
            admin,
            get("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/capstan:node"),
        )
        .await;
        let (lease_binding, _) = send(
            admin,
            get("/apis/rbac.authorization.k8s.io/v1/namespaces/kube-node-lease/rolebindings/capstan:node-lease"),
        )
        .await;
        (binding == 200 && lease_binding == 200).then_some(())
    })
    .await;
}

fn assert_forbidden(what: &str, (code, body): &(u16, Value), message: &str) {
    assert_eq!(*code, 403, "{what}: {body}");
    assert_eq!(body["kind"], "Status", "{what}: {body}");
    assert_eq!(body["reason"], "Forbidden", "{what}: {body}");
    let text = body["message"].as_str().unwrap_or_default();
    assert!(
        text.starts_with(message),
        "{what}: {text:?} should start with {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_token_is_not_an_api_credential() {
    common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("a data dir");
    let mut server = Server::start(dir.path(), "token-test");
    let admin = admin_client(&server).await;
    bundled_rbac_applied(&admin).await;
    let anonymous = anonymous_client(&server).await;
    let baseline = rss_bytes(server.pid());
    let before = snapshot(&admin, STORED).await;

    let full = full_token(dir.path());
    let secret = full
        .rsplit("::server:")
        .next()
        .expect("a full token")
        .to_string();
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "token-is-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}],
    });
    for token in [secret.as_str(), full.as_str()] {
        for attempt in [
            get("/api/v1/namespaces"),
            get("/api/v1/namespaces/kube-system/secrets"),
            request(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                JSON,
                binding.clone(),
            ),
            request(
                "DELETE",
                "/api/v1/namespaces/kube-system/secrets/token-test.node-password.capstan",
                JSON,
                Value::Null,
            ),
        ] {
            let what = format!("{} {}", attempt.method(), attempt.uri());
            assert_eq!(with_bearer(&anonymous, token, attempt).await, 401, "{what}");
        }
    }
    // The token still does its one job: agents join with it.
    let cert = register(&server, &full, "joined-with-token").await;
    let node = client_with(&server, &cert).await;
    assert_eq!(send(&node, get("/api/v1/nodes")).await.0, 200);

    let after = snapshot(&admin, STORED).await;
    let secrets = |lists: &[Value]| -> Vec<String> {
        lists[0]["items"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let mut expected = secrets(&before);
    expected.push("joined-with-token.node-password.capstan".to_string());
    expected.sort();
    let mut found = secrets(&after);
    found.sort();
    assert_eq!(found, expected, "only the registration stored something");
    assert_eq!(before[1..], after[1..], "no binding or pod changed");
    assert_alive_and_bounded(&mut server, baseline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_does_what_a_kubelet_does_and_nothing_more() {
    common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("a data dir");
    let mut server = Server::start(dir.path(), "kubelet-test");
    let admin = admin_client(&server).await;
    bundled_rbac_applied(&admin).await;
    let baseline = rss_bytes(server.pid());
    let cert = register(&server, &full_token(dir.path()), "worker-a").await;
    let node = client_with(&server, &cert).await;

    // The agent's own heartbeats, with this certificate: its Node (created, status
    // patched) and its Lease (created, renewed).
    let (_kubeconfig_tx, kubeconfig) = tokio::sync::watch::channel(kubeconfig_for(&server, &cert));
    let (_facts_tx, facts) = tokio::sync::watch::channel(NodeFacts {
        name: "worker-a".into(),
        internal_ip: Some("127.0.0.1".parse().expect("an IP")),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let beating = tokio::spawn(heartbeat::run(kubeconfig, facts, stop.clone()));
    common::wait_for(
        "worker-a Ready and its Lease",
        Duration::from_secs(20),
        async || {
            let (code, node) = send(&admin, get("/api/v1/nodes/worker-a")).await;
            let ready = code == 200
                && node["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let (lease, _) = send(
                &admin,
                get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/worker-a"),
            )
            .await;
            (ready && lease == 200).then_some(())
        },
    )
    .await;
    stop.cancel();
    beating.await.expect("the heartbeats end");

    // What the kubelet reads.
    for path in [
        "/api/v1/nodes",
        "/api/v1/pods",
        "/api/v1/services",
        "/api/v1/endpoints",
        "/api/v1/namespaces",
        "/api",
        "/apis",
        "/version",
    ] {
        assert_eq!(send(&node, get(path)).await.0, 200, "GET {path}");
    }
    // Its own Node and Lease.
    let labels = json!({"metadata": {"labels": {"example.com/rack": "r1"}}});
    let (code, body) = send(
        &node,
        request("PATCH", "/api/v1/nodes/worker-a", MERGE, labels.clone()),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let renew = json!({"spec": {"holderIdentity": "worker-a"}});
    let own_lease = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/worker-a";
    let (code, body) = send(&node, request("PATCH", own_lease, MERGE, renew.clone())).await;
    assert_eq!(code, 200, "{body}");

    // Another node's objects, and a pod bound to each, made by the admin.
    let other_node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-b"}});
    let (code, body) = send(&admin, request("POST", "/api/v1/nodes", JSON, other_node)).await;
    assert_eq!(code, 201, "{body}");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "worker-b", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "worker-b"},
    });
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let (code, body) = send(&admin, request("POST", leases, JSON, lease)).await;
    assert_eq!(code, 201, "{body}");
    for (pod, bound_to) in [("on-a", "worker-a"), ("on-b", "worker-b")] {
        let manifest = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": "default"},
            "spec": {"nodeName": bound_to, "containers": [{"name": "c", "image": "busybox"}]},
        });
        let (code, body) = send(
            &admin,
            request("POST", "/api/v1/namespaces/default/pods", JSON, manifest),
        )
        .await;
        assert_eq!(code, 201, "{body}");
    }
    let running = json!({"status": {"phase": "Running"}});
    let (code, body) = send(
        &node,
        request(
            "PATCH",
            "/api/v1/namespaces/default/pods/on-a/status",
            MERGE,
            running.clone(),
        ),
    )
    .await;
    assert_eq!(code, 200, "the status of a pod bound to the node: {body}");
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "worker-a.started", "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": "worker-a"},
        "reason": "Starting", "message": "kubelet starting", "type": "Normal",
    });
    let (code, body) = send(
        &node,
        request("POST", "/api/v1/namespaces/default/events", JSON, event),
    )
    .await;
    assert_eq!(code, 201, "an event: {body}");

    // Everything else is forbidden, and changes nothing.
    let before = snapshot(&admin, STORED).await;
    let (_, other_before) = send(&admin, get("/api/v1/nodes/worker-b")).await;
    let (_, lease_before) = send(&admin, get(&format!("{leases}/worker-b"))).await;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "node-escalates"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "system:node:worker-a", "apiGroup": "rbac.authorization.k8s.io"}],
    });
    assert_forbidden(
        "a ClusterRoleBinding",
        &send(
            &node,
            request(
                "POST",
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                JSON,
                binding,
            ),
        )
        .await,
        "clusterrolebindings.rbac.authorization.k8s.io is forbidden: User \"system:node:worker-a\" cannot create resource \"clusterrolebindings\" in API group \"rbac.authorization.k8s.io\" at the cluster scope",
    );
    let password_secret = "/api/v1/namespaces/kube-system/secrets/worker-a.node-password.capstan";
    assert_forbidden(
        "deleting a Secret",
        &send(&node, request("DELETE", password_secret, JSON, Value::Null)).await,
        "secrets \"worker-a.node-password.capstan\" is forbidden: User \"system:node:worker-a\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"kube-system\"",
    );
    assert_forbidden(
        "reading Secrets",
        &send(&node, get("/api/v1/namespaces/kube-system/secrets")).await,
        "secrets is forbidden: User \"system:node:worker-a\" cannot list resource \"secrets\"",
    );
    assert_forbidden(
        "another node",
        &send(
            &node,
            request("PATCH", "/api/v1/nodes/worker-b", MERGE, labels),
        )
        .await,
        "nodes \"worker-b\" is forbidden: User \"system:node:worker-a\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope",
    );
    assert_forbidden(
        "another node's status",
        &send(
            &node,
            request(
                "PATCH",
                "/api/v1/nodes/worker-b/status",
                MERGE,
                json!({"status": {}}),
            ),
        )
        .await,
        "nodes \"worker-b\" is forbidden: User \"system:node:worker-a\" cannot patch resource \"nodes/status\"",
    );
    let impostor = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-c"}});
    assert_forbidden(
        "creating another Node",
        &send(&node, request("POST", "/api/v1/nodes", JSON, impostor)).await,
        "nodes \"worker-c\" is forbidden: User \"system:node:worker-a\" cannot create resource \"nodes\"",
    );
    assert_forbidden(
        "deleting another Node",
        &send(
            &node,
            request("DELETE", "/api/v1/nodes/worker-b", JSON, Value::Null),
        )
        .await,
        "nodes \"worker-b\" is forbidden",
    );
    assert_forbidden(
        "another node's Lease",
        &send(
            &node,
            request("PATCH", &format!("{leases}/worker-b"), MERGE, renew),
        )
        .await,
        "leases.coordination.k8s.io \"worker-b\" is forbidden: User \"system:node:worker-a\" cannot patch resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\"",
    );
    assert_forbidden(
        "a pod bound elsewhere",
        &send(
            &node,
            request(
                "PATCH",
                "/api/v1/namespaces/default/pods/on-b/status",
                MERGE,
                running,
            ),
        )
        .await,
        "pods \"on-b\" is forbidden: User \"system:node:worker-a\" cannot patch resource \"pods/status\"",
    );
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sneaky", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    assert_forbidden(
        "creating a pod",
        &send(
            &node,
            request("POST", "/api/v1/namespaces/default/pods", JSON, pod),
        )
        .await,
        "pods is forbidden: User \"system:node:worker-a\" cannot create resource \"pods\"",
    );
    assert_forbidden(
        "the metrics",
        &send(&node, get("/metrics")).await,
        "forbidden: User \"system:node:worker-a\" cannot get path \"/metrics\"",
    );
    assert_eq!(
        snapshot(&admin, STORED).await,
        before,
        "nothing stored changed"
    );
    assert_eq!(
        send(&admin, get("/api/v1/nodes/worker-b")).await.1,
        other_before
    );
    assert_eq!(
        send(&admin, get(&format!("{leases}/worker-b"))).await.1,
        lease_before
    );
    assert_eq!(send(&admin, get("/api/v1/nodes/worker-c")).await.0, 404);
    // The admin is unaffected.
    assert_eq!(
        send(&admin, get("/api/v1/namespaces/kube-system/secrets"))
            .await
            .0,
        200
    );
    assert_alive_and_bounded(&mut server, baseline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_certificates_of_a_rotated_token_are_refused() {
    common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("a data dir");
    let mut server = Server::start_with(dir.path(), "rotation-test", &["--token", "old-secret"]);
    let admin = admin_client(&server).await;
    bundled_rbac_applied(&admin).await;
    let old_full = full_token(dir.path());
    let old_cert = register(&server, &old_full, "worker-r").await;
    let old_node = client_with(&server, &old_cert).await;
    assert_eq!(send(&old_node, get("/api/v1/nodes")).await.0, 200);

    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["token", "rotate", "--new-token", "new-secret", "--data-dir"])
        .arg(dir.path())
        .env_remove("CAPSTAN_TOKEN")
        .env("NO_COLOR", "1")
        .output()
        .expect("capstan token rotate runs");
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );

    // The running server notices within seconds: the old certificate is refused, on the
    // connection it already has too; the admin is not affected.
    common::wait_for(
        "the old node certificate refused",
        Duration::from_secs(15),
        async || (send(&old_node, get("/api/v1/nodes")).await.0 == 401).then_some(()),
    )
    .await;
    assert_eq!(send(&admin, get("/api/v1/nodes")).await.0, 200);
    // Until it is restarted with the new token, it registers nobody.
    let stale = open(&server, &old_full, "worker-s", "password-s")
        .await
        .expect_err("a server with a rotated-away token refuses registrations");
    assert_eq!(stale.code, 503, "{}", stale.body);
    assert!(
        stale.body.contains("restarted with the new token"),
        "{}",
        stale.body
    );

    // Restarted with the new token, agents register with it; the old certificate stays out.
    drop(server);
    server = Server::start(dir.path(), "rotation-test");
    let new_full = full_token(dir.path());
    assert!(new_full.ends_with("::server:new-secret"), "{new_full}");
    let refused = open(&server, &old_full, "worker-r", "password-of-worker-r")
        .await
        .expect_err("the old token no longer joins");
    assert_eq!(refused.code, 401, "{}", refused.body);
    let new_cert = register(&server, &new_full, "worker-r").await;
    let new_node = client_with(&server, &new_cert).await;
    assert_eq!(send(&new_node, get("/api/v1/nodes")).await.0, 200);
    let old_node = client_with(&server, &old_cert).await;
    assert_eq!(send(&old_node, get("/api/v1/nodes")).await.0, 401);
    assert!(server.try_wait().is_none(), "{}", server.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_registrations_from_one_address_are_throttled_and_store_nothing() {
    const ATTEMPTS: usize = 100;
    common::install_crypto_provider();
    let dir = tempfile::tempdir().expect("a data dir");
    let mut server = Server::start(dir.path(), "throttle-test");
    let server_ref = &server;
    let admin = admin_client(&server).await;
    bundled_rbac_applied(&admin).await;
    let baseline = rss_bytes(server.pid());
    let before = snapshot(&admin, STORED).await;
    let token = full_token(dir.path());

    let started = Instant::now();
    let attempts = (0..ATTEMPTS).map(|index| {
        let token = token.clone();
        async move {
            let node = format!("rapid-{index:03}");
            let password = format!("password-{index}");
            (
                node.clone(),
                open(server_ref, &token, &node, &password).await,
            )
        }
    });
    let results = futures::future::join_all(attempts).await;
    let elapsed = started.elapsed();
    let mut accepted = Vec::new();
    let mut throttled = 0;
    for (node, result) in results {
        match result {
            Ok(socket) => {
                accepted.push(format!("{node}.node-password.capstan"));
                drop(socket);
            }
            Err(refusal) => {
                assert_eq!(refusal.code, 429, "{node}: {}", refusal.body);
                let status: Value = serde_json::from_str(&refusal.body).expect("a Status");
                assert_eq!(status["reason"], "TooManyRequests", "{status}");
                let wait: u64 = refusal
                    .retry_after
                    .as_deref()
                    .and_then(|value| value.parse().ok())
                    .expect("a Retry-After in seconds");
                assert!((1..=5).contains(&wait), "Retry-After {wait}");
                throttled += 1;
            }
        }
    }
    eprintln!(
        "{ATTEMPTS} registrations in {elapsed:?}: {} accepted, {throttled} throttled",
        accepted.len()
    );
    assert!(
        accepted.len() >= 20,
        "the burst of 20 passes: {}",
        accepted.len()
    );
    let allowed = 20 + (elapsed.as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        accepted.len() <= allowed,
        "{} accepted in {elapsed:?}, at most {allowed} allowed",
        accepted.len()
    );
    assert!(throttled > 0, "nothing was throttled");

    // Exactly the accepted registrations stored a password Secret.
    let after = snapshot(&admin, STORED).await;
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|item| item["metadata"]["name"].as_str().map(str::to_string))
            .collect()
    };
    let mut expected = names(&before[0]);
    expected.extend(accepted.iter().cloned());
    expected.sort();
    let mut found = names(&after[0]);
    found.sort();
    assert_eq!(found, expected);
    assert_eq!(before[1..], after[1..]);

    // Once the budget refills, a registration that fails authentication stores nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let wrong = open(&server, "not-the-token", "rapid-wrong", "pw")
        .await
        .expect_err("a wrong token is refused");
    assert_eq!(wrong.code, 401, "{}", wrong.body);
    let (code, _) = send(
        &admin,
        get("/api/v1/namespaces/kube-system/secrets/rapid-wrong.node-password.capstan"),
    )
    .await;
    assert_eq!(code, 404);
    let (_, metrics) = send(&admin, get("/metrics")).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(
        metrics.contains("capstan_join_registrations_total{result=\"throttled\"}"),
        "{metrics}"
    );
    assert_alive_and_bounded(&mut server, baseline);
}
