//! Continue tokens: where the next page of a list starts, and at which revision.
//!
//! The format is kube-apiserver's, so tokens look familiar to anyone debugging a client:
//! unpadded URL-safe base64 of `{"v":"meta.k8s.io/v1","rv":<revision>,"start":"<key>"}`,
//! where `start` is the first key of the next page relative to the list's prefix. Tokens are
//! opaque to clients; they carry no secret and need no signature because everything in them
//! is bounded here: the revision is checked against compaction by the datastore, and the
//! start key is re-joined to the request's own prefix, so a forged token can only move
//! within the range the caller is already listing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::error::{Result, StorageError};

/// The token format's version, as kube-apiserver writes it.
const VERSION: &str = "meta.k8s.io/v1";

/// A decoded continue token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinueToken {
    /// Format version; always [`VERSION`].
    #[serde(rename = "v")]
    version: String,
    /// The revision the whole list is read at.
    #[serde(rename = "rv")]
    pub revision: i64,
    /// The next page's first key, relative to the list's prefix.
    pub start: String,
}

impl ContinueToken {
    /// A token for the page starting at `start` (relative to the prefix) at `revision`.
    pub fn new(revision: i64, start: String) -> ContinueToken {
        ContinueToken {
            version: VERSION.to_string(),
            revision,
            start,
        }
    }

    /// The opaque string handed to clients.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token of a string and an integer serialises");
        base64_encode(&json)
    }

    /// Parses a token from a client; any malformation is an [`StorageError::InvalidContinue`].
    pub fn decode(token: &str) -> Result<ContinueToken> {
        let invalid = |reason: &str| StorageError::InvalidContinue {
            reason: reason.to_string(),
        };
        let json = base64_decode(token).ok_or_else(|| invalid("not base64"))?;
        let decoded: ContinueToken = serde_json::from_slice(&json)
            .map_err(|error| invalid(&format!("not a token ({error})")))?;
        if decoded.version != VERSION {
            return Err(invalid(&format!(
                "unknown version {:?} (expected {VERSION})",
                decoded.version
            )));
        }
        if decoded.revision <= 0 {
            return Err(invalid("its resourceVersion is not positive"));
        }
        if decoded.start.is_empty() || !decoded.start.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(invalid("its start key is empty or not printable ASCII"));
        }
        Ok(decoded)
    }
}

/// Unpadded URL-safe base64 (RFC 4648 §5), as kube-apiserver writes tokens.
fn base64_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes URL-safe base64, with or without padding; `None` if `text` is not that.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        for len in 0..10 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&bytes)), Some(bytes));
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8");
        assert_eq!(base64_decode("Zm8="), Some(b"fo".to_vec()));
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Zm9v!"), None);
    }

    #[test]
    fn tokens_match_kube_apiserver_format() {
        let token = ContinueToken::new(42, "default/web-2!".to_string());
        let json = base64_decode(&token.encode()).expect("our own base64");
        assert_eq!(
            String::from_utf8(json).expect("JSON is UTF-8"),
            r#"{"v":"meta.k8s.io/v1","rv":42,"start":"default/web-2!"}"#
        );
        assert_eq!(ContinueToken::decode(&token.encode()).ok(), Some(token));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let forge = |json: &str| base64_encode(json.as_bytes());
        for bad in [
            "%%%".to_string(),
            forge("not json"),
            forge(r#"{"v":"meta.k8s.io/v2","rv":1,"start":"a"}"#),
            forge(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#),
            forge(r#"{"v":"meta.k8s.io/v1","rv":1,"start":""}"#),
            forge(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"a\u0000"}"#),
        ] {
            assert!(
                matches!(
                    ContinueToken::decode(&bad),
                    Err(StorageError::InvalidContinue { .. })
                ),
                "{bad} must be refused"
            );
        }
    }
}
