//! The registry: every kind this server serves, as data.
//!
//! Built-in kinds are rows of a table (`builtin.rs`); custom resources are added and
//! removed at run time as CustomResourceDefinitions come and go. Readers take a
//! [`Catalog`] snapshot (an `Arc`), so a request sees one consistent set of kinds while the
//! CRD controller swaps in a new one.

mod builtin;
mod columns;
mod crd;
mod defaults;
mod error;
mod kind;
mod namespaces;
mod patch_strategies;
pub mod schema;
mod store;
mod structural;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

pub use builtin::{ADDON_GROUP, builtin_types};
pub use columns::{AGE_DESCRIPTION, NAME_DESCRIPTION};
pub use crd::{
    CLEANUP_FINALIZER, CRD_GROUP, CrdNames, add_cleanup_finalizer, check_crd_write, resource_types,
    storage_version, validate_crd,
};
pub use error::{FieldError, RegistryError};
pub use kind::{
    Behaviour, Column, ColumnValue, DataField, DataLimit, NameRule, ResourceType, ScalePaths,
    SchemaSource, Subresources,
};
pub use patch_strategies::{FIELD_PATCH_META, FieldPatchMeta};
pub use schema::{
    V3_REF_PREFIX, builtin_definitions, definition_name, direct_references, group_version_kind,
    list_schema, object_schema, reachable_definitions,
};
pub use store::{
    DeleteOptions, DeleteOutcome, ObjectStore, Part, Propagation, WriteOptions, has_finalizers,
    invalid, qualified_resource, timestamp,
};
pub use structural::{unknown_fields, validate_and_prune};
pub use validate::validate_write;

/// One group's versions, preferred first.
#[derive(Debug, Clone)]
pub struct GroupVersions {
    /// The group name; empty for core.
    pub group: String,
    /// Its versions, the preferred one first.
    pub versions: Vec<String>,
}

/// An immutable set of served kinds.
#[derive(Debug, Default)]
pub struct Catalog {
    types: Vec<Arc<ResourceType>>,
}

impl Catalog {
    /// A catalog of `types`, in the given order (discovery keeps it).
    pub fn new(types: Vec<ResourceType>) -> Catalog {
        Catalog {
            types: types.into_iter().map(Arc::new).collect(),
        }
    }

    /// Every served kind.
    pub fn all(&self) -> &[Arc<ResourceType>] {
        &self.types
    }

    /// The kind served at `/<group>/<version>/<resource>`.
    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.resource == resource)
            .cloned()
    }

    /// The kind with this `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .iter()
            .find(|t| t.kind == kind && t.api_version() == api_version)
            .cloned()
    }

    /// Every kind of one group/version, in table order.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceType>> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .cloned()
            .collect()
    }

    /// The served groups (core first, then in table order) with their versions.
    pub fn groups(&self) -> Vec<GroupVersions> {
        let mut order: Vec<String> = Vec::new();
        let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in &self.types {
            let entry = versions.entry(t.group.clone()).or_default();
            if entry.is_empty() {
                order.push(t.group.clone());
            }
            if !entry.contains(&t.version) {
                entry.push(t.version.clone());
            }
        }
        order
            .into_iter()
            .map(|group| {
                let mut found = versions.remove(&group).unwrap_or_default();
                found.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
                GroupVersions {
                    group,
                    versions: found,
                }
            })
            .collect()
    }
}

/// Kubernetes version priority: GA over beta over alpha, higher numbers first
/// (`v2 > v1 > v1beta2 > v1beta1 > v1alpha1`); anything else sorts last.
pub fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    let (stage, number) = if tail.is_empty() {
        return (3, major, 0);
    } else if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    match number.parse::<u32>() {
        Ok(minor) => (stage, major, minor),
        Err(_) => (0, 0, 0),
    }
}

/// The live set of served kinds, shared by every request handler.
#[derive(Debug)]
pub struct Registry {
    builtin: Vec<ResourceType>,
    current: RwLock<Arc<Catalog>>,
}

impl Registry {
    /// A registry serving the built-in kinds.
    pub fn new() -> Registry {
        let builtin = builtin_types();
        Registry {
            current: RwLock::new(Arc::new(Catalog::new(builtin.clone()))),
            builtin,
        }
    }

    /// The kinds served right now.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Serves the built-in kinds plus `custom` (the kinds of every established CRD),
    /// replacing the previous custom set. Custom kinds never shadow built-in ones.
    pub fn set_custom(&self, custom: Vec<ResourceType>) {
        let mut types = self.builtin.clone();
        for t in custom {
            let clash = types
                .iter()
                .any(|b| b.group == t.group && b.version == t.version && b.resource == t.resource);
            if !clash {
                types.push(t);
            }
        }
        let catalog = Arc::new(Catalog::new(types));
        match self.current.write() {
            Ok(mut guard) => *guard = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_as_kubernetes_prefers_them() {
        let mut versions = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2", "foo"];
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(
            versions,
            ["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn builtin_kinds_are_found_by_url_and_by_kind() {
        let registry = Registry::new();
        let catalog = registry.catalog();
        let deployments = catalog
            .lookup("apps", "v1", "deployments")
            .expect("deployments served");
        assert_eq!(deployments.kind, "Deployment");
        assert!(deployments.subresources.scale.is_some());
        assert_eq!(
            catalog.by_kind("v1", "Namespace").map(|t| t.namespaced),
            Some(false)
        );
        let groups = catalog.groups();
        assert_eq!(groups[0].group, "");
        assert!(groups.iter().any(|g| g.group == "apiextensions.k8s.io"));
    }
}
