//! The rows of `builtin.rs` set the rules their kinds are known for.

use super::*;

fn row(group: &str, resource: &str) -> ResourceType {
    builtin_types()
        .into_iter()
        .find(|t| t.group == group && t.resource == resource)
        .unwrap_or_else(|| panic!("{group}/{resource} is a row"))
}

#[test]
fn kinds_with_status_count_spec_generations_except_namespaces_and_nodes() {
    for kind in builtin_types() {
        let expected =
            kind.subresources.status && !matches!(kind.resource.as_str(), "namespaces" | "nodes");
        assert_eq!(kind.has_spec_generation, expected, "{}", kind.resource);
    }
}

#[test]
fn per_kind_rules_are_set_by_their_rows() {
    let pods = row("", "pods").behaviour;
    assert!(pods.graceful_deletion && pods.return_deleted_object);
    assert!(row("", "namespaces").behaviour.namespace_lifecycle);
    assert_eq!(row("", "namespaces").behaviour.name_rule, NameRule::Label);
    assert_eq!(row("", "services").behaviour.name_rule, NameRule::Dns1035);
    assert_eq!(
        row("rbac.authorization.k8s.io", "clusterroles")
            .behaviour
            .name_rule,
        NameRule::PathSegment
    );
    let secrets = row("", "secrets").behaviour;
    assert!(secrets.string_data && secrets.freezable_data && secrets.data_limit.is_some());
    assert!(row("", "configmaps").behaviour.freezable_data);
    for (group, resource) in [
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
    ] {
        assert_eq!(
            row(group, resource).behaviour.immutable_fields,
            ["spec.selector"]
        );
    }
    assert!(
        row("apiextensions.k8s.io", "customresourcedefinitions")
            .behaviour
            .validate
            .is_some()
    );
    // Everything else is an ordinary kind.
    let configmaps = row("", "configmaps").behaviour;
    assert!(!configmaps.graceful_deletion && !configmaps.namespace_lifecycle);
    assert!(!configmaps.string_data && configmaps.defaults.is_none());
}

#[test]
fn only_kinds_of_k8s_openapi_accept_strategic_merge() {
    for kind in builtin_types() {
        let inline = matches!(kind.schema, SchemaSource::Inline(_));
        assert_eq!(kind.strategic_merge, !inline, "{}", kind.resource);
    }
    assert!(!row(ADDON_GROUP, "addons").strategic_merge);
}
