//! Query parameters of resource requests, parsed and checked once.

use std::collections::HashMap;

use capstan_machinery::time::parse_duration;

use crate::api::error::ApiError;
use crate::registry::Propagation;
use crate::storage::ResourceVersionMatch;

/// `fieldValidation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Unknown fields are an error.
    Strict,
    /// Unknown fields are dropped with a `Warning` header (the default).
    #[default]
    Warn,
    /// Unknown fields are dropped silently.
    Ignore,
}

/// The query of a resource request.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub watch: bool,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub force: bool,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<ResourceVersionMatch>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub timeout_seconds: Option<u64>,
    pub include_object: Option<String>,
    pub propagation: Option<Propagation>,
    pub grace_period_seconds: Option<i64>,
}

fn flag(value: &str) -> bool {
    matches!(value, "true" | "1" | "True" | "TRUE")
}

impl Query {
    /// Parses a request's query string.
    pub fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let pairs: HashMap<String, String> = match query {
            Some(query) => serde_urlencoded::from_str(query)
                .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?,
            None => HashMap::new(),
        };
        let mut parsed = Query::default();
        for (key, value) in pairs {
            match key.as_str() {
                "watch" => parsed.watch = flag(&value),
                "dryRun" => match value.as_str() {
                    "All" => parsed.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
                        )));
                    }
                },
                "fieldManager" => parsed.field_manager = Some(value),
                "fieldValidation" => {
                    parsed.field_validation = match value.as_str() {
                        "Strict" => FieldValidation::Strict,
                        "Warn" | "" => FieldValidation::Warn,
                        "Ignore" => FieldValidation::Ignore,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
                            )));
                        }
                    }
                }
                "force" => parsed.force = flag(&value),
                "labelSelector" => parsed.label_selector = Some(value).filter(|v| !v.is_empty()),
                "fieldSelector" => parsed.field_selector = Some(value).filter(|v| !v.is_empty()),
                "limit" => {
                    let limit: i64 = value.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "limit: Invalid value: \"{value}\": must be an integer"
                        ))
                    })?;
                    parsed.limit = usize::try_from(limit.max(0)).unwrap_or(0);
                }
                "continue" => parsed.continue_token = Some(value).filter(|v| !v.is_empty()),
                "resourceVersion" => {
                    parsed.resource_version = Some(value).filter(|v| !v.is_empty())
                }
                "resourceVersionMatch" => {
                    parsed.resource_version_match = match value.as_str() {
                        "" => None,
                        "NotOlderThan" => Some(ResourceVersionMatch::NotOlderThan),
                        "Exact" => Some(ResourceVersionMatch::Exact),
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                            )));
                        }
                    }
                }
                "allowWatchBookmarks" => parsed.allow_watch_bookmarks = flag(&value),
                "sendInitialEvents" => parsed.send_initial_events = Some(flag(&value)),
                "timeoutSeconds" => parsed.timeout_seconds = Some(seconds(&key, &value)?),
                "timeout" => parsed.timeout_seconds = Some(duration_seconds(&value)?),
                "includeObject" => parsed.include_object = Some(value),
                "propagationPolicy" => parsed.propagation = Some(propagation(&value)?),
                "orphanDependents" if flag(&value) => {
                    parsed.propagation = Some(Propagation::Orphan);
                }
                "gracePeriodSeconds" => {
                    parsed.grace_period_seconds = Some(value.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "gracePeriodSeconds: Invalid value: \"{value}\": must be an integer"
                        ))
                    })?)
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// A non-negative whole number of seconds (`timeoutSeconds`).
fn seconds(key: &str, value: &str) -> Result<u64, ApiError> {
    value.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "{key}: Invalid value: \"{value}\": must be a non-negative integer"
        ))
    })
}

/// A Go duration of whole units (`timeout=30s`, `1m`, `500ms`, `1h`), rounded up to seconds.
fn duration_seconds(value: &str) -> Result<u64, ApiError> {
    let duration = parse_duration(value).ok_or_else(|| {
        ApiError::bad_request(format!(
            "timeout: Invalid value: \"{value}\": must be a duration such as 30s, 1m or 500ms"
        ))
    })?;
    Ok(u64::try_from(duration.as_millis().div_ceil(1_000)).unwrap_or(u64::MAX))
}

/// The longest `fieldManager` kube-apiserver accepts.
pub const MAX_FIELD_MANAGER_BYTES: usize = 128;

/// Checks a request's `fieldManager` as kube-apiserver validates its `CreateOptions`,
/// `UpdateOptions` or `PatchOptions` (`options_kind`): at most 128 bytes, printable only.
pub fn check_field_manager(manager: Option<&str>, options_kind: &str) -> Result<(), ApiError> {
    let Some(manager) = manager else {
        return Ok(());
    };
    let (reason, message) = if manager.len() > MAX_FIELD_MANAGER_BYTES {
        (
            "FieldValueTooLong",
            format!("Too long: may not be more than {MAX_FIELD_MANAGER_BYTES} bytes"),
        )
    } else if manager.chars().any(char::is_control) {
        (
            "FieldValueInvalid",
            "Invalid value: the field manager may hold printable characters only".to_string(),
        )
    } else {
        return Ok(());
    };
    Err(crate::registry::RegistryError::Invalid {
        kind: options_kind.to_string(),
        group_suffix: "meta.k8s.io".to_string(),
        name: String::new(),
        causes: vec![crate::registry::FieldError {
            field: "fieldManager".to_string(),
            cause: reason,
            message,
        }],
    }
    .into())
}

/// Parses a `propagationPolicy`.
pub fn propagation(value: &str) -> Result<Propagation, ApiError> {
    match value {
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        "Orphan" => Ok(Propagation::Orphan),
        other => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_style_queries_parse() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb&limit=500&fieldValidation=Strict&dryRun=All",
        ))
        .expect("valid");
        assert_eq!(q.label_selector.as_deref(), Some("app=web"));
        assert_eq!(q.limit, 500);
        assert!(q.dry_run);
        assert_eq!(q.field_validation, FieldValidation::Strict);
        assert_eq!(
            Query::parse(Some("timeout=1m"))
                .map(|q| q.timeout_seconds)
                .ok(),
            Some(Some(60))
        );
        assert_eq!(
            Query::parse(Some("timeout=500ms"))
                .map(|q| q.timeout_seconds)
                .ok(),
            Some(Some(1))
        );
        for bad in [
            "timeoutSeconds=-1",
            "timeoutSeconds=abc",
            "timeout=10",
            "timeout=5x",
            "gracePeriodSeconds=x",
        ] {
            assert!(Query::parse(Some(bad)).is_err(), "{bad} must be refused");
        }
        assert!(Query::parse(Some("dryRun=Some")).is_err());
        assert!(Query::parse(Some("limit=x")).is_err());
    }
}
