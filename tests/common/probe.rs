//! What the abuse tests share: clients of a server process (admin, anonymous), raw requests
//! that return the status and body whatever they are, the server's resident memory, and a
//! snapshot of what is stored so a test can show a refused request changed nothing.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

use super::process::Server;

/// A rustls client config trusting the CA the server wrote, presenting the admin client
/// certificate of its kubeconfig when `admin` (none otherwise), for tests that speak TLS
/// themselves rather than through a client library that could retry on its own.
pub fn tls_client_config(server: &Server, admin: bool) -> rustls::ClientConfig {
    use base64::Engine as _;
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = std::fs::read(
        server
            .kubeconfig
            .with_file_name("tls")
            .join("server-ca.crt"),
    )
    .expect("the server wrote its CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    if !admin {
        return builder.with_no_client_auth();
    }
    let text = std::fs::read_to_string(&server.kubeconfig).expect("the kubeconfig");
    let kubeconfig: Value = serde_saphyr::from_str(&text).expect("the kubeconfig is YAML");
    let pem = |pointer: &str| {
        let data = kubeconfig
            .pointer(pointer)
            .and_then(Value::as_str)
            .expect("the kubeconfig carries the admin identity");
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64 PEM")
    };
    let chain = CertificateDer::pem_slice_iter(&pem("/users/0/user/client-certificate-data"))
        .collect::<Result<Vec<_>, _>>()
        .expect("the admin certificate parses");
    let key = PrivateKeyDer::from_pem_slice(&pem("/users/0/user/client-key-data"))
        .expect("the admin key parses");
    builder
        .with_client_auth_cert(chain, key)
        .expect("the admin certificate and key match")
}

/// A client with the admin credentials of the server's kubeconfig.
pub async fn admin_client(server: &Server) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).expect("the kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is complete");
    Client::try_from(config).expect("a client can be built")
}

/// A client that trusts the cluster CA but presents no credentials.
pub async fn anonymous_client(server: &Server) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).expect("the kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is complete");
    config.auth_info = Default::default();
    Client::try_from(config).expect("a client can be built")
}

/// Sends a raw request; returns the HTTP status and the body as JSON (or as a JSON string
/// when it is not JSON).
pub async fn send(client: &Client, request: http::Request<Vec<u8>>) -> (u16, Value) {
    let response = client.send(request.map(kube::client::Body::from)).await;
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (status, body)
        }
        Err(kube::Error::Api(status)) => (
            status.code,
            json!({"reason": status.reason, "message": status.message}),
        ),
        Err(other) => panic!("request failed below HTTP: {other}"),
    }
}

/// A request with a JSON (or other) body and content type.
pub fn request(
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body)
        .expect("a valid request")
}

/// A `GET` of `path`.
pub fn get(path: &str) -> http::Request<Vec<u8>> {
    request("GET", path, "application/json", Vec::new())
}

/// A `POST` of `body` as JSON to `path`.
pub fn post(path: &str, body: &Value) -> http::Request<Vec<u8>> {
    request(
        "POST",
        path,
        "application/json",
        body.to_string().into_bytes(),
    )
}

/// The resident memory of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the server process is alive");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse::<u64>().ok())
        .expect("/proc/<pid>/status has VmRSS");
    kib * 1024
}

/// How far above its starting memory a server may go while it is abused.
pub const RSS_HEADROOM: u64 = 300 * 1024 * 1024;

/// Fails unless the server process is still running and its memory stayed within
/// [`RSS_HEADROOM`] of `baseline`.
pub fn assert_alive_and_bounded(server: &mut Server, baseline: u64) {
    assert!(
        server.try_wait().is_none(),
        "the server died:\n{}",
        server.log_text()
    );
    let now = rss_bytes(server.pid());
    assert!(
        now <= baseline + RSS_HEADROOM,
        "the server's memory grew from {} MB to {} MB",
        baseline / (1024 * 1024),
        now / (1024 * 1024)
    );
}

/// Everything stored under `paths` (collection URLs such as `/api/v1/configmaps`), as the
/// lists the server returns, resourceVersions included: two equal snapshots mean nothing
/// listed there was written in between.
pub async fn snapshot(client: &Client, paths: &[&str]) -> Vec<Value> {
    let mut lists = Vec::new();
    for path in paths {
        let request = http::Request::get(*path)
            .body(Vec::new())
            .expect("a valid request");
        let (status, mut body) = send(client, request).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        // The list's own resourceVersion is the store's current revision, which moves with
        // any write anywhere (leases, events); the items are what must not change.
        body["metadata"] = Value::Null;
        lists.push(body);
    }
    lists
}
