//! Query parameters of resource requests, parsed and checked once.

use std::collections::HashMap;

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
                "timeoutSeconds" | "timeout" => {
                    let seconds = value.trim_end_matches('s');
                    parsed.timeout_seconds = seconds.parse().ok();
                }
                "includeObject" => parsed.include_object = Some(value),
                "propagationPolicy" => parsed.propagation = Some(propagation(&value)?),
                "orphanDependents" if flag(&value) => {
                    parsed.propagation = Some(Propagation::Orphan);
                }
                "gracePeriodSeconds" => parsed.grace_period_seconds = value.parse().ok(),
                _ => {}
            }
        }
        Ok(parsed)
    }
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
        assert!(Query::parse(Some("dryRun=Some")).is_err());
        assert!(Query::parse(Some("limit=x")).is_err());
    }
}
