//! Node lifecycle: a node whose agent stopped heart-beating is marked unreachable.
//!
//! As kube-controller-manager's node lifecycle controller does: the heartbeat is the newer of
//! the node's Lease in `kube-node-lease` (`spec.renewTime`) and its Ready condition's
//! `lastHeartbeatTime`. When it is older than the grace period (`--node-monitor-grace-period`,
//! 40 s), every condition becomes `Unknown` with reason `NodeStatusUnknown` and the node gets
//! the `node.kubernetes.io/unreachable:NoSchedule` taint. When the heartbeat is fresh again and
//! the agent has posted `Ready=True`, the taint goes. Runs on the leader only, once a second
//! over every node (a list of nodes and one of leases: cheap next to the agents' heartbeats).
//! Times are wall-clock times written by the agents, so clocks must roughly agree.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use capstan_machinery::{meta, meta_mut};
use serde_json::{Value, json};

use super::ControllerError;
use capstan_apiserver::registry::{
    ObjectStore, Part, Registry, RegistryError, WriteOptions, timestamp,
};
use capstan_apiserver::storage::ListOptions;
use capstan_cluster::membership::parse_time;

/// The taint an unreachable node gets.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The namespace of node heartbeat leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often nodes are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Checks every node once a second until a read fails.
pub(super) async fn run(
    objects: ObjectStore,
    registry: Arc<Registry>,
    grace: Duration,
) -> Result<(), ControllerError> {
    loop {
        check_nodes(&objects, &registry, grace).await?;
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

async fn check_nodes(
    objects: &ObjectStore,
    registry: &Registry,
    grace: Duration,
) -> Result<(), RegistryError> {
    let catalog = registry.catalog();
    let (Some(node_kind), Some(lease_kind)) = (
        catalog.by_kind("v1", "Node"),
        catalog.by_kind("coordination.k8s.io/v1", "Lease"),
    ) else {
        return Err(RegistryError::Internal(
            "the catalog has no v1 Node or coordination.k8s.io/v1 Lease".to_string(),
        ));
    };
    let leases = objects
        .list(
            &lease_kind,
            Some(NODE_LEASE_NAMESPACE),
            &ListOptions::default(),
        )
        .await?;
    let renewed: HashMap<String, SystemTime> = leases
        .items
        .iter()
        .filter_map(|lease| {
            let name = meta(lease).name()?;
            let time = parse_time(lease["spec"]["renewTime"].as_str()?)?;
            Some((name.to_string(), time))
        })
        .collect();
    let nodes = objects
        .list(&node_kind, None, &ListOptions::default())
        .await?;
    let now = SystemTime::now();
    for node in &nodes.items {
        let Some(name) = meta(node).name() else {
            continue;
        };
        let heartbeat = last_heartbeat(node, renewed.get(name).copied());
        let stale = now.duration_since(heartbeat).is_ok_and(|age| age > grace);
        let outcome = match decide(node, stale) {
            Action::None => Ok(()),
            Action::MarkUnknown => mark_unknown(objects, &node_kind, name, now).await,
            Action::Taint => set_taint(objects, &node_kind, name, true).await,
            Action::Untaint => set_taint(objects, &node_kind, name, false).await,
        };
        match outcome {
            Ok(()) | Err(RegistryError::NotFound { .. }) | Err(RegistryError::Conflict { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The newest sign of life: the lease renewal, the Ready heartbeat, else the node's creation.
fn last_heartbeat(node: &Value, lease_renewed: Option<SystemTime>) -> SystemTime {
    let ready = ready_condition(node);
    let posted = ready
        .and_then(|ready| ready["lastHeartbeatTime"].as_str())
        .and_then(parse_time);
    let created = meta(node).creation_timestamp().and_then(parse_time);
    [lease_renewed, posted]
        .into_iter()
        .flatten()
        .max()
        .or(created)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn ready_condition(node: &Value) -> Option<&Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|condition| condition["type"] == "Ready")
}

fn has_taint(node: &Value) -> bool {
    node["spec"]["taints"]
        .as_array()
        .is_some_and(|taints| taints.iter().any(|taint| taint["key"] == UNREACHABLE_TAINT))
}

/// What one node needs.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    None,
    /// Conditions to Unknown (the taint follows on the next check).
    MarkUnknown,
    Taint,
    Untaint,
}

fn decide(node: &Value, stale: bool) -> Action {
    let ready = ready_condition(node).and_then(|ready| ready["status"].as_str());
    if stale {
        if ready != Some("Unknown") {
            Action::MarkUnknown
        } else if !has_taint(node) {
            Action::Taint
        } else {
            Action::None
        }
    } else if ready == Some("True") && has_taint(node) {
        Action::Untaint
    } else {
        Action::None
    }
}

async fn mark_unknown(
    objects: &ObjectStore,
    kind: &capstan_apiserver::registry::ResourceType,
    name: &str,
    now: SystemTime,
) -> Result<(), RegistryError> {
    let now = timestamp(now);
    objects
        .update(
            kind,
            None,
            name,
            Part::Status,
            &WriteOptions::default(),
            |current| {
                let mut next = current.clone();
                let never_posted = ready_condition(current).is_none();
                let message = if never_posted {
                    "Kubelet never posted node status."
                } else {
                    "Kubelet stopped posting node status."
                };
                let conditions = next["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let mut conditions: Vec<Value> = conditions
                    .into_iter()
                    .map(|mut condition| {
                        if condition["status"] != "Unknown" {
                            condition["status"] = json!("Unknown");
                            condition["lastTransitionTime"] = json!(now);
                        }
                        condition["reason"] = json!("NodeStatusUnknown");
                        condition["message"] = json!(message);
                        condition
                    })
                    .collect();
                if never_posted {
                    conditions.push(json!({
                        "type": "Ready",
                        "status": "Unknown",
                        "reason": "NodeStatusNeverUpdated",
                        "message": message,
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    }));
                }
                next["status"]["conditions"] = Value::Array(conditions);
                meta_mut(&mut next).remove_resource_version();
                Ok(next)
            },
        )
        .await?;
    tracing::info!(
        node = name,
        "node stopped heart-beating: marked NotReady (Unknown)"
    );
    Ok(())
}

async fn set_taint(
    objects: &ObjectStore,
    kind: &capstan_apiserver::registry::ResourceType,
    name: &str,
    present: bool,
) -> Result<(), RegistryError> {
    objects
        .update(
            kind,
            None,
            name,
            Part::Main,
            &WriteOptions::default(),
            |current| {
                let mut next = current.clone();
                let mut taints: Vec<Value> = current["spec"]["taints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|taint| taint["key"] != UNREACHABLE_TAINT)
                    .collect();
                if present {
                    taints.push(json!({"key": UNREACHABLE_TAINT, "effect": "NoSchedule"}));
                }
                if taints.is_empty() {
                    if let Some(spec) = next["spec"].as_object_mut() {
                        spec.remove("taints");
                    }
                } else {
                    next["spec"]["taints"] = Value::Array(taints);
                }
                meta_mut(&mut next).remove_resource_version();
                Ok(next)
            },
        )
        .await?;
    tracing::info!(
        node = name,
        taint = UNREACHABLE_TAINT,
        added = present,
        "node unreachable taint updated"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str, heartbeat: &str, tainted: bool) -> Value {
        let mut node = json!({
            "metadata": {"name": "n", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}
            ]},
        });
        if tainted {
            node["spec"]["taints"] = json!([{"key": UNREACHABLE_TAINT, "effect": "NoSchedule"}]);
        }
        node
    }

    #[test]
    fn a_stale_ready_node_is_marked_unknown_then_tainted() {
        assert_eq!(decide(&node("True", "", false), true), Action::MarkUnknown);
        assert_eq!(decide(&node("Unknown", "", false), true), Action::Taint);
        assert_eq!(decide(&node("Unknown", "", true), true), Action::None);
    }

    #[test]
    fn the_taint_goes_only_once_the_agent_posts_ready() {
        assert_eq!(decide(&node("Unknown", "", true), false), Action::None);
        assert_eq!(decide(&node("True", "", true), false), Action::Untaint);
        assert_eq!(decide(&node("True", "", false), false), Action::None);
    }

    #[test]
    fn the_heartbeat_is_the_newer_of_lease_and_condition() {
        let node = node("True", "2024-01-01T00:00:10Z", false);
        let condition = parse_time("2024-01-01T00:00:10Z").expect("a time");
        let lease = parse_time("2024-01-01T00:00:20.123456Z").expect("a micro time");
        assert_eq!(last_heartbeat(&node, Some(lease)), lease);
        let older = parse_time("2024-01-01T00:00:05Z").expect("a time");
        assert_eq!(last_heartbeat(&node, Some(older)), condition);
        let bare = json!({"metadata": {"creationTimestamp": "2020-01-01T00:00:00Z"}});
        assert_eq!(
            last_heartbeat(&bare, None),
            parse_time("2020-01-01T00:00:00Z").expect("a time")
        );
    }
}
