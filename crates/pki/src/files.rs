//! The server's certificates: a serving certificate issued at each start for the names this
//! server answers to, the admin client certificate and the admin kubeconfig, all signed by
//! the cluster CA every server shares (`capstan-cluster`'s `bootstrap/` keeps it in the
//! datastore).
//!
//! Files live in `<data-dir>/server/tls/` (keys 0600); the CA certificate is written there
//! as `server-ca.crt` for users, its key is not.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::certs::{CertError, CertificateAuthority, IssuedCert, admin_kubeconfig};

/// What the API server needs to serve TLS and check client certificates.
#[derive(Clone)]
pub struct ServerPki {
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// The serving certificate and key.
    pub serving: IssuedCert,
    /// The cluster CA, to issue client certificates (for joining nodes, for example).
    pub ca: Arc<CertificateAuthority>,
}

/// The certificates could not be read, created or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{}: {source} (check the permissions of --data-dir)", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A certificate failed to generate or parse.
    #[error(transparent)]
    Cert(#[from] CertError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(contents.as_bytes()).map_err(io(path))
}

/// Writes the cluster CA certificate to `<data_dir>/server/tls/server-ca.crt` (for users;
/// the key stays in the datastore), issues a serving certificate for `names`, and writes the
/// admin kubeconfig for `server_url` to `kubeconfig`.
pub fn prepare(
    ca: Arc<CertificateAuthority>,
    data_dir: &Path,
    names: &[String],
    server_url: &str,
    kubeconfig: &Path,
) -> Result<ServerPki, PkiError> {
    let dir = data_dir.join("server").join("tls");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ca_cert_path = dir.join("server-ca.crt");
    std::fs::write(&ca_cert_path, ca.cert_pem()).map_err(io(&ca_cert_path))?;
    let serving = ca.issue_serving(names)?;
    let serving_path = dir.join("serving-kube-apiserver.crt");
    std::fs::write(&serving_path, &serving.cert_pem).map_err(io(&serving_path))?;
    write_private(&dir.join("serving-kube-apiserver.key"), &serving.key_pem)?;

    let admin = ca.issue_client("system:admin", &["system:masters"])?;
    if let Some(parent) = kubeconfig.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    write_private(
        kubeconfig,
        &admin_kubeconfig(server_url, ca.cert_pem(), &admin),
    )?;
    tracing::info!(path = %kubeconfig.display(), "wrote the admin kubeconfig");
    Ok(ServerPki {
        ca_pem: ca.cert_pem().to_string(),
        serving,
        ca,
    })
}
