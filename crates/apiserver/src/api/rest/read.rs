//! get and list, with the representations clients ask for (objects, Tables, metadata
//! only) and label/field selectors.

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::StatusCode;
use axum::response::Response;
use capstan_machinery::meta;
use serde_json::{Value, json};

use super::Call;
use crate::api::body::{Representation, respond};
use crate::api::error::ApiError;
use crate::api::table::{IncludeObject, render_object_table, render_table};
use crate::registry::ResourceType;
use crate::storage::{ItemFilter, ListOptions, ResourceVersionMatch};
use capstan_machinery::selector::{FieldSelector, LabelSelector, field_value};

/// Label and field selectors of a request, checked against what the kind supports.
pub(crate) struct Filter {
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    /// The selectors of `call`'s query.
    pub(crate) fn from_call(call: &Call) -> Result<Filter, ApiError> {
        let kind = &call.target.kind;
        let labels = match &call.query.label_selector {
            Some(text) => {
                Some(LabelSelector::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        let fields = match &call.query.field_selector {
            Some(text) => {
                let selector =
                    FieldSelector::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
                for requirement in selector.requirements() {
                    let field = &requirement.field;
                    if !field_supported(kind, field) {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {field}"
                        )));
                    }
                }
                Some(selector)
            }
            None => None,
        };
        Ok(Filter { labels, fields })
    }

    /// Whether the filter selects everything.
    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// Whether `object` is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels_match = self
            .labels
            .as_ref()
            .is_none_or(|s| s.matches(meta(object).labels()));
        labels_match
            && self
                .fields
                .as_ref()
                .is_none_or(|s| s.matches(|path| field_value(object, path)))
    }
}

fn field_supported(kind: &ResourceType, field: &str) -> bool {
    field == "metadata.name"
        || (field == "metadata.namespace")
        || kind.field_selectors.iter().any(|(label, _)| label == field)
}

/// The object as the client asked to see it.
pub(crate) fn represent(call: &Call, object: &Value) -> Value {
    match call.negotiated.representation {
        Representation::Object => object.clone(),
        Representation::PartialObjectMetadata => partial(object),
        Representation::Table => render_object_table(
            &call.target.kind,
            object,
            include_object(call),
            true,
            SystemTime::now(),
        ),
    }
}

pub(crate) fn include_object(call: &Call) -> IncludeObject {
    IncludeObject::from_query(call.query.include_object.as_deref())
        .unwrap_or(IncludeObject::Metadata)
}

fn partial(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta(object).to_value(),
    })
}

/// `GET` of one object (also `…/status`).
pub(super) async fn get(call: Call) -> Result<Response, ApiError> {
    let kind = &call.target.kind;
    let object = match call.query.resource_version.as_deref() {
        None | Some("0") => {
            call.state
                .objects
                .get(kind, call.namespace(), call.name())
                .await?
        }
        Some(version) => {
            call.state
                .objects
                .get_at(kind, call.namespace(), call.name(), version)
                .await?
        }
    };
    Ok(respond(
        StatusCode::OK,
        &represent(&call, &object),
        call.negotiated.format,
    ))
}

/// The list options of a request.
pub(crate) fn list_options(call: &Call) -> ListOptions {
    ListOptions {
        limit: call.query.limit,
        filter: None,
        continue_token: call.query.continue_token.clone(),
        resource_version: call.query.resource_version.clone(),
        resource_version_match: call
            .query
            .resource_version_match
            .unwrap_or(ResourceVersionMatch::NotOlderThan),
    }
}

/// `GET` of a collection.
pub(super) async fn list(call: Call) -> Result<Response, ApiError> {
    let kind = call.target.kind.clone();
    let filter = Filter::from_call(&call)?;
    let mut options = list_options(&call);
    if !filter.is_empty() {
        let filter = Arc::new(filter);
        options.filter = Some(ItemFilter(Arc::new(move |object| filter.matches(object))));
    }
    let page = call
        .state
        .objects
        .list(&kind, call.namespace(), &options)
        .await?;
    let items = page.items;
    let mut metadata = json!({"resourceVersion": page.resource_version});
    if let Some(token) = &page.continue_token {
        metadata["continue"] = json!(token);
        if let Some(remaining) = page.remaining_item_count {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let body = match call.negotiated.representation {
        Representation::Object => json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": items,
        }),
        Representation::PartialObjectMetadata => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
            "items": items.iter().map(partial).collect::<Vec<_>>(),
        }),
        Representation::Table => render_table(
            &kind,
            &items,
            include_object(&call),
            metadata,
            SystemTime::now(),
        ),
    };
    Ok(respond(StatusCode::OK, &body, call.negotiated.format))
}
