//! Where objects live in the key space.
//!
//! Objects are stored under `/registry/<group>/<resource>/<namespace>/<name>` when the
//! resource is namespaced and `/registry/<group>/<resource>/<name>` when it is cluster-scoped.
//! The legacy (empty) API group is spelled `core`, so every key has the same number of
//! segments before the resource and no group can collide with a resource name (kube-apiserver
//! omits the group for core resources; nothing outside this process reads our keys, so we
//! prefer the regular shape).
//!
//! Prefixes always end in `/`: the prefix of namespace `a` is `.../a/`, which does not match
//! namespace `ab`'s `.../ab/...` keys. Segments may not contain `/` or be empty, so a name
//! can never reach into another namespace's or resource's keys.

use super::error::{Result, StorageError};

/// The group segment used for the legacy core API group (`""` in Kubernetes).
pub const CORE_GROUP: &str = "core";

/// The root of every key the storage layer writes.
const ROOT: &str = "/registry";

/// A kind of stored resource: its group, plural resource name and scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKey {
    group: String,
    resource: String,
    namespaced: bool,
}

impl ResourceKey {
    /// A namespaced resource, e.g. `("apps", "deployments")`; `""` means the core group.
    pub fn namespaced(group: &str, resource: &str) -> Result<ResourceKey> {
        ResourceKey::new(group, resource, true)
    }

    /// A cluster-scoped resource, e.g. `("", "nodes")`; `""` means the core group.
    pub fn cluster_scoped(group: &str, resource: &str) -> Result<ResourceKey> {
        ResourceKey::new(group, resource, false)
    }

    fn new(group: &str, resource: &str, namespaced: bool) -> Result<ResourceKey> {
        let group = if group.is_empty() { CORE_GROUP } else { group };
        check_segment("group", group)?;
        check_segment("resource", resource)?;
        Ok(ResourceKey {
            group: group.to_string(),
            resource: resource.to_string(),
            namespaced,
        })
    }

    /// Whether objects of this resource live in namespaces.
    pub fn is_namespaced(&self) -> bool {
        self.namespaced
    }

    /// The key of one object. A namespaced resource needs a namespace; a cluster-scoped one
    /// must not get one.
    pub fn object(&self, namespace: Option<&str>, name: &str) -> Result<ObjectKey> {
        check_segment("name", name)?;
        let key = match (self.namespaced, namespace) {
            (true, Some(namespace)) => {
                check_segment("namespace", namespace)?;
                format!("{}{namespace}/{name}", self.all_prefix().0)
            }
            (false, None) => format!("{}{name}", self.all_prefix().0),
            (true, None) => {
                return Err(StorageError::InvalidKey {
                    what: "namespace",
                    segment: String::new(),
                    reason: "the resource is namespaced; give a namespace",
                });
            }
            (false, Some(namespace)) => {
                return Err(StorageError::InvalidKey {
                    what: "namespace",
                    segment: namespace.to_string(),
                    reason: "the resource is cluster-scoped; give no namespace",
                });
            }
        };
        Ok(ObjectKey(key))
    }

    /// The prefix of every object of this resource, in all namespaces.
    pub fn all_prefix(&self) -> KeyPrefix {
        KeyPrefix(format!("{ROOT}/{}/{}/", self.group, self.resource))
    }

    /// The prefix of this resource's objects in one namespace.
    pub fn namespace_prefix(&self, namespace: &str) -> Result<KeyPrefix> {
        if !self.namespaced {
            return Err(StorageError::InvalidKey {
                what: "namespace",
                segment: namespace.to_string(),
                reason: "the resource is cluster-scoped; list it without a namespace",
            });
        }
        check_segment("namespace", namespace)?;
        Ok(KeyPrefix(format!("{}{namespace}/", self.all_prefix().0)))
    }

    /// [`ResourceKey::namespace_prefix`] for `Some`, [`ResourceKey::all_prefix`] for `None`.
    pub fn prefix(&self, namespace: Option<&str>) -> Result<KeyPrefix> {
        match namespace {
            Some(namespace) => self.namespace_prefix(namespace),
            None => Ok(self.all_prefix()),
        }
    }
}

/// The datastore key of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A prefix for lists and watches; always ends in `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// The prefix as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Refuses segments that would change the key's shape or that the datastore cannot store.
fn check_segment(what: &'static str, segment: &str) -> Result<()> {
    let reason = if segment.is_empty() {
        "must not be empty"
    } else if segment.contains('/') {
        "must not contain '/'"
    } else if segment == "." || segment == ".." {
        "must not be '.' or '..'"
    } else if !segment.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        "must be printable ASCII without spaces"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidKey {
        what,
        segment: segment.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_and_cluster_keys_have_their_shapes() {
        let pods = ResourceKey::namespaced("", "pods").expect("valid resource");
        let key = pods.object(Some("default"), "web").expect("valid key");
        assert_eq!(key.as_str(), "/registry/core/pods/default/web");
        assert_eq!(pods.all_prefix().as_str(), "/registry/core/pods/");
        let in_ns = pods.namespace_prefix("default").expect("valid namespace");
        assert_eq!(in_ns.as_str(), "/registry/core/pods/default/");

        let nodes = ResourceKey::cluster_scoped("", "nodes").expect("valid resource");
        let node = nodes.object(None, "n1").expect("valid key");
        assert_eq!(node.as_str(), "/registry/core/nodes/n1");
        let crb = ResourceKey::cluster_scoped("rbac.authorization.k8s.io", "clusterroles");
        let crb = crb.expect("valid resource");
        assert_eq!(
            crb.all_prefix().as_str(),
            "/registry/rbac.authorization.k8s.io/clusterroles/"
        );
    }

    #[test]
    fn segments_cannot_reshape_keys() {
        let pods = ResourceKey::namespaced("", "pods").expect("valid resource");
        assert!(pods.object(Some("a/b"), "x").is_err());
        assert!(pods.object(Some("a"), "..").is_err());
        assert!(pods.object(Some("a"), "").is_err());
        assert!(pods.object(Some("a"), "has space").is_err());
        assert!(pods.object(None, "x").is_err());
        let nodes = ResourceKey::cluster_scoped("", "nodes").expect("valid resource");
        assert!(nodes.object(Some("a"), "x").is_err());
        assert!(nodes.namespace_prefix("a").is_err());
    }
}
