//! Label keys and values, checked as k8s.io/apimachinery/pkg/util/validation does
//! (`IsQualifiedName`, `IsValidLabelValue`), with its messages. Hand-written rather than
//! regular expressions: the grammar is small and no regex crate is in the dependency set.

use super::SelectorError;

const NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const PREFIX_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_subdomain(name: &str) -> bool {
    name.split('.').all(|label| {
        let bytes = label.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
            }
            _ => false,
        }
    })
}

/// A label key: an optional DNS-1123 subdomain prefix and `/`, then a name of at most 63
/// characters (upstream `IsQualifiedName`).
pub(super) fn validate_key(key: &str) -> Result<(), SelectorError> {
    let parts: Vec<&str> = key.split('/').collect();
    let mut reasons = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                reasons.push("prefix part must be non-empty".to_string());
            } else if prefix.len() > 253 {
                reasons.push("prefix part must be no more than 253 characters".to_string());
            } else if !is_dns1123_subdomain(prefix) {
                reasons.push(format!("prefix part {PREFIX_MESSAGE}"));
            }
            *name
        }
        _ => {
            return Err(SelectorError::LabelKey {
                key: key.to_string(),
                reason: format!(
                    "a qualified name {NAME_MESSAGE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
                ),
            });
        }
    };
    if name.is_empty() {
        reasons.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        reasons.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        reasons.push(format!("name part {NAME_MESSAGE}"));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::LabelKey {
            key: key.to_string(),
            reason: reasons.join("; "),
        })
    }
}

/// A label value: empty, or at most 63 characters of the qualified-name alphabet.
pub(super) fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    let mut reasons = Vec::new();
    if value.len() > 63 {
        reasons.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        reasons.push(VALUE_MESSAGE.to_string());
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::LabelValue {
            key: key.to_string(),
            value: value.to_string(),
            reason: reasons.join("; "),
        })
    }
}
