//! Reading one manifest file: its Addon name, its checksum, and the objects it holds
//! (multi-document YAML or JSON; `List` kinds are unpacked).

use std::path::Path;

use capstan_machinery::meta;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// File extensions the deployer applies.
pub(super) const EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// The largest manifest file read. Bigger files are reported, not read: a file costs several
/// times its size in memory while it is parsed.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file's content cannot be applied. Messages name the file and a position, never
/// the content: a manifest may hold secrets, and these land on the Addon, in an Event and
/// in the log.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum ManifestError {
    /// The file is over [`MAX_MANIFEST_BYTES`].
    #[error(
        "{file}: {size} bytes; manifest files may hold at most {MAX_MANIFEST_BYTES} bytes (split it)"
    )]
    TooLarge {
        /// The file name.
        file: String,
        /// Its size.
        size: u64,
    },
    /// The file is not UTF-8.
    #[error("{file}: not UTF-8 text")]
    NotText {
        /// The file name.
        file: String,
    },
    /// The YAML or JSON does not parse (or is not the shape of objects).
    #[error("{file}: invalid YAML{at}")]
    Syntax {
        /// The file name.
        file: String,
        /// Where: ` at line L, column C`, or empty when the parser does not say.
        at: String,
    },
    /// A document is not a Kubernetes object.
    #[error(
        "{file}: document {index} is not a Kubernetes object (it needs apiVersion, kind and metadata.name)"
    )]
    NotAnObject {
        /// The file name.
        file: String,
        /// 1-based document number.
        index: usize,
    },
}

/// Whether `path` names a manifest the deployer applies (by extension; hidden files are not).
pub(super) fn is_manifest(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
}

/// The Addon name of a file: its name without the extension, lower-cased, with every
/// character a DNS subdomain cannot hold replaced by `-` (`My_App.yaml` is `my-app`).
pub fn addon_name(file_name: &str) -> String {
    let stem = match file_name.rsplit_once('.') {
        Some((stem, ext)) if EXTENSIONS.contains(&ext) => stem,
        _ => file_name,
    };
    let mapped: String = stem
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut name: String = trimmed.chars().take(253).collect();
    while name.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        name.pop();
    }
    if name.is_empty() {
        "manifest".to_string()
    } else {
        name
    }
}

/// SHA-256 of `content`, lower-case hex.
pub(super) fn checksum(content: &[u8]) -> String {
    Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The objects of a file, in file order: every YAML document (or the JSON value), with
/// `List` kinds replaced by their items; empty documents are skipped.
pub(super) fn objects(file: &str, content: &[u8]) -> Result<Vec<Value>, ManifestError> {
    let text = std::str::from_utf8(content).map_err(|_| ManifestError::NotText {
        file: file.to_string(),
    })?;
    let documents: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(value) => vec![value],
        Err(_) => serde_saphyr::from_multiple::<Value>(text).map_err(|e| {
            // The parser's own message may quote the offending text: only its position is
            // kept.
            let at = e
                .location()
                .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
                .unwrap_or_default();
            ManifestError::Syntax {
                file: file.to_string(),
                at,
            }
        })?,
    };
    let mut out = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        if document.is_null() {
            continue;
        }
        let is_list = document["kind"]
            .as_str()
            .is_some_and(|kind| kind.ends_with("List"))
            && document["items"].is_array();
        let items = if is_list {
            match document {
                Value::Object(mut map) => match map.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            }
        } else {
            vec![document]
        };
        for item in items {
            let named = item["apiVersion"].is_string()
                && item["kind"].is_string()
                && meta(&item).name().is_some_and(|n| !n.is_empty());
            if !named {
                return Err(ManifestError::NotAnObject {
                    file: file.to_string(),
                    index: index + 1,
                });
            }
            out.push(item);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addon_names_are_dns_safe_file_stems() {
        assert_eq!(addon_name("rbac.yaml"), "rbac");
        assert_eq!(addon_name("My_App.v2.yml"), "my-app.v2");
        assert_eq!(addon_name("__x__.json"), "x");
        assert_eq!(addon_name("_.yaml"), "manifest");
    }

    #[test]
    fn multi_document_yaml_and_lists_become_objects() {
        let text = "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# nothing\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: b}\n";
        let found = objects("f.yaml", text.as_bytes()).expect("valid yaml");
        let names: Vec<&str> = found
            .iter()
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn json_and_broken_files() {
        let found = objects(
            "f.json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"j"}}"#,
        )
        .expect("valid json");
        assert_eq!(found.len(), 1);
        assert!(matches!(
            objects("bad.yaml", b"a: [unclosed\n"),
            Err(ManifestError::Syntax { .. })
        ));
        assert!(matches!(
            objects("bad.yaml", b"just: a map\n"),
            Err(ManifestError::NotAnObject { .. })
        ));
        let leaky = objects(
            "leaky.yaml",
            b"apiVersion: v1\ndb_password: hunter2\nkind: [unclosed, \"hunter2\n",
        )
        .expect_err("broken YAML");
        let message = leaky.to_string();
        assert!(
            message.starts_with("leaky.yaml: invalid YAML at line "),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn checksum_is_sha256_hex() {
        assert_eq!(
            checksum(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
