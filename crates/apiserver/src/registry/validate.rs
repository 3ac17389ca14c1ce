//! Validation of written objects: what every object gets whatever its kind (its name by
//! the kind's [`NameRule`], labels, annotations: [`check_metadata`]), and what the kind's
//! row asks for ([`validate_write`]): a data size cap, a custom resource's structural
//! schema, the kind's own `validate` hook. Rules such as a Deployment's selector having to
//! match its template are not checked yet.

use capstan_machinery::meta;
use serde_json::Value;

use super::error::FieldError;
pub use super::kind::NameRule;
use super::kind::{ResourceType, SchemaSource};

/// Kind-specific validation of a written object, the same for the API and the manifest
/// deployer: the kind's data size cap (ConfigMaps, Secrets), custom resources against their
/// structural schema (pruning unknown fields), then the kind's own hook (a
/// CustomResourceDefinition's rules, which also give it its cleanup finalizer).
pub fn validate_write(kind: &ResourceType, object: &mut Value) -> Vec<FieldError> {
    if let Some(cause) = check_data_size(kind, object) {
        return vec![cause];
    }
    let causes = match &kind.schema {
        SchemaSource::Inline(schema) => super::validate_and_prune(schema, object),
        SchemaSource::Definition(_) => Vec::new(),
    };
    match kind.behaviour.validate {
        Some(validate) if causes.is_empty() => validate(object),
        _ => causes,
    }
}

/// The most bytes of data a ConfigMap or a Secret may hold (upstream's `MaxSecretSize`).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// The cause when `object` holds more data than its kind allows, as kube-apiserver words
/// it: `Too long: must have at most 1048576 bytes`.
pub fn check_data_size(kind: &ResourceType, object: &Value) -> Option<FieldError> {
    let limit = kind.behaviour.data_limit?;
    let mut total = 0usize;
    for field in limit.fields {
        let Some(map) = object[field.name].as_object() else {
            continue;
        };
        for value in map.values() {
            let text = value.as_str().unwrap_or("");
            total += if field.base64 {
                let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
                (text.len() / 4 * 3 + text.len() % 4 * 3 / 4).saturating_sub(padding)
            } else {
                text.len()
            };
        }
    }
    (total > MAX_DATA_BYTES).then(|| FieldError {
        field: limit.error_field.to_string(),
        cause: "FieldValueTooLong",
        message: format!("Too long: must have at most {MAX_DATA_BYTES} bytes"),
    })
}

/// Why `name` breaks `rule`, if it does.
pub fn check_name(rule: NameRule, name: &str) -> Option<String> {
    match rule {
        NameRule::Subdomain => check_subdomain(name),
        NameRule::Label => check_label(name),
        NameRule::Dns1035 => {
            if name.chars().next().is_some_and(|c| !c.is_ascii_lowercase()) {
                Some("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string())
            } else {
                check_label(name)
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                Some(format!("may not be '{name}'"))
            } else if name.contains('/') || name.contains('%') {
                Some("may not contain '/' or '%'".to_string())
            } else {
                None
            }
        }
    }
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

/// Why `name` is not a DNS-1123 label, if it is not.
pub fn check_label(name: &str) -> Option<String> {
    let well_formed = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(is_label_char)
        && !name.starts_with('-')
        && !name.ends_with('-');
    if well_formed {
        None
    } else if name.len() > 63 {
        Some("must be no more than 63 characters".to_string())
    } else {
        Some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string())
    }
}

/// Why `name` is not a DNS-1123 subdomain, if it is not.
pub fn check_subdomain(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some("must be no more than 253 characters".to_string());
    }
    let well_formed = !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(is_label_char)
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if well_formed {
        None
    } else {
        Some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string())
    }
}

fn check_qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && let Some(problem) = check_subdomain(prefix)
    {
        return Some(format!("prefix part {problem}"));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with at most 63 characters".to_string())
}

fn check_label_value(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?') with at most 63 characters".to_string())
}

/// Every problem with the metadata of `object`, a `kind`, as a create or update would
/// find them. `name` is the final name (after `generateName`).
pub fn check_metadata(kind: &ResourceType, object: &Value) -> Vec<FieldError> {
    let mut causes = Vec::new();
    let meta = meta(object);
    match meta.name() {
        Some(name) if !name.is_empty() => {
            if let Some(problem) = check_name(kind.behaviour.name_rule, name) {
                causes.push(FieldError::invalid("metadata.name", name, &problem));
            }
        }
        _ => causes.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
    }
    if let Some(labels) = meta.labels() {
        for (key, value) in labels {
            if let Some(problem) = check_qualified_name(key) {
                causes.push(FieldError::invalid("metadata.labels", key, &problem));
            }
            match value.as_str() {
                Some(value) => {
                    if let Some(problem) = check_label_value(value) {
                        causes.push(FieldError::invalid(
                            &format!("metadata.labels.{key}"),
                            value,
                            &problem,
                        ));
                    }
                }
                None => causes.push(FieldError::invalid(
                    &format!("metadata.labels.{key}"),
                    &value.to_string(),
                    "label values must be strings",
                )),
            }
        }
    }
    if let Some(annotations) = meta.annotations() {
        let mut total = 0;
        for (key, value) in annotations {
            if let Some(problem) = check_qualified_name(key) {
                causes.push(FieldError::invalid("metadata.annotations", key, &problem));
            }
            total += key.len() + value.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            causes.push(FieldError {
                field: "metadata.annotations".to_string(),
                cause: "FieldValueTooLong",
                message: "Too long: must have at most 262144 bytes".to_string(),
            });
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule_of_their_kind() {
        assert!(check_name(NameRule::Subdomain, "my.config-1").is_none());
        assert!(check_name(NameRule::Subdomain, "My_Config").is_some());
        assert!(check_name(NameRule::Label, "a.b").is_some());
        assert!(check_name(NameRule::Label, &"a".repeat(64)).is_some());
        assert!(check_name(NameRule::Dns1035, "1web").is_some());
        assert!(check_name(NameRule::Dns1035, "web-1").is_none());
        assert!(check_name(NameRule::PathSegment, "system:admin").is_none());
        assert!(check_name(NameRule::PathSegment, "a/b").is_some());
    }

    #[test]
    fn bad_labels_are_causes_naming_the_field() {
        let kind = &crate::registry::builtin_types()[5];
        let object = serde_json::json!({"metadata": {"name": "x", "labels": {"ok": "yes", "bad key!": "v", "k": "-bad"}}});
        let causes = check_metadata(kind, &object);
        assert_eq!(causes.len(), 2, "{causes:?}");
        assert!(causes.iter().any(|c| c.field == "metadata.labels.k"));
    }
}
