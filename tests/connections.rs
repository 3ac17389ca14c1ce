//! Connection-level limits of the HTTPS listener, against a real server process with short
//! timeouts set by flags (issue 13, findings 4 and 5): a client trickling header bytes, a
//! connection that never finishes TLS, and idle connections (HTTP/1.1 and HTTP/2, before
//! and after a request) are closed by their timeouts while a watch outlives the idle
//! timeout; a client over its connection cap is refused at once while the admin and
//! `/readyz` are still served; and request bodies that never finish hold no in-flight slot
//! and are answered 408 after the body timeout. Each time the server stays up, its memory
//! stays bounded and nothing stored changes.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use common::probe::{admin_client, anonymous_client, assert_alive_and_bounded, rss_bytes, send};
use common::probe::{request, snapshot, tls_client_config};
use common::process::Server;

/// Who a test connection claims to be.
#[derive(Clone, Copy, PartialEq)]
enum Credentials {
    /// No client certificate.
    Anonymous,
    /// The admin certificate of the server's kubeconfig.
    Admin,
}

/// A rustls client trusting the server's CA, offering `alpn` (none: HTTP/1.1 by default).
fn tls_config(
    server: &Server,
    credentials: Credentials,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut config = tls_client_config(server, credentials == Credentials::Admin);
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

/// A TCP connection to the server from the loopback address `source` (127.0.0.x stands for
/// a client host of its own).
async fn tcp_from(server: &Server, source: Ipv4Addr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("a loopback source address");
    socket
        .connect(SocketAddr::from(server.address()))
        .await
        .expect("the server accepts TCP connections")
}

/// A TLS connection from 127.0.0.1.
async fn tls(server: &Server, config: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = tcp_from(server, Ipv4Addr::LOCALHOST).await;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("a DNS name"), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the server closes the connection (end of stream or an error such as a
/// reset); returns what it read and how long that took, or `None` if it was still open
/// after `limit`.
async fn read_until_closed(
    stream: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return (received, None),
            Ok(Ok(0) | Err(_)) => return (received, Some(started.elapsed())),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Fails unless `closed` (from [`read_until_closed`]) is within `expected`.
fn assert_closed_within(what: &str, closed: Option<Duration>, expected: std::ops::Range<Duration>) {
    let closed = closed.unwrap_or_else(|| panic!("{what}: still open after {:?}", expected.end));
    assert!(
        expected.contains(&closed),
        "{what}: closed after {closed:?}, expected within {expected:?}"
    );
}

/// An HTTP/2 connection (ALPN h2) with `credentials`; the task driving it ends when the
/// server closes the connection.
async fn h2(
    server: &Server,
    credentials: Credentials,
) -> (
    hyper::client::conn::http2::SendRequest<RequestBody>,
    tokio::task::JoinHandle<()>,
) {
    let stream = tls(server, tls_config(server, credentials, &[b"h2"])).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, driver)
}

type RequestBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn empty() -> RequestBody {
    Empty::new().boxed()
}

/// A body that sends `{` and then nothing, never ending.
fn never_finishing() -> RequestBody {
    let first = futures::stream::once(async { Ok(Frame::data(Bytes::from_static(b"{"))) });
    http_body_util::BodyExt::boxed(StreamBody::new(first.chain(futures::stream::pending())))
}

fn get(path: &str) -> hyper::Request<RequestBody> {
    hyper::Request::get(format!("https://localhost{path}"))
        .body(empty())
        .expect("a valid request")
}

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Slack for scheduling on a busy test machine.
const SLACK: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn slow_and_idle_connections_are_closed_by_their_timeouts_and_watches_are_not() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with(
        data_dir.path(),
        "connections-timeouts",
        &[
            "--tls-handshake-timeout-seconds",
            "2",
            "--request-header-timeout-seconds",
            "2",
            "--idle-connection-timeout-seconds",
            "4",
        ],
    );
    let admin = admin_client(&server).await;
    let baseline = rss_bytes(server.pid());
    let before = snapshot(&admin, &["/api/v1/namespaces/default/configmaps"]).await;
    let anonymous_h1 = tls_config(&server, Credentials::Anonymous, &[]);
    let anonymous_h2 = tls_config(&server, Credentials::Anonymous, &[b"h2"]);

    let no_handshake = async {
        let mut tcp = tcp_from(&server, Ipv4Addr::LOCALHOST).await;
        let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
        assert_closed_within(
            "a connection that never starts TLS",
            closed,
            HEADER_TIMEOUT - SLACK / 2..HEADER_TIMEOUT + SLACK,
        );
    };

    let trickling_headers = async {
        let stream = tls(&server, anonymous_h1.clone()).await;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let head = b"GET /livez HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let trickle = async {
            for byte in head {
                if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        let (received, closed) = tokio::select! {
            read = read_until_closed(&mut reader, Duration::from_secs(30)) => read,
            () = trickle => panic!("the server read the whole head, one byte every 250 ms ({} bytes)", head.len()),
        };
        assert_closed_within(
            "headers at one byte per 250 ms",
            closed,
            HEADER_TIMEOUT - SLACK / 2..HEADER_TIMEOUT + SLACK,
        );
        assert!(
            !String::from_utf8_lossy(&received).contains("200 OK"),
            "{}",
            String::from_utf8_lossy(&received)
        );
    };

    let silent_http1 = async {
        let mut stream = tls(&server, anonymous_h1.clone()).await;
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert_closed_within(
            "HTTP/1.1 without a request",
            closed,
            HEADER_TIMEOUT - SLACK / 2..HEADER_TIMEOUT + SLACK,
        );
    };

    let silent_http2 = async {
        let mut stream = tls(&server, anonymous_h2.clone()).await;
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert_closed_within(
            "HTTP/2 without a request",
            closed,
            HEADER_TIMEOUT - SLACK / 2..HEADER_TIMEOUT + SLACK,
        );
    };

    let keep_alive_http1 = async {
        let mut stream = tls(&server, anonymous_h1.clone()).await;
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("request sent");
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).ends_with("ok") {
            let read = stream.read(&mut buffer).await.expect("the answer");
            assert!(
                read > 0,
                "closed before answering: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buffer[..read]);
        }
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert_closed_within(
            "an idle HTTP/1.1 keep-alive",
            closed,
            HEADER_TIMEOUT - SLACK / 2..HEADER_TIMEOUT + SLACK,
        );
    };

    let idle_http2 = async {
        let (mut sender, driver) = h2(&server, Credentials::Anonymous).await;
        let response = sender.send_request(get("/livez")).await.expect("an answer");
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await;
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(15), driver)
            .await
            .expect("the idle HTTP/2 connection is closed")
            .expect("the client connection task");
        assert_closed_within(
            "an idle HTTP/2 connection",
            Some(started.elapsed()),
            IDLE_TIMEOUT - SLACK / 2..IDLE_TIMEOUT + SLACK,
        );
    };

    let watch_outlives_idle = async {
        let (mut sender, driver) = h2(&server, Credentials::Admin).await;
        let response = sender
            .send_request(get("/api/v1/namespaces/kube-public/configmaps?watch=true&fieldSelector=metadata.name%3Dlate"))
            .await
            .expect("the watch starts");
        assert_eq!(response.status(), 200);
        tokio::time::sleep(IDLE_TIMEOUT * 2).await;
        assert!(
            !driver.is_finished(),
            "the connection of an open watch was closed"
        );
        let created = send(
            &admin,
            request(
                "POST",
                "/api/v1/namespaces/kube-public/configmaps",
                "application/json",
                br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"late"}}"#.to_vec(),
            ),
        )
        .await;
        assert_eq!(created.0, 201, "{}", created.1);
        let mut body = response.into_body();
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the watch delivers the event")
            .expect("the stream is open")
            .expect("a frame");
        let event = String::from_utf8_lossy(frame.data_ref().expect("data")).into_owned();
        assert!(
            event.contains("\"ADDED\"") && event.contains("\"late\""),
            "{event}"
        );
    };

    tokio::join!(
        no_handshake,
        trickling_headers,
        silent_http1,
        silent_http2,
        keep_alive_http1,
        idle_http2,
        watch_outlives_idle
    );

    assert_alive_and_bounded(&mut server, baseline);
    let after = snapshot(&admin, &["/api/v1/namespaces/default/configmaps"]).await;
    assert_eq!(before, after, "closing connections changed what is stored");
}

/// The value of the sample `name{labels}` in a Prometheus text scrape.
fn metric(scrape: &str, sample: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(sample))
        .and_then(|rest| rest.trim().parse().ok())
}

async fn scrape(client: &kube::Client) -> String {
    let (code, body) = send(client, request("GET", "/metrics", "text/plain", Vec::new())).await;
    assert_eq!(code, 200);
    body.as_str().expect("the metrics are text").to_string()
}

const PER_CLIENT: usize = 20;

#[tokio::test]
async fn a_client_over_its_connection_cap_is_refused_while_the_admin_and_readyz_are_served() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with(
        data_dir.path(),
        "connections-caps",
        &[
            "--max-connections-per-client",
            &PER_CLIENT.to_string(),
            // The flood's connections stay open for the whole test.
            "--tls-handshake-timeout-seconds",
            "60",
        ],
    );
    let admin = admin_client(&server).await;
    let anonymous = anonymous_client(&server).await;
    let baseline = rss_bytes(server.pid());
    let before = snapshot(&admin, &["/api/v1/namespaces/default/configmaps"]).await;

    // One client host (127.0.0.2) opens its share of connections and sits on them.
    let flooder = Ipv4Addr::new(127, 0, 0, 2);
    let mut held = Vec::new();
    for _ in 0..PER_CLIENT {
        held.push(tcp_from(&server, flooder).await);
    }
    // Give the server a moment to have accepted them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for attempt in 0..5 {
        let mut extra = tcp_from(&server, flooder).await;
        let (_, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
        let closed =
            closed.unwrap_or_else(|| panic!("connection {attempt} over the cap was kept open"));
        assert!(
            closed < Duration::from_secs(1),
            "refused only after {closed:?}"
        );
    }
    // The held connections are still open: the cap closed only the ones over it.
    for (index, connection) in held.iter().enumerate() {
        let mut probe = [0u8; 1];
        // Nothing to read and no end of stream: the peek times out.
        let still_open =
            tokio::time::timeout(Duration::from_millis(50), connection.peek(&mut probe))
                .await
                .is_err();
        assert!(still_open, "held connection {index} was closed");
    }

    // Everyone else is served as usual.
    let (code, body) = send(
        &admin,
        request(
            "GET",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            Vec::new(),
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    for path in ["/readyz", "/livez"] {
        let (code, body) = send(&anonymous, request("GET", path, "text/plain", Vec::new())).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    let metrics = scrape(&admin).await;
    let rejected = metric(
        &metrics,
        "capstan_api_connections_rejected_total{reason=\"client_limit\"}",
    );
    assert!(
        rejected.is_some_and(|count| count >= 5.0),
        "rejections are counted: {rejected:?}"
    );
    let open = metric(&metrics, "capstan_api_open_connections");
    assert!(
        open.is_some_and(|count| count >= PER_CLIENT as f64),
        "open connections: {open:?}"
    );

    // Once the flood lets go, the same host is admitted again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = tokio_rustls::TlsConnector::from(tls_config(&server, Credentials::Anonymous, &[]))
        .connect(
            ServerName::try_from("localhost").expect("a DNS name"),
            tcp_from(&server, flooder).await,
        )
        .await;
    assert!(
        stream.is_ok(),
        "the host is served again: {:?}",
        stream.err()
    );

    assert_alive_and_bounded(&mut server, baseline);
    let after = snapshot(&admin, &["/api/v1/namespaces/default/configmaps"]).await;
    assert_eq!(before, after, "refused connections changed what is stored");
}

const BODY_TIMEOUT: Duration = Duration::from_secs(3);
const STALLED_STREAMS: usize = 120;

#[tokio::test]
async fn bodies_that_never_finish_hold_no_in_flight_slot_and_get_408() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with(
        data_dir.path(),
        "connections-bodies",
        &[
            "--request-body-timeout-seconds",
            "3",
            // Far fewer slots than stalled requests: any slot they held would show as 429.
            "--max-requests-inflight",
            "10",
            "--max-mutating-requests-inflight",
            "10",
        ],
    );
    let admin = admin_client(&server).await;
    let anonymous = anonymous_client(&server).await;
    let baseline = rss_bytes(server.pid());
    let path = "/api/v1/namespaces/default/configmaps";
    let before = snapshot(&admin, &[path]).await;

    // 120 HTTP/2 POST streams on one connection, each sending `{` and stalling.
    let (sender, _driver) = h2(&server, Credentials::Admin).await;
    let started = Instant::now();
    let stalled: Vec<_> = (0..STALLED_STREAMS)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let post = hyper::Request::post(format!("https://localhost{path}"))
                    .header("content-type", "application/json")
                    .body(never_finishing())
                    .expect("a valid request");
                let response = sender.send_request(post).await;
                (
                    response.map(|response| response.status().as_u16()),
                    started.elapsed(),
                )
            })
        })
        .collect();
    // And a few over HTTP/1.1, with a Content-Length they never reach.
    let http1: Vec<_> = (0..5)
        .map(|_| {
            let config = tls_config(&server, Credentials::Admin, &[]);
            let server_address = server.address();
            tokio::spawn(async move {
                let tcp = TcpStream::connect(server_address).await.expect("connect");
                let mut stream = tokio_rustls::TlsConnector::from(config)
                    .connect(ServerName::try_from("localhost").expect("a DNS name"), tcp)
                    .await
                    .expect("TLS handshake");
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
                );
                stream.write_all(head.as_bytes()).await.expect("request sent");
                let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(20)).await;
                (String::from_utf8_lossy(&answer).into_owned(), closed)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;

    // While they stall, reads, health checks and even other writes are served.
    let (code, body) = send(&admin, request("GET", path, "application/json", Vec::new())).await;
    assert_eq!(code, 200, "a normal GET while bodies stall: {body}");
    let (code, body) = send(
        &anonymous,
        request("GET", "/readyz", "text/plain", Vec::new()),
    )
    .await;
    assert_eq!(code, 200, "/readyz while bodies stall: {body}");
    let (code, body) = send(
        &admin,
        request(
            "POST",
            "/api/v1/namespaces/kube-public/configmaps",
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"while-stalled"}}"#
                .to_vec(),
        ),
    )
    .await;
    assert_eq!(code, 201, "a normal create while bodies stall: {body}");
    assert!(
        started.elapsed() < BODY_TIMEOUT,
        "the checks ran while the bodies were still stalled"
    );

    // After the body timeout each stalled request is answered 408.
    for task in stalled {
        let (status, answered) = task.await.expect("the stream task");
        assert_eq!(status.ok(), Some(408), "a stalled HTTP/2 body");
        assert!(
            answered >= BODY_TIMEOUT - Duration::from_millis(500)
                && answered < BODY_TIMEOUT + SLACK,
            "answered after {answered:?}"
        );
    }
    for task in http1 {
        let (answer, closed) = task.await.expect("the HTTP/1.1 task");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        assert!(answer.contains("\"reason\":\"Timeout\""), "{answer}");
        assert!(closed.is_some(), "the connection is closed after the 408");
    }

    assert_alive_and_bounded(&mut server, baseline);
    let after = snapshot(&admin, &[path]).await;
    assert_eq!(before, after, "stalled bodies changed what is stored");
}
