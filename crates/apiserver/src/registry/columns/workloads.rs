//! Columns of pods and the workload controllers (Deployment, ReplicaSet, StatefulSet,
//! DaemonSet, Job, CronJob), following kube-apiserver's `printPod`, `printDeployment`...

use std::time::SystemTime;

use serde_json::{Value, json};

use super::{
    age, cell, computed, format_label_selector, format_labels, int, list, or, since, text,
};
use crate::registry::kind::Column;
use capstan_machinery::meta;
use capstan_machinery::time::{human_duration, human_duration_between, parse_timestamp};

const CONTAINERS: &str = "Names of each container in the template.";
const IMAGES: &str = "Images referenced by each container in the template.";
const SELECTOR: &str = "A label query over pods that should match the replica count.";

pub(crate) fn pod() -> Vec<Column> {
    vec![
        computed(
            "Ready",
            "string",
            0,
            "The aggregate readiness state of this pod for accepting traffic.",
            |p| {
                let state = pod_state(p);
                cell(format!("{}/{}", state.ready, state.total))
            },
        ),
        computed(
            "Status",
            "string",
            0,
            "The aggregate status of the containers in this pod.",
            |p| cell(pod_state(p).reason),
        ),
        computed(
            "Restarts",
            "string",
            0,
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            pod_restarts,
        ),
        age(),
        computed(
            "IP",
            "string",
            1,
            "podIP address allocated to the pod.",
            |p| {
                let first = text(p, "/status/podIPs/0/ip");
                or(
                    if first.is_empty() {
                        text(p, "/status/podIP")
                    } else {
                        first
                    },
                    "<none>",
                )
            },
        ),
        computed(
            "Node",
            "string",
            1,
            "NodeName indicates in which node this pod is scheduled.",
            |p| or(text(p, "/spec/nodeName"), "<none>"),
        ),
        computed(
            "Nominated Node",
            "string",
            1,
            "nominatedNodeName is set when this pod preempts other pods on the node.",
            |p| or(text(p, "/status/nominatedNodeName"), "<none>"),
        ),
        computed(
            "Readiness Gates",
            "string",
            1,
            "If specified, all readiness gates will be evaluated for pod readiness.",
            readiness_gates,
        ),
    ]
}

/// What the READY, STATUS and RESTARTS cells of a pod summarise.
struct PodState {
    ready: usize,
    total: usize,
    reason: String,
    restarts: i64,
    last_restart: Option<SystemTime>,
}

fn condition_true(pod: &Value, condition: &str) -> bool {
    list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == condition && text(c, "/status") == "True")
}

/// `printPod`'s walk over init and app container statuses, in upstream's order: the first
/// unfinished init container explains a pod still initialising, otherwise the last app
/// container with a waiting or terminated reason does.
fn pod_state(pod: &Value) -> PodState {
    let init_specs = list(pod, "/spec/initContainers");
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| text(c, "/name") == name && text(c, "/restartPolicy") == "Always")
    };
    let mut state = PodState {
        ready: 0,
        total: list(pod, "/spec/containers").len()
            + init_specs
                .iter()
                .filter(|c| text(c, "/restartPolicy") == "Always")
                .count(),
        reason: String::new(),
        restarts: 0,
        last_restart: None,
    };
    let phase = text(pod, "/status/phase");
    state.reason = match text(pod, "/status/reason") {
        "" => phase.to_string(),
        reason => reason.to_string(),
    };
    let gated = list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated");
    if gated {
        state.reason = "SchedulingGated".to_string();
    }
    let finished =
        |status: &Value| parse_timestamp(text(status, "/lastState/terminated/finishedAt"));
    let mut sidecar_restarts = 0;
    let mut sidecar_last_restart = None;
    let mut initializing = false;
    for (index, status) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let restarts = int(status, "/restartCount");
        state.restarts += restarts;
        state.last_restart = state.last_restart.max(finished(status));
        let sidecar = is_sidecar(text(status, "/name"));
        if sidecar {
            sidecar_restarts += restarts;
            sidecar_last_restart = sidecar_last_restart.max(finished(status));
        }
        let terminated = status.pointer("/state/terminated");
        if terminated.is_some_and(|t| int(t, "/exitCode") == 0) {
            continue;
        }
        if sidecar && status.pointer("/started") == Some(&Value::Bool(true)) {
            if status.pointer("/ready") == Some(&Value::Bool(true)) {
                state.ready += 1;
            }
            continue;
        }
        let waiting = text(status, "/state/waiting/reason");
        state.reason = if let Some(terminated) = terminated {
            match text(terminated, "/reason") {
                "" if int(terminated, "/signal") != 0 => {
                    format!("Init:Signal:{}", int(terminated, "/signal"))
                }
                "" => format!("Init:ExitCode:{}", int(terminated, "/exitCode")),
                reason => format!("Init:{reason}"),
            }
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{index}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }
    if !initializing || condition_true(pod, "Initialized") {
        state.restarts = sidecar_restarts;
        state.last_restart = sidecar_last_restart;
        let mut has_running = false;
        for status in list(pod, "/status/containerStatuses").iter().rev() {
            state.restarts += int(status, "/restartCount");
            state.last_restart = state.last_restart.max(finished(status));
            let waiting = text(status, "/state/waiting/reason");
            let terminated = status.pointer("/state/terminated");
            if !waiting.is_empty() {
                state.reason = waiting.to_string();
            } else if let Some(terminated) = terminated {
                state.reason = match text(terminated, "/reason") {
                    "" if int(terminated, "/signal") != 0 => {
                        format!("Signal:{}", int(terminated, "/signal"))
                    }
                    "" => format!("ExitCode:{}", int(terminated, "/exitCode")),
                    reason => reason.to_string(),
                };
            } else if status.pointer("/ready") == Some(&Value::Bool(true))
                && status.pointer("/state/running").is_some()
            {
                has_running = true;
                state.ready += 1;
            }
        }
        if state.reason == "Completed" && has_running {
            state.reason = if condition_true(pod, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }
    if meta(pod).is_deleting() {
        if text(pod, "/status/reason") == "NodeLost" {
            state.reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            state.reason = "Terminating".to_string();
        }
    }
    state
}

/// `3`, or `3 (5m ago)` when the last restart's time is known.
fn pod_restarts(pod: &Value) -> Value {
    let state = pod_state(pod);
    match state.last_restart {
        Some(at) if state.restarts != 0 => cell(format!(
            "{} ({} ago)",
            state.restarts,
            human_duration_between(at, SystemTime::now())
        )),
        _ => cell(state.restarts.to_string()),
    }
}

fn readiness_gates(pod: &Value) -> Value {
    let gates = list(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return cell("<none>");
    }
    let conditions = list(pod, "/status/conditions");
    let passed = gates
        .iter()
        .filter(|gate| {
            let wanted = text(gate, "/conditionType");
            conditions
                .iter()
                .find(|c| text(c, "/type") == wanted)
                .is_some_and(|c| text(c, "/status") == "True")
        })
        .count();
    cell(format!("{passed}/{}", gates.len()))
}

/// The container names and images of a pod template, comma-separated.
fn template_containers(object: &Value, template: &str, field: &str) -> Value {
    let names: Vec<&str> = list(object, &format!("{template}/spec/containers"))
        .iter()
        .map(|c| text(c, field))
        .collect();
    cell(names.join(","))
}

fn containers_columns() -> [Column; 2] {
    [
        computed("Containers", "string", 1, CONTAINERS, |o| {
            template_containers(o, "/spec/template", "/name")
        }),
        computed("Images", "string", 1, IMAGES, |o| {
            template_containers(o, "/spec/template", "/image")
        }),
    ]
}

fn selector_column() -> Column {
    computed("Selector", "string", 1, SELECTOR, |o| {
        format_label_selector(o, "/spec/selector")
    })
}

/// Desired replicas, defaulted to 1 as the API defaults it.
fn desired(object: &Value) -> i64 {
    object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

pub(crate) fn deployment() -> Vec<Column> {
    let mut columns = vec![
        computed(
            "Ready",
            "string",
            0,
            "Number of the pod with ready state",
            |d| {
                cell(format!(
                    "{}/{}",
                    int(d, "/status/readyReplicas"),
                    desired(d)
                ))
            },
        ),
        computed(
            "Up-to-date",
            "integer",
            0,
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            |d| json!(int(d, "/status/updatedReplicas")),
        ),
        computed(
            "Available",
            "integer",
            0,
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            |d| json!(int(d, "/status/availableReplicas")),
        ),
        age(),
    ];
    columns.extend(containers_columns());
    columns.push(selector_column());
    columns
}

pub(crate) fn replica_set() -> Vec<Column> {
    let mut columns = vec![
        computed(
            "Desired",
            "integer",
            0,
            "Replicas is the number of desired replicas.",
            |r| json!(desired(r)),
        ),
        computed(
            "Current",
            "integer",
            0,
            "Replicas is the most recently observed number of replicas.",
            |r| json!(int(r, "/status/replicas")),
        ),
        computed(
            "Ready",
            "integer",
            0,
            "readyReplicas is the number of pods targeted by this ReplicaSet with a Ready Condition.",
            |r| json!(int(r, "/status/readyReplicas")),
        ),
        age(),
    ];
    columns.extend(containers_columns());
    columns.push(selector_column());
    columns
}

pub(crate) fn stateful_set() -> Vec<Column> {
    let mut columns = vec![
        computed(
            "Ready",
            "string",
            0,
            "Number of the pod with ready state",
            |s| {
                cell(format!(
                    "{}/{}",
                    int(s, "/status/readyReplicas"),
                    desired(s)
                ))
            },
        ),
        age(),
    ];
    columns.extend(containers_columns());
    columns
}

pub(crate) fn daemon_set() -> Vec<Column> {
    let status = |name: &str, description: &str, value: fn(&Value) -> Value| {
        computed(name, "integer", 0, description, value)
    };
    let mut columns = vec![
        status(
            "Desired",
            "The total number of nodes that should be running the daemon pod.",
            |d| json!(int(d, "/status/desiredNumberScheduled")),
        ),
        status(
            "Current",
            "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            |d| json!(int(d, "/status/currentNumberScheduled")),
        ),
        status(
            "Ready",
            "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
            |d| json!(int(d, "/status/numberReady")),
        ),
        status(
            "Up-to-date",
            "The total number of nodes that are running updated daemon pod",
            |d| json!(int(d, "/status/updatedNumberScheduled")),
        ),
        status(
            "Available",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            |d| json!(int(d, "/status/numberAvailable")),
        ),
        computed(
            "Node Selector",
            "string",
            0,
            "NodeSelector is a selector which must be true for the pod to fit on a node.",
            |d| format_labels(d, "/spec/template/spec/nodeSelector"),
        ),
        age(),
    ];
    columns.extend(containers_columns());
    columns.push(selector_column());
    columns
}

pub(crate) fn job() -> Vec<Column> {
    let mut columns = vec![
        computed("Status", "string", 0, "Status of the job.", job_status),
        computed(
            "Completions",
            "string",
            0,
            "The completion status of the job.",
            job_completions,
        ),
        computed(
            "Duration",
            "string",
            0,
            "Time required to complete the job.",
            job_duration,
        ),
        age(),
    ];
    columns.extend(containers_columns());
    columns.push(selector_column());
    columns
}

fn job_status(job: &Value) -> Value {
    let status = if condition_true(job, "Complete") {
        "Complete"
    } else if condition_true(job, "Failed") {
        "Failed"
    } else if meta(job).is_deleting() {
        "Terminating"
    } else if condition_true(job, "Suspended") {
        "Suspended"
    } else if condition_true(job, "FailureTarget") {
        "FailureTarget"
    } else if condition_true(job, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    cell(status)
}

fn job_completions(job: &Value) -> Value {
    let succeeded = int(job, "/status/succeeded");
    match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(completions) => cell(format!("{succeeded}/{completions}")),
        None => match int(job, "/spec/parallelism") {
            parallelism if parallelism > 1 => cell(format!("{succeeded}/1 of {parallelism}")),
            _ => cell(format!("{succeeded}/1")),
        },
    }
}

fn job_duration(job: &Value) -> Value {
    let Some(start) = parse_timestamp(text(job, "/status/startTime")) else {
        return cell("");
    };
    let end = parse_timestamp(text(job, "/status/completionTime")).unwrap_or_else(SystemTime::now);
    cell(human_duration(
        end.duration_since(start).unwrap_or_default(),
    ))
}

pub(crate) fn cron_job() -> Vec<Column> {
    const TEMPLATE: &str = "/spec/jobTemplate/spec/template";
    vec![
        computed(
            "Schedule",
            "string",
            0,
            "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
            |c| cell(text(c, "/spec/schedule")),
        ),
        computed(
            "Timezone",
            "string",
            0,
            "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
            |c| or(text(c, "/spec/timeZone"), "<none>"),
        ),
        computed(
            "Suspend",
            "boolean",
            0,
            "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
            |c| match c.pointer("/spec/suspend").and_then(Value::as_bool) {
                Some(true) => cell("True"),
                Some(false) => cell("False"),
                None => cell("<unset>"),
            },
        ),
        computed(
            "Active",
            "integer",
            0,
            "A list of pointers to currently running jobs.",
            |c| json!(list(c, "/status/active").len()),
        ),
        computed(
            "Last Schedule",
            "string",
            0,
            "Information when was the last time the job was successfully scheduled.",
            |c| match text(c, "/status/lastScheduleTime") {
                "" => cell("<none>"),
                _ => cell(since(c, "/status/lastScheduleTime")),
            },
        ),
        age(),
        computed("Containers", "string", 1, CONTAINERS, |c| {
            template_containers(c, TEMPLATE, "/name")
        }),
        computed("Images", "string", 1, IMAGES, |c| {
            template_containers(c, TEMPLATE, "/image")
        }),
        computed("Selector", "string", 1, SELECTOR, |c| {
            format_label_selector(c, "/spec/jobTemplate/spec/selector")
        }),
    ]
}
