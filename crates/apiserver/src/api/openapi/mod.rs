//! OpenAPI documents: `/openapi/v3` (index and one document per group/version), and
//! `/openapi/v2` as JSON and as gnostic protobuf.
//!
//! Every document is a pure function of a [`Catalog`]. Both versions share one route model
//! ([`routes`]): the paths and operations of a kind, with the query parameters kubectl checks
//! for (it only uses server-side field validation when a kind's PATCH operations declare
//! `fieldValidation`, and dry-run when they declare `dryRun`). Building them takes a few
//! milliseconds, so [`documents`] computes them once per catalog snapshot and the HTTP layer
//! serves the cached copies.

mod gnostic;
mod routes;
mod v2;
mod v3;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;

use crate::registry::{Catalog, ResourceType, SchemaSource, definition_name};

pub(crate) use routes::{Body, Operation, QUERY_PARAMETERS, Route, route_definitions, routes};
pub use v2::{v2_document, v2_protobuf};
pub use v3::{v3_document, v3_index};

/// The `Content-Type` of a protobuf `/openapi/v2` response. Not the media type clients ask
/// for (`…spec.v2@v1.0+protobuf`): `@` is not a token character, and Go's
/// `mime.ParseMediaType` in client-go rejects a response labelled with it ("mime: unexpected
/// content after media subtype"), so upstream answers with this spelling.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether an `/openapi/v2` request's `Accept` header asks for protobuf (either spelling of
/// gnostic's media type), rather than JSON.
pub fn v2_wants_protobuf(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let media_type = range.split(';').next().unwrap_or_default().trim();
        media_type
            .eq_ignore_ascii_case("application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
            || media_type.eq_ignore_ascii_case(V2_PROTOBUF_CONTENT_TYPE)
    })
}

/// Every document of one catalog snapshot.
#[derive(Debug)]
pub struct Documents {
    /// `/openapi/v3`.
    pub v3_index: Value,
    /// `/openapi/v3/<path>` by path (`api/v1`, `apis/apps/v1`).
    pub v3: BTreeMap<String, Value>,
    /// `/openapi/v2` as JSON.
    pub v2: Value,
    /// `/openapi/v2` as gnostic protobuf.
    pub v2_protobuf: Vec<u8>,
}

/// The documents of `catalog`, built on the first call for this snapshot and cached until
/// another snapshot is asked for (the registry swaps snapshots only when CRDs change).
pub fn documents(catalog: &Arc<Catalog>) -> Arc<Documents> {
    type Cached = Option<(Weak<Catalog>, Arc<Documents>)>;
    static CACHE: Mutex<Cached> = Mutex::new(None);
    let mut cache = match CACHE.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some((weak, built)) = cache.as_ref()
        && weak.upgrade().is_some_and(|c| Arc::ptr_eq(&c, catalog))
    {
        return built.clone();
    }
    let v3 = v3::all_documents(catalog);
    let v2 = v2_document(catalog);
    let built = Arc::new(Documents {
        v3_index: v3::index_of(&v3),
        v2_protobuf: v2_protobuf(&v2),
        v3,
        v2,
    });
    *cache = Some((Arc::downgrade(catalog), built.clone()));
    built
}

/// The URL path of a group/version without the leading slash: `api/v1`, `apis/apps/v1`.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The custom-resource definitions (object and list) of `kinds`, in OpenAPI v3 form: the CRD
/// schema with `apiVersion`, `kind` and an `ObjectMeta` `metadata`, and the GVK extension.
pub(crate) fn custom_definitions(kinds: &[Arc<ResourceType>]) -> BTreeMap<String, Value> {
    use crate::registry::{V3_REF_PREFIX, group_version_kind, list_schema};
    use serde_json::json;
    let mut out = BTreeMap::new();
    for kind in kinds {
        let SchemaSource::Inline(schema) = &kind.schema else {
            continue;
        };
        let name = definition_name(kind);
        let mut schema = schema.as_ref().clone();
        if !schema.is_object() {
            schema = json!({ "type": "object" });
        }
        if !schema["properties"].is_object() {
            schema["properties"] = json!({});
        }
        schema["type"] = json!("object");
        schema["properties"]["apiVersion"] = json!({ "type": "string" });
        schema["properties"]["kind"] = json!({ "type": "string" });
        schema["properties"]["metadata"] = json!({
            "allOf": [{ "$ref": format!("{V3_REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta") }],
            "description": "Standard object's metadata.",
        });
        schema["x-kubernetes-group-version-kind"] =
            group_version_kind(&kind.group, &kind.version, &kind.kind);
        let list_kind = format!("{}List", kind.kind);
        out.insert(
            format!("{name}List"),
            list_schema(&name, &kind.group, &kind.version, &list_kind),
        );
        out.insert(name, schema);
    }
    out
}

/// A stable hash of a document, for `?hash=` in the v3 index (clients cache by URL).
pub(crate) fn document_hash(document: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in document.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtin_types;

    #[test]
    fn v2_protobuf_is_recognised_in_either_spelling() {
        assert!(v2_wants_protobuf(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
        assert!(v2_wants_protobuf(
            "application/json;q=0.9, application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        ));
        assert!(!v2_wants_protobuf("application/json, */*"));
        assert!(!V2_PROTOBUF_CONTENT_TYPE.contains('@'));
    }

    #[test]
    fn documents_are_cached_per_snapshot() {
        let catalog = Arc::new(Catalog::new(builtin_types()));
        let first = documents(&catalog);
        assert!(Arc::ptr_eq(&first, &documents(&catalog)));
        let other = Arc::new(Catalog::new(builtin_types()));
        assert!(!Arc::ptr_eq(&first, &documents(&other)));
        assert!(first.v3.contains_key("apis/apps/v1"));
        assert!(!first.v2_protobuf.is_empty());
    }
}
