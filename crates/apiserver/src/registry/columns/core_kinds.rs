//! Columns of namespaces, nodes, config and identity kinds, quotas, leases and role bindings,
//! following kube-apiserver's `printNode`, `printSecret`, `printRoleBinding`...

use capstan_machinery::meta;
use serde_json::{Value, json};

use super::{age, cell, computed, count, list, or, text};
use crate::registry::kind::Column;

pub(crate) fn namespace() -> Vec<Column> {
    vec![computed(
        "Status",
        "string",
        0,
        "The status of the namespace",
        |n| cell(text(n, "/status/phase")),
    )]
}

pub(crate) fn node() -> Vec<Column> {
    let info = |name: &str, description: &str, value: fn(&Value) -> Value| {
        computed(name, "string", 1, description, value)
    };
    vec![
        computed("Status", "string", 0, "The status of the node", node_status),
        computed("Roles", "string", 0, "The roles of the node", node_roles),
        age(),
        computed(
            "Version",
            "string",
            0,
            "Kubelet Version reported by the node.",
            |n| cell(text(n, "/status/nodeInfo/kubeletVersion")),
        ),
        info(
            "Internal-IP",
            "List of addresses reachable to the node.",
            |n| node_address(n, "InternalIP"),
        ),
        info(
            "External-IP",
            "List of addresses reachable to the node.",
            |n| node_address(n, "ExternalIP"),
        ),
        info("OS-Image", "OS Image reported by the node.", |n| {
            or(text(n, "/status/nodeInfo/osImage"), "<unknown>")
        }),
        info(
            "Kernel-Version",
            "Kernel Version reported by the node.",
            |n| or(text(n, "/status/nodeInfo/kernelVersion"), "<unknown>"),
        ),
        info(
            "Container-Runtime",
            "ContainerRuntime Version reported by the node.",
            |n| {
                or(
                    text(n, "/status/nodeInfo/containerRuntimeVersion"),
                    "<unknown>",
                )
            },
        ),
    ]
}

/// `Ready`, `NotReady` or `Unknown` from the Ready condition, `,SchedulingDisabled` when
/// cordoned.
fn node_status(node: &Value) -> Value {
    let ready = list(node, "/status/conditions")
        .iter()
        .rfind(|c| text(c, "/type") == "Ready");
    let mut status = match ready {
        Some(c) if text(c, "/status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    cell(status)
}

/// Roles from `node-role.kubernetes.io/<role>` labels and the `kubernetes.io/role` label,
/// sorted, `<none>` without any.
fn node_roles(node: &Value) -> Value {
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = meta(node).labels() {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if key == "kubernetes.io/role"
                && let Some(role) = value.as_str().filter(|r| !r.is_empty())
            {
                roles.push(role.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    or(&roles.join(","), "<none>")
}

fn node_address(node: &Value, kind: &str) -> Value {
    let address = list(node, "/status/addresses")
        .iter()
        .find(|a| text(a, "/type") == kind)
        .map_or("", |a| text(a, "/address"));
    or(address, "<none>")
}

pub(crate) fn config_map() -> Vec<Column> {
    vec![computed(
        "Data",
        "string",
        0,
        "Data contains the configuration data.",
        |c| json!(count(c, "/data") + count(c, "/binaryData")),
    )]
}

pub(crate) fn secret() -> Vec<Column> {
    vec![
        computed(
            "Type",
            "string",
            0,
            "Used to facilitate programmatic handling of secret data.",
            |s| cell(text(s, "/type")),
        ),
        computed("Data", "string", 0, "Data contains the secret data.", |s| {
            json!(count(s, "/data") + count(s, "/stringData"))
        }),
    ]
}

pub(crate) fn service_account() -> Vec<Column> {
    vec![computed(
        "Secrets",
        "string",
        0,
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        |s| json!(list(s, "/secrets").len()),
    )]
}

pub(crate) fn resource_quota() -> Vec<Column> {
    vec![
        age(),
        computed(
            "Request",
            "string",
            0,
            "Request represents a minimum amount of cpu/memory that a container may consume.",
            |q| quota_usage(q, false),
        ),
        computed(
            "Limit",
            "string",
            0,
            "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
            |q| quota_usage(q, true),
        ),
    ]
}

/// `pods: 1/10, requests.cpu: 100m/1`: used over hard for each resource, `limits.*` in the
/// LIMIT column and everything else in REQUEST.
fn quota_usage(quota: &Value, limits: bool) -> Value {
    let Some(hard) = quota.pointer("/status/hard").and_then(Value::as_object) else {
        return cell("");
    };
    let mut names: Vec<&String> = hard.keys().collect();
    names.sort();
    let parts: Vec<String> = names
        .into_iter()
        .filter(|name| name.starts_with("limits.") == limits)
        .map(|name| {
            let used = quota
                .pointer(&format!(
                    "/status/used/{}",
                    name.replace('~', "~0").replace('/', "~1")
                ))
                .and_then(Value::as_str)
                .unwrap_or("0");
            format!(
                "{name}: {used}/{}",
                hard[name.as_str()].as_str().unwrap_or("0")
            )
        })
        .collect();
    cell(parts.join(", "))
}

pub(crate) fn lease() -> Vec<Column> {
    vec![computed(
        "Holder",
        "string",
        0,
        "holderIdentity contains the identity of the holder of a current lease.",
        |l| cell(text(l, "/spec/holderIdentity")),
    )]
}

pub(crate) fn role_binding() -> Vec<Column> {
    vec![
        computed(
            "Role",
            "string",
            0,
            "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
            |b| {
                cell(format!(
                    "{}/{}",
                    text(b, "/roleRef/kind"),
                    text(b, "/roleRef/name")
                ))
            },
        ),
        age(),
        computed("Users", "string", 1, "Users in the roleBinding", |b| {
            binding_subjects(b, "User")
        }),
        computed("Groups", "string", 1, "Groups in the roleBinding", |b| {
            binding_subjects(b, "Group")
        }),
        computed(
            "ServiceAccounts",
            "string",
            1,
            "ServiceAccounts in the roleBinding",
            |b| binding_subjects(b, "ServiceAccount"),
        ),
    ]
}

/// The subjects of one kind, `namespace:name` for service accounts, comma-separated.
fn binding_subjects(binding: &Value, kind: &str) -> Value {
    let names: Vec<String> = list(binding, "/subjects")
        .iter()
        .filter(|s| text(s, "/kind") == kind)
        .map(|s| match kind {
            "ServiceAccount" => format!("{}:{}", text(s, "/namespace"), text(s, "/name")),
            _ => text(s, "/name").to_string(),
        })
        .collect();
    cell(names.join(", "))
}

/// `printPriorityClass`: VALUE, GLOBAL-DEFAULT, AGE, PREEMPTIONPOLICY.
pub(crate) fn priority_class() -> Vec<Column> {
    vec![
        computed(
            "Value",
            "integer",
            0,
            "The value of this priority class.",
            |p| json!(super::int(p, "/value")),
        ),
        computed(
            "Global-Default",
            "boolean",
            0,
            "Whether this priority class is the default one.",
            |p| {
                json!(
                    p.pointer("/globalDefault")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                )
            },
        ),
        age(),
        computed(
            "PreemptionPolicy",
            "string",
            0,
            "The policy for preempting pods with lower priority.",
            |p| or(text(p, "/preemptionPolicy"), "PreemptLowerPriority"),
        ),
    ]
}

/// Capstan's `Addon`: the manifest file and its checksum, as K3s shows them.
pub(crate) fn addon() -> Vec<Column> {
    vec![
        computed("Source", "string", 0, "The manifest file.", |a| {
            cell(text(a, "/spec/source"))
        }),
        computed("Checksum", "string", 0, "SHA-256 of the file.", |a| {
            cell(text(a, "/spec/checksum"))
        }),
        computed("Error", "string", 1, "Why the last apply failed.", |a| {
            cell(text(a, "/status/error"))
        }),
    ]
}
