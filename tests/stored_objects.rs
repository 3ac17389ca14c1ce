//! What is accepted can always be read, and one bad row never makes a kind unreadable:
//! unknown fields of built-in kinds are dropped (with a warning) instead of stored, a field
//! nested past the JSON decoder's limit can never reach the database, and a row that cannot
//! be decoded — written straight into the datastore, under the API — is left out of lists
//! and watches, reported in the log and in `/metrics`, and removed by a plain delete, while
//! the namespace controller keeps working. Also: escaped names in paths, the data dir's
//! permissions, and the query parameters kube-apiserver refuses.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use capstan_datastore::{DatastoreConfig, Store};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{WatchEvent, WatchParams};
use serde_json::{Value, json};

use common::probe::{
    admin_client, assert_alive_and_bounded, get, post, request, rss_bytes, send, snapshot,
};
use common::process::Server;

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// `{"x": {"x": … "leaf" …}}`, `levels` objects deep.
fn nested(levels: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..levels {
        value = json!({ "x": value });
    }
    value
}

#[tokio::test]
async fn unknown_and_deeply_nested_fields_never_make_a_kind_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "stored-fields");
    let admin = admin_client(&server).await;
    let baseline = rss_bytes(server.pid());

    // Unknown fields, at the top, in metadata and from a YAML merge key's anchor, are
    // dropped with a warning; the known ones are stored.
    let yaml = "base: &base\n  a: \"1\"\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pruned\n  unknownMeta: x\ndata:\n  <<: *base\n  b: \"2\"\nevil:\n  x: 1\n";
    let (code, created) = send(
        &admin,
        request(
            "POST",
            CONFIGMAPS,
            "application/yaml",
            yaml.as_bytes().to_vec(),
        ),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["data"], json!({"a": "1", "b": "2"}), "{created}");
    for dropped in ["evil", "base"] {
        assert!(
            created.get(dropped).is_none(),
            "{dropped} was stored: {created}"
        );
    }
    assert!(
        created["metadata"].get("unknownMeta").is_none(),
        "{created}"
    );
    let (_, read) = send(&admin, get(&format!("{CONFIGMAPS}/pruned"))).await;
    assert!(read.get("evil").is_none(), "{read}");

    // A patch cannot add them either.
    let (code, patched) = send(
        &admin,
        request(
            "PATCH",
            &format!("{CONFIGMAPS}/pruned"),
            "application/merge-patch+json",
            br#"{"evil": {"x": 2}, "data": {"c": "3"}}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert!(patched.get("evil").is_none(), "{patched}");
    assert_eq!(patched["data"]["c"], "3");

    // The probe's poison: an unknown field nested 122 levels. Under Strict it is refused;
    // by default it is dropped, and the kind stays readable by every verb.
    let poison = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "deep"}, "evil": nested(122)});
    let (code, status) = send(
        &admin,
        post(&format!("{CONFIGMAPS}?fieldValidation=Strict"), &poison),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (400, Some("BadRequest")),
        "{status}"
    );
    let (code, created) = send(&admin, post(CONFIGMAPS, &poison)).await;
    assert_eq!(code, 201, "{created}");
    assert!(created.get("evil").is_none());
    let (code, list) = send(&admin, get(CONFIGMAPS)).await;
    assert_eq!(code, 200, "{list}");
    let (code, _) = send(&admin, get(&format!("{CONFIGMAPS}/deep"))).await;
    assert_eq!(code, 200);
    let (code, body) = send(
        &admin,
        request(
            "DELETE",
            &format!("{CONFIGMAPS}/deep"),
            "application/json",
            Vec::new(),
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    // Past the decoder's own limit: 400, nothing stored.
    let before = snapshot(&admin, &[CONFIGMAPS]).await;
    let too_deep = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "too-deep"}, "evil": nested(200)});
    let (code, status) = send(&admin, post(CONFIGMAPS, &too_deep)).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (400, Some("BadRequest")),
        "{status}"
    );
    assert_eq!(snapshot(&admin, &[CONFIGMAPS]).await, before);
    assert_alive_and_bounded(&mut server, baseline);
}

#[tokio::test]
async fn an_undecodable_row_is_skipped_reported_and_deletable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path(), "stored-rows");
    let admin = admin_client(&server).await;
    let namespaces = "/api/v1/namespaces";
    let path = "/api/v1/namespaces/poisoned/configmaps";
    let (code, body) = send(
        &admin,
        post(
            namespaces,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "poisoned"}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = send(
        &admin,
        post(
            path,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "good"}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (_, list) = send(&admin, get(path)).await;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list has a resourceVersion")
        .to_string();

    // Rows no Capstan wrote: a ConfigMap and a Namespace that are not JSON.
    let endpoint = format!(
        "sqlite://{}",
        dir.path().join("server/db/state.db").display()
    );
    let store = Store::open(
        &DatastoreConfig {
            endpoint,
            ..DatastoreConfig::default()
        },
        &capstan_datastore::DatastoreMetrics::unscraped(),
    )
    .await
    .expect("the server's SQLite file opens beside it");
    for key in [
        "/registry/core/configmaps/poisoned/poison",
        "/registry/core/namespaces/poison-ns",
    ] {
        store
            .create(key, b"{\"metadata\": not json".to_vec())
            .await
            .expect("the row is written");
    }
    let (code, body) = send(
        &admin,
        post(
            path,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{body}");

    // LIST leaves the row out; GET says what is wrong and what to do.
    let (code, list) = send(&admin, get(path)).await;
    assert_eq!(code, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|item| item["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["after", "good"]);
    let (code, list) = send(&admin, get(namespaces)).await;
    assert_eq!(code, 200, "kubectl get ns must keep working: {list}");
    let (code, status) = send(&admin, get(&format!("{path}/poison"))).await;
    assert_eq!(code, 500, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be decoded")),
        "{status}"
    );

    // WATCH from before the row goes past it to the next event.
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), "poisoned");
    let mut events = api
        .watch(&WatchParams::default().timeout(20), &from)
        .await
        .expect("the watch opens")
        .boxed();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the watch never delivered the write after the bad row"
        );
        match tokio::time::timeout(Duration::from_secs(20), events.try_next()).await {
            Ok(Ok(Some(WatchEvent::Added(cm)))) if cm.metadata.name.as_deref() == Some("after") => {
                break;
            }
            Ok(Ok(Some(WatchEvent::Error(error)))) => panic!("the watch failed: {error:?}"),
            Ok(Ok(Some(_))) => {}
            other => panic!("the watch ended early: {other:?}"),
        }
    }

    // Reported: in the log and as a metric.
    let (code, metrics) = send(&admin, get("/metrics")).await;
    assert_eq!(code, 200);
    let counted = metrics.as_str().and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("capstan_storage_undecodable_objects_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())
    });
    assert!(
        counted.is_some_and(|n| n >= 1.0),
        "the metric is missing or zero"
    );
    assert!(
        server.log_text().contains("cannot be decoded"),
        "nothing was logged"
    );

    // The namespace controller still finalizes namespaces with the bad Namespace row in
    // its lists.
    let (code, _) = send(
        &admin,
        post(
            namespaces,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}}),
        ),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = send(
        &admin,
        request(
            "DELETE",
            &format!("{namespaces}/fresh"),
            "application/json",
            Vec::new(),
        ),
    )
    .await;
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _) = send(&admin, get(&format!("{namespaces}/fresh"))).await;
        if code == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "namespace fresh was never finalized"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A plain delete removes the rows.
    for doomed in [format!("{path}/poison"), format!("{namespaces}/poison-ns")] {
        let (code, body) = send(
            &admin,
            request("DELETE", &doomed, "application/json", Vec::new()),
        )
        .await;
        assert_eq!(code, 200, "DELETE {doomed}: {body}");
        let (code, _) = send(&admin, get(&doomed)).await;
        assert_eq!(code, 404, "{doomed} is still there");
    }
    store.close().await;
    assert!(server.try_wait().is_none(), "the server died");
}

#[tokio::test]
async fn escaped_names_bad_parameters_and_private_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The data dir starts open to everyone, as a careless install would leave it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut server = Server::start(dir.path(), "stored-params");
    let admin = admin_client(&server).await;
    let baseline = rss_bytes(server.pid());

    // Escaped ':' in a name, as the Python client sends it.
    let roles = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
    let (code, body) = send(&admin, post(roles, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "probe:reader"}, "rules": []}))).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = send(&admin, get(&format!("{roles}/probe%3Areader"))).await;
    assert_eq!(
        (code, body["metadata"]["name"].as_str()),
        (200, Some("probe:reader")),
        "{body}"
    );

    // Parameters kube-apiserver refuses.
    let before = snapshot(&admin, &[CONFIGMAPS]).await;
    for bad in [
        format!("{CONFIGMAPS}?watch=1&timeoutSeconds=-1"),
        format!("{CONFIGMAPS}?timeoutSeconds=abc"),
        format!("{CONFIGMAPS}?fieldSelector=metadata.name=a,,"),
    ] {
        let (code, status) = send(&admin, get(&bad)).await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (400, Some("BadRequest")),
            "{bad}: {status}"
        );
    }
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "managed"}});
    for manager in ["m".repeat(10 * 1024), "bad%07bell".to_string()] {
        let (code, status) = send(
            &admin,
            post(&format!("{CONFIGMAPS}?fieldManager={manager}"), &cm),
        )
        .await;
        assert_eq!(
            (code, status["reason"].as_str()),
            (422, Some("Invalid")),
            "{status}"
        );
    }
    assert_eq!(snapshot(&admin, &[CONFIGMAPS]).await, before);

    // The data dir and every database file are the owner's only.
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode(dir.path()).ok(), Some(0o700));
    let db = dir.path().join("server/db");
    for entry in std::fs::read_dir(&db)
        .expect("the database folder")
        .flatten()
    {
        let file = entry.path();
        assert_eq!(mode(&file).ok(), Some(0o600), "{}", file.display());
    }
    assert!(db.join("state.db-wal").exists(), "SQLite runs in WAL mode");
    assert_alive_and_bounded(&mut server, baseline);
}
