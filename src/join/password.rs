//! The node password check. The first registration of a node name stores an Argon2id hash
//! of the agent's password in Secret `kube-system/<node>.node-password.capstan`; every later
//! registration must present a password that verifies against it. The password itself is
//! never stored.
//!
//! Argon2 is slow and memory-hard on purpose (OWASP's parameters: 19 MiB, two passes), so
//! hashing runs on the blocking pool behind a semaphore of [`HASHES_AT_ONCE`]: a burst of
//! 500 registrations queues instead of needing 500 × 19 MiB. A successful check is
//! remembered (node → SHA-256 of the password and the stored hash it verified against), so
//! an agent reconnecting after a server change or a network blip costs one Secret read, not
//! another Argon2 run; a Secret replaced since (deleted and registered by someone else)
//! has another hash, which sends the check back to Argon2.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::cluster::agents::{
    PASSWORD_HASH_KEY, PASSWORD_NAMESPACE, PASSWORD_SECRET_TYPE, password_secret_name,
};
use crate::registry::{ObjectStore, Registry, RegistryError, ResourceType, WriteOptions};

/// Argon2 runs at once on one server.
pub const HASHES_AT_ONCE: usize = 2;

/// Why a node password was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The Secret holds another password's hash (or no readable hash).
    #[error("the node password does not match the one registered for node {node}")]
    Mismatch {
        /// The node.
        node: String,
    },
    /// The Secret could not be read or written.
    #[error("node password Secret: {0}")]
    Storage(#[from] RegistryError),
    /// Hashing failed (it does not for valid parameters; a corrupt Secret could cause it).
    #[error("node password hash: {0}")]
    Hashing(String),
}

/// A check that succeeded, remembered.
struct Verified {
    password_digest: [u8; 32],
    hash: String,
}

/// Checks node passwords against their Secrets.
pub struct Passwords {
    objects: ObjectStore,
    registry: Arc<Registry>,
    hashing: Arc<Semaphore>,
    verified: Mutex<HashMap<String, Verified>>,
}

impl Passwords {
    /// Checks over `objects`.
    pub fn new(objects: ObjectStore, registry: Arc<Registry>) -> Passwords {
        Passwords {
            objects,
            registry,
            hashing: Arc::new(Semaphore::new(HASHES_AT_ONCE)),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Accepts `password` for `node`: creates the Secret on first registration, else
    /// verifies against it. Writes nothing when it refuses.
    pub async fn check(&self, node: &str, password: &str) -> Result<(), PasswordError> {
        let kind = self.secret_kind()?;
        let name = password_secret_name(node);
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        // Two attempts: a create that lost a race with another server reads the winner.
        for _ in 0..2 {
            match self
                .objects
                .get(&kind, Some(PASSWORD_NAMESPACE), &name)
                .await
            {
                Ok(secret) => {
                    let Some(hash) = stored_hash(&secret) else {
                        return Err(PasswordError::Mismatch {
                            node: node.to_string(),
                        });
                    };
                    if self.remembered(node, &digest, &hash) {
                        return Ok(());
                    }
                    if self.verify(password, &hash).await? {
                        self.remember(node, digest, hash);
                        return Ok(());
                    }
                    return Err(PasswordError::Mismatch {
                        node: node.to_string(),
                    });
                }
                Err(RegistryError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
            let hash = self.hash(password).await?;
            let secret = password_secret(&name, &hash);
            match self
                .objects
                .create(
                    &kind,
                    Some(PASSWORD_NAMESPACE),
                    secret,
                    &WriteOptions::default(),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(%node, "registered a new node password");
                    self.remember(node, digest, hash);
                    return Ok(());
                }
                Err(RegistryError::AlreadyExists { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(PasswordError::Storage(RegistryError::Unavailable(format!(
            "the node password Secret for {node} keeps changing; retry"
        ))))
    }

    fn secret_kind(&self) -> Result<Arc<ResourceType>, RegistryError> {
        self.registry
            .catalog()
            .by_kind("v1", "Secret")
            .ok_or_else(|| RegistryError::Internal("the catalog has no v1 Secret kind".into()))
    }

    fn remembered(&self, node: &str, digest: &[u8; 32], hash: &str) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(node)
            .is_some_and(|known| known.hash == hash && same_bytes(&known.password_digest, digest))
    }

    fn remember(&self, node: &str, password_digest: [u8; 32], hash: String) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.insert(
            node.to_string(),
            Verified {
                password_digest,
                hash,
            },
        );
    }

    /// Forgets what was verified for `node` (its Secret was deleted).
    pub fn forget(&self, node: &str) {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified.remove(node);
    }

    /// A new Argon2id PHC string for `password`, on the blocking pool.
    async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_string();
        self.blocking(move || {
            let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
                .map_err(|e| PasswordError::Hashing(e.to_string()))?;
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| PasswordError::Hashing(e.to_string()))
        })
        .await
    }

    /// Whether `password` matches the PHC string `hash`, on the blocking pool.
    async fn verify(&self, password: &str, hash: &str) -> Result<bool, PasswordError> {
        let (password, hash) = (password.to_string(), hash.to_string());
        self.blocking(move || {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                return Ok(false);
            };
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        })
        .await
    }

    /// Runs `work` on the blocking pool once one of the [`HASHES_AT_ONCE`] slots is free.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self
            .hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PasswordError::Hashing(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| PasswordError::Hashing(e.to_string()))?
    }
}

/// The Secret storing `hash` under `name`.
fn password_secret(name: &str, hash: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": PASSWORD_NAMESPACE},
        "type": PASSWORD_SECRET_TYPE,
        "data": {PASSWORD_HASH_KEY: base64::engine::general_purpose::STANDARD.encode(hash)},
    })
}

/// The PHC string a password Secret holds, if it holds one.
fn stored_hash(secret: &Value) -> Option<String> {
    let encoded = secret["data"][PASSWORD_HASH_KEY].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Constant-time equality of two digests.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_holds_a_hash_never_the_password() {
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("16 bytes make a salt");
        let hash = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .expect("hashing works")
            .to_string();
        let secret = password_secret("n1.node-password.capstan", &hash);
        assert!(!secret.to_string().contains("correct horse"));
        let stored = stored_hash(&secret).expect("the hash reads back");
        assert!(stored.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(&stored).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"other", &parsed)
                .is_err()
        );
    }
}
