//! The HTTPS listener: TLS with rustls (HTTP/1.1 and h2 by ALPN), client certificates
//! checked against the cluster CA but optional at the TLS layer (a request without one is
//! answered 401 by `auth.rs`, not dropped), and the verified peer certificate handed to
//! the router as a request extension.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::cluster::pki::ServerPki;

/// Who the client certificate of a connection (verified against the cluster CA during the
/// handshake) names; read once per connection, not once per request.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Option<Arc<super::auth::User>>);

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

/// Accepts connections on `listener` until `shutdown`, serving `router` on each; then
/// stops accepting and waits (at most `drain`) for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    router: Router,
    shutdown: CancellationToken,
    drain: std::time::Duration,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let connections = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(acceptor, tcp, remote, router, shutdown).await;
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

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
    let tls = match handshake.await {
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
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| PeerCertificate(super::auth::user_of_certificate(cert).map(Arc::new)));
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            if let Some(peer) = &peer {
                request.extensions_mut().insert(peer.clone());
            }
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
    let builder = Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
