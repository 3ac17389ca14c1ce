//! OpenAPI v3 schemas of the built-in kinds, keyed by upstream definition name.
//!
//! The schemas come from k8s-openapi (schemars), whose `schema_name()` is already the upstream
//! name (`io.k8s.api.apps.v1.Deployment`), so references (`#/components/schemas/<name>`) match
//! what clients expect. Three things upstream's documents have and k8s-openapi's lack are
//! added here: the `…List` types, `x-kubernetes-group-version-kind` on top-level kinds, and
//! the patch/list metadata of `patch_strategies.rs`. The map is built once, on first use.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::{ListableResource, Resource};
use serde_json::{Map, Value, json};

use super::kind::{ResourceType, SchemaSource};
use super::patch_strategies::FIELD_PATCH_META;

/// Where definitions live in an OpenAPI v3 document; every `$ref` here starts with it.
pub const V3_REF_PREFIX: &str = "#/components/schemas/";

/// Every built-in definition (OpenAPI v3 form), by upstream name.
pub fn builtin_definitions() -> &'static BTreeMap<String, Value> {
    static DEFINITIONS: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    DEFINITIONS.get_or_init(generate_definitions)
}

/// The root schema of a kind: its definition (whose `$ref`s point into
/// [`builtin_definitions`]) or a custom resource's inline schema. `None` when a built-in kind
/// names a definition that does not exist (a registry bug the tests catch).
pub fn object_schema(source: &SchemaSource) -> Option<&Value> {
    match source {
        SchemaSource::Definition(name) => builtin_definitions().get(name),
        SchemaSource::Inline(schema) => Some(schema.as_ref()),
    }
}

/// The definition name of a kind: the built-in name, or for a custom resource upstream's
/// reversed-group form (`widgets.example.io/v1 Widget` is `io.example.v1.Widget`).
pub fn definition_name(resource: &ResourceType) -> String {
    match &resource.schema {
        SchemaSource::Definition(name) => name.clone(),
        SchemaSource::Inline(_) => {
            let reversed: Vec<&str> = resource.group.split('.').rev().collect();
            format!(
                "{}.{}.{}",
                reversed.join("."),
                resource.version,
                resource.kind
            )
        }
    }
}

impl ResourceType {
    /// The kind's schema as the patch engines (strategic merge, apply) need it.
    pub fn object_type(&self) -> capstan_patch::ObjectType<'_> {
        use capstan_patch::{NoSchema, ObjectType, SchemaRef};
        let schema = match &self.schema {
            SchemaSource::Definition(name) => SchemaRef::definition(builtin_definitions(), name),
            SchemaSource::Inline(schema) => SchemaRef::new(&NoSchema, schema),
        };
        let object_type = ObjectType::new(schema);
        if self.subresources.status {
            object_type.with_status_subresource()
        } else {
            object_type
        }
    }
}

/// `x-kubernetes-group-version-kind` of one kind.
pub fn group_version_kind(group: &str, version: &str, kind: &str) -> Value {
    json!([{ "group": group, "version": version, "kind": kind }])
}

/// The schema of a list of `item_definition` (`…List`, as upstream spells them).
pub fn list_schema(item_definition: &str, group: &str, version: &str, list_kind: &str) -> Value {
    let meta = format!("{V3_REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta");
    json!({
        "description": format!("{list_kind} is a list of {}.", kind_of(item_definition)),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": { "type": "string", "description": API_VERSION_DOC },
            "kind": { "type": "string", "description": KIND_DOC },
            "items": {
                "type": "array",
                "description": "List of objects.",
                "items": { "$ref": format!("{V3_REF_PREFIX}{item_definition}") },
            },
            "metadata": {
                "allOf": [{ "$ref": meta }],
                "description": "Standard list metadata.",
            },
        },
        "x-kubernetes-group-version-kind": group_version_kind(group, version, list_kind),
    })
}

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation \
of an object. Servers should convert recognized schemas to the latest internal value, and may \
reject unrecognized values.";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object \
represents. Servers may infer this from the endpoint the client submits requests to. Cannot be \
updated. In CamelCase.";

fn kind_of(definition: &str) -> &str {
    definition.rsplit('.').next().unwrap_or(definition)
}

/// Collects definitions and the kinds that get a GVK.
struct Collector {
    generator: SchemaGenerator,
    kinds: Vec<(String, Value)>,
    lists: Vec<(String, Value)>,
}

impl Collector {
    /// A top-level kind and its list.
    fn listable<T: JsonSchema + ListableResource>(&mut self) {
        self.kind::<T>();
        let item = T::schema_name().into_owned();
        let list = list_schema(&item, T::GROUP, T::VERSION, T::LIST_KIND);
        self.lists.push((format!("{item}List"), list));
    }

    /// A top-level kind without a list (Status, Scale, …).
    fn kind<T: JsonSchema + Resource>(&mut self) {
        self.generator.subschema_for::<T>();
        self.kinds.push((
            T::schema_name().into_owned(),
            group_version_kind(T::GROUP, T::VERSION, T::KIND),
        ));
    }

    /// A type without a kind of its own (DeleteOptions, WatchEvent).
    fn plain<T: JsonSchema>(&mut self) {
        self.generator.subschema_for::<T>();
    }
}

fn generate_definitions() -> BTreeMap<String, Value> {
    use k8s_openapi::api::{apps, batch, coordination, core, discovery, events, rbac, scheduling};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    use k8s_openapi::apimachinery::pkg::apis::meta;

    let mut c = Collector {
        generator: SchemaGenerator::new(SchemaSettings::openapi3()),
        kinds: Vec::new(),
        lists: Vec::new(),
    };
    // Every kind of `builtin.rs` (a test checks the two agree).
    c.listable::<core::v1::Namespace>();
    c.listable::<core::v1::Node>();
    c.listable::<core::v1::Pod>();
    c.listable::<core::v1::Service>();
    c.listable::<core::v1::Endpoints>();
    c.listable::<core::v1::ConfigMap>();
    c.listable::<core::v1::Secret>();
    c.listable::<core::v1::ServiceAccount>();
    c.listable::<core::v1::Event>();
    c.listable::<core::v1::LimitRange>();
    c.listable::<core::v1::ResourceQuota>();
    c.listable::<core::v1::PersistentVolume>();
    c.listable::<core::v1::PersistentVolumeClaim>();
    c.listable::<coordination::v1::Lease>();
    c.listable::<events::v1::Event>();
    c.listable::<discovery::v1::EndpointSlice>();
    c.listable::<apps::v1::Deployment>();
    c.listable::<apps::v1::ReplicaSet>();
    c.listable::<apps::v1::StatefulSet>();
    c.listable::<apps::v1::DaemonSet>();
    c.listable::<batch::v1::Job>();
    c.listable::<batch::v1::CronJob>();
    c.listable::<rbac::v1::Role>();
    c.listable::<rbac::v1::RoleBinding>();
    c.listable::<rbac::v1::ClusterRole>();
    c.listable::<rbac::v1::ClusterRoleBinding>();
    c.listable::<scheduling::v1::PriorityClass>();
    c.listable::<apiextensions::v1::CustomResourceDefinition>();
    // What the API itself sends and accepts.
    c.kind::<meta::v1::Status>();
    c.kind::<meta::v1::APIVersions>();
    c.kind::<meta::v1::APIGroupList>();
    c.kind::<meta::v1::APIGroup>();
    c.kind::<meta::v1::APIResourceList>();
    c.kind::<k8s_openapi::api::autoscaling::v1::Scale>();
    c.kind::<core::v1::Binding>();
    c.plain::<meta::v1::DeleteOptions>();
    c.plain::<meta::v1::WatchEvent<core::v1::Pod>>();

    let Collector {
        mut generator,
        kinds,
        lists,
    } = c;
    let mut definitions: BTreeMap<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    for (name, schema) in lists {
        definitions.insert(name, schema);
    }
    definitions.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".to_string(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the \
                Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    for (name, gvk) in kinds {
        if let Some(Value::Object(schema)) = definitions.get_mut(&name) {
            schema.insert("x-kubernetes-group-version-kind".to_string(), gvk);
        }
    }
    for (name, schema) in definitions.iter_mut() {
        if let Value::Object(schema) = schema {
            upstream_scalar_forms(name, schema);
        }
    }
    add_patch_metadata(&mut definitions);
    definitions
}

/// IntOrString and Quantity as upstream's v3 documents spell them: k8s-openapi gives only
/// `x-kubernetes-int-or-string`, which clients that look for a `type` treat as unknown.
fn upstream_scalar_forms(name: &str, schema: &mut Map<String, Value>) {
    match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            schema.insert("format".into(), json!("int-or-string"));
            schema.insert(
                "oneOf".into(),
                json!([{ "type": "integer" }, { "type": "string" }]),
            );
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            schema.insert(
                "oneOf".into(),
                json!([{ "type": "string" }, { "type": "number" }]),
            );
        }
        _ => {}
    }
}

/// Writes the rows of `FIELD_PATCH_META` onto their properties.
fn add_patch_metadata(definitions: &mut BTreeMap<String, Value>) {
    for meta in FIELD_PATCH_META {
        let Some(property) = definitions
            .get_mut(meta.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(meta.field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Some(strategy) = meta.patch_strategy {
            property.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
        if let Some(key) = meta.merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        if let Some(list_type) = meta.list_type {
            property.insert("x-kubernetes-list-type".into(), json!(list_type));
        }
        if !meta.list_map_keys.is_empty() {
            property.insert(
                "x-kubernetes-list-map-keys".into(),
                json!(meta.list_map_keys),
            );
        }
    }
}

/// Names of every definition `schema` refers to, directly.
pub fn direct_references(schema: &Value, found: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    if let Some(name) = value.as_str().and_then(|r| r.strip_prefix(V3_REF_PREFIX)) {
                        found.push(name.to_string());
                    }
                } else {
                    direct_references(value, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| direct_references(v, found)),
        _ => {}
    }
}

/// `roots` and every built-in definition they reach, transitively.
pub fn reachable_definitions(roots: &[String]) -> BTreeMap<String, Value> {
    let all = builtin_definitions();
    let mut out = BTreeMap::new();
    let mut pending: Vec<String> = roots.to_vec();
    while let Some(name) = pending.pop() {
        if out.contains_key(&name) {
            continue;
        }
        if let Some(schema) = all.get(&name) {
            direct_references(schema, &mut pending);
            out.insert(name, schema.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtin_types;

    #[test]
    fn pod_spec_containers_merge_on_name() {
        let containers =
            &builtin_definitions()["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let volumes = &builtin_definitions()["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
        assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
    }

    #[test]
    fn every_patch_row_names_a_real_field() {
        for meta in FIELD_PATCH_META {
            let property = builtin_definitions()
                .get(meta.definition)
                .and_then(|d| d["properties"].get(meta.field));
            assert!(
                property.is_some(),
                "{}.{} not found",
                meta.definition,
                meta.field
            );
        }
    }

    #[test]
    fn every_builtin_kind_resolves_with_its_list_and_gvk() {
        // Kinds with an inline schema (Capstan's own) are documented like custom resources.
        for kind in builtin_types()
            .into_iter()
            .filter(|kind| matches!(kind.schema, SchemaSource::Definition(_)))
        {
            let schema = object_schema(&kind.schema)
                .unwrap_or_else(|| panic!("no definition for {}", kind.kind));
            assert_eq!(
                schema["x-kubernetes-group-version-kind"],
                group_version_kind(&kind.group, &kind.version, &kind.kind),
                "{}",
                kind.kind
            );
            let list = format!("{}List", definition_name(&kind));
            assert!(builtin_definitions().contains_key(&list), "{list}");
        }
    }

    #[test]
    fn every_reference_resolves() {
        let mut references = Vec::new();
        for schema in builtin_definitions().values() {
            direct_references(schema, &mut references);
        }
        for name in references {
            assert!(builtin_definitions().contains_key(&name), "{name}");
        }
    }

    #[test]
    fn custom_resources_are_named_by_reversed_group() {
        let mut widget = builtin_types().remove(0);
        widget.group = "example.io".into();
        widget.version = "v1".into();
        widget.kind = "Widget".into();
        widget.schema = SchemaSource::Inline(std::sync::Arc::new(json!({"type": "object"})));
        assert_eq!(definition_name(&widget), "io.example.v1.Widget");
    }
}
