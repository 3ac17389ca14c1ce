//! Schemas as the patch engines see them: a cursor over OpenAPI v3 schema JSON.
//!
//! The engines only need a handful of facts about a point of an object: which schema its
//! fields have, and how a list merges (`x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key` for strategic merge patch, `x-kubernetes-list-type` and
//! `x-kubernetes-list-map-keys` for server-side apply). Built-in kinds come from the
//! definitions kube-apiserver publishes (a map of named schemas that refer to each other
//! with `$ref`), custom resources from an inline `openAPIV3Schema`. [`SchemaRef`] hides the
//! difference: it follows `$ref` and `allOf` through a [`TypeResolver`], and a missing
//! schema is simply a cursor that knows nothing (maps merge, lists are atomic).

use std::collections::BTreeMap;

use serde_json::Value;

/// Looks up named schemas referred to by `$ref`.
pub trait TypeResolver {
    /// The schema a reference such as `#/components/schemas/io.k8s.api.core.v1.PodSpec`
    /// points to, if known.
    fn resolve(&self, reference: &str) -> Option<&Value>;
}

/// Definitions keyed by their name (`io.k8s.api.core.v1.PodSpec`); references may use the
/// OpenAPI v3 (`#/components/schemas/`) or v2 (`#/definitions/`) prefix.
impl TypeResolver for BTreeMap<String, Value> {
    fn resolve(&self, reference: &str) -> Option<&Value> {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .or_else(|| reference.strip_prefix("#/definitions/"))
            .unwrap_or(reference);
        self.get(name)
    }
}

/// A resolver that knows no names: for inline schemas (custom resources) or no schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSchema;

impl TypeResolver for NoSchema {
    fn resolve(&self, _reference: &str) -> Option<&Value> {
        None
    }
}

static NO_SCHEMA: NoSchema = NoSchema;

/// How many `$ref`/`allOf` hops are followed before giving up (guards against cycles).
const MAX_INDIRECTIONS: usize = 16;

/// "The schema at this point of the object": a cheap, copyable cursor.
#[derive(Clone, Copy)]
pub struct SchemaRef<'a> {
    resolver: &'a dyn TypeResolver,
    node: Option<&'a Value>,
}

impl std::fmt::Debug for SchemaRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRef")
            .field("node", &self.node)
            .finish()
    }
}

/// How a list's items relate to each other for server-side apply (upstream's
/// `x-kubernetes-list-type`, derived from the patch strategy for built-in kinds that lack it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// The list is one value, owned and replaced as a whole.
    Atomic,
    /// A set of scalars, each item owned on its own (`v:` paths).
    Set,
    /// Items are objects identified by these keys (`k:` paths).
    Map(Vec<String>),
}

impl<'a> SchemaRef<'a> {
    /// A cursor at `node`, resolving references through `resolver`.
    pub fn new(resolver: &'a dyn TypeResolver, node: &'a Value) -> Self {
        SchemaRef {
            resolver,
            node: Some(node),
        }
    }

    /// A cursor at the named definition (`io.k8s.api.apps.v1.Deployment`); unknown names
    /// give a cursor that knows nothing.
    pub fn definition(resolver: &'a dyn TypeResolver, name: &str) -> Self {
        let node = resolver.resolve(&format!("#/components/schemas/{name}"));
        SchemaRef { resolver, node }
    }

    /// No schema at all: maps merge, lists are atomic and replaced.
    pub fn none() -> SchemaRef<'static> {
        SchemaRef {
            resolver: &NO_SCHEMA,
            node: None,
        }
    }

    /// Whether anything is known at this point.
    pub fn is_known(&self) -> bool {
        self.node.is_some()
    }

    fn at(&self, node: Option<&'a Value>) -> Self {
        SchemaRef {
            resolver: self.resolver,
            node,
        }
    }

    /// The node and every schema it pulls in through `$ref` and `allOf`, nearest first: an
    /// extension on the property itself wins over one on the referenced type.
    fn layers(&self) -> Vec<&'a Value> {
        let mut layers = Vec::new();
        let mut pending: Vec<&'a Value> = self.node.into_iter().collect();
        while let Some(node) = pending.pop() {
            if layers.len() >= MAX_INDIRECTIONS {
                break;
            }
            layers.push(node);
            let mut next = Vec::new();
            if let Some(reference) = node.get("$ref").and_then(Value::as_str)
                && let Some(target) = self.resolver.resolve(reference)
            {
                next.push(target);
            }
            if let Some(all_of) = node.get("allOf").and_then(Value::as_array) {
                next.extend(all_of.iter());
            }
            // `pending` is a stack: push in reverse so the first `allOf` member comes next.
            pending.extend(next.into_iter().rev());
        }
        layers
    }

    fn find(&self, key: &str) -> Option<&'a Value> {
        self.layers().into_iter().find_map(|layer| layer.get(key))
    }

    /// The schema of a declared property (`properties.<name>`).
    pub fn property(&self, name: &str) -> Self {
        let node = self
            .layers()
            .into_iter()
            .find_map(|layer| layer.get("properties").and_then(|p| p.get(name)));
        self.at(node)
    }

    /// The schema of list items (`items`).
    pub fn items(&self) -> Self {
        self.at(self.find("items").filter(|v| v.is_object()))
    }

    /// The schema of map values (`additionalProperties` when it is a schema).
    pub fn additional_properties(&self) -> Self {
        self.at(self.find("additionalProperties").filter(|v| v.is_object()))
    }

    /// The schema of the value under `name` in an object, and whether `name` is a declared
    /// property (a struct field) rather than a map entry.
    pub fn field(&self, name: &str) -> (Self, bool) {
        let property = self.property(name);
        if property.is_known() {
            (property, true)
        } else {
            (self.additional_properties(), false)
        }
    }

    /// An `x-kubernetes-*` (or any) extension value, nearest layer first.
    pub fn extension(&self, name: &str) -> Option<&'a Value> {
        self.find(name)
    }

    fn extension_str(&self, name: &str) -> Option<&'a str> {
        self.extension(name).and_then(Value::as_str)
    }

    /// The strategic-merge-patch strategies of this field (`merge`, `retainKeys`,
    /// `replace`), from `x-kubernetes-patch-strategy`.
    pub fn patch_strategies(&self) -> Vec<&'a str> {
        self.extension_str("x-kubernetes-patch-strategy")
            .map(|s| s.split(',').map(str::trim).collect())
            .unwrap_or_default()
    }

    /// Whether the patch strategy includes `strategy`.
    pub fn has_patch_strategy(&self, strategy: &str) -> bool {
        self.patch_strategies().contains(&strategy)
    }

    /// The strategic-merge-patch merge key (`x-kubernetes-patch-merge-key`).
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.extension_str("x-kubernetes-patch-merge-key")
    }

    /// How the list at this point is owned and merged by server-side apply. As upstream's
    /// schema conversion: `x-kubernetes-list-type` when present, otherwise a `merge` patch
    /// strategy makes a map-list on the merge key (or a set without one), otherwise atomic.
    pub fn list_type(&self) -> ListType {
        match self.extension_str("x-kubernetes-list-type") {
            Some("atomic") => return ListType::Atomic,
            Some("set") => return ListType::Set,
            Some("map") => {
                let keys: Vec<String> = self
                    .extension("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                return if keys.is_empty() {
                    ListType::Atomic
                } else {
                    ListType::Map(keys)
                };
            }
            _ => {}
        }
        if self.has_patch_strategy("merge") {
            return match self.patch_merge_key() {
                Some(key) => ListType::Map(vec![key.to_owned()]),
                None => ListType::Set,
            };
        }
        ListType::Atomic
    }

    /// Whether the object at this point is owned as a whole (`x-kubernetes-map-type: atomic`).
    pub fn is_atomic_map(&self) -> bool {
        self.extension_str("x-kubernetes-map-type") == Some("atomic")
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Small schemas modelled on the upstream definitions, shared by the engines' tests.

    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    fn reference(name: &str) -> Value {
        json!({ "allOf": [{ "$ref": format!("#/components/schemas/{name}") }] })
    }

    fn merge_list(item: &str, key: &str) -> Value {
        json!({
            "type": "array",
            "items": reference(item),
            "x-kubernetes-patch-strategy": "merge",
            "x-kubernetes-patch-merge-key": key,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": [key],
        })
    }

    /// Deployment, PodTemplateSpec, PodSpec, Container, ObjectMeta and friends.
    pub(crate) fn definitions() -> BTreeMap<String, Value> {
        let mut defs = BTreeMap::new();
        let mut add = |name: &str, schema: Value| {
            defs.insert(name.to_owned(), schema);
        };
        let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
        add(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            json!({"type": "object", "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": string_map,
                "annotations": string_map,
                "finalizers": {
                    "type": "array", "items": {"type": "string"},
                    "x-kubernetes-patch-strategy": "merge",
                    "x-kubernetes-list-type": "set",
                },
                "ownerReferences": merge_list(
                    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference", "uid"),
                "resourceVersion": {"type": "string"},
                "uid": {"type": "string"},
                "generation": {"type": "integer"},
                "creationTimestamp": {"type": "string"},
                "managedFields": {"type": "array", "items": {"type": "object"}},
            }}),
        );
        add(
            "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
            json!({"type": "object", "properties": {
                "uid": {"type": "string"}, "name": {"type": "string"},
                "kind": {"type": "string"}, "apiVersion": {"type": "string"},
            }, "x-kubernetes-map-type": "atomic"}),
        );
        add(
            "io.k8s.api.apps.v1.Deployment",
            json!({"type": "object", "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": reference("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                "spec": reference("io.k8s.api.apps.v1.DeploymentSpec"),
                "status": {"type": "object", "properties": {
                    "replicas": {"type": "integer"},
                }},
            }}),
        );
        add(
            "io.k8s.api.apps.v1.DeploymentSpec",
            json!({"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "selector": {"type": "object", "properties": {"matchLabels": string_map}},
                "template": reference("io.k8s.api.core.v1.PodTemplateSpec"),
                "strategy": {
                    "allOf": [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}],
                    "x-kubernetes-patch-strategy": "retainKeys",
                },
            }}),
        );
        add(
            "io.k8s.api.apps.v1.DeploymentStrategy",
            json!({"type": "object", "properties": {
                "type": {"type": "string"},
                "rollingUpdate": {"type": "object", "properties": {
                    "maxSurge": {}, "maxUnavailable": {},
                }},
            }}),
        );
        add(
            "io.k8s.api.core.v1.PodTemplateSpec",
            json!({"type": "object", "properties": {
                "metadata": reference("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                "spec": reference("io.k8s.api.core.v1.PodSpec"),
            }}),
        );
        add(
            "io.k8s.api.core.v1.PodSpec",
            json!({"type": "object", "properties": {
                "containers": merge_list("io.k8s.api.core.v1.Container", "name"),
                "volumes": {
                    "type": "array",
                    "items": reference("io.k8s.api.core.v1.Volume"),
                    "x-kubernetes-patch-strategy": "merge,retainKeys",
                    "x-kubernetes-patch-merge-key": "name",
                },
                "args": {"type": "array", "items": {"type": "string"}},
                "nodeSelector": string_map,
            }}),
        );
        add(
            "io.k8s.api.core.v1.Volume",
            json!({"type": "object", "properties": {
                "name": {"type": "string"},
                "emptyDir": {"type": "object"},
                "hostPath": {"type": "object", "properties": {"path": {"type": "string"}}},
            }}),
        );
        add(
            "io.k8s.api.core.v1.Container",
            json!({"type": "object", "properties": {
                "name": {"type": "string"},
                "image": {"type": "string"},
                "args": {"type": "array", "items": {"type": "string"}},
                "command": {"type": "array", "items": {"type": "string"},
                            "x-kubernetes-list-type": "atomic"},
                // As upstream: SMP merges on containerPort, apply keys on both.
                "ports": {
                    "type": "array",
                    "items": reference("io.k8s.api.core.v1.ContainerPort"),
                    "x-kubernetes-patch-strategy": "merge",
                    "x-kubernetes-patch-merge-key": "containerPort",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                },
                "env": merge_list("io.k8s.api.core.v1.EnvVar", "name"),
            }}),
        );
        add(
            "io.k8s.api.core.v1.ContainerPort",
            json!({"type": "object", "properties": {
                "containerPort": {"type": "integer"},
                "protocol": {"type": "string", "default": "TCP"},
                "name": {"type": "string"},
            }}),
        );
        add(
            "io.k8s.api.core.v1.EnvVar",
            json!({"type": "object", "properties": {
                "name": {"type": "string"}, "value": {"type": "string"},
            }}),
        );
        defs
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn follows_refs_and_all_of_and_reads_extensions_nearest_first() {
        let defs = fixtures::definitions();
        let deployment = SchemaRef::definition(&defs, "io.k8s.api.apps.v1.Deployment");
        let containers = deployment
            .property("spec")
            .property("template")
            .property("spec")
            .property("containers");
        assert_eq!(containers.patch_merge_key(), Some("name"));
        assert_eq!(containers.list_type(), ListType::Map(vec!["name".into()]));
        let env = containers.items().property("env");
        assert!(env.has_patch_strategy("merge"));
        let strategy = deployment.property("spec").property("strategy");
        assert!(strategy.has_patch_strategy("retainKeys"));
        assert!(strategy.property("rollingUpdate").is_known());
        let volumes = deployment
            .property("spec")
            .property("template")
            .property("spec");
        assert_eq!(
            volumes.property("volumes").patch_strategies(),
            vec!["merge", "retainKeys"]
        );
    }

    #[test]
    fn inline_schemas_and_missing_schemas() {
        let crd = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"ports": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["port", "protocol"],
                "items": {"type": "object"}}}}}});
        let schema = SchemaRef::new(&NoSchema, &crd);
        assert_eq!(
            schema.property("spec").property("ports").list_type(),
            ListType::Map(vec!["port".into(), "protocol".into()])
        );
        assert!(!SchemaRef::none().property("x").is_known());
        assert_eq!(SchemaRef::none().list_type(), ListType::Atomic);
    }

    #[test]
    fn reference_cycles_terminate() {
        let mut defs = BTreeMap::new();
        defs.insert("a".to_owned(), json!({"$ref": "#/components/schemas/a"}));
        let schema = SchemaRef::definition(&defs, "a");
        assert!(!schema.property("x").is_known());
    }
}
