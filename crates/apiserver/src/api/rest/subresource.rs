//! The `scale` and `binding` subresources: other views of an object, written back into it.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use capstan_machinery::{meta, meta_mut};
use serde_json::{Value, json};

use super::Call;
use crate::api::body::{PatchType, body_format, decode_object, patch_type, read_body, respond};
use crate::api::error::ApiError;
use crate::registry::{Part, RegistryError, ScalePaths};
use capstan_machinery::selector::LabelSelector;
use capstan_patch::{json_patch, merge_patch};

fn read_path<'a>(object: &'a Value, dotted: &str) -> &'a Value {
    dotted
        .split('.')
        .fold(object, |value, segment| &value[segment])
}

fn write_path(object: &mut Value, dotted: &str, new: Value) {
    let mut target = object;
    for segment in dotted.split('.') {
        target = &mut target[segment];
    }
    *target = new;
}

/// The `autoscaling/v1 Scale` view of `object`.
fn scale_of(object: &Value, paths: &ScalePaths) -> Value {
    let selector = match &paths.label_selector {
        Some(path) => read_path(object, path).as_str().unwrap_or("").to_string(),
        None => LabelSelector::from_json(&object["spec"]["selector"])
            .map(|s| s.to_selector_string())
            .unwrap_or_default(),
    };
    let meta = meta(object);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.name(),
            "namespace": meta.namespace(),
            "uid": meta.uid(),
            "resourceVersion": meta.resource_version(),
            "creationTimestamp": meta.creation_timestamp(),
        },
        "spec": {"replicas": read_path(object, &paths.spec_replicas).as_i64().unwrap_or(0)},
        "status": {
            "replicas": read_path(object, &paths.status_replicas).as_i64().unwrap_or(0),
            "selector": selector,
        },
    })
}

fn paths(call: &Call) -> Result<ScalePaths, ApiError> {
    call.target
        .kind
        .subresources
        .scale
        .clone()
        .ok_or(ApiError::NoSuchPath)
}

/// `GET …/scale`.
pub(super) async fn get_scale(call: Call) -> Result<Response, ApiError> {
    let paths = paths(&call)?;
    let object = call
        .state
        .objects
        .get(&call.target.kind, call.namespace(), call.name())
        .await?;
    Ok(respond(
        StatusCode::OK,
        &scale_of(&object, &paths),
        call.negotiated.format,
    ))
}

async fn write_scale<F>(call: Call, mut change: F) -> Result<Response, ApiError>
where
    F: FnMut(&Value) -> Result<Value, RegistryError> + Send,
{
    let paths = paths(&call)?;
    let options = crate::registry::WriteOptions {
        dry_run: call.query.dry_run,
    };
    let updated = call
        .state
        .objects
        .update(&call.target.kind, call.namespace(), call.name(), Part::Main, &options, |current| {
            let scale = change(&scale_of(current, &paths))?;
            let replicas = scale["spec"]["replicas"].as_i64().ok_or_else(|| {
                RegistryError::BadRequest("Scale spec.replicas must be an integer".to_string())
            })?;
            if replicas < 0 {
                return Err(RegistryError::BadRequest(format!(
                    "Scale.autoscaling \"{}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0",
                    meta(current).name().unwrap_or("")
                )));
            }
            let mut next = current.clone();
            write_path(&mut next, &paths.spec_replicas, json!(replicas));
            match meta(&scale).resource_version().filter(|v| !v.is_empty()) {
                Some(version) => meta_mut(&mut next).set_resource_version(version),
                None => meta_mut(&mut next).remove_resource_version(),
            }
            Ok(next)
        })
        .await?;
    Ok(respond(
        StatusCode::OK,
        &scale_of(&updated, &paths),
        call.negotiated.format,
    ))
}

/// `PUT …/scale`.
pub(super) async fn update_scale(call: Call, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&call.headers, body).await?;
    let scale = decode_object(&bytes, body_format(&call.headers)?)?;
    write_scale(call, move |_| Ok(scale.clone())).await
}

/// `PATCH …/scale` (JSON or merge patch; strategic merge is a merge patch on a Scale).
pub(super) async fn patch_scale(call: Call, body: Body) -> Result<Response, ApiError> {
    let patch_type = patch_type(&call.headers)?;
    let bytes = read_body(&call.headers, body).await?;
    let patch: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    write_scale(call, move |scale| match patch_type {
        PatchType::Json => {
            json_patch(scale, &patch).map_err(|e| RegistryError::BadRequest(e.to_string()))
        }
        PatchType::Merge | PatchType::Strategic | PatchType::Apply => {
            Ok(merge_patch(scale, &patch))
        }
    })
    .await
}

/// `POST pods/<name>/binding`: assigns the pod to a node, once.
pub(super) async fn bind(call: Call, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&call.headers, body).await?;
    let binding = decode_object(&bytes, body_format(&call.headers)?)?;
    let node = binding["target"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("Binding target.name: Required value"))?
        .to_string();
    let options = crate::registry::WriteOptions {
        dry_run: call.query.dry_run,
    };
    let name = call.name().to_string();
    call.state
        .objects
        .update(
            &call.target.kind,
            call.namespace(),
            &name,
            Part::Main,
            &options,
            |current| {
                if current["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
                {
                    return Err(RegistryError::Conflict {
                        qualified: "pods".to_string(),
                        name: name.clone(),
                        reason: format!(
                            "pod {name} is already assigned to node \"{}\"",
                            current["spec"]["nodeName"].as_str().unwrap_or("")
                        ),
                    });
                }
                let mut next = current.clone();
                next["spec"]["nodeName"] = json!(node);
                meta_mut(&mut next).remove_resource_version();
                Ok(next)
            },
        )
        .await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(respond(
        StatusCode::CREATED,
        &status,
        call.negotiated.format,
    ))
}
