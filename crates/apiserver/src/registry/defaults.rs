//! Defaults the server fills in on create, as kube-apiserver's defaulting does for the
//! fields clients read back most (`kubectl describe` shows them, controllers rely on them):
//! a pod spec's restart and DNS policy, each container's pull policy and port protocol, a
//! Deployment's strategy, a Service's ports. Only missing fields are set.
//!
//! One function per kind; a kind's row in `builtin.rs` names it (`defaults: Some(..)`).

use serde_json::{Value, json};

/// Sets `object[path]` to `value` when it is missing (`null`), creating missing parents;
/// a parent that is not an object (a malformed body) is left alone.
fn default_at(object: &mut Value, path: &[&str], value: Value) {
    let mut target = object;
    for segment in path {
        if target.is_null() {
            *target = json!({});
        }
        if !target.is_object() {
            return;
        }
        target = &mut target[*segment];
    }
    if target.is_null() {
        *target = value;
    }
}

fn default_container(container: &mut Value) {
    let image = container["image"].as_str().unwrap_or("");
    let tag = image.rsplit('/').next().unwrap_or("");
    let latest = !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest"));
    let policy = if latest { "Always" } else { "IfNotPresent" };
    default_at(container, &["imagePullPolicy"], json!(policy));
    default_at(
        container,
        &["terminationMessagePath"],
        json!("/dev/termination-log"),
    );
    default_at(container, &["terminationMessagePolicy"], json!("File"));
    if let Some(ports) = container["ports"].as_array_mut() {
        for port in ports {
            default_at(port, &["protocol"], json!("TCP"));
        }
    }
}

fn default_pod_spec(spec: &mut Value, restart_policy: &str) {
    if !spec.is_object() {
        return;
    }
    default_at(spec, &["restartPolicy"], json!(restart_policy));
    default_at(spec, &["dnsPolicy"], json!("ClusterFirst"));
    default_at(spec, &["schedulerName"], json!("default-scheduler"));
    default_at(spec, &["terminationGracePeriodSeconds"], json!(30));
    default_at(spec, &["securityContext"], json!({}));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec[list].as_array_mut() {
            containers.iter_mut().for_each(default_container);
        }
    }
}

/// Defaults the pod spec at `path` (a pod's `spec`, a workload's template), when present.
fn default_pod_spec_at(object: &mut Value, path: &[&str], restart_policy: &str) {
    let spec = path
        .iter()
        .try_fold(&mut *object, |value, segment| value.get_mut(*segment));
    if let Some(spec) = spec {
        default_pod_spec(spec, restart_policy);
    }
}

/// The pod template of the workload kinds.
const TEMPLATE: &[&str] = &["spec", "template", "spec"];

/// `v1 Pod`.
pub fn pod(object: &mut Value) {
    default_pod_spec_at(object, &["spec"], "Always");
    default_at(object, &["status", "phase"], json!("Pending"));
}

/// `apps/v1 Deployment`: one replica, upstream's rolling update and history limits.
pub fn deployment(object: &mut Value) {
    default_pod_spec_at(object, TEMPLATE, "Always");
    default_at(object, &["spec", "replicas"], json!(1));
    default_at(object, &["spec", "revisionHistoryLimit"], json!(10));
    default_at(object, &["spec", "progressDeadlineSeconds"], json!(600));
    let strategy = &mut object["spec"]["strategy"];
    if strategy.as_object().is_none_or(|s| s.is_empty()) {
        *strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
    }
}

/// `apps/v1 ReplicaSet` and `StatefulSet`: one replica.
pub fn replicated(object: &mut Value) {
    default_pod_spec_at(object, TEMPLATE, "Always");
    default_at(object, &["spec", "replicas"], json!(1));
}

/// `apps/v1 DaemonSet`.
pub fn daemon_set(object: &mut Value) {
    default_pod_spec_at(object, TEMPLATE, "Always");
}

/// `batch/v1 Job`: its pods are not restarted in place.
pub fn job(object: &mut Value) {
    default_pod_spec_at(object, TEMPLATE, "Never");
}

/// `batch/v1 CronJob`: as its jobs.
pub fn cron_job(object: &mut Value) {
    default_pod_spec_at(
        object,
        &["spec", "jobTemplate", "spec", "template", "spec"],
        "Never",
    );
}

/// `v1 Namespace`: the `kubernetes` finalizer (the namespace controller empties it before
/// the namespace goes) and phase `Active`.
pub fn namespace(object: &mut Value) {
    object["spec"]["finalizers"] = json!(["kubernetes"]);
    object["status"] = json!({"phase": "Active"});
}

/// `v1 Secret`: type `Opaque`.
pub fn secret(object: &mut Value) {
    default_at(object, &["type"], json!("Opaque"));
}

/// `v1 Service`: `ClusterIP`, and each port's protocol and target port.
pub fn service(object: &mut Value) {
    default_at(object, &["spec", "type"], json!("ClusterIP"));
    default_at(object, &["spec", "sessionAffinity"], json!("None"));
    if let Some(ports) = object["spec"]["ports"].as_array_mut() {
        for port in ports {
            default_at(port, &["protocol"], json!("TCP"));
            let number = port["port"].clone();
            default_at(port, &["targetPort"], number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn a_deployment_gets_the_defaults_describe_shows() {
        let kind = Registry::new()
            .catalog()
            .lookup("apps", "v1", "deployments")
            .expect("served");
        let mut object = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
            {"name": "tool", "image": "busybox"},
        ]}}, "strategy": {}}});
        let defaults = kind.behaviour.defaults.expect("the kind has defaults");
        defaults(&mut object);
        let containers = &object["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["ports"][0]["protocol"], "TCP");
        assert_eq!(containers[0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(containers[1]["imagePullPolicy"], "Always");
        assert_eq!(
            object["spec"]["template"]["spec"]["restartPolicy"],
            "Always"
        );
        assert_eq!(object["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(object["spec"]["replicas"], 1);
    }

    #[test]
    fn given_values_are_kept() {
        let kind = Registry::new()
            .catalog()
            .lookup("", "v1", "services")
            .expect("served");
        let mut object = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080, "protocol": "UDP"}]}});
        let defaults = kind.behaviour.defaults.expect("the kind has defaults");
        defaults(&mut object);
        assert_eq!(object["spec"]["type"], "NodePort");
        assert_eq!(
            object["spec"]["ports"][0],
            json!({"port": 80, "targetPort": 8080, "protocol": "UDP"})
        );
    }
}
