//! The bootstrap data at rest: an envelope (version, KDF parameters, salt, nonce,
//! ciphertext) sealed with ChaCha20-Poly1305 under a key derived from the token's secret
//! with Argon2id. The KDF cost travels in the envelope, so it can be raised later, and a
//! stored cost is bounded, so a tampered envelope cannot make a server allocate without
//! limit.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};

use super::{BootstrapError, BootstrapState, DATA_KEY};

/// The envelope format this binary writes.
const ENVELOPE_VERSION: u32 = 1;
/// Largest KDF cost accepted from a stored envelope (1 GiB, 64 passes, 16 lanes): a
/// tampered envelope must not make a server allocate without bound.
const MAX_MEMORY_KIB: u32 = 1 << 20;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 16;

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
pub(super) async fn seal(state: &BootstrapState, secret: &str) -> Result<Vec<u8>, BootstrapError> {
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
pub(super) async fn open(stored: &[u8], secret: &str) -> Result<BootstrapState, BootstrapError> {
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
}
