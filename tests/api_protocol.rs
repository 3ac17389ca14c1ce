//! Wire-level behaviour clients rely on: protobuf responses when the client lists protobuf
//! first (decoded here with the k8s-pb types, as client-go would), YAML request bodies, and
//! 429 with Retry-After over the max-in-flight limit.

mod common;

use futures::future::join_all;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use prost::Message as _;

use common::process::Server;

async fn admin_client(server: &Server) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(&server.kubeconfig).expect("the kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is complete");
    Client::try_from(config).expect("a client can be built")
}

/// Sends a request; returns the status, the Content-Type and the body bytes.
async fn send(
    client: &Client,
    request: http::Request<Vec<u8>>,
) -> (u16, String, Vec<u8>, Option<String>) {
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .expect("the request reaches the server");
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type").unwrap_or_default();
    let retry_after = header("retry-after");
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|collected| collected.to_bytes().to_vec())
        .unwrap_or_default();
    (status, content_type, bytes, retry_after)
}

#[tokio::test]
async fn protobuf_is_answered_when_asked_first_and_yaml_bodies_are_read() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data_dir.path(), "protocol-test");
    let client = admin_client(&server).await;

    let yaml =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  greeting: hello\n";
    let request = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/yaml")
        .body(yaml.as_bytes().to_vec())
        .expect("request");
    let (code, _, body, _) = send(&client, request).await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));

    let request = http::Request::get("/api/v1/namespaces/default/configmaps/from-yaml")
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf, application/json",
        )
        .body(Vec::new())
        .expect("request");
    let (code, content_type, body, _) = send(&client, request).await;
    assert_eq!(code, 200);
    assert_eq!(content_type, "application/vnd.kubernetes.protobuf");
    assert_eq!(&body[..4], b"k8s\0", "the protobuf envelope's magic");
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..])
        .expect("the envelope is a runtime.Unknown");
    let config_map =
        k8s_pb::api::core::v1::ConfigMap::decode(unknown.raw.unwrap_or_default().as_slice())
            .expect("the raw bytes are a ConfigMap");
    assert_eq!(
        config_map.data.get("greeting").map(String::as_str),
        Some("hello")
    );
    assert_eq!(
        config_map.metadata.and_then(|m| m.name).as_deref(),
        Some("from-yaml")
    );
}

/// One raw HTTP/1.1 request over its own TLS connection, authenticated with the admin
/// client certificate: no client library in between that could retry a 429 on its own.
async fn raw_get(server: &Server, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let config = common::probe::tls_client_config(server, true);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("the server listens");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("a DNS name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_get_429_with_retry_after() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        data_dir.path(),
        "inflight-test",
        &["--max-requests-inflight", "1"],
    );
    let mut refused = None;
    for _round in 0..20 {
        let requests = (0..32).map(|_| raw_get(&server, "/api/v1/namespaces/default/configmaps"));
        for response in join_all(requests).await {
            let status_line = response.lines().next().unwrap_or_default().to_string();
            if status_line.contains(" 429 ") {
                refused = Some(response);
            } else {
                assert!(
                    status_line.contains(" 200 "),
                    "unexpected answer: {response}"
                );
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let response =
        refused.expect("32 concurrent requests with a limit of 1 got no 429 in 20 rounds");
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{response}");
    assert!(
        response.contains("\"reason\":\"TooManyRequests\""),
        "{response}"
    );
}
