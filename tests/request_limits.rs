//! One request cannot make the server build a huge document, and a watcher that stops
//! reading cannot make it hold one: patches are bounded while they apply (JSON-patch copies,
//! operations, the size of every result, the work of list merges), objects over the storage
//! limit are 413 and ConfigMaps or Secrets over 1 MiB of data 422 (never 503, which clients
//! retry), and a stalled watcher's queue is bounded in bytes. Each case checks the answer,
//! that the server is up with its memory bounded, and that nothing stored changed.

mod common;

use std::time::Duration;

use futures::StreamExt as _;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use common::probe::{
    admin_client, assert_alive_and_bounded, post, request, rss_bytes, send, snapshot,
};
use common::process::Server;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const PODS: &str = "/api/v1/namespaces/default/pods";

fn patch(path: &str, content_type: &str, body: &Value) -> http::Request<Vec<u8>> {
    request("PATCH", path, content_type, body.to_string().into_bytes())
}

fn configmap(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

fn containers(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"name": format!("c{i}"), "image": "busybox"}))
        .collect()
}

#[tokio::test]
async fn amplifying_patches_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "patch-limits");
    let admin = admin_client(&server).await;
    let (code, body) = send(
        &admin,
        post(CONFIGMAPS, &configmap("target", json!({"a": "1"}))),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let target = format!("{CONFIGMAPS}/target");
    let baseline = rss_bytes(server.pid());
    let before = snapshot(&admin, &[CONFIGMAPS]).await;

    // The probe's 4.5 KB patch: a 1 KB map, then 40 copies of it into itself (it doubles
    // each time; it once made the server allocate 23.5 GB).
    let mut doubling = vec![json!({"op": "add", "path": "/metadata/annotations",
        "value": {"seed": "x".repeat(1000)}})];
    for i in 0..40 {
        doubling.push(json!({"op": "copy", "from": "/metadata/annotations",
            "path": format!("/metadata/annotations/k{i}")}));
    }
    // 100 copies of 100 KB: 10 MB built before the old answer.
    let mut wide = vec![
        json!({"op": "add", "path": "/metadata/annotations", "value": {}}),
        json!({"op": "add", "path": "/metadata/annotations/seed", "value": "y".repeat(100_000)}),
    ];
    for i in 0..100 {
        wide.push(json!({"op": "copy", "from": "/metadata/annotations/seed",
            "path": format!("/metadata/annotations/k{i}")}));
    }
    // The doubling one goes over the 3 MiB of copies first (422, as kube-apiserver's
    // copy limit answers); the wide one makes the document itself too large first (413).
    for (name, ops, wanted) in [
        ("doubling", doubling, (422, "Invalid")),
        ("wide", wide, (413, "RequestEntityTooLarge")),
    ] {
        let (code, status) = send(
            &admin,
            patch(&target, "application/json-patch+json", &Value::Array(ops)),
        )
        .await;
        assert_eq!(
            (code, status["reason"].as_str().unwrap_or("")),
            wanted,
            "{name}: {status}"
        );
        let message = status["message"].as_str().unwrap_or("");
        assert!(message.contains("limit"), "{name}: {message}");
    }

    // More operations than kube-apiserver allows: 413.
    let many: Vec<Value> = (0..10_001)
        .map(|_| json!({"op": "test", "path": "/data/a", "value": "1"}))
        .collect();
    let (code, status) = send(
        &admin,
        patch(&target, "application/json-patch+json", &Value::Array(many)),
    )
    .await;
    assert_eq!(code, 413, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("The allowed maximum operations in a JSON patch is 10000, got 10001"),
        "{status}"
    );

    // A merge patch and an apply whose results (60,000 labels, and the managed fields
    // recorded for each) are over the storage limit: 413.
    let labels: serde_json::Map<String, Value> = (0..60_000)
        .map(|i| (format!("example.com/label-{i:08}"), json!("v")))
        .collect();
    let merge = json!({"metadata": {"labels": labels}});
    let (code, status) = send(
        &admin,
        patch(&target, "application/merge-patch+json", &merge),
    )
    .await;
    assert_eq!(code, 413, "merge: {status}");
    let apply = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "target", "labels": labels}});
    let (code, status) = send(
        &admin,
        patch(
            &format!("{target}?fieldManager=probe&force=true"),
            "application/apply-patch+yaml",
            &apply,
        ),
    )
    .await;
    assert_eq!(code, 413, "apply: {status}");
    assert_eq!(status["reason"], "RequestEntityTooLarge", "{status}");

    // A strategic merge of two 8,000-item lists compares every pair (6.4e7 steps): refused
    // by the step budget instead of holding a core for minutes.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "wide"},
        "spec": {"containers": containers(8_000)}});
    let (code, body) = send(&admin, post(PODS, &pod)).await;
    assert_eq!(code, 201, "{body}");
    let pods_before = snapshot(&admin, &[PODS]).await;
    let mut reversed = containers(8_000);
    reversed.reverse();
    let (code, status) = send(
        &admin,
        patch(
            &format!("{PODS}/wide"),
            "application/strategic-merge-patch+json",
            &json!({"spec": {"containers": reversed}}),
        ),
    )
    .await;
    assert_eq!(code, 422, "strategic: {status}");
    assert!(
        status["message"].as_str().unwrap_or("").contains("steps"),
        "{status}"
    );
    assert_eq!(snapshot(&admin, &[PODS]).await, pods_before);

    assert_eq!(snapshot(&admin, &[CONFIGMAPS]).await, before);
    assert_alive_and_bounded(&mut server, baseline);
}

#[tokio::test]
async fn objects_over_the_limits_get_413_and_422_not_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "size-limits");
    let admin = admin_client(&server).await;
    let (code, body) = send(
        &admin,
        post(CONFIGMAPS, &configmap("small", json!({"a": "1"}))),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let baseline = rss_bytes(server.pid());
    let before = snapshot(&admin, &[CONFIGMAPS, "/api/v1/namespaces/default/secrets"]).await;

    // A body over 3 MiB: 413 RequestEntityTooLarge.
    let huge = configmap("huge", json!({"a": "x".repeat(3 * 1024 * 1024)}));
    let (code, status) = send(&admin, post(CONFIGMAPS, &huge)).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (413, Some("RequestEntityTooLarge")),
        "{status}"
    );

    // Under the body limit but over 1 MiB of data: 422 with kube-apiserver's words.
    let big = configmap("big", json!({"a": "x".repeat(1024 * 1024), "b": "y"}));
    let (code, status) = send(&admin, post(CONFIGMAPS, &big)).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    let message = status["message"].as_str().unwrap_or("");
    assert!(
        message.contains("ConfigMap \"big\" is invalid")
            && message.contains("must have at most 1048576 bytes"),
        "{message}"
    );
    // A Secret counts its decoded data: 1.2 MiB of base64 is 0.9 MiB, accepted; 1.5 MiB
    // of base64 (1.1 MiB decoded) is not.
    for (name, encoded, code_wanted) in [("fits", 1_258_292, 201), ("over", 1_572_868, 422)] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {"key": "QUFB".repeat(encoded / 4)}});
        let (code, status) =
            send(&admin, post("/api/v1/namespaces/default/secrets", &secret)).await;
        assert_eq!(code, code_wanted, "{name}: {status}");
        if code == 201 {
            let (code, status) = send(
                &admin,
                request(
                    "DELETE",
                    &format!("/api/v1/namespaces/default/secrets/{name}"),
                    "application/json",
                    Vec::new(),
                ),
            )
            .await;
            assert_eq!(code, 200, "{status}");
        } else {
            assert!(
                status["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("data: Too long"),
                "{status}"
            );
        }
    }
    // A patch that takes a ConfigMap over 1 MiB: 422 too.
    let (code, status) = send(
        &admin,
        patch(
            &format!("{CONFIGMAPS}/small"),
            "application/merge-patch+json",
            &json!({"data": {"b": "z".repeat(1024 * 1024)}}),
        ),
    )
    .await;
    assert_eq!(code, 422, "{status}");

    assert_eq!(
        snapshot(&admin, &[CONFIGMAPS, "/api/v1/namespaces/default/secrets"]).await,
        before
    );
    let log = server.log_text();
    assert!(
        !log.contains("datastore error"),
        "a size limit was logged as a datastore failure:\n{log}"
    );
    assert_alive_and_bounded(&mut server, baseline);
}

/// A watcher that never reads is cut off once its queue holds more bytes than the limit
/// (16 MiB by default), not after 2,048 events whatever their size: 200 updates of 300 KB
/// (60 MB) reach it only in part, then the watch ends with an error and the client re-lists.
#[tokio::test]
async fn a_stalled_watcher_is_cut_off_by_bytes_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "stalled-watch");
    let admin = admin_client(&server).await;
    let (code, body) = send(
        &admin,
        post(CONFIGMAPS, &configmap("big", json!({"a": "0"}))),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let baseline = rss_bytes(server.pid());

    let watch = http::Request::get(format!(
        "{CONFIGMAPS}?watch=true&fieldSelector=metadata.name%3Dbig"
    ))
    .body(kube::client::Body::empty())
    .expect("a valid request");
    // Its own connection: an unread HTTP/2 stream would otherwise use up the flow-control
    // window the updates' answers need.
    let watcher = admin_client(&server).await;
    let response = watcher.send(watch).await.expect("the watch starts");
    assert_eq!(response.status(), 200);
    // Not read while the object changes.
    let updates = 200;
    for i in 0..updates {
        let value = format!("{i:06}{}", "x".repeat(300 * 1024));
        let (code, status) = send(
            &admin,
            patch(
                &format!("{CONFIGMAPS}/big"),
                "application/merge-patch+json",
                &json!({"data": {"a": value}}),
            ),
        )
        .await;
        assert_eq!(code, 200, "update {i}: {status}");
    }
    assert_alive_and_bounded(&mut server, baseline);

    // Now read: some events, then an ERROR event (the watcher was too slow), and the end.
    let mut body = response.into_body().into_data_stream();
    let mut text = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => text.extend_from_slice(&bytes),
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the cut-off watch did not end");
    let lines: Vec<Value> = text
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap_or(Value::Null))
        .collect();
    let modified = lines.iter().filter(|l| l["type"] == "MODIFIED").count();
    assert!(
        modified < updates,
        "the stalled watcher was sent all {modified} updates"
    );
    let last = lines.last().cloned().unwrap_or(Value::Null);
    assert_eq!(
        last["type"], "ERROR",
        "the watch ended without an error: {last}"
    );
    assert_alive_and_bounded(&mut server, baseline);
}
