//! The agent's TLS and its two plain HTTPS requests (`/cacerts`, `/ping`). Before the agent
//! knows the cluster CA it must read `/cacerts` without verifying the chain (the token's
//! hash checks the answer instead); from then on every connection verifies against that CA.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Answers larger than this are not a CA bundle nor a pong.
const MAX_ANSWER: usize = 1 << 20;

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
    match tokio::time::timeout(timeout, get_inner(config, address, path)).await {
        Ok(answer) => answer,
        Err(_) => Err(TlsError::Timeout {
            address: address.to_string(),
            timeout,
        }),
    }
}

async fn get_inner(
    config: Arc<ClientConfig>,
    address: &str,
    path: &str,
) -> Result<Vec<u8>, TlsError> {
    let io = |source| TlsError::Io {
        address: address.to_string(),
        source,
    };
    let mut tls = open(config, address).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: capstan-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.map_err(io)?;
    let mut answer = Vec::new();
    let read = (&mut tls)
        .take(MAX_ANSWER as u64 + 1)
        .read_to_end(&mut answer)
        .await;
    // A server closing without close_notify still delivered the whole answer.
    if let Err(error) = read
        && answer.is_empty()
    {
        return Err(io(error));
    }
    let garbled = || TlsError::Garbled {
        address: address.to_string(),
        path: path.to_string(),
    };
    if answer.len() > MAX_ANSWER {
        return Err(garbled());
    }
    let (status, chunked, body) = parse_response(&answer).ok_or_else(garbled)?;
    if status != 200 {
        return Err(TlsError::Status {
            address: address.to_string(),
            path: path.to_string(),
            status,
        });
    }
    if chunked {
        dechunk(body).ok_or_else(garbled)
    } else {
        Ok(body.to_vec())
    }
}

/// A kept-alive HTTPS connection for `GET /ping`, so twice-a-second health checks cost a
/// request each rather than a TLS handshake each (a fleet of agents would otherwise keep
/// every server busy handshaking).
pub struct Pinger {
    config: Arc<ClientConfig>,
    address: String,
    connection: Option<tokio_rustls::client::TlsStream<TcpStream>>,
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
            let tls = open(self.config.clone(), &self.address)
                .await
                .map_err(|error| std::io::Error::other(error.to_string()))?;
            ping_on(tls, &self.address, path).await
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

async fn open(
    config: Arc<ClientConfig>,
    address: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TlsError> {
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

/// One keep-alive `GET` on `tls`; the connection back if the server keeps it open.
async fn ping_on(
    mut tls: tokio_rustls::client::TlsStream<TcpStream>,
    address: &str,
    path: &str,
) -> std::io::Result<Option<tokio_rustls::client::TlsStream<TcpStream>>> {
    let bad = |why: &str| std::io::Error::other(format!("{address}: {why}"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: capstan-agent\r\nAccept: */*\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let (head_end, status, length, close) = loop {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("closed before answering"));
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&answer[..end]).map_err(|_| bad("garbled head"))?;
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|line| line.split(' ').nth(1))
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| bad("garbled status line"))?;
            let mut length = None;
            let mut close = false;
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    // Not worth reading: answer once, then reconnect next time.
                    close = true;
                }
            }
            break (end + 4, status, length, close);
        }
        if answer.len() > 16 * 1024 {
            return Err(bad("answer head too large"));
        }
    };
    if status != 200 {
        return Err(bad("not 200"));
    }
    let Some(length) = length.filter(|_| !close) else {
        return Ok(None);
    };
    while answer.len() < head_end + length {
        let n = tls.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(tls))
}

/// Status, whether the body is chunked, and the body bytes of an HTTP/1.1 answer.
fn parse_response(answer: &[u8]) -> Option<(u16, bool, &[u8])> {
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = &answer[end + 4..];
    let body = match length {
        Some(length) if !chunked => body.get(..length)?,
        _ => body,
    };
    Some((status, chunked, body))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_with_length_or_chunks() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\npongextra";
        assert_eq!(parse_response(plain), Some((200, false, &b"pong"[..])));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\npo\r\n2\r\nng\r\n0\r\n\r\n";
        let (status, is_chunked, body) = parse_response(chunked).expect("parses");
        assert_eq!((status, is_chunked), (200, true));
        assert_eq!(dechunk(body).as_deref(), Some(&b"pong"[..]));
    }

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("127.0.0.2:6443"), Some("127.0.0.2"));
        assert_eq!(host_of("[::1]:6443"), Some("::1"));
        assert_eq!(host_of("example.org:x"), None);
        assert_eq!(host_of(":6443"), None);
    }
}
