//! Auto-deployed manifests, as a user sees them: files dropped into
//! `<data-dir>/server/manifests/` become objects through the API, edits update them, objects
//! that leave a file are pruned, `.skip` stops a file, broken files are reported on their
//! Addon and as Events without stopping others, bundled manifests are applied and
//! `--disable` removes them, and with two servers only the leader ever applies.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_cluster::membership::{SERVERS_PREFIX, ServerRecord};
use capstan_datastore::{Engine, KeyRange, ListRequest};
use common::TestDatabase;
use common::server::TestServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, WatchEvent, WatchParams};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long a change to a file may take to show in the API (the promise is 5 s).
const APPLY_WITHIN: Duration = Duration::from_secs(5);
/// How long slower outcomes (retries, restarts) may take.
const EVENTUALLY: Duration = Duration::from_secs(30);

fn manifests(data_dir: &Path) -> PathBuf {
    let dir = data_dir.join("server").join("manifests");
    std::fs::create_dir_all(&dir).expect("the manifests dir can be created");
    dir
}

fn addons(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "addons.capstan.io".to_string(),
        version: "v1".to_string(),
        api_version: "addons.capstan.io/v1".to_string(),
        kind: "Addon".to_string(),
        plural: "addons".to_string(),
    };
    Api::all_with(client.clone(), &resource)
}

fn sha256(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Polls `probe` until it gives a value, failing after `timeout`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  value: \"{value}\"\n"
    )
}

async fn value_of(api: &Api<ConfigMap>, name: &str) -> Option<String> {
    api.get_opt(name)
        .await
        .expect("reading a ConfigMap")
        .and_then(|cm| cm.data?.get("value").cloned())
}

/// The spec and status of the Addon `name`, once it has a status: a new Addon is created
/// without one (as in Kubernetes) and gets it in the write right after.
async fn addon_status(api: &Api<DynamicObject>, name: &str) -> Option<(Value, Value)> {
    let addon = api.get_opt(name).await.expect("reading an Addon")?;
    let status = addon.data["status"].clone();
    (!status.is_null()).then(|| (addon.data["spec"].clone(), status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_file_is_applied_updated_pruned_and_skipped() {
    let server = TestServer::start(Engine::Sqlite).await;
    let dir = manifests(server.data_dir());
    let config_maps: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let addons = addons(&server.client);

    let first = format!("{}---\n{}", config_map("one", "1"), config_map("two", "2"));
    std::fs::write(dir.join("app.yaml"), &first).expect("writing a manifest");
    wait_for(
        "ConfigMap one from the dropped file",
        APPLY_WITHIN,
        || async { (value_of(&config_maps, "one").await.as_deref() == Some("1")).then_some(()) },
    )
    .await;
    // The documents of a file are applied one after the other.
    wait_for("ConfigMap two from the same file", APPLY_WITHIN, || async {
        (value_of(&config_maps, "two").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    let (spec, status) = wait_for("the Addon of app.yaml", APPLY_WITHIN, || async {
        addon_status(&addons, "app").await
    })
    .await;
    assert_eq!(
        spec["checksum"],
        sha256(&first).as_str(),
        "the Addon shows the file's sha256"
    );
    assert!(
        spec["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("app.yaml"))
    );
    let names: Vec<&str> = status["objects"]
        .as_array()
        .expect("the Addon lists its objects")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, ["one", "two"]);
    assert_eq!(status["objects"][0]["kind"], "ConfigMap");
    assert_eq!(status["objects"][0]["namespace"], "default");

    // Editing updates; an object that leaves the file is pruned.
    let second = config_map("one", "edited");
    std::fs::write(dir.join("app.yaml"), &second).expect("editing the manifest");
    wait_for("the edit and the prune", APPLY_WITHIN, || async {
        let edited = value_of(&config_maps, "one").await.as_deref() == Some("edited");
        let pruned = config_maps.get_opt("two").await.expect("reading").is_none();
        (edited && pruned).then_some(())
    })
    .await;
    let (spec, status) = addon_status(&addons, "app").await.expect("the Addon stays");
    assert_eq!(spec["checksum"], sha256(&second).as_str());
    assert_eq!(status["objects"].as_array().map(Vec::len), Some(1));
    let managers: Vec<String> = config_maps
        .get("one")
        .await
        .expect("ConfigMap one")
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(managers, ["capstan-deploy"]);

    // A `.skip` beside the file: further edits are not applied.
    std::fs::write(dir.join("app.yaml.skip"), "").expect("writing the skip file");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    std::fs::write(dir.join("app.yaml"), config_map("one", "ignored")).expect("editing again");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        value_of(&config_maps, "one").await.as_deref(),
        Some("edited"),
        "a skipped file is not applied"
    );
    assert!(
        addons.get_opt("app").await.expect("reading").is_some(),
        "a skipped file keeps its Addon"
    );

    // A file deleted by hand: its Addon goes, its objects stay.
    std::fs::remove_file(dir.join("app.yaml.skip")).expect("removing the skip file");
    std::fs::remove_file(dir.join("app.yaml")).expect("removing the manifest");
    wait_for(
        "the Addon of a deleted file to go",
        APPLY_WITHIN,
        || async {
            addons
                .get_opt("app")
                .await
                .expect("reading")
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        value_of(&config_maps, "one").await.is_some(),
        "objects of a deleted file stay"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_is_reported_and_does_not_stop_the_others() {
    let server = TestServer::start(Engine::Sqlite).await;
    let dir = manifests(server.data_dir());
    let config_maps: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let addons = addons(&server.client);

    std::fs::write(
        dir.join("broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n",
    )
    .expect("writing the broken manifest");
    std::fs::write(
        dir.join("unknown.yml"),
        "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n",
    )
    .expect("writing a manifest of an unknown kind");
    let waiting = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: early\n  namespace: later\n";
    std::fs::write(dir.join("waiting.yaml"), waiting)
        .expect("writing a manifest for a missing namespace");
    std::fs::write(dir.join("good.yaml"), config_map("good", "yes"))
        .expect("writing the good manifest");

    wait_for("the good file applied", APPLY_WITHIN, || async {
        (value_of(&config_maps, "good").await.as_deref() == Some("yes")).then_some(())
    })
    .await;
    for name in ["broken", "unknown", "waiting"] {
        let (_, status) = wait_for(
            &format!("the error on Addon {name}"),
            APPLY_WITHIN,
            || async {
                let (spec, status) = addon_status(&addons, name).await?;
                status["error"]
                    .as_str()
                    .is_some_and(|e| !e.is_empty())
                    .then_some((spec, status))
            },
        )
        .await;
        let condition = &status["conditions"][0];
        assert_eq!(condition["type"], "Applied");
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "ApplyManifestFailed");
    }
    let (_, broken) = addon_status(&addons, "broken").await.expect("Addon broken");
    assert!(
        broken["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid YAML")),
        "{broken}"
    );
    let (_, unknown) = addon_status(&addons, "unknown")
        .await
        .expect("Addon unknown");
    assert!(
        unknown["error"]
            .as_str()
            .is_some_and(|e| e.contains("Gadget")),
        "{unknown}"
    );

    let events: Api<Event> = Api::namespaced(server.client.clone(), "kube-system");
    let event = wait_for("the ApplyManifestFailed Event", APPLY_WITHIN, || async {
        events
            .list(&ListParams::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("ApplyManifestFailed")
                    && e.involved_object.name.as_deref() == Some("broken")
            })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Addon"));

    // Retried with back-off: once the namespace exists the waiting file goes in.
    let namespaces: Api<Namespace> = Api::all(server.client.clone());
    let later: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "later" }
    }))
    .expect("a namespace");
    namespaces
        .create(&Default::default(), &later)
        .await
        .expect("creating namespace later");
    let in_later: Api<ConfigMap> = Api::namespaced(server.client.clone(), "later");
    wait_for("the retried file applied", EVENTUALLY, || async {
        in_later
            .get_opt("early")
            .await
            .expect("reading")
            .map(|_| ())
    })
    .await;
    let (_, status) = addon_status(&addons, "waiting")
        .await
        .expect("Addon waiting");
    assert!(status["error"].is_null(), "the error is cleared: {status}");
    assert_eq!(status["conditions"][0]["status"], "True");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_out_of_the_directory_huge_files_and_secrets_in_errors_are_refused() {
    let server = TestServer::start(Engine::Sqlite).await;
    let dir = manifests(server.data_dir());
    let config_maps: Api<ConfigMap> = Api::namespaced(server.client.clone(), "default");
    let addons = addons(&server.client);

    // A file elsewhere on the host, linked into the directory.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let outside = elsewhere.path().join("outside.yaml");
    std::fs::write(&outside, config_map("outside", "leaked")).expect("writing the outside file");
    std::os::unix::fs::symlink(&outside, dir.join("link.yaml")).expect("linking it in");
    // A broken file whose broken line holds a secret.
    std::fs::write(
        dir.join("secretive.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s\ndb_password: [hunter2, \n",
    )
    .expect("writing the secretive manifest");
    // A file far over the size limit.
    let huge = format!(
        "# {}\n{}",
        "x".repeat(5 * 1024 * 1024),
        config_map("huge", "no")
    );
    std::fs::write(dir.join("huge.yaml"), huge).expect("writing the huge manifest");
    std::fs::write(dir.join("good.yaml"), config_map("good", "yes")).expect("writing good");

    wait_for("the good file applied", APPLY_WITHIN, || async {
        (value_of(&config_maps, "good").await.as_deref() == Some("yes")).then_some(())
    })
    .await;
    let error_of = |name: &'static str| {
        let addons = addons.clone();
        async move {
            wait_for(
                &format!("the error on Addon {name}"),
                APPLY_WITHIN,
                || async {
                    let (_, status) = addon_status(&addons, name).await?;
                    status["error"]
                        .as_str()
                        .filter(|e| !e.is_empty())
                        .map(str::to_string)
                },
            )
            .await
        }
    };
    let secretive = error_of("secretive").await;
    assert!(
        secretive.contains("secretive.yaml: invalid YAML at line"),
        "{secretive}"
    );
    assert!(
        !secretive.contains("hunter2"),
        "the error echoes the file: {secretive}"
    );
    let huge = error_of("huge").await;
    assert!(huge.contains("at most 4194304 bytes"), "{huge}");

    let events: Api<Event> = Api::namespaced(server.client.clone(), "kube-system");
    let listed = events
        .list(&ListParams::default())
        .await
        .expect("listing events");
    for event in &listed.items {
        let message = event.message.as_deref().unwrap_or("");
        assert!(
            !message.contains("hunter2"),
            "an Event echoes the file: {message}"
        );
    }
    // Two more scans: the link is never followed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        value_of(&config_maps, "outside").await,
        None,
        "the link was followed"
    );
    assert!(
        addons
            .get_opt("link")
            .await
            .expect("reading an Addon")
            .is_none(),
        "the link became an Addon"
    );
    assert_eq!(value_of(&config_maps, "huge").await, None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_manifests_are_applied() {
    let data_dir = tempfile::tempdir().expect("a data dir");
    let path = data_dir.path().to_path_buf();
    let server =
        TestServer::start_with(Engine::Sqlite, |config| config.data_dir = path.clone()).await;
    let namespaces: Api<Namespace> = Api::all(server.client.clone());
    let classes: Api<PriorityClass> = Api::all(server.client.clone());
    let roles: Api<ClusterRole> = Api::all(server.client.clone());
    wait_for("the bundled manifests", EVENTUALLY, || async {
        let namespace = namespaces
            .get_opt("capstan-system")
            .await
            .expect("reading")
            .is_some();
        let viewer = roles
            .get_opt("capstan-viewer")
            .await
            .expect("reading")
            .is_some();
        let names: Vec<String> = classes
            .list(&ListParams::default())
            .await
            .expect("listing PriorityClasses")
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        let all = ["capstan-high", "capstan-default", "capstan-low"]
            .iter()
            .all(|n| names.iter().any(|m| m == n));
        (namespace && viewer && all).then_some(())
    })
    .await;
    let high = classes.get("capstan-high").await.expect("capstan-high");
    assert_eq!(high.value, Some(1_000_000));
    assert!(path.join("server/manifests/priority-classes.yaml").exists());
    server.stop().await;
}

/// `--disable` is a cluster-wide setting fixed when the cluster is bootstrapped (servers
/// with different values refuse to start), so the cluster starts with it: the bundled file
/// is removed from the directory, its objects never appear, and an Addon of that name left
/// from earlier is deleted together with the objects it lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_removes_a_bundled_manifest_and_its_objects() {
    let data_dir = tempfile::tempdir().expect("a data dir");
    let path = data_dir.path().to_path_buf();
    let dir = manifests(&path);
    // A copy from an earlier start, before the component was disabled.
    std::fs::write(dir.join("priority-classes.yaml"), "# stale\n").expect("a stale bundled file");
    let server = TestServer::start_with(Engine::Sqlite, |config| {
        config.data_dir = path.clone();
        config.disable = vec!["priority-classes".to_string()];
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(server.client.clone());
    wait_for("the other bundled manifests", EVENTUALLY, || async {
        namespaces
            .get_opt("capstan-system")
            .await
            .expect("reading")
            .map(|_| ())
    })
    .await;
    assert!(
        !dir.join("priority-classes.yaml").exists(),
        "the disabled file is removed"
    );
    let classes: Api<PriorityClass> = Api::all(server.client.clone());
    assert!(
        classes
            .list(&ListParams::default())
            .await
            .expect("listing")
            .items
            .is_empty()
    );

    // What an earlier deploy of the now-disabled manifest left: its object and its Addon.
    let class: PriorityClass = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "capstan-high" }, "value": 1000000
    }))
    .expect("a PriorityClass");
    classes
        .create(&Default::default(), &class)
        .await
        .expect("creating capstan-high");
    let addons = addons(&server.client);
    let mut addon: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "addons.capstan.io/v1", "kind": "Addon",
        "metadata": { "name": "priority-classes" },
        "spec": { "source": "priority-classes.yaml", "checksum": "0" },
    }))
    .expect("an Addon");
    addon = addons
        .create(&Default::default(), &addon)
        .await
        .expect("creating the Addon");
    addon.data["status"] = serde_json::json!({ "objects": [{
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "name": "capstan-high"
    }] });
    addons
        .replace_status("priority-classes", &Default::default(), &addon)
        .await
        .expect("writing the Addon's status");
    wait_for(
        "the disabled manifest's objects and Addon to go",
        EVENTUALLY,
        || async {
            let left = classes
                .list(&ListParams::default())
                .await
                .expect("listing")
                .items;
            let addon = addons.get_opt("priority-classes").await.expect("reading");
            (left.is_empty() && addon.is_none()).then_some(())
        },
    )
    .await;
    server.stop().await;
}

/// The id of the server that holds the leader lock, from the membership records.
async fn leader_id(database: &TestDatabase) -> Option<String> {
    let store = database.open().await;
    let page = store
        .list(&ListRequest {
            range: KeyRange::prefix(SERVERS_PREFIX),
            revision: None,
            limit: 0,
        })
        .await
        .expect("listing server records");
    page.items
        .iter()
        .filter_map(|item| serde_json::from_slice::<ServerRecord>(&item.value).ok())
        .find(|record| record.leader)
        .map(|record| record.id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_servers_only_the_leader_applies() {
    let database = TestDatabase::create(Engine::Postgres).await;
    let endpoint = database.endpoint().to_string();
    let first = TestServer::start_with(Engine::Postgres, |config| {
        config.datastore_endpoint = endpoint.clone();
    })
    .await;
    let token = std::fs::read_to_string(first.data_dir().join("server").join("token"))
        .expect("the first server wrote its token");
    let second = TestServer::start_with(Engine::Postgres, |config| {
        config.datastore_endpoint = endpoint.clone();
        config.token = token.trim().to_string();
    })
    .await;
    let leader = wait_for("a leader", EVENTUALLY, || leader_id(&database)).await;

    // The revision before the Addon exists, to replay its history from.
    let addons = addons(&first.client);
    let since = addons
        .list(&ListParams::default())
        .await
        .expect("listing Addons")
        .metadata
        .resource_version
        .expect("a list has a resourceVersion");
    let config_maps: Api<ConfigMap> = Api::namespaced(second.client.clone(), "default");
    for value in ["1", "2"] {
        for server in [&first, &second] {
            std::fs::write(
                manifests(server.data_dir()).join("shared.yaml"),
                config_map("shared", value),
            )
            .expect("writing the manifest on a server");
        }
        wait_for("the shared ConfigMap", APPLY_WITHIN, || async {
            (value_of(&config_maps, "shared").await.as_deref() == Some(value)).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Every version the Addon ever had, replayed by a watch from before it existed.
    let watch_params = WatchParams::default()
        .fields("metadata.name=shared")
        .timeout(3);
    let mut stream = addons
        .watch(&watch_params, &since)
        .await
        .expect("watching Addons")
        .boxed();
    let mut history = Vec::new();
    let replay = async {
        while let Ok(Some(event)) = stream.try_next().await {
            if let WatchEvent::Added(addon) | WatchEvent::Modified(addon) = event {
                let mut version = addon.data;
                version["metadata"] =
                    serde_json::to_value(&addon.metadata).expect("metadata serializes");
                history.push(version);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), replay).await;
    assert!(
        history.len() >= 2,
        "the Addon was written for both versions: {history:?}"
    );
    for version in &history {
        assert_eq!(
            version["metadata"]["annotations"]["addons.capstan.io/applied-by"].as_str(),
            Some(leader.as_str()),
            "every version of the Addon was written by the leader: {version}"
        );
        // The first version (a new object) has no status yet; every other names the leader.
        if !version["status"].is_null() {
            assert_eq!(
                version["status"]["appliedBy"].as_str(),
                Some(leader.as_str())
            );
        }
    }
    let checksums: std::collections::BTreeSet<&str> = history
        .iter()
        .filter_map(|v| v["spec"]["checksum"].as_str())
        .collect();
    assert_eq!(
        checksums.len(),
        2,
        "each content was applied once: {checksums:?}"
    );
    let shared = config_maps
        .get("shared")
        .await
        .expect("the shared ConfigMap");
    let managers: Vec<String> = shared
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        ["capstan-deploy"],
        "one manager wrote the ConfigMap"
    );

    second.stop().await;
    first.stop().await;
    database.cleanup().await;
}
