//! Bad input gets the Kubernetes `Status` a client expects, and changes nothing stored:
//! requests without credentials (401), oversized bodies (413), malformed JSON, YAML and
//! protobuf (400), unknown fields under `fieldValidation=Strict` (400), invalid names
//! (422 with a cause naming the field), a body of the wrong kind for the URL (400), and
//! selectors with bad syntax (400). Also: a watch from a compacted resourceVersion is an
//! HTTP 200 stream with one ERROR event carrying a 410 `Expired` Status.

mod common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};

use common::probe::{admin_client, anonymous_client, send};
use common::process::Server;

fn post(path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> http::Request<Vec<u8>> {
    http::Request::post(path)
        .header("content-type", content_type)
        .body(body.into())
        .expect("a valid request")
}

/// The list's resourceVersion: the datastore's revision, which any write would move.
/// The ConfigMaps of `default` as (name, resourceVersion) pairs: what a rejected request
/// there must leave as it was. (The cluster's revision itself moves on: servers renew their
/// membership records and apply bundled manifests in the background.)
async fn stored(client: &Client) -> Vec<(String, String)> {
    let (code, list) = send(
        client,
        http::Request::get("/api/v1/namespaces/default/configmaps")
            .body(Vec::new())
            .expect("request"),
    )
    .await;
    assert_eq!(code, 200, "{list}");
    list["items"]
        .as_array()
        .expect("a list has items")
        .iter()
        .map(|item| {
            (
                item["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                item["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_store_nothing() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(data_dir.path(), "errors-test");
    let admin = admin_client(&server).await;
    let anonymous = anonymous_client(&server).await;
    let before = stored(&admin).await;
    let path = "/api/v1/namespaces/default/configmaps";

    // No credentials: 401 for the API, health and version stay open.
    let (code, body) = send(
        &anonymous,
        http::Request::get(path).body(Vec::new()).expect("request"),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (401, Some("Unauthorized")),
        "{body}"
    );
    let cm =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "anon"}}).to_string();
    let (code, _) = send(&anonymous, post(path, "application/json", cm)).await;
    assert_eq!(code, 401);
    for open in ["/version", "/livez", "/readyz"] {
        let (code, body) = send(
            &anonymous,
            http::Request::get(open).body(Vec::new()).expect("request"),
        )
        .await;
        assert_eq!(code, 200, "{open}: {body}");
    }

    // Over 3 MiB: 413.
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": {"blob": "x".repeat(4 * 1024 * 1024)}});
    let (code, body) = send(&admin, post(path, "application/json", body_bytes(&big))).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (413, Some("RequestEntityTooLarge")),
        "{body}"
    );

    // Malformed bodies: 400.
    for (content_type, body) in [
        (
            "application/json",
            b"{\"apiVersion\": \"v1\", \"kind\": ".to_vec(),
        ),
        (
            "application/yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n".to_vec(),
        ),
        (
            "application/vnd.kubernetes.protobuf",
            b"k8s\x00\x0a\xff\xff\xff".to_vec(),
        ),
        (
            "application/vnd.kubernetes.protobuf",
            b"not protobuf at all".to_vec(),
        ),
    ] {
        let (code, status) = send(&admin, post(path, content_type, body)).await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (400, Some("BadRequest")),
            "{content_type}: {status}"
        );
    }
    let (code, status) = send(&admin, post(path, "text/csv", "a,b")).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType")),
        "{status}"
    );

    // Unknown fields under Strict: 400 naming the field.
    let unknown = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "strict"}, "dataa": {"a": "b"}});
    let (code, status) = send(
        &admin,
        post(
            &format!("{path}?fieldValidation=Strict"),
            "application/json",
            body_bytes(&unknown),
        ),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("dataa")),
        "{status}"
    );

    // Invalid name: 422 with a cause on metadata.name.
    let invalid =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_DNS_Name"}});
    let (code, status) = send(&admin, post(path, "application/json", body_bytes(&invalid))).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"], "metadata.name",
        "{status}"
    );

    // A Deployment posted to configmaps: 400.
    let wrong =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "wrong"}});
    let (code, status) = send(&admin, post(path, "application/json", body_bytes(&wrong))).await;
    assert_eq!(code, 400, "{status}");

    // Bad selectors: 400.
    for query in [
        "labelSelector=a%20in%20(x",
        "labelSelector=!",
        "fieldSelector=spec.nodeName%3Dx",
    ] {
        let (code, status) = send(
            &admin,
            http::Request::get(format!("{path}?{query}"))
                .body(Vec::new())
                .expect("request"),
        )
        .await;
        assert_eq!(code, 400, "{query}: {status}");
    }

    // Nothing above wrote anything.
    assert_eq!(
        stored(&admin).await,
        before,
        "a rejected request changed the datastore"
    );
    let names: Vec<String> = Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|cm| cm.metadata.name)
        .collect();
    assert!(names.is_empty(), "rejected objects were stored: {names:?}");
}

fn body_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON serializes")
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_gets_an_in_stream_410() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        data_dir.path(),
        "compaction-test",
        &[
            "--datastore-compact-retain-revisions",
            "1",
            "--datastore-compact-retain-seconds",
            "0",
            "--datastore-compact-interval-seconds",
            "1",
        ],
    );
    let client = admin_client(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "churn"}, "data": {"n": "0"}}))
            .expect("a ConfigMap");
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    for n in 1..=20 {
        cm = api.get("churn").await.expect("get");
        cm.data = Some([("n".to_string(), n.to_string())].into());
        api.replace("churn", &PostParams::default(), &cm)
            .await
            .expect("replace");
    }
    // Wait for compaction to pass revision 2, then watch from it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stream = api
            .watch(&WatchParams::default().timeout(2), "2")
            .await
            .expect("the watch is accepted with 200");
        let first = stream
            .boxed()
            .try_next()
            .await
            .expect("the stream yields an event");
        match first {
            Some(WatchEvent::Error(status)) => {
                assert_eq!(status.code, 410, "{status:?}");
                assert_eq!(status.reason, "Expired", "{status:?}");
                break;
            }
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no 410 after 30 s; last event: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
