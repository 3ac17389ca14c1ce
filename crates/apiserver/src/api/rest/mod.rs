//! The REST verbs, written once for every kind: the path names the kind (from the
//! registry), the method and subresource pick the verb (`read.rs`, `write.rs`,
//! `subresource.rs`, and `watch.rs` for the long-running one), and the object layer
//! (`registry::ObjectStore`) does the work.

mod discovery;
mod query;
mod read;
mod subresource;
mod watch;
mod write;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, Method};
use axum::response::Response;

use super::ApiState;
use super::body::{self, Negotiated};
use super::error::ApiError;
use super::path::ResourcePath;
use crate::registry::Part;

pub(super) use discovery::discovery;
pub(super) use query::Query;

/// One request to a resource path, decoded.
pub(crate) struct Call {
    pub state: Arc<ApiState>,
    pub target: ResourcePath,
    pub query: Query,
    pub headers: HeaderMap,
    pub negotiated: Negotiated,
    /// Set by the authorizer when a create is allowed for one name only.
    pub create_only: Option<super::authz::CreateOnlyNamed>,
}

impl Call {
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.target.namespace.as_deref()
    }

    pub(crate) fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }
}

/// Serves one request to a resource path.
pub(super) async fn handle(
    state: Arc<ApiState>,
    target: ResourcePath,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let query = Query::parse(parts.uri.query())?;
    let negotiated = body::negotiate(&parts.headers)?;
    let watching = target.watch_prefix || query.watch;
    let create_only = parts
        .extensions
        .get::<super::authz::CreateOnlyNamed>()
        .cloned();
    let call = Call {
        state,
        target,
        query,
        headers: parts.headers,
        negotiated,
        create_only,
    };
    let subresources = &call.target.kind.subresources;
    let named = call.target.name.is_some();
    match (&parts.method, named, call.target.subresource.as_deref()) {
        (&Method::GET, _, None) if watching => watch::serve(call).await,
        (&Method::GET, true, None) => read::get(call).await,
        (&Method::GET, false, None) => read::list(call).await,
        (&Method::POST, false, None) => write::create(call, body).await,
        (&Method::PUT, true, None) => write::update(call, body, Part::Main).await,
        (&Method::PATCH, true, None) => write::patch(call, body, Part::Main).await,
        (&Method::DELETE, true, None) => write::delete(call, body).await,
        (&Method::DELETE, false, None) => write::delete_collection(call, body).await,
        (&Method::GET, true, Some("status")) if subresources.status => read::get(call).await,
        (&Method::PUT, true, Some("status")) if subresources.status => {
            write::update(call, body, Part::Status).await
        }
        (&Method::PATCH, true, Some("status")) if subresources.status => {
            write::patch(call, body, Part::Status).await
        }
        (&Method::GET, true, Some("scale")) if subresources.scale.is_some() => {
            subresource::get_scale(call).await
        }
        (&Method::PUT, true, Some("scale")) if subresources.scale.is_some() => {
            subresource::update_scale(call, body).await
        }
        (&Method::PATCH, true, Some("scale")) if subresources.scale.is_some() => {
            subresource::patch_scale(call, body).await
        }
        (&Method::POST, true, Some("binding")) if subresources.binding => {
            subresource::bind(call, body).await
        }
        (&Method::PUT, true, Some("finalize")) if subresources.finalize => {
            write::update(call, body, Part::Finalize).await
        }
        (_, _, Some(sub))
            if !matches!(sub, "status" | "scale" | "binding" | "finalize")
                || (sub == "status" && !subresources.status)
                || (sub == "scale" && subresources.scale.is_none())
                || (sub == "binding" && !subresources.binding)
                || (sub == "finalize" && !subresources.finalize) =>
        {
            Err(ApiError::NoSuchPath)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}
