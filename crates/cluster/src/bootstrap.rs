//! The cluster's shared secrets (its CA and service-account signing key), kept in the
//! datastore so every server presents the same CA and accepts the same client certificates.
//!
//! The first server to reach an empty datastore generates them; every later server and
//! restart loads them. They are stored at one fixed key, [`DATA_KEY`], as an envelope
//! (version, KDF parameters, salt, nonce, ciphertext) sealed with ChaCha20-Poly1305 under a
//! key derived from the token's secret with Argon2id. A fixed key, not one derived from the
//! token, is what makes a wrong token *detectable*: the data is there, and it does not open.
//!
//! Two servers starting at once on an empty datastore agree on one set. Correctness comes
//! from the compare-and-swap create of [`DATA_KEY`]: if both generate, exactly one create
//! applies and the other server reloads the winner's data. A lock key ([`LOCK_KEY`], holder
//! and time, with a TTL) keeps the loser from doing the slow work for nothing; a lock older
//! than [`STALE_LOCK_AFTER`] (its holder died mid-way) is taken over by a compare-and-swap on
//! its revision, without waiting for the TTL sweeper.
//!
//! The cluster-wide settings (CIDRs, cluster domain, disabled components) are stored in plain
//! JSON next to it ([`SETTINGS_KEY`]); a server configured differently refuses to start,
//! naming each setting that differs. (K3s checks this only on embedded etcd.)

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

use super::membership;
use capstan_datastore::{DatastoreError, KeyRange, ListRequest, Store, WriteOp, WriteOutcome};
use capstan_pki::certs::{CertError, CertificateAuthority};

/// Where the sealed bootstrap data lives.
pub const DATA_KEY: &str = "/capstan/bootstrap/data";
/// The lock the generating server holds.
pub const LOCK_KEY: &str = "/capstan/bootstrap/lock";
/// The cluster-wide settings, plain JSON.
pub const SETTINGS_KEY: &str = "/capstan/bootstrap/settings";

/// A bootstrap lock older than this is presumed abandoned and taken over.
pub const STALE_LOCK_AFTER: Duration = Duration::from_secs(30);
/// The lock's TTL: the sweeper removes it if nobody takes it over first.
const LOCK_TTL: Duration = Duration::from_secs(60);
/// How often a server waiting for another one's bootstrap looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The envelope format this binary writes.
const ENVELOPE_VERSION: u32 = 1;
/// Largest KDF cost accepted from a stored envelope (1 GiB, 64 passes, 16 lanes): a
/// tampered envelope must not make a server allocate without bound.
const MAX_MEMORY_KIB: u32 = 1 << 20;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 16;

/// Why the shared bootstrap state could not be loaded, created or rotated.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The stored data does not open with this token's secret.
    #[error(
        "token mismatch: the datastore was bootstrapped with a different token; start this server with the cluster's token (from <data-dir>/server/token of an existing server)"
    )]
    TokenMismatch,
    /// This server's cluster-wide settings differ from the cluster's.
    #[error(
        "cluster settings mismatch: this server's settings differ from the ones the cluster was bootstrapped with: {}; start it with the cluster's values",
        differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    SettingsMismatch {
        /// Each setting that differs.
        differences: Vec<SettingDifference>,
    },
    /// A setting is not well formed.
    #[error("--{setting} {value:?}: {reason}")]
    InvalidSetting {
        /// The flag.
        setting: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The datastore holds no bootstrap data (for operations that need it, like rotation).
    #[error(
        "the datastore holds no cluster bootstrap data yet (start a server on it first, or check --datastore-endpoint)"
    )]
    NotBootstrapped,
    /// A stored value could not be read.
    #[error(
        "datastore key {key}: {reason} (written by a newer or broken capstan? restore it from a backup)"
    )]
    Corrupt {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The datastore failed.
    #[error("cluster bootstrap: {0}")]
    Datastore(#[from] DatastoreError),
    /// Key generation or certificate handling failed.
    #[error("cluster bootstrap: {0}")]
    Cert(#[from] CertError),
    /// Key derivation, encryption or a blocking task failed.
    #[error("cluster bootstrap: {0}")]
    Crypto(String),
}

/// One cluster-wide setting that differs between this server and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingDifference {
    /// The flag naming it, e.g. `service-cidr`.
    pub setting: &'static str,
    /// This server's value.
    pub this_server: String,
    /// The cluster's value.
    pub cluster: String,
}

impl std::fmt::Display for SettingDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |value: &str| {
            if value.is_empty() {
                "(none)".to_string()
            } else {
                format!("{value:?}")
            }
        };
        write!(
            f,
            "--{} is {} on this server but {} in the cluster",
            self.setting,
            shown(&self.this_server),
            shown(&self.cluster)
        )
    }
}

/// The settings every server of one cluster must share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterSettings {
    /// Pod network (`--cluster-cidr`).
    pub cluster_cidr: String,
    /// Service network (`--service-cidr`).
    pub service_cidr: String,
    /// DNS domain of the cluster (`--cluster-domain`).
    pub cluster_domain: String,
    /// Bundled components not deployed (`--disable`), sorted, without duplicates.
    pub disable: Vec<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings::new("10.42.0.0/16", "10.43.0.0/16", "cluster.local", &[])
    }
}

impl ClusterSettings {
    /// The settings, normalized (trimmed, lower-case domain, `disable` sorted and deduplicated)
    /// so the same configuration written differently compares equal.
    pub fn new(
        cluster_cidr: &str,
        service_cidr: &str,
        cluster_domain: &str,
        disable: &[String],
    ) -> ClusterSettings {
        let mut disable: Vec<String> = disable
            .iter()
            .map(|name| name.trim().to_string())
            .filter(|name| !name.is_empty())
            .collect();
        disable.sort();
        disable.dedup();
        let cidrs = |text: &str| {
            text.split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join(",")
        };
        ClusterSettings {
            cluster_cidr: cidrs(cluster_cidr),
            service_cidr: cidrs(service_cidr),
            cluster_domain: cluster_domain
                .trim()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            disable,
        }
    }

    /// Checks the CIDRs (`address/prefix`, comma-separated for dual stack) and the domain.
    pub fn validate(&self) -> Result<(), BootstrapError> {
        for (setting, value) in [
            ("cluster-cidr", &self.cluster_cidr),
            ("service-cidr", &self.service_cidr),
        ] {
            let invalid = |reason: &str| BootstrapError::InvalidSetting {
                setting,
                value: value.clone(),
                reason: reason.to_string(),
            };
            if value.is_empty() {
                return Err(invalid("must not be empty"));
            }
            for cidr in value.split(',') {
                let (address, prefix) = cidr
                    .split_once('/')
                    .ok_or_else(|| invalid("expected ADDRESS/PREFIX, e.g. 10.43.0.0/16"))?;
                let address: std::net::IpAddr = address
                    .parse()
                    .map_err(|_| invalid("the address is not an IP address"))?;
                let bits = if address.is_ipv4() { 32 } else { 128 };
                match prefix.parse::<u8>() {
                    Ok(prefix) if prefix <= bits => {}
                    _ => return Err(invalid("the prefix length is out of range")),
                }
            }
        }
        let domain_ok = !self.cluster_domain.is_empty()
            && self.cluster_domain.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain_ok {
            return Err(BootstrapError::InvalidSetting {
                setting: "cluster-domain",
                value: self.cluster_domain.clone(),
                reason: "expected a DNS domain such as cluster.local".to_string(),
            });
        }
        Ok(())
    }

    /// Each setting where `self` (this server) differs from `cluster`.
    pub fn differences(&self, cluster: &ClusterSettings) -> Vec<SettingDifference> {
        let mut differences = Vec::new();
        let mut compare = |setting, ours: String, theirs: String| {
            if ours != theirs {
                differences.push(SettingDifference {
                    setting,
                    this_server: ours,
                    cluster: theirs,
                });
            }
        };
        compare(
            "cluster-cidr",
            self.cluster_cidr.clone(),
            cluster.cluster_cidr.clone(),
        );
        compare(
            "service-cidr",
            self.service_cidr.clone(),
            cluster.service_cidr.clone(),
        );
        compare(
            "cluster-domain",
            self.cluster_domain.clone(),
            cluster.cluster_domain.clone(),
        );
        compare("disable", self.disable.join(","), cluster.disable.join(","));
        differences
    }
}

/// The secrets every server of the cluster shares.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapState {
    /// The cluster CA certificate, PEM: what clients trust and agents hash into the token.
    pub ca_cert_pem: String,
    /// The cluster CA's private key, PEM.
    pub ca_key_pem: String,
    /// The key that signs service-account tokens (ECDSA P-256, PKCS#8 PEM).
    pub service_account_key_pem: String,
    /// When the cluster was bootstrapped, seconds since the Unix epoch.
    pub created_at: u64,
}

/// Never print the keys.
impl std::fmt::Debug for BootstrapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapState")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"<redacted>")
            .field("service_account_key_pem", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

impl BootstrapState {
    /// A new set of secrets.
    pub fn generate() -> Result<BootstrapState, BootstrapError> {
        let created_at = unix_seconds();
        let ca = CertificateAuthority::generate(&format!("capstan-server-ca@{created_at}"))?;
        Ok(BootstrapState {
            ca_cert_pem: ca.cert_pem().to_string(),
            ca_key_pem: ca.key_pem(),
            service_account_key_pem: generate_service_account_key()?,
            created_at,
        })
    }

    /// Secrets around an existing CA (a fresh service-account key).
    /// Fails unless the key is the certificate's.
    pub fn with_ca(ca_cert_pem: &str, ca_key_pem: &str) -> Result<BootstrapState, BootstrapError> {
        CertificateAuthority::from_pem(ca_cert_pem, ca_key_pem)?;
        let key = rcgen::KeyPair::from_pem(ca_key_pem).map_err(|source| CertError::Crypto {
            what: "read the CA key",
            source,
        })?;
        let mismatch =
            || BootstrapError::Crypto("the CA key does not belong to the CA certificate".into());
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(ca_cert_pem.as_bytes()).map_err(|_| mismatch())?;
        let cert = pem.parse_x509().map_err(|_| mismatch())?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(mismatch());
        }
        Ok(BootstrapState {
            ca_cert_pem: ca_cert_pem.to_string(),
            ca_key_pem: ca_key_pem.to_string(),
            service_account_key_pem: generate_service_account_key()?,
            created_at: unix_seconds(),
        })
    }

    /// The cluster CA, ready to issue certificates.
    pub fn ca(&self) -> Result<CertificateAuthority, CertError> {
        CertificateAuthority::from_pem(&self.ca_cert_pem, &self.ca_key_pem)
    }

    /// The public half of the service-account key, PEM (what verifiers of its tokens need).
    pub fn service_account_public_key_pem(&self) -> Result<String, CertError> {
        rcgen::KeyPair::from_pem(&self.service_account_key_pem)
            .map(|key| key.public_key_pem())
            .map_err(|source| CertError::Crypto {
                what: "read the service-account key",
                source,
            })
    }
}

/// Argon2id's cost, stored in the envelope so it can be raised later without breaking
/// existing clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KdfParams {
    algorithm: String,
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl KdfParams {
    /// OWASP's recommended minimum for Argon2id (19 MiB, 2 passes, 1 lane).
    fn recommended() -> KdfParams {
        KdfParams {
            algorithm: "argon2id".to_string(),
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

/// What [`DATA_KEY`] holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    version: u32,
    kdf: KdfParams,
    /// Base64.
    salt: String,
    /// Base64, 12 bytes.
    nonce: String,
    /// Base64: the sealed JSON of [`BootstrapState`] with its 16-byte tag.
    ciphertext: String,
}

impl Envelope {
    /// The associated data: the header is authenticated with the ciphertext.
    fn associated_data(&self) -> Vec<u8> {
        format!(
            "capstan-bootstrap:v{}:{}:m={}:t={}:p={}",
            self.version,
            self.kdf.algorithm,
            self.kdf.memory_kib,
            self.kdf.iterations,
            self.kdf.parallelism
        )
        .into_bytes()
    }
}

// Argon2 over a 19 MiB block is CPU-bound: it runs off the async workers.
async fn derive_key(
    secret: &str,
    salt: Vec<u8>,
    kdf: KdfParams,
) -> Result<[u8; 32], BootstrapError> {
    let secret = secret.as_bytes().to_vec();
    tokio::task::spawn_blocking(move || derive_key_blocking(&secret, &salt, &kdf))
        .await
        .map_err(|error| BootstrapError::Crypto(format!("key derivation task failed: {error}")))?
}

fn derive_key_blocking(
    secret: &[u8],
    salt: &[u8],
    kdf: &KdfParams,
) -> Result<[u8; 32], BootstrapError> {
    let corrupt = |reason: String| BootstrapError::Corrupt {
        key: DATA_KEY,
        reason,
    };
    if kdf.algorithm != "argon2id" {
        return Err(corrupt(format!(
            "unknown key derivation {:?}",
            kdf.algorithm
        )));
    }
    if kdf.memory_kib > MAX_MEMORY_KIB
        || kdf.iterations > MAX_ITERATIONS
        || kdf.parallelism > MAX_PARALLELISM
    {
        return Err(corrupt("key derivation cost out of bounds".to_string()));
    }
    let params = Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
        .map_err(|error| corrupt(format!("key derivation parameters: {error}")))?;
    let mut key = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(secret, salt, &mut key)
        .map_err(|error| BootstrapError::Crypto(format!("key derivation failed: {error}")))?;
    Ok(key)
}

/// Seals `state` under `secret` with the recommended KDF cost.
async fn seal(state: &BootstrapState, secret: &str) -> Result<Vec<u8>, BootstrapError> {
    seal_with(state, secret, KdfParams::recommended()).await
}

async fn seal_with(
    state: &BootstrapState,
    secret: &str,
    kdf: KdfParams,
) -> Result<Vec<u8>, BootstrapError> {
    let salt: [u8; 16] = rand::random();
    let nonce: [u8; 12] = rand::random();
    let key = derive_key(secret, salt.to_vec(), kdf.clone()).await?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut envelope = Envelope {
        version: ENVELOPE_VERSION,
        kdf,
        salt: b64.encode(salt),
        nonce: b64.encode(nonce),
        ciphertext: String::new(),
    };
    let plaintext = serde_json::to_vec(state)
        .map_err(|error| BootstrapError::Crypto(format!("cannot serialize: {error}")))?;
    let aad = envelope.associated_data();
    let sealed = ChaCha20Poly1305::new(&Key::from(key))
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| BootstrapError::Crypto("encryption failed".to_string()))?;
    envelope.ciphertext = b64.encode(sealed);
    serde_json::to_vec(&envelope)
        .map_err(|error| BootstrapError::Crypto(format!("cannot serialize: {error}")))
}

/// Opens what [`seal`] wrote; [`BootstrapError::TokenMismatch`] if `secret` is not the one
/// it was sealed with (or the ciphertext was altered: the AEAD cannot tell the two apart).
async fn open(stored: &[u8], secret: &str) -> Result<BootstrapState, BootstrapError> {
    let corrupt = |reason: String| BootstrapError::Corrupt {
        key: DATA_KEY,
        reason,
    };
    let envelope: Envelope = serde_json::from_slice(stored)
        .map_err(|error| corrupt(format!("not a bootstrap envelope: {error}")))?;
    if envelope.version != ENVELOPE_VERSION {
        return Err(corrupt(format!(
            "envelope version {} is not one this capstan reads (it reads {ENVELOPE_VERSION})",
            envelope.version
        )));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |field: &str, text: &str| {
        b64.decode(text)
            .map_err(|error| corrupt(format!("{field} is not base64: {error}")))
    };
    let salt = decode("salt", &envelope.salt)?;
    let nonce = decode("nonce", &envelope.nonce)?;
    let ciphertext = decode("ciphertext", &envelope.ciphertext)?;
    let nonce: [u8; 12] = nonce
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("the nonce is not 12 bytes".to_string()))?;
    let key = derive_key(secret, salt, envelope.kdf.clone()).await?;
    let aad = envelope.associated_data();
    let plaintext = ChaCha20Poly1305::new(&Key::from(key))
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| BootstrapError::TokenMismatch)?;
    serde_json::from_slice(&plaintext)
        .map_err(|error| corrupt(format!("the decrypted data does not parse: {error}")))
}

/// Whether the datastore already holds a cluster's bootstrap data.
pub async fn is_bootstrapped(store: &Store) -> Result<bool, BootstrapError> {
    Ok(store.get(DATA_KEY).await?.is_some())
}

/// The cluster's shared secrets, opened with `secret`; [`BootstrapError::NotBootstrapped`]
/// on an empty datastore.
pub async fn load(store: &Store, secret: &str) -> Result<BootstrapState, BootstrapError> {
    let stored = store
        .get(DATA_KEY)
        .await?
        .ok_or(BootstrapError::NotBootstrapped)?;
    open(&stored.value, secret).await
}

/// The cluster's shared secrets: loaded from the datastore and opened with `secret`, or,
/// on an empty datastore, generated and stored by exactly one of the servers starting now.
/// Then checks (or, first, records) the cluster-wide `settings`. `holder` names this
/// server process in the bootstrap lock.
pub async fn load_or_create(
    store: &Store,
    secret: &str,
    settings: &ClusterSettings,
    holder: &str,
) -> Result<BootstrapState, BootstrapError> {
    load_or_create_adopting(store, secret, settings, holder, None)
        .await
        .map(|loaded| loaded.state)
}

/// The shared secrets as a server opened them, and the token generation they were sealed
/// under.
#[derive(Debug)]
pub struct Loaded {
    /// The secrets.
    pub state: BootstrapState,
    /// The revision of [`DATA_KEY`] that was opened: see [`token_generation`].
    pub token_generation: i64,
}

/// The cluster token's generation: the revision at which [`DATA_KEY`] was last written.
/// Only its creation and `capstan token rotate` (which re-seals it under the new token)
/// write that key, so the number changes exactly when the token does; node certificates
/// carry the generation they were issued under, and the API refuses older ones. `None` on
/// an empty datastore.
pub async fn token_generation(store: &Store) -> Result<Option<i64>, BootstrapError> {
    Ok(store.get(DATA_KEY).await?.map(|stored| stored.mod_revision))
}

/// [`load_or_create`], storing `adopt` instead of generating when this server bootstraps
/// the cluster: a single server upgraded from before shared bootstrap keeps the CA of its
/// data dir, so the kubeconfigs it handed out keep working.
pub async fn load_or_create_adopting(
    store: &Store,
    secret: &str,
    settings: &ClusterSettings,
    holder: &str,
    adopt: Option<BootstrapState>,
) -> Result<Loaded, BootstrapError> {
    settings.validate()?;
    let loaded = load_or_generate(store, secret, holder, adopt).await?;
    reconcile_settings(store, settings).await?;
    Ok(loaded)
}

async fn load_or_generate(
    store: &Store,
    secret: &str,
    holder: &str,
    adopt: Option<BootstrapState>,
) -> Result<Loaded, BootstrapError> {
    let mut told_waiting = false;
    loop {
        if let Some(stored) = store.get(DATA_KEY).await? {
            return Ok(Loaded {
                state: open(&stored.value, secret).await?,
                token_generation: stored.mod_revision,
            });
        }
        let Some(lock_revision) = take_lock(store, holder).await? else {
            if !told_waiting {
                tracing::info!("another server is bootstrapping the cluster; waiting for it");
                told_waiting = true;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        };
        let generated = generate_and_store(store, secret, adopt.clone()).await;
        // Released whatever happened; a failed delete leaves it to go stale.
        if let Err(error) = store.delete(LOCK_KEY, Some(lock_revision)).await {
            tracing::warn!(%error, "could not release the bootstrap lock; it expires by itself");
        }
        match generated? {
            Some(loaded) => {
                tracing::info!("bootstrapped the cluster: stored its CA and keys in the datastore");
                return Ok(loaded);
            }
            // Another server's data landed first (it took over our lock as stale): use it.
            None => continue,
        }
    }
}

/// Generates the secrets and creates [`DATA_KEY`]; `None` if another server's create won.
async fn generate_and_store(
    store: &Store,
    secret: &str,
    adopt: Option<BootstrapState>,
) -> Result<Option<Loaded>, BootstrapError> {
    if store.get(DATA_KEY).await?.is_some() {
        return Ok(None);
    }
    let state = match adopt {
        Some(state) => state,
        None => tokio::task::spawn_blocking(BootstrapState::generate)
            .await
            .map_err(|error| {
                BootstrapError::Crypto(format!("key generation task failed: {error}"))
            })??,
    };
    let sealed = seal(&state, secret).await?;
    match store.create(DATA_KEY, sealed).await? {
        WriteOutcome::Applied { revision } => Ok(Some(Loaded {
            state,
            token_generation: revision,
        })),
        WriteOutcome::Conflict { .. } => Ok(None),
    }
}

/// What [`LOCK_KEY`] holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LockValue {
    holder: String,
    /// Milliseconds since the Unix epoch when it was taken.
    since_ms: u64,
}

/// Takes the bootstrap lock (or a stale one over); its revision if this server holds it.
async fn take_lock(store: &Store, holder: &str) -> Result<Option<i64>, BootstrapError> {
    let now = unix_millis();
    let value = serde_json::to_vec(&LockValue {
        holder: holder.to_string(),
        since_ms: now,
    })
    .map_err(|error| BootstrapError::Crypto(format!("cannot serialize: {error}")))?;
    let created = store
        .write(WriteOp::Create {
            key: LOCK_KEY.to_string(),
            value: value.clone().into(),
            ttl: Some(LOCK_TTL),
        })
        .await?;
    if let WriteOutcome::Applied { revision } = created.outcome {
        return Ok(Some(revision));
    }
    let Some(current) = store.get(LOCK_KEY).await? else {
        // Released just now: the data is probably there; look again.
        return Ok(None);
    };
    let held = serde_json::from_slice::<LockValue>(&current.value).ok();
    let age_ms = held
        .as_ref()
        .map_or(u64::MAX, |lock| now.saturating_sub(lock.since_ms));
    if age_ms < STALE_LOCK_AFTER.as_millis() as u64 {
        return Ok(None);
    }
    tracing::warn!(
        previous = held.as_ref().map_or("?", |lock| lock.holder.as_str()),
        age_seconds = age_ms / 1000,
        "taking over a stale bootstrap lock"
    );
    let updated = store
        .write(WriteOp::Update {
            key: LOCK_KEY.to_string(),
            value: value.into(),
            expected_revision: current.mod_revision,
            ttl: Some(LOCK_TTL),
        })
        .await?;
    Ok(match updated.outcome {
        WriteOutcome::Applied { revision } => Some(revision),
        WriteOutcome::Conflict { .. } => None,
    })
}

/// Records `settings` as the cluster's if none are recorded, else compares.
async fn reconcile_settings(
    store: &Store,
    settings: &ClusterSettings,
) -> Result<(), BootstrapError> {
    loop {
        if let Some(stored) = store.get(SETTINGS_KEY).await? {
            let cluster: ClusterSettings =
                serde_json::from_slice(&stored.value).map_err(|error| BootstrapError::Corrupt {
                    key: SETTINGS_KEY,
                    reason: error.to_string(),
                })?;
            let differences = settings.differences(&cluster);
            if differences.is_empty() {
                return Ok(());
            }
            // `--disable` may change on a restart, as K3s users expect, as long as no other
            // server is running with the old list; the networks and domain never change.
            let only_disable = differences.iter().all(|d| d.setting == "disable");
            if !only_disable || other_servers_live(store).await? {
                return Err(BootstrapError::SettingsMismatch { differences });
            }
            let value = serde_json::to_vec(settings)
                .map_err(|error| BootstrapError::Crypto(format!("cannot serialize: {error}")))?;
            if let WriteOutcome::Applied { .. } = store
                .update(SETTINGS_KEY, value, stored.mod_revision)
                .await?
            {
                tracing::warn!(
                    from = %cluster.disable.join(","),
                    to = %settings.disable.join(","),
                    "no other server is running: the cluster's --disable list changes to this server's"
                );
                return Ok(());
            }
            // Someone else changed the settings meanwhile: compare again.
            continue;
        }
        let value = serde_json::to_vec(settings)
            .map_err(|error| BootstrapError::Crypto(format!("cannot serialize: {error}")))?;
        if let WriteOutcome::Applied { .. } = store.create(SETTINGS_KEY, value).await? {
            return Ok(());
        }
        // Another server recorded its settings first: compare with those.
    }
}

/// Whether any server's membership record is still fresh (this server has none yet).
async fn other_servers_live(store: &Store) -> Result<bool, BootstrapError> {
    let page = store
        .list(&ListRequest {
            range: KeyRange::prefix(membership::SERVERS_PREFIX),
            revision: None,
            limit: 0,
        })
        .await?;
    let records: Vec<membership::ServerRecord> = page
        .items
        .iter()
        .filter_map(|item| serde_json::from_slice(&item.value).ok())
        .collect();
    Ok(!membership::live_servers(&records, std::time::SystemTime::now()).is_empty())
}

/// Re-seals the bootstrap data under `new_secret` (it must open with `old_secret`); the
/// state, unchanged. Every server and agent must then be restarted with the new token.
pub async fn rotate(
    store: &Store,
    old_secret: &str,
    new_secret: &str,
) -> Result<BootstrapState, BootstrapError> {
    loop {
        let stored = store
            .get(DATA_KEY)
            .await?
            .ok_or(BootstrapError::NotBootstrapped)?;
        let state = open(&stored.value, old_secret).await?;
        let sealed = seal(&state, new_secret).await?;
        match store.update(DATA_KEY, sealed, stored.mod_revision).await? {
            WriteOutcome::Applied { .. } => return Ok(state),
            // Written meanwhile (another rotation?): start over from what is there now.
            WriteOutcome::Conflict { .. } => continue,
        }
    }
}

/// ECDSA P-256, PKCS#8 PEM (rcgen's default on ring).
fn generate_service_account_key() -> Result<String, CertError> {
    rcgen::KeyPair::generate()
        .map(|key| key.serialize_pem())
        .map_err(|source| CertError::Crypto {
            what: "generate the service-account key",
            source,
        })
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cheap cost so the unit tests stay fast in debug builds; the format is the same.
    fn cheap() -> KdfParams {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            ..KdfParams::recommended()
        }
    }

    fn state() -> BootstrapState {
        BootstrapState::generate().expect("secrets generate")
    }

    #[tokio::test]
    async fn sealed_state_opens_with_its_secret() {
        let state = state();
        let sealed = seal(&state, "s3cret").await.expect("seals");
        let text = String::from_utf8(sealed.clone()).expect("the envelope is JSON text");
        assert!(
            !text.contains("PRIVATE KEY"),
            "keys must not be stored in the clear"
        );
        assert!(text.contains("argon2id"), "{text}");
        let opened = open(&sealed, "s3cret").await.expect("opens");
        assert_eq!(opened, state);
        assert!(opened.ca().is_ok());
        assert!(
            opened
                .service_account_public_key_pem()
                .expect("public key")
                .contains("PUBLIC KEY")
        );
    }

    #[tokio::test]
    async fn a_different_secret_is_a_token_mismatch() {
        let sealed = seal_with(&state(), "right", cheap()).await.expect("seals");
        let error = open(&sealed, "wrong").await.expect_err("wrong secret");
        assert!(matches!(error, BootstrapError::TokenMismatch), "{error}");
        let message = error.to_string();
        assert!(message.contains("different token"), "{message}");
        assert!(message.contains("<data-dir>/server/token"), "{message}");
    }

    #[tokio::test]
    async fn tampered_envelopes_are_rejected() {
        let sealed = seal_with(&state(), "s3cret", cheap()).await.expect("seals");
        let envelope: Envelope = serde_json::from_slice(&sealed).expect("envelope");
        let b64 = base64::engine::general_purpose::STANDARD;

        let mut bytes = b64.decode(&envelope.ciphertext).expect("base64");
        bytes[10] ^= 1;
        let flipped = Envelope {
            ciphertext: b64.encode(bytes),
            ..envelope.clone()
        };
        let error = open(&serde_json::to_vec(&flipped).expect("json"), "s3cret")
            .await
            .expect_err("a flipped bit must not open");
        assert!(matches!(error, BootstrapError::TokenMismatch), "{error}");

        // The header is authenticated too: a cheaper KDF cannot be swapped in.
        let mut weaker = envelope.clone();
        weaker.kdf.iterations += 1;
        let error = open(&serde_json::to_vec(&weaker).expect("json"), "s3cret")
            .await
            .expect_err("an altered header must not open");
        assert!(matches!(error, BootstrapError::TokenMismatch), "{error}");

        let error = open(b"{not json", "s3cret").await.expect_err("garbage");
        assert!(matches!(error, BootstrapError::Corrupt { .. }), "{error}");

        let mut huge = envelope;
        huge.kdf.memory_kib = u32::MAX;
        let error = open(&serde_json::to_vec(&huge).expect("json"), "s3cret")
            .await
            .expect_err("unbounded cost");
        assert!(matches!(error, BootstrapError::Corrupt { .. }), "{error}");
    }

    #[tokio::test]
    async fn when_two_generate_the_compare_and_swap_keeps_exactly_one() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let endpoint = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = Store::open(
            &capstan_datastore::DatastoreConfig::for_endpoint(endpoint),
            &capstan_datastore::DatastoreMetrics::unscraped(),
        )
        .await
        .expect("SQLite store opens");
        // No lock: both may generate; the create of the data key lets one through.
        let (first, second) = tokio::join!(
            generate_and_store(&store, "s3cret", None),
            generate_and_store(&store, "s3cret", None)
        );
        let winners: Vec<Loaded> = [first, second]
            .into_iter()
            .filter_map(|outcome| outcome.expect("no error"))
            .collect();
        assert_eq!(winners.len(), 1, "exactly one set is stored");
        let stored = load(&store, "s3cret").await.expect("loads");
        assert_eq!(stored, winners[0].state, "the stored set is the winner's");
        assert_eq!(
            token_generation(&store).await.expect("reads"),
            Some(winners[0].token_generation),
            "the winner knows the generation it stored"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_rotation_starts_a_new_token_generation_and_a_reload_keeps_it() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let endpoint = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = Store::open(
            &capstan_datastore::DatastoreConfig::for_endpoint(endpoint),
            &capstan_datastore::DatastoreMetrics::unscraped(),
        )
        .await
        .expect("SQLite store opens");
        assert_eq!(token_generation(&store).await.expect("reads"), None);
        let first = generate_and_store(&store, "old", None)
            .await
            .expect("no error")
            .expect("the only generator wins");
        rotate(&store, "old", "new").await.expect("rotates");
        let rotated = token_generation(&store)
            .await
            .expect("reads")
            .expect("bootstrapped");
        assert!(rotated > first.token_generation, "{rotated}");
        let reloaded = load_or_generate(&store, "new", "restarted", None)
            .await
            .expect("opens with the new token");
        assert_eq!(reloaded.token_generation, rotated);
        store.close().await;
    }

    #[test]
    fn an_existing_ca_is_adopted_only_with_its_own_key() {
        let ca = CertificateAuthority::generate("legacy").expect("CA");
        let adopted = BootstrapState::with_ca(ca.cert_pem(), &ca.key_pem()).expect("adopted");
        assert_eq!(adopted.ca_cert_pem, ca.cert_pem());
        let other = CertificateAuthority::generate("other").expect("CA");
        assert!(BootstrapState::with_ca(ca.cert_pem(), &other.key_pem()).is_err());
    }

    #[test]
    fn settings_compare_normalized_and_name_each_difference() {
        let ours = ClusterSettings::new(
            "10.42.0.0/16",
            " 10.44.0.0/16 ",
            "Cluster.Local.",
            &["traefik".into(), "coredns".into(), "traefik".into()],
        );
        assert_eq!(ours.cluster_domain, "cluster.local");
        assert_eq!(ours.disable, ["coredns", "traefik"]);
        assert!(ours.validate().is_ok());
        let cluster = ClusterSettings::default();
        let differences = ours.differences(&cluster);
        let settings: Vec<_> = differences.iter().map(|d| d.setting).collect();
        assert_eq!(settings, ["service-cidr", "disable"]);
        let message = BootstrapError::SettingsMismatch { differences }.to_string();
        assert!(message.contains("--service-cidr"), "{message}");
        assert!(
            message.contains("10.44.0.0/16") && message.contains("10.43.0.0/16"),
            "{message}"
        );
    }

    #[test]
    fn malformed_settings_are_refused() {
        for (cluster_cidr, service_cidr, domain) in [
            ("10.42.0.0", "10.43.0.0/16", "cluster.local"),
            ("10.42.0.0/16", "10.43.0.0/33", "cluster.local"),
            ("10.42.0.0/16", "fd00::/129", "cluster.local"),
            ("10.42.0.0/16", "10.43.0.0/16", "bad domain"),
        ] {
            let settings = ClusterSettings::new(cluster_cidr, service_cidr, domain, &[]);
            assert!(settings.validate().is_err(), "{settings:?}");
        }
        let dual = ClusterSettings::new("10.42.0.0/16,fd00:42::/56", "10.43.0.0/16", "c.l", &[]);
        assert!(dual.validate().is_ok());
    }
}
