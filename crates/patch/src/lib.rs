//! The patch engines: pure functions over `serde_json::Value`, below both the API layer
//! (PATCH requests, server-side apply) and the manifest deployer.
//!
//! - `json.rs`: RFC 6902 JSON patch.
//! - `merge.rs`: RFC 7386 JSON merge patch.
//! - `strategic.rs`: Kubernetes strategic merge patch, what client-side `kubectl apply`
//!   sends; list merging comes from the schema's `x-kubernetes-patch-*` extensions.
//! - `fieldset.rs`: sets of field paths and their FieldsV1 form (`metadata.managedFields`).
//! - `managed.rs`: `metadata.managedFields` entries, and their bookkeeping after ordinary
//!   writes (`record_update`).
//! - `apply.rs`: server-side apply.
//! - `budget.rs`: the size, copy, operation and step limits every engine runs under.
//! - `schema.rs`: the schema cursor all of them share; kinds are data, the engines never
//!   name a kind.

mod apply;
mod budget;
mod error;
mod fieldset;
mod json;
mod managed;
mod merge;
mod schema;
mod strategic;

pub use apply::{BEFORE_FIRST_APPLY, server_side_apply, server_side_apply_within};
pub use budget::{
    Budget, MAX_COPY_BYTES, MAX_DOCUMENT_BYTES, MAX_JSON_PATCH_OPERATIONS, MAX_STEPS, size_of,
    size_within,
};
pub use error::{ApplyError, Conflict, FieldSetError, PatchError};
pub use fieldset::{FieldPath, FieldSet, PathElement, format_path, value_at};
pub use json::{json_patch, json_patch_within};
pub use managed::{FieldManager, ObjectType, record_update};
pub use merge::{merge_patch, merge_patch_within};
pub use schema::{ListType, NoSchema, SchemaRef, TypeResolver};
pub use strategic::{strategic_merge_patch, strategic_merge_patch_within};
