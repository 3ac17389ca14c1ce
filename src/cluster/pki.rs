//! The server's certificates on disk: the cluster CA (created by the first start, reused
//! by every later one), a serving certificate issued at each start for the names this
//! server answers to, the admin client certificate and the admin kubeconfig.
//!
//! Files live in `<data-dir>/server/tls/` (keys 0600). Sharing the CA between servers
//! through the datastore is the HA bootstrap's job (issue 4); until then each data dir
//! holds its own.

use std::path::{Path, PathBuf};

use super::certs::{CertError, CertificateAuthority, IssuedCert, admin_kubeconfig};

/// What the API server needs to serve TLS and check client certificates.
#[derive(Clone)]
pub struct ServerPki {
    /// The cluster CA certificate, PEM.
    pub ca_pem: String,
    /// The serving certificate and key.
    pub serving: IssuedCert,
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

/// Loads the CA from `<data_dir>/server/tls` (creating it on first start), issues a
/// serving certificate for `names`, and writes the admin kubeconfig for `server_url` to
/// `kubeconfig`.
pub fn prepare(
    data_dir: &Path,
    names: &[String],
    server_url: &str,
    kubeconfig: &Path,
) -> Result<ServerPki, PkiError> {
    let dir = data_dir.join("server").join("tls");
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ca_cert_path = dir.join("server-ca.crt");
    let ca_key_path = dir.join("server-ca.key");
    let ca = if ca_cert_path.exists() && ca_key_path.exists() {
        let cert = std::fs::read_to_string(&ca_cert_path).map_err(io(&ca_cert_path))?;
        let key = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
        CertificateAuthority::from_pem(&cert, &key)?
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ca = CertificateAuthority::generate(&format!("capstan-server-ca@{now}"))?;
        write_private(&ca_key_path, &ca.key_pem())?;
        std::fs::write(&ca_cert_path, ca.cert_pem()).map_err(io(&ca_cert_path))?;
        tracing::info!(path = %ca_cert_path.display(), "generated the cluster CA");
        ca
    };
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
    })
}
