//! The agent's TLS and its two plain HTTPS requests (`/cacerts`, `/ping`). Before the agent
//! knows the cluster CA it must read `/cacerts` without verifying the chain (the token's
//! hash checks the answer instead); from then on every connection verifies against that CA.
//!
//! HTTP/1.1 is hyper's client connection (`hyper::client::conn::http1`). Its connection
//! future is polled beside the request that needs it ([`drive`]) instead of being spawned:
//! nothing outlives the request or the [`Pinger`] that owns the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, LengthLimitError, Limited};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Answers larger than this are not a CA bundle nor a pong.
const MAX_ANSWER: usize = 1 << 20;
/// A pong's head and body are each at most this large.
const MAX_PONG: usize = 16 * 1024;

/// Why the agent cannot speak TLS or HTTP to a server.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA bundle holds no certificate rustls accepts.
    #[error("the cluster CA bundle holds no usable certificate")]
    BadCa,
    /// The address has no usable host name.
    #[error("{0:?} is not a host:port address")]
    BadAddress(String),
    /// Connecting, the handshake, or the exchange failed.
    #[error("{address}: {source}")]
    Io {
        /// The server.
        address: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The server answered, but not 200.
    #[error("{address}: answered HTTP {status} to GET {path}")]
    Status {
        /// The server.
        address: String,
        /// The path asked for.
        path: String,
        /// Its status code.
        status: u16,
    },
    /// Not HTTP, or too large.
    #[error("{address}: unreadable answer to GET {path}")]
    Garbled {
        /// The server.
        address: String,
        /// The path asked for.
        path: String,
    },
    /// No answer in time.
    #[error("{address}: no answer within {timeout:?}")]
    Timeout {
        /// The server.
        address: String,
        /// How long the agent waited.
        timeout: Duration,
    },
}

/// A client configuration that verifies servers against `ca_pem` (one or more certificates).
pub fn verifying(ca_pem: &str) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        roots.add(der).map_err(|_| TlsError::BadCa)?;
    }
    if roots.is_empty() {
        return Err(TlsError::BadCa);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// A client configuration that accepts any server certificate: only for `GET /cacerts`,
/// whose answer the token's hash checks (or which a bare token trusts on first use).
pub fn unverified() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
            .with_no_client_auth(),
    )
}

#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The host part of `host:port` (without IPv6 brackets).
pub fn host_of(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// `GET <path>` over TLS to `address` (`host:port`); the body of a 200 answer.
pub async fn get(
    config: Arc<ClientConfig>,
    address: &str,
    path: &str,
    timeout: Duration,
) -> Result<Vec<u8>, TlsError> {
    let exchange = async {
        let tls = open(config, address).await?;
        fetch(tls, address, path).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err(TlsError::Timeout {
            address: address.to_string(),
            timeout,
        }),
    }
}

/// One `GET <path>` on `stream`, asking the server to close the connection after the
/// answer; the body of a 200 answer of at most [`MAX_ANSWER`] bytes.
async fn fetch<S>(stream: S, address: &str, path: &str) -> Result<Vec<u8>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |error: &(dyn std::error::Error + 'static)| exchange_error(address, path, error);
    let (mut sender, connection) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|error| failed(&error))?;
    let exchange = async {
        let request = request(address, path, true).map_err(|error| failed(&error))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| failed(&error))?;
        if response.status() != StatusCode::OK {
            return Err(TlsError::Status {
                address: address.to_string(),
                path: path.to_string(),
                status: response.status().as_u16(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|error| failed(&*error))?;
        Ok(body.to_bytes().to_vec())
    };
    drive(Box::pin(connection), exchange).await.0
}

/// `GET <path>` with the agent's headers; `close` asks the server not to keep the connection.
fn request(
    address: &str,
    path: &str,
    close: bool,
) -> Result<Request<Empty<Bytes>>, hyper::http::Error> {
    let mut request = Request::get(path)
        .header(header::HOST, address)
        .header(header::USER_AGENT, "capstan-agent")
        .header(header::ACCEPT, "*/*");
    if close {
        request = request.header(header::CONNECTION, "close");
    }
    request.body(Empty::new())
}

/// Runs `exchange` while polling hyper's `connection` future, which does the connection's
/// reading and writing. Also says whether the connection ended meanwhile: then it is
/// dropped at once, so an exchange still waiting on it fails instead of hanging, and one
/// whose answer was already read completes.
async fn drive<C, T>(
    mut connection: Pin<Box<C>>,
    exchange: impl Future<Output = T>,
) -> (T, Option<Pin<Box<C>>>)
where
    C: Future,
{
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        outcome = &mut exchange => (outcome, Some(connection)),
        _ = connection.as_mut() => {
            drop(connection);
            (exchange.await, None)
        }
    }
}

/// An error of hyper or of the body limit, as the agent reports it: an answer that is not
/// HTTP or too large is [`TlsError::Garbled`], anything else [`TlsError::Io`].
fn exchange_error(
    address: &str,
    path: &str,
    error: &(dyn std::error::Error + 'static),
) -> TlsError {
    let mut garbled = false;
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            garbled |= hyper.is_parse() || hyper.is_parse_status() || hyper.is_parse_too_large();
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            // How hyper reports a malformed chunked body.
            garbled |= matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            );
        }
        garbled |= cause.is::<LengthLimitError>();
        source = cause.source();
    }
    if garbled {
        TlsError::Garbled {
            address: address.to_string(),
            path: path.to_string(),
        }
    } else {
        // hyper's messages leave their cause out ("error reading a body from connection").
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !message.contains(&cause_text) {
                message = format!("{message}: {cause_text}");
            }
            source = cause.source();
        }
        TlsError::Io {
            address: address.to_string(),
            source: std::io::Error::other(message),
        }
    }
}

/// A kept-alive HTTPS connection for `GET /ping`, so twice-a-second health checks cost a
/// request each rather than a TLS handshake each (a fleet of agents would otherwise keep
/// every server busy handshaking).
pub struct Pinger {
    config: Arc<ClientConfig>,
    address: String,
    connection: Option<Kept<TlsStream<TcpStream>>>,
}

/// A kept-alive HTTP/1.1 connection: hyper's request handle and its connection future,
/// polled only while a request is in flight (between pings there is nothing to do).
struct Kept<S: AsyncRead + AsyncWrite + Unpin> {
    sender: SendRequest<Empty<Bytes>>,
    connection: Pin<Box<Connection<TokioIo<S>, Empty<Bytes>>>>,
}

impl Pinger {
    /// A pinger for `address` (`host:port`), verifying with `config`.
    pub fn new(config: Arc<ClientConfig>, address: &str) -> Pinger {
        Pinger {
            config,
            address: address.to_string(),
            connection: None,
        }
    }

    /// Whether `GET <path>` answers 200 within `timeout`, on the kept connection if it is
    /// still good, else on a new one.
    pub async fn ping(&mut self, path: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(connection) = self.connection.take() {
            let reused =
                tokio::time::timeout_at(deadline, ping_on(connection, &self.address, path));
            match reused.await {
                Ok(Ok(kept)) => {
                    self.connection = kept;
                    return true;
                }
                // Timed out: the server hangs; a new connection would not do better.
                Err(_) => return false,
                // Closed since (an idle timeout, a restart): try a fresh one.
                Ok(Err(_)) => {}
            }
        }
        let fresh = async {
            let tls = open(self.config.clone(), &self.address).await?;
            let kept = keep(tls, &self.address, path).await?;
            ping_on(kept, &self.address, path).await
        };
        match tokio::time::timeout_at(deadline, fresh).await {
            Ok(Ok(kept)) => {
                self.connection = kept;
                true
            }
            _ => false,
        }
    }
}

async fn open(config: Arc<ClientConfig>, address: &str) -> Result<TlsStream<TcpStream>, TlsError> {
    let host = host_of(address).ok_or_else(|| TlsError::BadAddress(address.to_string()))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| TlsError::BadAddress(address.to_string()))?;
    let io = |source| TlsError::Io {
        address: address.to_string(),
        source,
    };
    let tcp = TcpStream::connect(address).await.map_err(io)?;
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(io)
}

/// An HTTP/1.1 connection over `stream` for pings: answer heads over [`MAX_PONG`] fail.
async fn keep<S>(stream: S, address: &str, path: &str) -> Result<Kept<S>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(MAX_PONG)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|error| exchange_error(address, path, &error))?;
    Ok(Kept {
        sender,
        connection: Box::pin(connection),
    })
}

/// One keep-alive `GET` on `kept`, answered 200; the connection back if the server keeps
/// it open.
async fn ping_on<S>(kept: Kept<S>, address: &str, path: &str) -> Result<Option<Kept<S>>, TlsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |error: &(dyn std::error::Error + 'static)| exchange_error(address, path, error);
    let Kept {
        mut sender,
        connection,
    } = kept;
    let exchange = async {
        sender.ready().await.map_err(|error| failed(&error))?;
        let request = request(address, path, false).map_err(|error| failed(&error))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| failed(&error))?;
        let status = response.status();
        // Read to the end, or the connection cannot carry the next ping.
        Limited::new(response.into_body(), MAX_PONG)
            .collect()
            .await
            .map_err(|error| failed(&*error))?;
        if status != StatusCode::OK {
            return Err(TlsError::Status {
                address: address.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
            });
        }
        Ok(())
    };
    let (outcome, connection) = drive(connection, exchange).await;
    outcome?;
    Ok(connection
        .filter(|_| !sender.is_closed())
        .map(|connection| Kept { sender, connection }))
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
