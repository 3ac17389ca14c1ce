//! The built-in kinds, one row each. Adding a kind is adding a row: the REST path,
//! discovery, OpenAPI and Table output read everything from here.

use std::sync::Arc;

use serde_json::{Value, json};

use super::columns::builtin_columns;
use super::kind::{ResourceType, ScalePaths, SchemaSource, Subresources};

/// Scope of a kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Namespaced,
    Cluster,
}
use Scope::{Cluster, Namespaced};

/// Which subresources a row declares.
const NONE: u8 = 0;
const STATUS: u8 = 1;
const SCALE: u8 = 2;
const BINDING: u8 = 4;
const FINALIZE: u8 = 8;

/// One row: group, version, resource, singular, kind, scope, short names, categories,
/// subresources, extra field selectors, and the definition-name prefix of its schema.
struct Row {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    scope: Scope,
    short_names: &'static [&'static str],
    all: bool,
    subresources: u8,
    field_selectors: &'static [&'static str],
    definition_package: &'static str,
}

/// The group of Capstan's `Addon` kind (auto-deployed manifests).
pub const ADDON_GROUP: &str = "addons.capstan.io";

/// The definition package of kinds whose schema is written here ([`inline_schema`]), not
/// taken from k8s-openapi.
const INLINE: &str = "";

const ROWS: &[Row] = &[
    row(
        "",
        "namespaces",
        "Namespace",
        Cluster,
        &["ns"],
        false,
        STATUS | FINALIZE,
        &["status.phase"],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "nodes",
        "Node",
        Cluster,
        &["no"],
        false,
        STATUS,
        &["spec.unschedulable"],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "pods",
        "Pod",
        Namespaced,
        &["po"],
        true,
        STATUS | BINDING,
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "services",
        "Service",
        Namespaced,
        &["svc"],
        true,
        STATUS,
        &[],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "endpoints",
        "Endpoints",
        Namespaced,
        &["ep"],
        false,
        NONE,
        &[],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "configmaps",
        "ConfigMap",
        Namespaced,
        &["cm"],
        false,
        NONE,
        &[],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "secrets",
        "Secret",
        Namespaced,
        &[],
        false,
        NONE,
        &["type"],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "serviceaccounts",
        "ServiceAccount",
        Namespaced,
        &["sa"],
        false,
        NONE,
        &[],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "events",
        "Event",
        Namespaced,
        &["ev"],
        false,
        NONE,
        &[
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
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "limitranges",
        "LimitRange",
        Namespaced,
        &["limits"],
        false,
        NONE,
        &[],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "resourcequotas",
        "ResourceQuota",
        Namespaced,
        &["quota"],
        false,
        STATUS,
        &[],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "persistentvolumes",
        "PersistentVolume",
        Cluster,
        &["pv"],
        false,
        STATUS,
        &[],
        "io.k8s.api.core.v1",
    ),
    row(
        "",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        Namespaced,
        &["pvc"],
        false,
        STATUS,
        &[],
        "io.k8s.api.core.v1",
    ),
    row(
        "coordination.k8s.io",
        "leases",
        "Lease",
        Namespaced,
        &[],
        false,
        NONE,
        &[],
        "io.k8s.api.coordination.v1",
    ),
    row(
        "events.k8s.io",
        "events",
        "Event",
        Namespaced,
        &["ev"],
        false,
        NONE,
        &[
            "reason",
            "type",
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
        ],
        "io.k8s.api.events.v1",
    ),
    row(
        "discovery.k8s.io",
        "endpointslices",
        "EndpointSlice",
        Namespaced,
        &[],
        false,
        NONE,
        &[],
        "io.k8s.api.discovery.v1",
    ),
    row(
        "apps",
        "deployments",
        "Deployment",
        Namespaced,
        &["deploy"],
        true,
        STATUS | SCALE,
        &[],
        "io.k8s.api.apps.v1",
    ),
    row(
        "apps",
        "replicasets",
        "ReplicaSet",
        Namespaced,
        &["rs"],
        true,
        STATUS | SCALE,
        &[],
        "io.k8s.api.apps.v1",
    ),
    row(
        "apps",
        "statefulsets",
        "StatefulSet",
        Namespaced,
        &["sts"],
        true,
        STATUS | SCALE,
        &[],
        "io.k8s.api.apps.v1",
    ),
    row(
        "apps",
        "daemonsets",
        "DaemonSet",
        Namespaced,
        &["ds"],
        true,
        STATUS,
        &[],
        "io.k8s.api.apps.v1",
    ),
    row(
        "batch",
        "jobs",
        "Job",
        Namespaced,
        &[],
        true,
        STATUS,
        &["status.successful"],
        "io.k8s.api.batch.v1",
    ),
    row(
        "batch",
        "cronjobs",
        "CronJob",
        Namespaced,
        &["cj"],
        true,
        STATUS,
        &[],
        "io.k8s.api.batch.v1",
    ),
    row(
        "rbac.authorization.k8s.io",
        "roles",
        "Role",
        Namespaced,
        &[],
        false,
        NONE,
        &[],
        "io.k8s.api.rbac.v1",
    ),
    row(
        "rbac.authorization.k8s.io",
        "rolebindings",
        "RoleBinding",
        Namespaced,
        &[],
        false,
        NONE,
        &[],
        "io.k8s.api.rbac.v1",
    ),
    row(
        "rbac.authorization.k8s.io",
        "clusterroles",
        "ClusterRole",
        Cluster,
        &[],
        false,
        NONE,
        &[],
        "io.k8s.api.rbac.v1",
    ),
    row(
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
        "ClusterRoleBinding",
        Cluster,
        &[],
        false,
        NONE,
        &[],
        "io.k8s.api.rbac.v1",
    ),
    row(
        "scheduling.k8s.io",
        "priorityclasses",
        "PriorityClass",
        Cluster,
        &["pc"],
        false,
        NONE,
        &[],
        "io.k8s.api.scheduling.v1",
    ),
    // Capstan's own: one per auto-deployed manifest file (`controllers/deploy`).
    row(
        ADDON_GROUP,
        "addons",
        "Addon",
        Cluster,
        &[],
        false,
        STATUS,
        &[],
        INLINE,
    ),
    row(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        Cluster,
        &["crd", "crds"],
        false,
        STATUS,
        &[],
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1",
    ),
];

#[allow(clippy::too_many_arguments)] // a table row reads best as one positional call
const fn row(
    group: &'static str,
    resource: &'static str,
    kind: &'static str,
    scope: Scope,
    short_names: &'static [&'static str],
    all: bool,
    subresources: u8,
    field_selectors: &'static [&'static str],
    definition_package: &'static str,
) -> Row {
    Row {
        group,
        version: "v1",
        resource,
        kind,
        scope,
        short_names,
        all,
        subresources,
        field_selectors,
        definition_package,
    }
}

/// Every built-in kind.
pub fn builtin_types() -> Vec<ResourceType> {
    ROWS.iter().map(resource_type).collect()
}

fn resource_type(row: &Row) -> ResourceType {
    let scale = (row.subresources & SCALE != 0).then(|| ScalePaths {
        spec_replicas: "spec.replicas".to_string(),
        status_replicas: "status.replicas".to_string(),
        label_selector: None,
    });
    let status = row.subresources & STATUS != 0;
    ResourceType {
        group: row.group.to_string(),
        version: row.version.to_string(),
        resource: row.resource.to_string(),
        singular: row.kind.to_lowercase(),
        kind: row.kind.to_string(),
        namespaced: row.scope == Namespaced,
        short_names: row.short_names.iter().map(|s| s.to_string()).collect(),
        categories: if row.all {
            vec!["all".to_string()]
        } else {
            Vec::new()
        },
        subresources: Subresources {
            status,
            scale,
            binding: row.subresources & BINDING != 0,
            finalize: row.subresources & FINALIZE != 0,
        },
        columns: builtin_columns(row.group, row.kind),
        field_selectors: row
            .field_selectors
            .iter()
            .map(|field| (field.to_string(), field.to_string()))
            .collect(),
        schema: if row.definition_package == INLINE {
            SchemaSource::Inline(Arc::new(inline_schema(row.kind)))
        } else {
            SchemaSource::Definition(format!("{}.{}", row.definition_package, row.kind))
        },
        strategic_merge: row.definition_package != INLINE,
        has_spec_generation: status && row.kind != "Namespace" && row.kind != "Node",
    }
}

/// The structural schema of a kind Capstan defines itself (validated and pruned like a
/// custom resource's).
fn inline_schema(kind: &str) -> Value {
    match kind {
        "Addon" => addon_schema(),
        _ => json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
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
