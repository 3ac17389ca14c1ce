//! One served kind, as data: what the generic REST path, discovery, OpenAPI and Table
//! output need to know about it. Built-in kinds are rows of `builtin.rs`; custom resources
//! get the same struct from their CustomResourceDefinition (`crd.rs`).
//!
//! What a kind does differently from the rest (a pod's graceful deletion, a namespace's
//! lifecycle, a Secret's `stringData`) is a field of its [`Behaviour`], set by its row:
//! generic code asks the kind, never compares its name.

use std::sync::Arc;

use serde_json::Value;

use super::error::FieldError;

/// One resource of one group/version.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// API version within the group, e.g. `v1`.
    pub version: String,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub resource: String,
    /// Singular name, e.g. `deployment`.
    pub singular: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// `kubectl get` short names, e.g. `deploy`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// The subresources served besides the main resource.
    pub subresources: Subresources,
    /// Columns of `kubectl get` (Table output), besides NAME (first) and AGE (appended when
    /// not listed).
    pub columns: Vec<Column>,
    /// Field selector labels this kind supports besides `metadata.name` and
    /// `metadata.namespace`, each with the object path it reads (dotted, e.g.
    /// `spec.nodeName`).
    pub field_selectors: Vec<(String, String)>,
    /// Where the object's schema comes from.
    pub schema: SchemaSource,
    /// Whether strategic merge patch is accepted (built-in kinds; never custom resources).
    pub strategic_merge: bool,
    /// Whether writes to the main resource bump `metadata.generation` on spec changes and
    /// ignore `status` (true when a `status` subresource exists).
    pub has_spec_generation: bool,
    /// What the object store and the REST path do differently for this kind.
    pub behaviour: Behaviour,
}

/// Per-kind rules of the write path (kube-apiserver's per-kind `Strategy`): every field is
/// off in [`Behaviour::DEFAULT`], which custom resources get.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    /// How names are checked.
    pub name_rule: NameRule,
    /// Fills in the defaults of a new object (only missing fields).
    pub defaults: Option<fn(&mut Value)>,
    /// Checks a written object beyond its metadata and schema, possibly completing it;
    /// returns the problems found.
    pub validate: Option<fn(&mut Value) -> Vec<FieldError>>,
    /// Fields whose total size is capped (at 1 MiB, upstream's `MaxSecretSize`).
    pub data_limit: Option<DataLimit>,
    /// Fields an update may not change (dotted paths, e.g. `spec.selector`).
    pub immutable_fields: &'static [&'static str],
    /// `immutable: true` freezes `data` and `binaryData` (and itself).
    pub freezable_data: bool,
    /// `stringData` is a write-only convenience, folded into `data` as base64.
    pub string_data: bool,
    /// An object bound to a node (`spec.nodeName`) is left to its kubelet to stop: a delete
    /// marks it with a grace period (`spec.terminationGracePeriodSeconds`, 30 s) instead
    /// of removing it.
    pub graceful_deletion: bool,
    /// A delete answers with the deleted object rather than a `Status`.
    pub return_deleted_object: bool,
    /// The kind is the namespace of NamespaceLifecycle: the object store keeps its
    /// namespace cache from writes to it, a delete marks it `Terminating`, its deletion
    /// also waits for `spec.finalizers`, and its `spec` changes only through the
    /// `finalize` subresource.
    pub namespace_lifecycle: bool,
}

impl Behaviour {
    /// No special rules: names are DNS subdomains, nothing is defaulted or frozen.
    pub const DEFAULT: Behaviour = Behaviour {
        name_rule: NameRule::Subdomain,
        defaults: None,
        validate: None,
        data_limit: None,
        immutable_fields: &[],
        freezable_data: false,
        string_data: false,
        graceful_deletion: false,
        return_deleted_object: false,
        namespace_lifecycle: false,
    };
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour::DEFAULT
    }
}

/// How a kind's names are checked (upstream's `ValidateNameFunc`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: at most 253 characters, lowercase alphanumerics, `-` and `.`.
    Subdomain,
    /// DNS-1123 label: at most 63 characters, lowercase alphanumerics and `-`.
    Label,
    /// DNS-1035 label (services): a label that starts with a letter.
    Dns1035,
    /// Path segment (RBAC): anything but `/`, `%`, `.` and `..`.
    PathSegment,
}

/// Where a kind keeps data whose total size is capped, and the field an error names.
#[derive(Debug, Clone, Copy)]
pub struct DataLimit {
    /// The maps whose values count.
    pub fields: &'static [DataField],
    /// The field named in the error (`[]` for the whole object).
    pub error_field: &'static str,
}

/// One map of a [`DataLimit`].
#[derive(Debug, Clone, Copy)]
pub struct DataField {
    /// Its name, a top-level field (`data`).
    pub name: &'static str,
    /// Whether its values are base64 and count decoded.
    pub base64: bool,
}

/// Subresources a kind serves.
#[derive(Debug, Clone, Default)]
pub struct Subresources {
    /// `<name>/status`: reads and writes only `status`.
    pub status: bool,
    /// `<name>/scale`: an `autoscaling/v1 Scale` view of the replica count.
    pub scale: Option<ScalePaths>,
    /// `pods/<name>/binding`.
    pub binding: bool,
    /// `namespaces/<name>/finalize`.
    pub finalize: bool,
}

/// Where a scalable kind keeps its replica counts (dotted object paths).
#[derive(Debug, Clone)]
pub struct ScalePaths {
    /// Desired replicas, e.g. `spec.replicas`.
    pub spec_replicas: String,
    /// Observed replicas, e.g. `status.replicas`.
    pub status_replicas: String,
    /// The label selector as a string in the Scale status, when the kind has one
    /// (e.g. `status.selector` for CRDs); built-in kinds render `spec.selector`.
    pub label_selector: Option<String>,
}

/// Where an object's OpenAPI schema comes from.
#[derive(Debug, Clone)]
pub enum SchemaSource {
    /// A built-in type: the name of its definition in the generated definitions map
    /// (`io.k8s.api.apps.v1.Deployment`).
    Definition(String),
    /// A custom resource: the `openAPIV3Schema` of its CRD version (structural, inline).
    Inline(Arc<Value>),
}

/// One Table column (`kubectl get`).
#[derive(Debug, Clone)]
pub struct Column {
    /// Header, e.g. `READY`.
    pub name: String,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub column_type: String,
    /// OpenAPI format; `name` marks the NAME column.
    pub format: String,
    /// What the column shows.
    pub description: String,
    /// 0 for `kubectl get`, 1 and more for `-o wide` only.
    pub priority: i32,
    /// How the cell is computed.
    pub value: ColumnValue,
}

/// How a Table cell is computed from an object.
#[derive(Clone)]
pub enum ColumnValue {
    /// `metadata.name`.
    Name,
    /// Time since `metadata.creationTimestamp`, as kubectl prints it (`5m`, `3d`).
    Age,
    /// A JSONPath-like simple path (`.spec.type`, `.status.conditions[?(@.type=="Ready")].status`
    /// is not supported; use `Computed`), as CRD `additionalPrinterColumns` give it.
    Path(String),
    /// Computed by code, for the columns kubectl users know (`READY 1/1`, `PORT(S)`).
    Computed(fn(&Value) -> Value),
}

impl std::fmt::Debug for ColumnValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnValue::Name => f.write_str("Name"),
            ColumnValue::Age => f.write_str("Age"),
            ColumnValue::Path(path) => write!(f, "Path({path})"),
            ColumnValue::Computed(_) => f.write_str("Computed"),
        }
    }
}

impl ResourceType {
    /// `group/version`, or `version` for the core group (the `apiVersion` of objects).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key group segment: `core` for the core group.
    pub fn storage_group(&self) -> &str {
        if self.group.is_empty() {
            crate::storage::CORE_GROUP
        } else {
            &self.group
        }
    }
}
