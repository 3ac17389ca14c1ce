//! Columns of persistent volumes and claims, following kube-apiserver's
//! `printPersistentVolume` and `printPersistentVolumeClaim`.

use capstan_machinery::meta;
use serde_json::Value;

use super::{age, cell, computed, or, strings, text};
use crate::registry::kind::Column;

/// `RWO,ROX,RWX,RWOP` in that order, as `GetAccessModesAsString`.
fn access_modes(object: &Value, pointer: &str) -> Value {
    let modes = strings(object, pointer);
    let short: Vec<&str> = [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .into_iter()
    .filter(|(mode, _)| modes.iter().any(|m| m == mode))
    .map(|(_, short)| short)
    .collect();
    cell(short.join(","))
}

fn phase_or_terminating(object: &Value) -> Value {
    if meta(object).is_deleting() {
        return cell("Terminating");
    }
    cell(text(object, "/status/phase"))
}

fn storage_class(object: &Value) -> Value {
    let class = text(object, "/spec/storageClassName");
    if !class.is_empty() {
        return cell(class);
    }
    cell(
        meta(object)
            .annotation("volume.beta.kubernetes.io/storage-class")
            .unwrap_or(""),
    )
}

fn unset(object: &Value, pointer: &str) -> Value {
    match object.pointer(pointer).and_then(Value::as_str) {
        Some(value) => cell(value),
        None => cell("<unset>"),
    }
}

pub(crate) fn persistent_volume() -> Vec<Column> {
    let column = |name: &str, description: &str, value: fn(&Value) -> Value| {
        computed(name, "string", 0, description, value)
    };
    vec![
        column(
            "Capacity",
            "capacity is the description of the persistent volume's resources and capacity.",
            |v| or(text(v, "/spec/capacity/storage"), "0"),
        ),
        column(
            "Access Modes",
            "accessModes contains all ways the volume can be mounted.",
            |v| access_modes(v, "/spec/accessModes"),
        ),
        column(
            "Reclaim Policy",
            "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
            |v| cell(text(v, "/spec/persistentVolumeReclaimPolicy")),
        ),
        column(
            "Status",
            "phase indicates if a volume is available, bound to a claim, or released by a claim.",
            phase_or_terminating,
        ),
        column(
            "Claim",
            "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
            |v| match v.pointer("/spec/claimRef") {
                Some(claim) if claim.is_object() => cell(format!(
                    "{}/{}",
                    text(claim, "/namespace"),
                    text(claim, "/name")
                )),
                _ => cell(""),
            },
        ),
        column("StorageClass", "StorageClass of the pv", storage_class),
        column(
            "VolumeAttributesClass",
            "VolumeAttributesClass of the pv",
            |v| unset(v, "/spec/volumeAttributesClassName"),
        ),
        column(
            "Reason",
            "reason is a brief CamelCase string that describes any failure.",
            |v| cell(text(v, "/status/reason")),
        ),
        age(),
        computed(
            "VolumeMode",
            "string",
            1,
            "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
            |v| unset(v, "/spec/volumeMode"),
        ),
    ]
}

pub(crate) fn persistent_volume_claim() -> Vec<Column> {
    vec![
        computed(
            "Status",
            "string",
            0,
            "phase represents the current phase of PersistentVolumeClaim.",
            phase_or_terminating,
        ),
        computed(
            "Volume",
            "string",
            0,
            "volumeName is the binding reference to the PersistentVolume backing this claim.",
            |c| cell(text(c, "/spec/volumeName")),
        ),
        computed(
            "Capacity",
            "string",
            0,
            "capacity represents the actual resources of the underlying volume.",
            |c| match text(c, "/spec/volumeName") {
                "" => cell(""),
                _ => or(text(c, "/status/capacity/storage"), "0"),
            },
        ),
        computed(
            "Access Modes",
            "string",
            0,
            "accessModes contains the actual access modes the volume backing the PVC has.",
            |c| match text(c, "/spec/volumeName") {
                "" => cell(""),
                _ => access_modes(c, "/status/accessModes"),
            },
        ),
        computed(
            "StorageClass",
            "string",
            0,
            "StorageClass of the pvc",
            storage_class,
        ),
        computed(
            "VolumeAttributesClass",
            "string",
            0,
            "VolumeAttributesClass of the pvc",
            |c| unset(c, "/spec/volumeAttributesClassName"),
        ),
        age(),
        computed(
            "VolumeMode",
            "string",
            1,
            "volumeMode defines what type of volume is required by the claim.",
            |c| unset(c, "/spec/volumeMode"),
        ),
    ]
}
