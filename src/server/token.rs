//! The cluster token on a server: where it comes from (`--token`/`CAPSTAN_TOKEN`, else
//! `<data-dir>/server/token`, else a new secret for a new cluster), the check that it opens
//! the cluster's bootstrap data and names the cluster's CA, the full token written back to
//! the data dir (the `capstan token` command that prints or rotates it is `crate::token`).
//!
//! This sits at the server's layer because it speaks the token format of `join::protocol`;
//! `cluster::bootstrap` below it only ever sees the secret.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, ServerConfig};
use capstan_cluster::bootstrap::{self, BootstrapError, BootstrapState, ClusterSettings};
use capstan_datastore::{DatastoreError, Store};
use capstan_machinery::join::{ClusterToken, TokenError, ca_hash};

/// Why the cluster token could not be settled.
#[derive(Debug, thiserror::Error)]
pub enum ClusterTokenError {
    /// The token given is not a token.
    #[error("{origin}: {source}")]
    Malformed {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        #[source]
        source: TokenError,
    },
    /// The token file could not be read or written.
    #[error("token file {}: {source} (check the permissions of --data-dir, or pass --token)", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The datastore holds a cluster and this server has no token for it.
    #[error(
        "the datastore already holds a cluster and no token was given: pass --token (or set CAPSTAN_TOKEN) with the cluster's token, from <data-dir>/server/token of an existing server"
    )]
    Required,
    /// A full token names a CA but the datastore holds no cluster.
    #[error(
        "the token names the cluster CA {token_hash} but the datastore holds no cluster yet: point --datastore-endpoint at that cluster's datastore, or pass only the secret (the part after 'server:') to start a new cluster"
    )]
    NoCluster {
        /// The CA hash in the token.
        token_hash: String,
    },
    /// A full token names another CA than the cluster's.
    #[error(
        "token mismatch: the token names the cluster CA {token_hash}, but this datastore's cluster CA is {cluster_hash} (the token belongs to another cluster, or this datastore was bootstrapped again); use the token from <data-dir>/server/token of a server of this cluster"
    )]
    CaMismatch {
        /// The CA hash in the token.
        token_hash: String,
        /// The hash of the cluster's CA.
        cluster_hash: String,
    },
    /// `capstan token rotate` found no current token.
    #[error(
        "no current token: pass --token (or set CAPSTAN_TOKEN) with the cluster's current token, or --data-dir of a server that has one in server/token"
    )]
    NoCurrentToken,
    /// `capstan token rotate` was given the current secret again.
    #[error("--new-token has the same secret as the current token; choose a new one")]
    SameToken,
    /// The shared bootstrap state could not be loaded, created or rotated.
    #[error("{0}")]
    Bootstrap(#[from] BootstrapError),
    /// The configuration could not be loaded (`capstan token`).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The datastore could not be opened (`capstan token rotate`).
    #[error("cannot open the datastore: {0}")]
    Datastore(#[from] DatastoreError),
}

/// The cluster's token and shared secrets, as settled at start-up.
#[derive(Debug)]
pub struct ClusterSecrets {
    /// The token, with the CA hash filled in.
    pub token: ClusterToken,
    /// Its full form, `K10<sha256 of the CA>::server:<secret>`.
    pub full: String,
    /// The shared bootstrap state (CA, service-account key).
    pub state: BootstrapState,
    /// The token generation this server's token opened (`bootstrap::token_generation`):
    /// the one its node certificates are stamped with.
    pub token_generation: i64,
}

/// Where a server keeps the full token.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("token")
}

/// The cluster-wide settings of `config`, as every server must share them.
pub fn cluster_settings(config: &ServerConfig) -> ClusterSettings {
    ClusterSettings::new(
        &config.cluster_cidr,
        &config.service_cidr,
        &config.cluster_domain,
        &config.disable,
    )
}

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Configured,
    File,
    Generated,
}

pub(crate) fn parse(text: &str, origin: String) -> Result<ClusterToken, ClusterTokenError> {
    text.parse()
        .map_err(|source| ClusterTokenError::Malformed { origin, source })
}

pub(crate) fn read_token_file(path: &Path) -> Result<Option<String>, ClusterTokenError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
        Ok(_) => Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ClusterTokenError::File {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The configured token, else the data dir's; `None` if neither exists.
pub(crate) fn current_token(
    config: &ServerConfig,
) -> Result<Option<(ClusterToken, Origin)>, ClusterTokenError> {
    if !config.token.trim().is_empty() {
        let token = parse(&config.token, "--token".to_string())?;
        return Ok(Some((token, Origin::Configured)));
    }
    let path = token_path(&config.data_dir);
    match read_token_file(&path)? {
        Some(text) => {
            let token = parse(&text, format!("token file {}", path.display()))?;
            Ok(Some((token, Origin::File)))
        }
        None => Ok(None),
    }
}

pub(crate) fn write_token_file(path: &Path, full: &str) -> Result<(), ClusterTokenError> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let failed = |source| ClusterTokenError::File {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(failed)?;
    // An existing file keeps its mode on open: tighten it.
    #[cfg(unix)]
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(failed)?;
    file.write_all(format!("{full}\n").as_bytes())
        .map_err(failed)
}

/// Settles the token and loads (or, on an empty datastore, creates) the cluster's shared
/// secrets; writes the full token to `<data-dir>/server/token`.
pub async fn bootstrap(
    config: &ServerConfig,
    store: &Store,
    holder: &str,
) -> Result<ClusterSecrets, ClusterTokenError> {
    let (token, origin) = match current_token(config)? {
        Some(found) => found,
        None => {
            let secret: String = (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            (ClusterToken::bare(secret), Origin::Generated)
        }
    };
    let bootstrapped = bootstrap::is_bootstrapped(store).await?;
    if origin == Origin::Generated && bootstrapped {
        return Err(ClusterTokenError::Required);
    }
    if let (Some(token_hash), false) = (&token.ca_hash, bootstrapped) {
        return Err(ClusterTokenError::NoCluster {
            token_hash: token_hash.clone(),
        });
    }
    let adopt = if bootstrapped {
        None
    } else {
        legacy_ca(&config.data_dir)
    };
    let loaded = bootstrap::load_or_create_adopting(
        store,
        &token.secret,
        &cluster_settings(config),
        holder,
        adopt,
    )
    .await?;
    let state = loaded.state;
    check_ca(&token, &state)?;
    let full = token.full(&state.ca_cert_pem);
    let path = token_path(&config.data_dir);
    write_token_file(&path, &full)?;
    tracing::info!(path = %path.display(), "the cluster token (for more servers and agents) is in this file");
    Ok(ClusterSecrets {
        token: ClusterToken {
            ca_hash: Some(ca_hash(&state.ca_cert_pem)),
            secret: token.secret,
        },
        full,
        state,
        token_generation: loaded.token_generation,
    })
}

/// The CA a server from before shared bootstrap kept in its data dir, if there is one.
fn legacy_ca(data_dir: &Path) -> Option<BootstrapState> {
    let dir = data_dir.join("server").join("tls");
    let cert = std::fs::read_to_string(dir.join("server-ca.crt")).ok()?;
    let key = std::fs::read_to_string(dir.join("server-ca.key")).ok()?;
    match BootstrapState::with_ca(&cert, &key) {
        Ok(state) => {
            tracing::info!(dir = %dir.display(), "adopting this data dir's CA as the cluster CA");
            Some(state)
        }
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "ignoring the CA in this data dir");
            None
        }
    }
}

pub(crate) fn check_ca(
    token: &ClusterToken,
    state: &BootstrapState,
) -> Result<(), ClusterTokenError> {
    match &token.ca_hash {
        Some(token_hash) if !token.accepts_ca(&state.ca_cert_pem) => {
            Err(ClusterTokenError::CaMismatch {
                token_hash: token_hash.clone(),
                cluster_hash: ca_hash(&state.ca_cert_pem),
            })
        }
        _ => Ok(()),
    }
}

/// How often a server looks at the token generation in the datastore.
pub const TOKEN_GENERATION_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Follows the cluster's token generation until `shutdown`: starts at `own` (what this
/// server opened at start) and moves when `capstan token rotate` re-seals the bootstrap
/// data, so node certificates of the old token are refused within
/// [`TOKEN_GENERATION_POLL`], on servers not yet restarted too. One datastore read per poll;
/// a failed read keeps the last value.
pub fn follow_token_generation(
    store: Store,
    own: i64,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::sync::watch::Receiver<i64> {
    let (sender, receiver) = tokio::sync::watch::channel(own);
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(TOKEN_GENERATION_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match bootstrap::token_generation(&store).await {
                Ok(Some(current)) => {
                    sender.send_if_modified(|known| {
                        if current > *known {
                            tracing::warn!(
                                generation = current,
                                "the cluster token was rotated: node certificates of the old token are refused; restart this server with the new token"
                            );
                            *known = current;
                            true
                        } else {
                            false
                        }
                    });
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::debug!(%error, "cannot read the token generation; keeping the last one")
                }
            }
        }
    });
    receiver
}
