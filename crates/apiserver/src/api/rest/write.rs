//! create, update, patch, delete and deletecollection: decode the body, record managed
//! fields, and let the object layer apply Kubernetes semantics.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use capstan_machinery::{meta, meta_mut};
use serde_json::{Value, json};

use super::Call;
use super::query::{FieldValidation, MAX_FIELD_MANAGER_BYTES, check_field_manager, propagation};
use super::read::{Filter, list_options, represent};
use crate::api::body::{
    PatchType, body_format, decode_object, decode_yaml, patch_type, read_body, respond,
};
use crate::api::error::ApiError;
use crate::registry::{
    DeleteOptions, DeleteOutcome, FieldError, Part, RegistryError, ResourceType, WriteOptions,
    timestamp,
};
use capstan_patch::{
    ApplyError, Budget, FieldManager, PatchError, json_patch_within, merge_patch_within,
    record_update, server_side_apply, strategic_merge_patch_within,
};

fn write_options(call: &Call) -> WriteOptions {
    WriteOptions {
        dry_run: call.query.dry_run,
    }
}

/// The field manager of a write: `fieldManager` (checked as kube-apiserver checks the
/// verb's `options_kind`), else the user agent's program name cut to the same 128 bytes.
fn field_manager(call: &Call, part: Part, options_kind: &str) -> Result<FieldManager, ApiError> {
    check_field_manager(call.query.field_manager.as_deref(), options_kind)?;
    let name = call.query.field_manager.clone().unwrap_or_else(|| {
        let agent = call
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|agent| agent.split('/').next())
            .filter(|name| !name.is_empty())
            .unwrap_or("unknown");
        let mut end = agent.len().min(MAX_FIELD_MANAGER_BYTES);
        while !agent.is_char_boundary(end) {
            end -= 1;
        }
        agent[..end].to_string()
    });
    Ok(FieldManager {
        name,
        api_version: call.target.kind.api_version(),
        time: timestamp(SystemTime::now()),
        subresource: match part {
            Part::Main => None,
            Part::Status => Some("status".to_string()),
            Part::Finalize => Some("finalize".to_string()),
        },
    })
}

/// Checks unknown fields as `fieldValidation` asks: `Strict` refuses them, `Warn` and
/// `Ignore` drop them (as kube-apiserver does for built-in kinds); returns the warnings to
/// send.
fn check_fields(call: &Call, object: &mut Value) -> Result<Vec<String>, ApiError> {
    Ok(check_unknown_fields(
        &call.target.kind,
        call.query.field_validation,
        object,
    )?)
}

/// [`check_fields`] for a kind and mode, inside an update closure.
fn check_unknown_fields(
    kind: &ResourceType,
    mode: FieldValidation,
    object: &mut Value,
) -> Result<Vec<String>, RegistryError> {
    let unknown = match mode {
        FieldValidation::Strict => crate::api::validation::unknown_fields(kind, object),
        FieldValidation::Warn | FieldValidation::Ignore => {
            crate::api::validation::prune_unknown_fields(kind, object)
        }
    };
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let listed = unknown.iter().map(|f| format!("unknown field \"{f}\""));
    match mode {
        FieldValidation::Strict => Err(RegistryError::BadRequest(format!(
            "strict decoding error: {}",
            listed.collect::<Vec<_>>().join(", ")
        ))),
        FieldValidation::Warn => Ok(listed.collect()),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

/// Kind-specific validation (custom resources against their schema, CRDs).
fn validate(call: &Call, object: &mut Value) -> Result<(), ApiError> {
    let causes = crate::registry::validate_write(&call.target.kind, object);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(crate::registry::invalid(&call.target.kind, object, causes).into())
    }
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

/// `POST` to a collection.
pub(super) async fn create(call: Call, body: Body) -> Result<Response, ApiError> {
    let format = body_format(&call.headers)?;
    let bytes = read_body(&call.headers, body).await?;
    let mut object = decode_object(&bytes, format)?;
    if let Some(limit) = &call.create_only {
        limit.check(&call.target, &object)?;
    }
    let warnings = check_fields(&call, &mut object)?;
    validate(&call, &mut object)?;
    let manager = field_manager(&call, Part::Main, "CreateOptions")?;
    let managed = record_update(None, &object, &manager, call.target.kind.object_type());
    meta_mut(&mut object).set_managed_fields(managed);
    let created = call
        .state
        .objects
        .create(
            &call.target.kind,
            call.namespace(),
            object,
            &write_options(&call),
        )
        .await?;
    let response = respond(
        StatusCode::CREATED,
        &represent(&call, &created),
        call.negotiated.format,
    );
    Ok(with_warnings(response, &warnings))
}

/// `PUT` of an object (or its status / finalize subresource).
pub(super) async fn update(call: Call, body: Body, part: Part) -> Result<Response, ApiError> {
    let format = body_format(&call.headers)?;
    let bytes = read_body(&call.headers, body).await?;
    let mut object = decode_object(&bytes, format)?;
    let warnings = check_fields(&call, &mut object)?;
    validate(&call, &mut object)?;
    let manager = field_manager(&call, part, "UpdateOptions")?;
    let kind = call.target.kind.clone();
    let updated = call
        .state
        .objects
        .update(
            &kind,
            call.namespace(),
            call.name(),
            part,
            &write_options(&call),
            |current| {
                let mut next = object.clone();
                let managed = record_update(Some(current), &next, &manager, kind.object_type());
                meta_mut(&mut next).set("managedFields", managed);
                Ok(next)
            },
        )
        .await?;
    let response = respond(
        StatusCode::OK,
        &represent(&call, &updated),
        call.negotiated.format,
    );
    Ok(with_warnings(response, &warnings))
}

fn patch_failed(error: PatchError) -> RegistryError {
    match error {
        PatchError::TooManyOperations { .. } | PatchError::TooLarge { .. } => {
            RegistryError::TooLarge(error.to_string())
        }
        PatchError::TestFailed { .. }
        | PatchError::CopyLimit { .. }
        | PatchError::TooExpensive { .. } => RegistryError::Invalid {
            kind: String::new(),
            group_suffix: String::new(),
            name: String::new(),
            causes: vec![FieldError {
                field: "patch".to_string(),
                cause: "FieldValueInvalid",
                message: error.to_string(),
            }],
        },
        other => RegistryError::BadRequest(other.to_string()),
    }
}

fn apply_failed(error: ApplyError) -> RegistryError {
    let message = error.to_string();
    match error {
        ApplyError::Conflicts(conflicts) => RegistryError::ApplyConflict {
            message,
            causes: conflicts
                .iter()
                .map(|c| FieldError {
                    field: c.field.clone(),
                    cause: "FieldManagerConflict",
                    message: format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                })
                .collect(),
        },
        ApplyError::InvalidConfiguration { .. } => RegistryError::BadRequest(message),
        ApplyError::Limit(inner) => patch_failed(inner),
    }
}

/// The object after applying `patch` of `patch_type` to `current`.
fn patched(
    kind: &ResourceType,
    current: &Value,
    patch: &Value,
    patch_type: PatchType,
    manager: &FieldManager,
    force: bool,
) -> Result<Value, RegistryError> {
    let object_type = kind.object_type();
    let mut budget = Budget::default();
    let mut next = match patch_type {
        PatchType::Json => json_patch_within(current, patch, &mut budget).map_err(patch_failed)?,
        PatchType::Merge => {
            merge_patch_within(current, patch, &mut budget).map_err(patch_failed)?
        }
        PatchType::Strategic => {
            strategic_merge_patch_within(current, patch, object_type.schema, &mut budget)
                .map_err(patch_failed)?
        }
        PatchType::Apply => {
            return server_side_apply(Some(current), patch, manager, force, object_type)
                .map_err(apply_failed);
        }
    };
    let managed = record_update(Some(current), &next, manager, object_type);
    meta_mut(&mut next).set_managed_fields(managed);
    Ok(next)
}

/// `PATCH` of an object (or its status).
pub(super) async fn patch(call: Call, body: Body, part: Part) -> Result<Response, ApiError> {
    let patch_type = patch_type(&call.headers)?;
    let kind = call.target.kind.clone();
    if patch_type == PatchType::Strategic && !kind.strategic_merge {
        return Err(ApiError::UnsupportedMediaType {
            accepted: "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".to_string(),
        });
    }
    let bytes = read_body(&call.headers, body).await?;
    let patch = match patch_type {
        PatchType::Apply => decode_yaml(&bytes)?,
        _ => serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?,
    };
    let mut manager = field_manager(&call, part, "PatchOptions")?;
    if patch_type == PatchType::Apply {
        if call.query.field_manager.is_none() {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        if !patch.is_object() {
            return Err(ApiError::bad_request(
                "the apply configuration must be an object",
            ));
        }
    } else {
        manager.name = call.query.field_manager.clone().unwrap_or(manager.name);
    }
    let force = call.query.force;
    let options = write_options(&call);
    let mut warnings = Vec::new();
    let result = call
        .state
        .objects
        .update(
            &kind,
            call.namespace(),
            call.name(),
            part,
            &options,
            |current| {
                let mut next = patched(&kind, current, &patch, patch_type, &manager, force)?;
                warnings = check_unknown_fields(&kind, call.query.field_validation, &mut next)?;
                let causes = crate::registry::validate_write(&kind, &mut next);
                if !causes.is_empty() {
                    return Err(crate::registry::invalid(&kind, &next, causes));
                }
                // The current resourceVersion came along with the object: only a version the
                // patch itself sets is a precondition.
                if meta(&next).resource_version() == meta(current).resource_version()
                    && meta(&patch)
                        .get("resourceVersion")
                        .is_none_or(Value::is_null)
                {
                    meta_mut(&mut next).remove_resource_version();
                }
                Ok(next)
            },
        )
        .await;
    let object = match result {
        Ok(object) => object,
        // Server-side apply creates what does not exist yet.
        Err(RegistryError::NotFound { .. })
            if patch_type == PatchType::Apply && part == Part::Main =>
        {
            let mut created = server_side_apply(None, &patch, &manager, force, kind.object_type())
                .map_err(apply_failed)?;
            warnings = check_fields(&call, &mut created)?;
            validate(&call, &mut created)?;
            let object = call
                .state
                .objects
                .create(&kind, call.namespace(), created, &options)
                .await?;
            let response = respond(
                StatusCode::CREATED,
                &represent(&call, &object),
                call.negotiated.format,
            );
            return Ok(with_warnings(response, &warnings));
        }
        Err(error) => return Err(error.into()),
    };
    if patch_type == PatchType::Apply {
        warnings = Vec::new();
    }
    let response = respond(
        StatusCode::OK,
        &represent(&call, &object),
        call.negotiated.format,
    );
    Ok(with_warnings(response, &warnings))
}

/// The delete options of a request: its body (a `DeleteOptions`), then the query.
async fn delete_options(call: &Call, body: Body) -> Result<DeleteOptions, ApiError> {
    let bytes = read_body(&call.headers, body).await?;
    let mut options = DeleteOptions {
        dry_run: call.query.dry_run,
        grace_period_seconds: call.query.grace_period_seconds,
        ..DeleteOptions::default()
    };
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let body = decode_object(&bytes, body_format(&call.headers)?)?;
        if let Some(policy) = body["propagationPolicy"].as_str() {
            options.propagation = propagation(policy)?;
        } else if body["orphanDependents"] == json!(true) {
            options.propagation = crate::registry::Propagation::Orphan;
        }
        options.uid = body["preconditions"]["uid"].as_str().map(str::to_string);
        options.resource_version = body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        if let Some(seconds) = body["gracePeriodSeconds"].as_i64() {
            options.grace_period_seconds = Some(seconds);
        }
        if body["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"))
        {
            options.dry_run = true;
        }
    }
    if let Some(policy) = call.query.propagation {
        options.propagation = policy;
    }
    Ok(options)
}

fn success_status(kind: &ResourceType, object: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": meta(object).name(),
            "group": kind.group,
            "kind": kind.resource,
            "uid": meta(object).uid(),
        },
    })
}

/// `DELETE` of an object.
pub(super) async fn delete(call: Call, body: Body) -> Result<Response, ApiError> {
    let options = delete_options(&call, body).await?;
    let kind = &call.target.kind;
    let outcome = call
        .state
        .objects
        .delete(kind, call.namespace(), call.name(), &options)
        .await?;
    Ok(match outcome {
        DeleteOutcome::Deleted(object) => {
            // Pods come back as the object (graceful deletion), other kinds as a Status.
            if kind.behaviour.return_deleted_object {
                respond(
                    StatusCode::OK,
                    &represent(&call, &object),
                    call.negotiated.format,
                )
            } else {
                respond(
                    StatusCode::OK,
                    &success_status(kind, &object),
                    call.negotiated.format,
                )
            }
        }
        // Waiting for finalizers or a kubelet: 200 with the object, as kube-apiserver
        // answers (202 only for the deprecated orphanDependents=false).
        DeleteOutcome::Pending(object) => respond(
            StatusCode::OK,
            &represent(&call, &object),
            call.negotiated.format,
        ),
    })
}

/// `DELETE` of a collection: every selected object, one by one.
pub(super) async fn delete_collection(call: Call, body: Body) -> Result<Response, ApiError> {
    let options = delete_options(&call, body).await?;
    let filter = Filter::from_call(&call)?;
    let kind = call.target.kind.clone();
    let mut listing = list_options(&call);
    listing.limit = 500;
    let mut deleted = Vec::new();
    loop {
        let page = call
            .state
            .objects
            .list(&kind, call.namespace(), &listing)
            .await?;
        for object in page.items.iter().filter(|o| filter.matches(o)) {
            let name = meta(object).name().unwrap_or("");
            let namespace = meta(object).namespace();
            match call
                .state
                .objects
                .delete(&kind, namespace, name, &options)
                .await
            {
                Ok(DeleteOutcome::Deleted(object) | DeleteOutcome::Pending(object)) => {
                    deleted.push(object)
                }
                Err(RegistryError::NotFound { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        match page.continue_token {
            Some(token) => {
                listing.continue_token = Some(token);
                listing.resource_version = None;
            }
            None => break,
        }
    }
    let list = json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(),
        "metadata": {},
        "items": deleted,
    });
    Ok(respond(StatusCode::OK, &list, call.negotiated.format))
}
