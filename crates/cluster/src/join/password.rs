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

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;

use crate::agents::{
    PASSWORD_HASH_KEY, PASSWORD_NAMESPACE, PASSWORD_SECRET_TYPE, password_secret_name,
};
use capstan_apiserver::registry::{
    ObjectStore, Registry, RegistryError, ResourceType, WriteOptions,
};

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
    /// Argon2 working memory, one buffer per slot, reused: the allocator never sees
    /// 19 MiB come and go hundreds of times (glibc would keep much of it per thread).
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    verified: Mutex<HashMap<String, Verified>>,
}

impl Passwords {
    /// Checks over `objects`.
    pub fn new(objects: ObjectStore, registry: Arc<Registry>) -> Passwords {
        Passwords {
            objects,
            registry,
            hashing: Arc::new(Semaphore::new(HASHES_AT_ONCE)),
            buffers: Arc::new(Mutex::new(Vec::new())),
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

    /// A new Argon2id PHC string for `password`, on the blocking pool.
    async fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let password = password.to_string();
        let salt: [u8; 16] = rand::random();
        self.blocking(move |memory| hash_with(memory, password.as_bytes(), &salt))
            .await
    }

    /// Whether `password` matches the PHC string `hash`, on the blocking pool.
    async fn verify(&self, password: &str, hash: &str) -> Result<bool, PasswordError> {
        let (password, hash) = (password.to_string(), hash.to_string());
        self.blocking(move |memory| Ok(verify_with(memory, password.as_bytes(), &hash)))
            .await
    }

    /// Runs `work` on the blocking pool once one of the [`HASHES_AT_ONCE`] slots is free,
    /// lending it one of the reused Argon2 memory buffers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = self
            .hashing
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PasswordError::Hashing(e.to_string()))?;
        let buffers = self.buffers.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_default();
            let result = work(&mut memory);
            buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(memory);
            result
        })
        .await
        .map_err(|e| PasswordError::Hashing(e.to_string()))?
    }
}

/// Argon2 memory beyond which a stored hash is not even tried (a Secret written by hand
/// with absurd parameters must not take the server's memory): 64 MiB.
const MAX_BLOCKS: usize = 64 * 1024;

/// Grows `memory` to `blocks` blocks (kept between runs: no allocation per hash).
fn memory_for(memory: &mut Vec<Block>, blocks: usize) -> &mut [Block] {
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    &mut memory[..blocks]
}

/// The Argon2id PHC string of `password` with `salt` and the default (OWASP) parameters.
fn hash_with(
    memory: &mut Vec<Block>,
    password: &[u8],
    salt: &[u8],
) -> Result<String, PasswordError> {
    let failed = |e: &dyn std::fmt::Display| PasswordError::Hashing(e.to_string());
    let params = Params::DEFAULT;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(
            password,
            salt,
            &mut out,
            memory_for(memory, params.block_count()),
        )
        .map_err(|e| failed(&e))?;
    let salt = SaltString::encode_b64(salt).map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `hash` (false for anything unreadable).
fn verify_with(memory: &mut Vec<Block>, password: &[u8], hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let (Ok(params), Some(salt), Some(expected)) =
        (Params::try_from(&parsed), parsed.salt, parsed.hash)
    else {
        return false;
    };
    if params.block_count() > MAX_BLOCKS {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    argon
        .hash_password_into_with_memory(password, salt, &mut out, memory_for(memory, blocks))
        .is_ok()
        && same_bytes(&out, expected.as_bytes())
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
    use argon2::password_hash::PasswordVerifier as _;

    #[test]
    fn the_secret_holds_a_standard_hash_never_the_password() {
        let mut memory = Vec::new();
        let hash = hash_with(&mut memory, b"correct horse", &[7u8; 16]).expect("hashing works");
        let secret = password_secret("n1.node-password.capstan", &hash);
        assert!(!secret.to_string().contains("correct horse"));
        let stored = stored_hash(&secret).expect("the hash reads back");
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        // Any Argon2 implementation checks it.
        let parsed = PasswordHash::new(&stored).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        // The reused buffer verifies right and wrong passwords.
        assert!(verify_with(&mut memory, b"correct horse", &stored));
        assert!(!verify_with(&mut memory, b"other", &stored));
        assert!(!verify_with(&mut memory, b"correct horse", "not a hash"));
    }
}
