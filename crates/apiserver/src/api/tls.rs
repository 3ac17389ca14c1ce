//! The HTTPS listener: TLS with rustls (HTTP/1.1 and h2 by ALPN), client certificates
//! checked against the cluster CA but optional at the TLS layer (a request without one is
//! answered 401 by `auth.rs`, not dropped), and the verified peer certificate handed to
//! the router as a request extension.
//!
//! Every connection lives under the limits of `connections.rs`: it is admitted against the
//! total and per-client caps before any TLS work, must finish its handshake within the
//! handshake timeout, and is closed when it stays idle. The protocol is the one ALPN chose
//! (HTTP/1.1 without ALPN), so no bytes are read to guess it.
//!
//! Idle means no request in flight: a request counts from the moment its head is parsed
//! until its response body is finished or dropped, so a watch keeps its connection open for
//! as long as it runs. Before its first request a connection gets only the header timeout;
//! after that the idle timeout. On HTTP/1.1 hyper's header-read timer also runs while a
//! keep-alive connection waits for its next request, so there the wait between requests is
//! bounded by the shorter of the two. HTTP/2 connections are pinged so a peer that vanished
//! (no FIN) is noticed while a watch is open.

use std::net::SocketAddr;
use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::Router;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::auth::{PeerCertificate, user_of_certificate};
use super::connections::{AcceptErrors, ConnectionLimits, ConnectionTable};
use capstan_pki::files::ServerPki;

/// TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM block could not be read.
    #[error("TLS setup: cannot read {what}: {detail}")]
    Pem {
        /// Which PEM.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("TLS setup: client certificate verifier: {0}")]
    Verifier(String),
}

/// The rustls server configuration for `pki`.
pub fn server_config(pki: &ServerPki) -> Result<rustls::ServerConfig, TlsError> {
    let pem = |what: &'static str| {
        move |e: rustls_pki_types::pem::Error| TlsError::Pem {
            what,
            detail: e.to_string(),
        }
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(pem("the cluster CA"))?)
            .map_err(TlsError::Rustls)?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(pem("the serving certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving.key_pem.as_bytes())
        .map_err(pem("the serving key"))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts connections on `listener` until `shutdown`, serving `router` on each under
/// `limits`; then stops accepting and waits (at most `drain`) for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let table = ConnectionTable::new(&limits);
    let limits = Arc::new(limits);
    let mut accept_errors = AcceptErrors::default();
    let connections = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_errors.succeeded();
                    accepted
                }
                Err(error) => {
                    // Out of file descriptors and the like: pause (longer each time in a
                    // row) instead of spinning, and log a count rather than every failure.
                    let pause = accept_errors.failed(&error, Instant::now());
                    tokio::select! {
                        () = tokio::time::sleep(pause) => continue,
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Over a cap: close at once (dropping the socket), before any TLS work.
        let Ok(slot) = table.admit(remote.ip()) else {
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(acceptor, tcp, remote, router, &limits, shutdown).await;
            drop(slot);
        });
    }
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}

/// How long a connection told to close when idle may take to finish closing (an HTTP/2
/// peer that never acknowledges the GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves one connection until it ends, turns idle, or `shutdown`.
async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    router: Router,
    limits: &ConnectionLimits,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = acceptor.accept(tcp);
    let handshake = match limits.handshake_timeout {
        Some(timeout) => tokio::time::timeout(timeout, handshake).await,
        None => Ok(handshake.await),
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let session = &tls.get_ref().1;
    let peer = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| PeerCertificate(user_of_certificate(cert).map(Arc::new)));
    let http2 = session.alpn_protocol() == Some(b"h2");
    let (in_flight, in_flight_seen) = tokio::sync::watch::channel(0usize);
    let in_flight = Arc::new(in_flight);
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            if let Some(peer) = &peer {
                request.extensions_mut().insert(peer.clone());
            }
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            let busy = RequestInFlight::start(&in_flight);
            let response = router.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let response = response.await?;
                // The request stays in flight until its response body is done or dropped.
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(body.map_frame(move |frame| {
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        });
    let io = TokioIo::new(tls);
    let idle = idle(in_flight_seen, limits.header_timeout, limits.idle_timeout);
    if http2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_streams)
            .keep_alive_interval(Some(H2_PING_INTERVAL))
            .keep_alive_timeout(H2_PING_TIMEOUT);
        let connection = builder.serve_connection(io, service);
        drive(connection, idle, remote, shutdown).await;
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let connection = builder.serve_connection(io, service).with_upgrades();
        drive(connection, idle, remote, shutdown).await;
    }
}

/// How often an HTTP/2 connection is pinged, and how long the peer has to answer before the
/// connection is closed: a dead peer's watches end within about a minute.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// A hyper server connection of either protocol.
trait ServerConnection: Future<Output = hyper::Result<()>> {
    /// Stop taking requests; finish those in flight, then end.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> ServerConnection for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, B, E> ServerConnection for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

/// Runs `connection` until it ends; when `idle` fires or `shutdown` is cancelled, lets the
/// requests in flight finish and closes it. An idle connection that carried requests is
/// told so (HTTP/2 GOAWAY) and given [`CLOSE_GRACE`]; one that never did (an HTTP/2 peer
/// may not even have sent its preface) is dropped at once.
async fn drive(
    connection: impl ServerConnection,
    idle: impl Future<Output = Used>,
    remote: SocketAddr,
    shutdown: CancellationToken,
) {
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        }
        used = idle => {
            tracing::debug!(%remote, "closing an idle connection");
            if used == Used::Yes {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// One request of a connection in flight, from its head until its response body is done.
struct RequestInFlight(Arc<tokio::sync::watch::Sender<usize>>);

impl RequestInFlight {
    fn start(in_flight: &Arc<tokio::sync::watch::Sender<usize>>) -> RequestInFlight {
        in_flight.send_modify(|count| *count += 1);
        RequestInFlight(in_flight.clone())
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// Resolves once the connection has had no request in flight for `idle_timeout`, or for
/// `first_request` before its first request; never while a request (or watch) is open.
/// Says whether the connection ever carried a request.
async fn idle(
    mut in_flight: tokio::sync::watch::Receiver<usize>,
    first_request: Option<Duration>,
    idle_timeout: Option<Duration>,
) -> Used {
    let mut limit = first_request;
    let mut used = Used::Never;
    loop {
        let quiet = *in_flight.borrow_and_update() == 0;
        let changed = match limit {
            Some(limit) if quiet => tokio::select! {
                () = tokio::time::sleep(limit) => return used,
                changed = in_flight.changed() => changed,
            },
            _ => in_flight.changed().await,
        };
        if changed.is_err() {
            // The connection's service is gone: the connection is ending on its own.
            return std::future::pending().await;
        }
        limit = idle_timeout;
        used = Used::Yes;
    }
}

/// Whether a connection ever carried a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Used {
    Never,
    Yes,
}
