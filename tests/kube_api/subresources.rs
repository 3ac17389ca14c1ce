//! Subresources a controller uses (`/scale`, `/status`) and deletion held by finalizers.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::server::TestServer;
use crate::support::{api_error, assert_status, config_map, deployment, eventually};

kube_api!(
    deployment_scale_get_patch_replace,
    deployment_status_patch_touches_only_status,
    foreground_delete_waits_for_finalizers,
    generation_counts_spec_changes_only,
);

async fn deployment_scale_get_patch_replace(server: &TestServer) {
    let api: Api<Deployment> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &deployment("scaled", 1))
        .await
        .unwrap();

    let scale = api.get_scale("scaled").await.unwrap();
    assert_eq!(scale.metadata.name.as_deref(), Some("scaled"));
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));

    let patch = json!({"spec": {"replicas": 3}});
    let scale = api
        .patch_scale("scaled", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let replicas = |d: Deployment| d.spec.replicas;
    assert_eq!(replicas(api.get("scaled").await.unwrap()), Some(3));

    let mut scale = api.get_scale("scaled").await.unwrap();
    scale.spec.as_mut().unwrap().replicas = Some(5);
    let replaced = api
        .replace_scale("scaled", &PostParams::default(), &scale)
        .await
        .unwrap();
    assert_eq!(replaced.spec.as_ref().and_then(|s| s.replicas), Some(5));
    assert_eq!(replicas(api.get("scaled").await.unwrap()), Some(5));

    // The old resourceVersion is stale now.
    let status = api_error(
        api.replace_scale("scaled", &PostParams::default(), &scale)
            .await,
    );
    assert_status(&status, 409, "Conflict");
}

async fn deployment_status_patch_touches_only_status(server: &TestServer) {
    let api: Api<Deployment> = Api::namespaced(server.client.clone(), "default");
    api.create(&PostParams::default(), &deployment("reported", 2))
        .await
        .unwrap();
    let patch = json!({
        "spec": {"replicas": 9},
        "status": {"replicas": 2, "readyReplicas": 1, "observedGeneration": 1},
    });
    let patched = api
        .patch_status("reported", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let status = patched.status.clone().expect("the status was written");
    assert_eq!((status.replicas, status.ready_replicas), (Some(2), Some(1)));
    assert_eq!(
        patched.spec.replicas,
        Some(2),
        "/status ignores spec changes"
    );
    let fetched = api.get_status("reported").await.unwrap();
    assert_eq!(fetched.status.and_then(|s| s.ready_replicas), Some(1));

    // And the main resource ignores status changes.
    let patch = json!({"status": {"readyReplicas": 7}});
    let patched = api
        .patch("reported", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.status.and_then(|s| s.ready_replicas), Some(1));
}

async fn foreground_delete_waits_for_finalizers(server: &TestServer) {
    let api: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let mut held = config_map("held", &[], &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();

    let answer = api
        .delete("held", &DeleteParams::foreground())
        .await
        .unwrap();
    assert!(
        answer.is_left(),
        "a delete held by a finalizer answers with the object, not a Status"
    );
    let terminating = api.get("held").await.unwrap();
    assert!(
        terminating.metadata.deletion_timestamp.is_some(),
        "the object is marked for deletion"
    );
    let finalizers = terminating.metadata.finalizers.clone().unwrap_or_default();
    assert!(finalizers.contains(&"example.com/hold".to_string()));

    // It stays for as long as the finalizer does.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(api.get_opt("held").await.unwrap().is_some());

    // Removing our finalizer (leaving any the server added) lets it go. The garbage
    // collector may change the object meanwhile (it drops `foregroundDeletion` once no
    // dependent is left), so this is the usual read-modify-write retried on conflict.
    let _ = finalizers;
    let mut released_ok = false;
    for _ in 0..10 {
        let mut released = api.get("held").await.unwrap();
        released.metadata.finalizers = Some(
            released
                .metadata
                .finalizers
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != "example.com/hold")
                .collect(),
        );
        released.metadata.managed_fields = None;
        match api.replace("held", &PostParams::default(), &released).await {
            Ok(_) => {
                released_ok = true;
                break;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(other) => panic!("releasing the finalizer failed: {other}"),
        }
    }
    assert!(
        released_ok,
        "the finalizer could not be released in 10 attempts"
    );
    eventually(
        Duration::from_secs(10),
        "the released object is deleted",
        || async {
            match api.get_opt("held").await.unwrap() {
                None => Ok(()),
                Some(object) => Err(format!(
                    "still there with finalizers {:?}",
                    object.metadata.finalizers
                )),
            }
        },
    )
    .await;
}

async fn generation_counts_spec_changes_only(server: &TestServer) {
    let api: Api<Deployment> = Api::namespaced(server.client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &deployment("gen", 1))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let generation = |d: Deployment| d.metadata.generation;

    let labels = json!({"metadata": {"labels": {"touched": "yes"}}});
    let patched = api
        .patch("gen", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    assert_eq!(
        generation(patched),
        Some(1),
        "metadata changes keep the generation"
    );

    let status = json!({"status": {"observedGeneration": 1}});
    let patched = api
        .patch_status("gen", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        generation(patched),
        Some(1),
        "status changes keep the generation"
    );

    let scale = json!({"spec": {"replicas": 4}});
    api.patch_scale("gen", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    assert_eq!(
        generation(api.get("gen").await.unwrap()),
        Some(2),
        "a spec change (through /scale) moves the generation"
    );
}
