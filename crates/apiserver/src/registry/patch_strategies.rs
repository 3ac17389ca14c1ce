//! Patch and list metadata of the built-in types, as upstream's swagger declares it.
//!
//! k8s-openapi's schemas carry no `x-kubernetes-patch-*` or `x-kubernetes-list-*`
//! extensions, but clients read them: `kubectl apply` (client side) computes strategic merge
//! patches from `x-kubernetes-patch-merge-key`/`x-kubernetes-patch-strategy` in the OpenAPI
//! documents, and server-side apply merges lists by `x-kubernetes-list-map-keys`. This table
//! restores them, one row per field, copied from upstream's `+patchStrategy`, `+patchMergeKey`,
//! `+listType` and `+listMapKey` markers.

/// One field's patch and list metadata.
pub struct FieldPatchMeta {
    /// Definition name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub definition: &'static str,
    /// Property name within the definition.
    pub field: &'static str,
    /// `x-kubernetes-patch-strategy` (`merge`, `retainKeys`, `merge,retainKeys`), if any.
    pub patch_strategy: Option<&'static str>,
    /// `x-kubernetes-patch-merge-key`, if any.
    pub merge_key: Option<&'static str>,
    /// `x-kubernetes-list-type` (`atomic`, `set`, `map`), if any.
    pub list_type: Option<&'static str>,
    /// `x-kubernetes-list-map-keys` (with `list_type` `map`).
    pub list_map_keys: &'static [&'static str],
}

/// A field merged by key: `merge` strategy, list type `map` on `keys` (the first is the
/// merge key).
const fn merged(
    definition: &'static str,
    field: &'static str,
    keys: &'static [&'static str],
) -> FieldPatchMeta {
    FieldPatchMeta {
        definition,
        field,
        patch_strategy: Some("merge"),
        merge_key: Some(keys[0]),
        list_type: Some("map"),
        list_map_keys: keys,
    }
}

/// A field with a patch strategy and no merge key (`retainKeys` structs, `merge` sets).
const fn strategy(
    definition: &'static str,
    field: &'static str,
    patch_strategy: &'static str,
    list_type: Option<&'static str>,
) -> FieldPatchMeta {
    FieldPatchMeta {
        definition,
        field,
        patch_strategy: Some(patch_strategy),
        merge_key: None,
        list_type,
        list_map_keys: &[],
    }
}

/// A list replaced as a whole.
const fn atomic(definition: &'static str, field: &'static str) -> FieldPatchMeta {
    FieldPatchMeta {
        definition,
        field,
        patch_strategy: None,
        merge_key: None,
        list_type: Some("atomic"),
        list_map_keys: &[],
    }
}

/// Every annotated field. Definitions are written in full so a reader can grep for them.
pub const FIELD_PATCH_META: &[FieldPatchMeta] = &[
    // ObjectMeta
    strategy(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        Some("set"),
    ),
    merged(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        &["uid"],
    ),
    atomic(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "managedFields",
    ),
    atomic(
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        "matchExpressions",
    ),
    // PodSpec
    merged("io.k8s.api.core.v1.PodSpec", "containers", &["name"]),
    merged("io.k8s.api.core.v1.PodSpec", "initContainers", &["name"]),
    merged(
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        &["name"],
    ),
    FieldPatchMeta {
        patch_strategy: Some("merge,retainKeys"),
        ..merged("io.k8s.api.core.v1.PodSpec", "volumes", &["name"])
    },
    merged("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", &["name"]),
    merged("io.k8s.api.core.v1.PodSpec", "hostAliases", &["ip"]),
    atomic("io.k8s.api.core.v1.PodSpec", "tolerations"),
    atomic("io.k8s.api.core.v1.PodSpec", "readinessGates"),
    merged(
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    FieldPatchMeta {
        patch_strategy: Some("merge,retainKeys"),
        ..merged("io.k8s.api.core.v1.PodSpec", "resourceClaims", &["name"])
    },
    merged("io.k8s.api.core.v1.PodSpec", "schedulingGates", &["name"]),
    // Container and EphemeralContainer
    merged(
        "io.k8s.api.core.v1.Container",
        "ports",
        &["containerPort", "protocol"],
    ),
    merged("io.k8s.api.core.v1.Container", "env", &["name"]),
    atomic("io.k8s.api.core.v1.Container", "envFrom"),
    merged(
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        &["mountPath"],
    ),
    merged(
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        &["devicePath"],
    ),
    atomic("io.k8s.api.core.v1.Container", "resizePolicy"),
    atomic("io.k8s.api.core.v1.Container", "command"),
    atomic("io.k8s.api.core.v1.Container", "args"),
    merged(
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        &["containerPort", "protocol"],
    ),
    merged("io.k8s.api.core.v1.EphemeralContainer", "env", &["name"]),
    atomic("io.k8s.api.core.v1.EphemeralContainer", "envFrom"),
    merged(
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        &["mountPath"],
    ),
    merged(
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        &["devicePath"],
    ),
    // Pod, node and namespace status
    merged("io.k8s.api.core.v1.PodStatus", "conditions", &["type"]),
    merged("io.k8s.api.core.v1.PodStatus", "podIPs", &["ip"]),
    merged("io.k8s.api.core.v1.PodStatus", "hostIPs", &["ip"]),
    atomic("io.k8s.api.core.v1.PodStatus", "containerStatuses"),
    atomic("io.k8s.api.core.v1.PodStatus", "initContainerStatuses"),
    merged("io.k8s.api.core.v1.NodeStatus", "conditions", &["type"]),
    merged("io.k8s.api.core.v1.NodeStatus", "addresses", &["type"]),
    strategy(
        "io.k8s.api.core.v1.NodeSpec",
        "podCIDRs",
        "merge",
        Some("set"),
    ),
    atomic("io.k8s.api.core.v1.NodeSpec", "taints"),
    merged(
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        &["type"],
    ),
    merged(
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        &["type"],
    ),
    // Services and endpoints
    merged(
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        &["port", "protocol"],
    ),
    atomic("io.k8s.api.core.v1.ServiceSpec", "clusterIPs"),
    atomic("io.k8s.api.core.v1.ServiceSpec", "externalIPs"),
    atomic("io.k8s.api.core.v1.ServiceSpec", "ipFamilies"),
    atomic("io.k8s.api.core.v1.ServiceSpec", "loadBalancerSourceRanges"),
    merged("io.k8s.api.core.v1.ServiceStatus", "conditions", &["type"]),
    atomic("io.k8s.api.core.v1.LoadBalancerStatus", "ingress"),
    atomic("io.k8s.api.core.v1.Endpoints", "subsets"),
    atomic("io.k8s.api.core.v1.EndpointSubset", "addresses"),
    atomic("io.k8s.api.core.v1.EndpointSubset", "notReadyAddresses"),
    atomic("io.k8s.api.core.v1.EndpointSubset", "ports"),
    atomic("io.k8s.api.discovery.v1.EndpointSlice", "endpoints"),
    atomic("io.k8s.api.discovery.v1.EndpointSlice", "ports"),
    merged("io.k8s.api.core.v1.ServiceAccount", "secrets", &["name"]),
    atomic("io.k8s.api.core.v1.ServiceAccount", "imagePullSecrets"),
    // Workloads
    strategy(
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    merged(
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        &["type"],
    ),
    merged(
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        &["type"],
    ),
    merged(
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        &["type"],
    ),
    merged(
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        &["type"],
    ),
    atomic("io.k8s.api.apps.v1.StatefulSetSpec", "volumeClaimTemplates"),
    FieldPatchMeta {
        list_type: Some("atomic"),
        list_map_keys: &[],
        ..merged("io.k8s.api.batch.v1.JobStatus", "conditions", &["type"])
    },
    // RBAC and CRDs
    atomic("io.k8s.api.rbac.v1.Role", "rules"),
    atomic("io.k8s.api.rbac.v1.ClusterRole", "rules"),
    atomic("io.k8s.api.rbac.v1.RoleBinding", "subjects"),
    atomic("io.k8s.api.rbac.v1.ClusterRoleBinding", "subjects"),
    merged(
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus",
        "conditions",
        &["type"],
    ),
];
