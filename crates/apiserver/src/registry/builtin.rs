//! The built-in kinds, one row each. Adding a kind is adding a row: the REST path,
//! discovery, OpenAPI and Table output read everything from here, and what the kind does
//! differently on writes is its row's `behaviour` (the hooks of `kind.rs`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::columns;
use super::crd::check_crd_write;
use super::defaults;
use super::kind::{
    Behaviour, Column, DataField, DataLimit, NameRule, ResourceType, ScalePaths, SchemaSource,
    Subresources,
};

/// The group of Capstan's `Addon` kind (auto-deployed manifests).
pub const ADDON_GROUP: &str = "addons.capstan.io";

/// One built-in kind as its row spells it; what a row leaves out is [`Kind::DEFAULT`]'s.
struct Kind {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    /// Listed by `kubectl get all` (the `all` category).
    in_all: bool,
    /// Serves `<name>/status`.
    status: bool,
    /// Serves `<name>/scale` over `spec.replicas` and `status.replicas`.
    scale: bool,
    /// Serves `pods/<name>/binding`.
    binding: bool,
    /// Serves `namespaces/<name>/finalize`.
    finalize: bool,
    /// Main-resource writes bump `metadata.generation` when the spec changes.
    spec_generation: bool,
    /// Field selectors besides `metadata.name` and `metadata.namespace` (object paths).
    field_selectors: &'static [&'static str],
    schema: Schema,
    /// The Table columns (`kubectl get`).
    columns: fn() -> Vec<Column>,
    behaviour: Behaviour,
}

/// Where a row's schema comes from.
#[derive(Clone, Copy)]
enum Schema {
    /// k8s-openapi's definition `<package>.<Kind>` (strategic merge patch accepted).
    Package(&'static str),
    /// A schema written here, validated and pruned like a custom resource's.
    Inline(fn() -> Value),
}

const CORE: Schema = Schema::Package("io.k8s.api.core.v1");
const APPS: Schema = Schema::Package("io.k8s.api.apps.v1");
const BATCH: Schema = Schema::Package("io.k8s.api.batch.v1");
const RBAC: Schema = Schema::Package("io.k8s.api.rbac.v1");

impl Kind {
    const DEFAULT: Kind = Kind {
        group: "",
        version: "v1",
        resource: "",
        kind: "",
        namespaced: false,
        short_names: &[],
        in_all: false,
        status: false,
        scale: false,
        binding: false,
        finalize: false,
        spec_generation: false,
        field_selectors: &[],
        schema: CORE,
        columns: columns::created_at,
        behaviour: Behaviour::DEFAULT,
    };
}

/// The size cap of a ConfigMap's data (the whole object is named in the error).
const CONFIG_MAP_DATA: DataLimit = DataLimit {
    fields: &[
        DataField {
            name: "data",
            base64: false,
        },
        DataField {
            name: "binaryData",
            base64: true,
        },
    ],
    error_field: "[]",
};

/// The size cap of a Secret's data (`data` decoded).
const SECRET_DATA: DataLimit = DataLimit {
    fields: &[
        DataField {
            name: "data",
            base64: true,
        },
        DataField {
            name: "stringData",
            base64: false,
        },
    ],
    error_field: "data",
};

/// Workloads: the selector picks the pods a controller owns, so it is fixed at creation.
const IMMUTABLE_SELECTOR: &[&str] = &["spec.selector"];

/// RBAC objects are named by path segments (`system:controller:...`).
const RBAC_NAMES: Behaviour = Behaviour {
    name_rule: NameRule::PathSegment,
    ..Behaviour::DEFAULT
};

const KINDS: &[Kind] = &[
    Kind {
        resource: "namespaces",
        kind: "Namespace",
        short_names: &["ns"],
        status: true,
        finalize: true,
        field_selectors: &["status.phase"],
        columns: columns::namespace,
        behaviour: Behaviour {
            name_rule: NameRule::Label,
            defaults: Some(defaults::namespace),
            namespace_lifecycle: true,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        resource: "nodes",
        kind: "Node",
        short_names: &["no"],
        status: true,
        field_selectors: &["spec.unschedulable"],
        columns: columns::node,
        ..Kind::DEFAULT
    },
    Kind {
        resource: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        in_all: true,
        status: true,
        binding: true,
        spec_generation: true,
        field_selectors: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        columns: columns::pod,
        behaviour: Behaviour {
            defaults: Some(defaults::pod),
            graceful_deletion: true,
            return_deleted_object: true,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        resource: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        in_all: true,
        status: true,
        spec_generation: true,
        columns: columns::service,
        behaviour: Behaviour {
            name_rule: NameRule::Dns1035,
            defaults: Some(defaults::service),
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        resource: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        columns: columns::endpoints,
        ..Kind::DEFAULT
    },
    Kind {
        resource: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        columns: columns::config_map,
        behaviour: Behaviour {
            data_limit: Some(CONFIG_MAP_DATA),
            freezable_data: true,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        resource: "secrets",
        kind: "Secret",
        namespaced: true,
        field_selectors: &["type"],
        columns: columns::secret,
        behaviour: Behaviour {
            defaults: Some(defaults::secret),
            data_limit: Some(SECRET_DATA),
            freezable_data: true,
            string_data: true,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        resource: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        columns: columns::service_account,
        ..Kind::DEFAULT
    },
    Kind {
        resource: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        field_selectors: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        columns: columns::event,
        ..Kind::DEFAULT
    },
    Kind {
        resource: "limitranges",
        kind: "LimitRange",
        namespaced: true,
        short_names: &["limits"],
        ..Kind::DEFAULT
    },
    Kind {
        resource: "resourcequotas",
        kind: "ResourceQuota",
        namespaced: true,
        short_names: &["quota"],
        status: true,
        spec_generation: true,
        columns: columns::resource_quota,
        ..Kind::DEFAULT
    },
    Kind {
        resource: "persistentvolumes",
        kind: "PersistentVolume",
        short_names: &["pv"],
        status: true,
        spec_generation: true,
        columns: columns::persistent_volume,
        ..Kind::DEFAULT
    },
    Kind {
        resource: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short_names: &["pvc"],
        status: true,
        spec_generation: true,
        columns: columns::persistent_volume_claim,
        ..Kind::DEFAULT
    },
    Kind {
        group: "coordination.k8s.io",
        resource: "leases",
        kind: "Lease",
        namespaced: true,
        schema: Schema::Package("io.k8s.api.coordination.v1"),
        columns: columns::lease,
        ..Kind::DEFAULT
    },
    Kind {
        group: "events.k8s.io",
        resource: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        field_selectors: &[
            "reason",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
        ],
        schema: Schema::Package("io.k8s.api.events.v1"),
        columns: columns::event,
        ..Kind::DEFAULT
    },
    Kind {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        schema: Schema::Package("io.k8s.api.discovery.v1"),
        columns: columns::endpoint_slice,
        ..Kind::DEFAULT
    },
    Kind {
        group: "apps",
        resource: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        in_all: true,
        status: true,
        scale: true,
        spec_generation: true,
        schema: APPS,
        columns: columns::deployment,
        behaviour: Behaviour {
            defaults: Some(defaults::deployment),
            immutable_fields: IMMUTABLE_SELECTOR,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        group: "apps",
        resource: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        in_all: true,
        status: true,
        scale: true,
        spec_generation: true,
        schema: APPS,
        columns: columns::replica_set,
        behaviour: Behaviour {
            defaults: Some(defaults::replicated),
            immutable_fields: IMMUTABLE_SELECTOR,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        group: "apps",
        resource: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        short_names: &["sts"],
        in_all: true,
        status: true,
        scale: true,
        spec_generation: true,
        schema: APPS,
        columns: columns::stateful_set,
        behaviour: Behaviour {
            defaults: Some(defaults::replicated),
            immutable_fields: IMMUTABLE_SELECTOR,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        group: "apps",
        resource: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        short_names: &["ds"],
        in_all: true,
        status: true,
        spec_generation: true,
        schema: APPS,
        columns: columns::daemon_set,
        behaviour: Behaviour {
            defaults: Some(defaults::daemon_set),
            immutable_fields: IMMUTABLE_SELECTOR,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        group: "batch",
        resource: "jobs",
        kind: "Job",
        namespaced: true,
        in_all: true,
        status: true,
        spec_generation: true,
        field_selectors: &["status.successful"],
        schema: BATCH,
        columns: columns::job,
        behaviour: Behaviour {
            defaults: Some(defaults::job),
            immutable_fields: IMMUTABLE_SELECTOR,
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        group: "batch",
        resource: "cronjobs",
        kind: "CronJob",
        namespaced: true,
        short_names: &["cj"],
        in_all: true,
        status: true,
        spec_generation: true,
        schema: BATCH,
        columns: columns::cron_job,
        behaviour: Behaviour {
            defaults: Some(defaults::cron_job),
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        resource: "roles",
        kind: "Role",
        namespaced: true,
        schema: RBAC,
        behaviour: RBAC_NAMES,
        ..Kind::DEFAULT
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        resource: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        schema: RBAC,
        columns: columns::role_binding,
        behaviour: RBAC_NAMES,
        ..Kind::DEFAULT
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        resource: "clusterroles",
        kind: "ClusterRole",
        schema: RBAC,
        behaviour: RBAC_NAMES,
        ..Kind::DEFAULT
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        resource: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        schema: RBAC,
        columns: columns::role_binding,
        behaviour: RBAC_NAMES,
        ..Kind::DEFAULT
    },
    Kind {
        group: "scheduling.k8s.io",
        resource: "priorityclasses",
        kind: "PriorityClass",
        short_names: &["pc"],
        schema: Schema::Package("io.k8s.api.scheduling.v1"),
        columns: columns::priority_class,
        ..Kind::DEFAULT
    },
    // Capstan's own: one per auto-deployed manifest file (`controllers/deploy`).
    Kind {
        group: ADDON_GROUP,
        resource: "addons",
        kind: "Addon",
        status: true,
        spec_generation: true,
        schema: Schema::Inline(addon_schema),
        columns: columns::addon,
        ..Kind::DEFAULT
    },
    Kind {
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        short_names: &["crd", "crds"],
        status: true,
        spec_generation: true,
        schema: Schema::Package("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1"),
        behaviour: Behaviour {
            validate: Some(check_crd_write),
            ..Behaviour::DEFAULT
        },
        ..Kind::DEFAULT
    },
];

/// Every built-in kind.
pub fn builtin_types() -> Vec<ResourceType> {
    KINDS.iter().map(resource_type).collect()
}

fn resource_type(row: &Kind) -> ResourceType {
    let scale = row.scale.then(|| ScalePaths {
        spec_replicas: "spec.replicas".to_string(),
        status_replicas: "status.replicas".to_string(),
        label_selector: None,
    });
    let (schema, strategic_merge) = match row.schema {
        Schema::Package(package) => (
            SchemaSource::Definition(format!("{package}.{}", row.kind)),
            true,
        ),
        Schema::Inline(schema) => (SchemaSource::Inline(Arc::new(schema())), false),
    };
    ResourceType {
        group: row.group.to_string(),
        version: row.version.to_string(),
        resource: row.resource.to_string(),
        singular: row.kind.to_lowercase(),
        kind: row.kind.to_string(),
        namespaced: row.namespaced,
        short_names: row.short_names.iter().map(|s| s.to_string()).collect(),
        categories: if row.in_all {
            vec!["all".to_string()]
        } else {
            Vec::new()
        },
        subresources: Subresources {
            status: row.status,
            scale,
            binding: row.binding,
            finalize: row.finalize,
        },
        columns: (row.columns)(),
        field_selectors: row
            .field_selectors
            .iter()
            .map(|field| (field.to_string(), field.to_string()))
            .collect(),
        schema,
        strategic_merge,
        has_spec_generation: row.spec_generation,
        behaviour: row.behaviour,
    }
}

/// `addons.capstan.io/v1 Addon`: one auto-deployed manifest file and what applying it did.
fn addon_schema() -> Value {
    let string = |description: &str| json!({ "type": "string", "description": description });
    json!({
        "type": "object",
        "description": "Addon records one manifest file of <data-dir>/server/manifests and the objects applied from it.",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "source": string("Path of the manifest file on the server that applied it."),
                    "checksum": string("SHA-256 of the file's content, hex."),
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "objects": {
                        "type": "array",
                        "description": "The objects applied from the file.",
                        "items": {
                            "type": "object",
                            "properties": {
                                "apiVersion": string("API version of the object."),
                                "kind": string("Kind of the object."),
                                "namespace": string("Namespace of the object; empty when cluster-scoped."),
                                "name": string("Name of the object."),
                            },
                        },
                    },
                    "appliedBy": string("Identity of the server that last applied the file."),
                    "lastApplied": string("When the file was last applied (RFC 3339)."),
                    "error": string("Why the last attempt failed; empty after a success."),
                    "conditions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "type": string("Condition type, e.g. Applied."),
                                "status": string("True, False or Unknown."),
                                "reason": string("One-word reason."),
                                "message": string("Human-readable detail."),
                                "lastTransitionTime": string("When the status last changed."),
                            },
                        },
                    },
                },
            },
        },
    })
}

#[cfg(test)]
#[path = "builtin_tests.rs"]
mod tests;
