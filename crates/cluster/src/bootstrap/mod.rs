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
//!
//! One file per job: `secrets.rs` the shared secrets themselves, `envelope.rs` their
//! sealing at rest, `protocol.rs` the lock and compare-and-swap protocol that stores
//! exactly one set, `settings.rs` the cluster-wide settings and their comparison.

mod envelope;
mod protocol;
mod secrets;
mod settings;

use std::time::Duration;

use capstan_datastore::DatastoreError;
use capstan_pki::certs::CertError;

pub use protocol::{
    Loaded, is_bootstrapped, load, load_or_create, load_or_create_adopting, rotate,
    token_generation,
};
pub use secrets::BootstrapState;
pub use settings::{ClusterSettings, SettingDifference};

/// Where the sealed bootstrap data lives.
pub const DATA_KEY: &str = "/capstan/bootstrap/data";
/// The lock the generating server holds.
pub const LOCK_KEY: &str = "/capstan/bootstrap/lock";
/// The cluster-wide settings, plain JSON.
pub const SETTINGS_KEY: &str = "/capstan/bootstrap/settings";

/// A bootstrap lock older than this is presumed abandoned and taken over.
pub const STALE_LOCK_AFTER: Duration = Duration::from_secs(30);

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
