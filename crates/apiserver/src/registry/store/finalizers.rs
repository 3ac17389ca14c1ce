//! What holds a deletion back: finalizers (`metadata.finalizers`, the propagation policy's
//! `orphan` and `foregroundDeletion`, a namespace's `spec.finalizers`) and the grace period
//! a bound pod gets from its kubelet. A delete that meets either only marks the object
//! (`deletionTimestamp`); whoever removes the last finalizer, or the kubelet, completes it.

use std::time::{Duration, SystemTime};

use capstan_machinery::{meta, meta_mut};
use serde_json::{Value, json};

use super::{DeleteOptions, Propagation, timestamp};
use crate::registry::kind::ResourceType;

/// Whether anything still holds `object` of `kind` back from deletion.
pub fn has_finalizers(kind: &ResourceType, object: &Value) -> bool {
    let listed = |value: &Value| value.as_array().is_some_and(|list| !list.is_empty());
    meta(object).has_finalizers()
        || (kind.behaviour.namespace_lifecycle && listed(&object["spec"]["finalizers"]))
}

/// The finalizer a propagation policy holds the deleted object with, if any.
fn propagation_finalizer(propagation: Propagation) -> Option<&'static str> {
    match propagation {
        Propagation::Orphan => Some("orphan"),
        Propagation::Foreground => Some("foregroundDeletion"),
        Propagation::Background => None,
    }
}

/// `current` marked for deletion as `options` ask, or `None` when nothing holds it back
/// and it can go at once. A mark that is already there keeps its timestamp; a namespace
/// also turns `Terminating`.
pub(super) fn mark_for_deletion(
    kind: &ResourceType,
    current: &Value,
    options: &DeleteOptions,
) -> Option<Value> {
    let mut marked = current.clone();
    if let Some(finalizer) = propagation_finalizer(options.propagation) {
        meta_mut(&mut marked).add_finalizer(finalizer);
    }
    let grace = graceful_deletion(kind, current, options.grace_period_seconds);
    if !has_finalizers(kind, &marked) && grace.is_none() {
        return None;
    }
    if !meta(&marked).is_deleting() {
        let seconds = grace.unwrap_or(0);
        let at = SystemTime::now() + Duration::from_secs(seconds.unsigned_abs());
        meta_mut(&mut marked).set_deletion(timestamp(at), seconds);
    }
    if kind.behaviour.namespace_lifecycle {
        marked["status"]["phase"] = json!("Terminating");
    }
    Some(marked)
}

/// The grace period of deleting `current`, when it gets one: for a kind with graceful
/// deletion, an object bound to a node is left to its kubelet to stop (30 s unless the
/// object or the request says otherwise); an unbound one, and any other object, goes at
/// once.
fn graceful_deletion(kind: &ResourceType, current: &Value, requested: Option<i64>) -> Option<i64> {
    let bound = current["spec"]["nodeName"]
        .as_str()
        .is_some_and(|node| !node.is_empty());
    if !(kind.behaviour.graceful_deletion && bound) {
        return None;
    }
    let seconds = requested
        .or_else(|| current["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    (seconds > 0).then_some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn kind(resource: &str) -> std::sync::Arc<ResourceType> {
        Registry::new()
            .catalog()
            .lookup("", "v1", resource)
            .expect("served")
    }

    #[test]
    fn a_bound_pod_waits_for_its_kubelet_and_an_unbound_one_goes_at_once() {
        let pods = kind("pods");
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1",
            "terminationGracePeriodSeconds": 5}});
        let marked = mark_for_deletion(&pods, &bound, &DeleteOptions::default()).expect("held");
        assert_eq!(meta(&marked).deletion_grace_period_seconds(), Some(5));
        let unbound = json!({"metadata": {"name": "p"}, "spec": {}});
        assert!(mark_for_deletion(&pods, &unbound, &DeleteOptions::default()).is_none());
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        assert!(mark_for_deletion(&pods, &bound, &now).is_none());
    }

    #[test]
    fn other_kinds_bound_to_a_node_go_at_once() {
        let config = json!({"metadata": {"name": "c"}, "spec": {"nodeName": "n1"}});
        assert!(
            mark_for_deletion(&kind("configmaps"), &config, &DeleteOptions::default()).is_none()
        );
    }

    #[test]
    fn a_namespace_waits_for_its_spec_finalizers_and_turns_terminating() {
        let namespaces = kind("namespaces");
        let namespace = json!({"metadata": {"name": "ns"}, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"}});
        assert!(has_finalizers(&namespaces, &namespace));
        assert!(!has_finalizers(&kind("configmaps"), &namespace));
        let marked = mark_for_deletion(&namespaces, &namespace, &DeleteOptions::default())
            .expect("held by spec.finalizers");
        assert_eq!(marked["status"]["phase"], "Terminating");
        assert!(meta(&marked).is_deleting());
    }

    #[test]
    fn orphan_and_foreground_deletes_hold_the_object_with_their_finalizer() {
        let object = json!({"metadata": {"name": "c"}});
        for (propagation, finalizer) in [
            (Propagation::Orphan, "orphan"),
            (Propagation::Foreground, "foregroundDeletion"),
        ] {
            let options = DeleteOptions {
                propagation,
                ..DeleteOptions::default()
            };
            let marked = mark_for_deletion(&kind("configmaps"), &object, &options).expect("held");
            assert!(meta(&marked).has_finalizer(finalizer));
        }
    }
}
