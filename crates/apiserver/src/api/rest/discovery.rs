//! Discovery and OpenAPI routes: the documents come from `api::discovery` and
//! `api::openapi`, computed from the catalog; this file picks the format.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::super::ApiState;
use super::super::body::{BodyFormat, respond};
use super::super::error::ApiError;
use super::super::path::Route;
use super::super::{discovery as documents, openapi};
use crate::registry::Catalog;

fn accept(headers: &HeaderMap) -> &str {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
}

fn with_content_type(value: &serde_json::Value, content_type: &str) -> Response {
    let mut response = respond(StatusCode::OK, value, BodyFormat::Json);
    if let Ok(content_type) = HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

/// Serves a discovery or OpenAPI route.
pub(crate) fn discovery(
    state: &ApiState,
    catalog: &std::sync::Arc<Catalog>,
    route: Route,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let json = |value: &serde_json::Value| respond(StatusCode::OK, value, BodyFormat::Json);
    match route {
        Route::LegacyRoot | Route::GroupsRoot => {
            let core = matches!(route, Route::LegacyRoot);
            match documents::negotiate(accept(headers)) {
                documents::DiscoveryFormat::Legacy => Ok(json(&if core {
                    documents::api_versions(&state.server_address)
                } else {
                    documents::api_group_list(catalog)
                })),
                aggregated => {
                    let document = documents::aggregated_as(catalog, core, aggregated);
                    Ok(with_content_type(&document, aggregated.content_type()))
                }
            }
        }
        Route::Group(group) => documents::api_group(catalog, &group)
            .map(|document| json(&document))
            .ok_or(ApiError::NoSuchPath),
        Route::GroupVersion(group, version) => {
            documents::api_resource_list(catalog, &group, &version)
                .map(|document| json(&document))
                .ok_or(ApiError::NoSuchPath)
        }
        Route::OpenApiV2 => {
            let cached = openapi::documents(catalog);
            if openapi::v2_wants_protobuf(accept(headers)) {
                Ok((
                    [(header::CONTENT_TYPE, openapi::V2_PROTOBUF_CONTENT_TYPE)],
                    cached.v2_protobuf.clone(),
                )
                    .into_response())
            } else {
                Ok(json(&cached.v2))
            }
        }
        Route::OpenApiV3Index => Ok(json(&openapi::documents(catalog).v3_index)),
        Route::OpenApiV3(path) => openapi::documents(catalog)
            .v3
            .get(&path)
            .map(json)
            .ok_or(ApiError::NoSuchPath),
        _ => Err(ApiError::NoSuchPath),
    }
}
