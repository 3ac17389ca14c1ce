//! What every `capstan bench` that talks to the API shares: where the servers are and
//! the credentials to reach them (a kubeconfig, or URLs with a bearer token), HTTP/2
//! connections over rustls, one-shot requests, percentiles and a process's memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::http::{self, Method, Request, StatusCode, Uri};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use serde_json::Value;

/// How a bench finds the servers and authenticates to them.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// The admin kubeconfig (server URL, CA and client certificate); default
    /// `<data-dir>/server/admin.kubeconfig`.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The server's data directory, to find its admin kubeconfig.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/capstan")]
    pub data_dir: PathBuf,
    /// A server URL (`https://host:port`); repeat it to spread the load over several
    /// servers. Without `--token`, the kubeconfig's CA and credentials are used for each;
    /// without any, the kubeconfig's own server.
    #[arg(long, value_name = "URL")]
    pub server: Vec<String>,
    /// A bearer token for `--server` instead of the kubeconfig's credentials, for API
    /// servers that accept one (Capstan accepts none: its cluster token is a join
    /// credential, so use the admin kubeconfig); the server's TLS certificate is then not
    /// verified unless `--certificate-authority` is given.
    #[arg(
        long,
        value_name = "TOKEN",
        hide_env_values = true,
        env = "CAPSTAN_TOKEN"
    )]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify `--server` with when `--token` is given.
    #[arg(long, value_name = "PATH")]
    pub certificate_authority: Option<PathBuf>,
}

impl ClusterArgs {
    /// Credentials from the default admin kubeconfig under `data_dir`, its own server.
    pub fn from_kubeconfig(path: PathBuf) -> ClusterArgs {
        ClusterArgs {
            kubeconfig: Some(path),
            data_dir: PathBuf::from("/var/lib/capstan"),
            server: Vec::new(),
            token: None,
            certificate_authority: None,
        }
    }

    /// One target per server, in the order given (at least one).
    pub fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(token) = &self.token {
            if self.server.is_empty() {
                bail!("--token needs at least one --server URL");
            }
            let tls = match &self.certificate_authority {
                Some(path) => {
                    let pem = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    capstan_agent::tls::verifying(&pem)?
                }
                None => capstan_agent::tls::unverified(),
            };
            let tls = with_h2(tls);
            return self
                .server
                .iter()
                .map(|server| target_for(server, tls.clone(), Some(token.clone())))
                .collect();
        }
        let path = self
            .kubeconfig
            .clone()
            .unwrap_or_else(|| self.data_dir.join("server/admin.kubeconfig"));
        let base = from_kubeconfig(&path)?;
        if self.server.is_empty() {
            return Ok(vec![base]);
        }
        self.server
            .iter()
            .map(|server| target_for(server, base.tls.clone(), base.token.clone()))
            .collect()
    }
}

/// Where and how to reach one server.
#[derive(Clone)]
pub struct Target {
    /// The server URL.
    pub uri: Uri,
    /// Its host, for TCP and the TLS server name.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// TLS with ALPN h2 and the client certificate, if any.
    pub tls: Arc<ClientConfig>,
    /// A bearer token, if any.
    pub token: Option<String>,
}

/// One HTTP/2 connection's handle; clone it to send concurrently.
pub type Sender = SendRequest<Full<Bytes>>;

/// The server's memory at one moment, in MiB.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Memory {
    /// Resident set size.
    pub rss_mib: f64,
    /// Peak resident set size since the process started.
    pub hwm_mib: f64,
}

/// A request to `path` on the target, with its credentials.
pub fn request(
    target: &Target,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Option<String>,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let uri = format!(
        "{}://{}{path}",
        target.uri.scheme_str().unwrap_or("https"),
        target
            .uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&target.host)
    );
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::ACCEPT, "application/json");
    if let Some(content_type) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    if let Some(token) = &target.token {
        builder = builder.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    Ok(builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
}

/// Sends one request and collects the whole answer.
pub async fn send(
    sender: &Sender,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut sender = sender.clone();
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One HTTP/2 connection (ALPN h2) to the target.
pub async fn connect(target: &Target) -> anyhow::Result<Sender> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("cannot connect to {}", target.uri))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(target.host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(target.tls.clone())
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {}", target.uri))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("{} did not agree to HTTP/2", target.uri);
    }
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(TokioIo::new(tls))
        .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "bench connection ended");
        }
    });
    Ok(sender)
}

fn with_h2(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::clone(&config);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

fn target_for(
    server: &str,
    tls: Arc<ClientConfig>,
    token: Option<String>,
) -> anyhow::Result<Target> {
    let uri: Uri = server
        .parse()
        .with_context(|| format!("bad server URL {server}"))?;
    let host = uri.host().context("server URL has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    Ok(Target {
        uri,
        host,
        port,
        tls,
        token,
    })
}

/// The server, CA and credentials of a kubeconfig's current context (inline data only,
/// as Capstan writes it).
pub fn from_kubeconfig(path: &Path) -> anyhow::Result<Target> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config: Value = serde_saphyr::from_str(&text)
        .with_context(|| format!("{} is not a kubeconfig", path.display()))?;
    let current = config["current-context"].as_str().unwrap_or_default();
    let named = |list: &str, name: &str, field: &str| -> Value {
        config[list]
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .find(|item| name.is_empty() || item["name"] == name)
            })
            .map(|item| item[field].clone())
            .unwrap_or(Value::Null)
    };
    let context = named("contexts", current, "context");
    let cluster = named(
        "clusters",
        context["cluster"].as_str().unwrap_or_default(),
        "cluster",
    );
    let user = named(
        "users",
        context["user"].as_str().unwrap_or_default(),
        "user",
    );
    let decode = |value: &Value| -> anyhow::Result<Option<Vec<u8>>> {
        value
            .as_str()
            .map(|data| base64::engine::general_purpose::STANDARD.decode(data))
            .transpose()
            .context("bad base64 data in the kubeconfig")
    };
    let server = cluster["server"]
        .as_str()
        .context("the kubeconfig names no server")?;
    let ca = decode(&cluster["certificate-authority-data"])?
        .context("the kubeconfig has no certificate-authority-data")?;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(&ca) {
        roots.add(der.context("bad CA certificate in the kubeconfig")?)?;
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    let token = user["token"].as_str().map(str::to_string);
    let tls = match (
        decode(&user["client-certificate-data"])?,
        decode(&user["client-key-data"])?,
    ) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .context("bad client certificate in the kubeconfig")?;
            let key =
                PrivateKeyDer::from_pem_slice(&key).context("bad client key in the kubeconfig")?;
            builder.with_client_auth_cert(certs, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    target_for(server, with_h2(Arc::new(tls)), token)
}

/// VmRSS and VmHWM of `pid`, from /proc.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    };
    Some(Memory {
        rss_mib: field("VmRSS:")?,
        hwm_mib: field("VmHWM:")?,
    })
}

/// The nearest-rank percentile of sorted samples (0 when there are none).
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }

    #[test]
    fn a_token_without_a_server_is_refused() {
        let mut args = ClusterArgs::from_kubeconfig(PathBuf::from("/nonexistent"));
        args.token = Some("secret".into());
        let error = args
            .targets()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("--server"), "{error}");
    }
}
