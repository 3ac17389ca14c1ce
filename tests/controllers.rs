#![allow(clippy::unwrap_used)]
//! The controllers' contract: default namespaces, namespace deletion that empties the
//! namespace first, and garbage collection by ownerReferences in the background, the
//! foreground and with orphaning. On SQLite, and the namespace and background cases on
//! Postgres too (the same code over a server database, with two controller sets racing).

mod common;

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::registry::{
    DeleteOptions, DeleteOutcome, ObjectStore, Part, Propagation, Registry, RegistryError,
    ResourceType, WriteOptions,
};
use capstan_apiserver::storage::{ListOptions, Storage};
use capstan_datastore::Engine;
use common::TestDatabase;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for a controller to get something done.
const DEADLINE: Duration = Duration::from_secs(10);

/// A store with the default namespaces and `servers` controller sets running on it.
struct Cluster {
    db: TestDatabase,
    objects: ObjectStore,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    controllers: Vec<JoinHandle<()>>,
}

impl Cluster {
    async fn start(engine: Engine, servers: usize) -> Cluster {
        let db = TestDatabase::create(engine).await;
        let objects = ObjectStore::new(Storage::new(db.open().await));
        let registry = Arc::new(Registry::new());
        capstan_controllers::ensure_default_namespaces(&objects, &registry)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let mut running = Vec::new();
        for server in 0..servers {
            // Each "server" has a store of its own on the shared database.
            let objects = if server == 0 {
                objects.clone()
            } else {
                ObjectStore::new(Storage::new(db.open().await))
            };
            running.push(tokio::spawn(capstan_controllers::run(
                objects,
                registry.clone(),
                shutdown.clone(),
            )));
        }
        Cluster {
            db,
            objects,
            registry,
            shutdown,
            controllers: running,
        }
    }

    fn kind(&self, api_version: &str, kind: &str) -> Arc<ResourceType> {
        self.registry.catalog().by_kind(api_version, kind).unwrap()
    }

    async fn create(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        object: Value,
    ) -> Value {
        let kind = self.kind(api_version, kind);
        self.objects
            .create(&kind, ns, object, &WriteOptions::default())
            .await
            .unwrap()
    }

    async fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let kind = self.kind(api_version, kind);
        match self.objects.get(&kind, ns, name).await {
            Ok(found) => Some(found),
            Err(RegistryError::NotFound { .. }) => None,
            Err(error) => panic!("reading {name}: {error}"),
        }
    }

    async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        propagation: Propagation,
    ) -> DeleteOutcome {
        let kind = self.kind(api_version, kind);
        let options = DeleteOptions {
            propagation,
            ..DeleteOptions::default()
        };
        self.objects
            .delete(&kind, ns, name, &options)
            .await
            .unwrap()
    }

    /// Waits until the object is gone; fails the test after [`DEADLINE`].
    async fn wait_gone(&self, api_version: &str, kind: &str, ns: Option<&str>, name: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.get(api_version, kind, ns, name).await.is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind} {name} still exists after {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.controllers {
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("controllers stop on shutdown")
                .unwrap();
        }
        self.db.cleanup().await;
    }
}

fn configmap(name: &str, owners: &[&Value]) -> Value {
    let owners: Vec<Value> = owners
        .iter()
        .map(|owner| {
            json!({"apiVersion": owner["apiVersion"], "kind": owner["kind"],
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                "blockOwnerDeletion": true})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": owners}, "data": {"k": "v"}})
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_namespaces_exist_and_ensuring_twice_is_fine() {
    let cluster = Cluster::start(Engine::Sqlite, 0).await;
    capstan_controllers::ensure_default_namespaces(&cluster.objects, &cluster.registry)
        .await
        .unwrap();
    for name in capstan_controllers::DEFAULT_NAMESPACES {
        let namespace = cluster.get("v1", "Namespace", None, name).await;
        let namespace = namespace.unwrap_or_else(|| panic!("namespace {name} exists"));
        assert_eq!(namespace["status"]["phase"], "Active");
    }
    cluster.stop().await;
}

async fn deleting_a_namespace_empties_it_then_removes_it(engine: Engine, servers: usize) {
    let cluster = Cluster::start(engine, servers).await;
    let ns = Some("doomed");
    cluster
        .create(
            "v1",
            "Namespace",
            None,
            json!({"metadata": {"name": "doomed"}}),
        )
        .await;
    for i in 0..20 {
        cluster
            .create("v1", "ConfigMap", ns, configmap(&format!("cm-{i}"), &[]))
            .await;
    }
    cluster
        .create("apps/v1", "Deployment", ns, deployment("web"))
        .await;

    let outcome = cluster
        .delete("v1", "Namespace", None, "doomed", Propagation::Background)
        .await;
    let DeleteOutcome::Pending(marked) = outcome else {
        panic!("a namespace waits for its content: {outcome:?}");
    };
    assert_eq!(marked["status"]["phase"], "Terminating");
    let kind = cluster.kind("v1", "ConfigMap");
    let refused = cluster
        .objects
        .create(&kind, ns, configmap("late", &[]), &WriteOptions::default())
        .await;
    assert!(
        matches!(refused, Err(RegistryError::Forbidden { .. })),
        "creating in a terminating namespace is forbidden: {refused:?}"
    );

    cluster.wait_gone("v1", "Namespace", None, "doomed").await;
    let left = cluster
        .objects
        .list(&kind, ns, &ListOptions::default())
        .await
        .unwrap();
    assert!(left.items.is_empty(), "the namespace's objects went first");
    let deployments = cluster.kind("apps/v1", "Deployment");
    let left = cluster
        .objects
        .list(&deployments, ns, &ListOptions::default())
        .await
        .unwrap();
    assert!(left.items.is_empty());
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_it_then_removes_it_on_sqlite() {
    deleting_a_namespace_empties_it_then_removes_it(Engine::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_it_then_removes_it_with_two_servers_on_postgres() {
    deleting_a_namespace_empties_it_then_removes_it(Engine::Postgres, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_waits_for_content_with_finalizers() {
    let cluster = Cluster::start(Engine::Sqlite, 1).await;
    let ns = Some("held");
    cluster
        .create(
            "v1",
            "Namespace",
            None,
            json!({"metadata": {"name": "held"}}),
        )
        .await;
    let mut held = configmap("held", &[]);
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    cluster.create("v1", "ConfigMap", ns, held).await;
    cluster
        .delete("v1", "Namespace", None, "held", Propagation::Background)
        .await;

    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let namespace = cluster.get("v1", "Namespace", None, "held").await.unwrap();
        let remaining = namespace["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "NamespaceFinalizersRemaining" && c["status"] == "True");
        if remaining {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no condition reports the finalizer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cm = cluster.get("v1", "ConfigMap", ns, "held").await.unwrap();
    assert!(cm["metadata"]["deletionTimestamp"].is_string());

    let kind = cluster.kind("v1", "ConfigMap");
    cluster
        .objects
        .update(
            &kind,
            ns,
            "held",
            Part::Main,
            &WriteOptions::default(),
            |current| {
                let mut next = current.clone();
                next["metadata"]["finalizers"] = json!([]);
                Ok(next)
            },
        )
        .await
        .unwrap();
    cluster.wait_gone("v1", "Namespace", None, "held").await;
    cluster.stop().await;
}

async fn background_collection(engine: Engine, servers: usize) {
    let cluster = Cluster::start(engine, servers).await;
    let ns = Some("default");
    let web = cluster
        .create("apps/v1", "Deployment", ns, deployment("web"))
        .await;
    let api = cluster
        .create("apps/v1", "Deployment", ns, deployment("api"))
        .await;
    cluster
        .create("v1", "ConfigMap", ns, configmap("only-web", &[&web]))
        .await;
    cluster
        .create("v1", "ConfigMap", ns, configmap("shared", &[&web, &api]))
        .await;
    cluster
        .create("v1", "ConfigMap", ns, configmap("unowned", &[]))
        .await;

    cluster
        .delete("apps/v1", "Deployment", ns, "web", Propagation::Background)
        .await;
    cluster.wait_gone("v1", "ConfigMap", ns, "only-web").await;
    // Give the collector time to make a mistake before looking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        cluster.get("v1", "ConfigMap", ns, "shared").await.is_some(),
        "one owner is left"
    );
    assert!(
        cluster
            .get("v1", "ConfigMap", ns, "unowned")
            .await
            .is_some()
    );

    cluster
        .delete("apps/v1", "Deployment", ns, "api", Propagation::Background)
        .await;
    cluster.wait_gone("v1", "ConfigMap", ns, "shared").await;
    assert!(
        cluster
            .get("v1", "ConfigMap", ns, "unowned")
            .await
            .is_some()
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_collection_deletes_dependents_once_every_owner_is_gone() {
    background_collection(Engine::Sqlite, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_collection_with_two_servers_on_postgres() {
    background_collection(Engine::Postgres, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_of_a_deleted_owner_found_at_start_are_collected() {
    let cluster = Cluster::start(Engine::Sqlite, 0).await;
    let ns = Some("default");
    let web = cluster
        .create("apps/v1", "Deployment", ns, deployment("web"))
        .await;
    cluster
        .create("v1", "ConfigMap", ns, configmap("orphaned", &[&web]))
        .await;
    cluster
        .delete("apps/v1", "Deployment", ns, "web", Propagation::Background)
        .await;
    // The controllers start after the owner went: the initial list finds the dependent.
    let shutdown = cluster.shutdown.clone();
    let running = tokio::spawn(capstan_controllers::run(
        cluster.objects.clone(),
        cluster.registry.clone(),
        shutdown,
    ));
    cluster.wait_gone("v1", "ConfigMap", ns, "orphaned").await;
    cluster.shutdown.cancel();
    running.await.unwrap();
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreground_delete_waits_for_the_dependents() {
    let cluster = Cluster::start(Engine::Sqlite, 1).await;
    let ns = Some("default");
    let web = cluster
        .create("apps/v1", "Deployment", ns, deployment("web"))
        .await;
    // The dependent holds on with a finalizer of its own, so the wait can be seen.
    let mut held = configmap("held", &[&web]);
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    cluster.create("v1", "ConfigMap", ns, held).await;

    let outcome = cluster
        .delete("apps/v1", "Deployment", ns, "web", Propagation::Foreground)
        .await;
    assert!(matches!(outcome, DeleteOutcome::Pending(_)), "{outcome:?}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let cm = cluster.get("v1", "ConfigMap", ns, "held").await.unwrap();
        if cm["metadata"]["deletionTimestamp"].is_string() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dependent is not being deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let owner = cluster.get("apps/v1", "Deployment", ns, "web").await;
    let owner = owner.expect("the owner waits for its dependent");
    assert!(owner["metadata"]["deletionTimestamp"].is_string());

    let kind = cluster.kind("v1", "ConfigMap");
    cluster
        .objects
        .update(
            &kind,
            ns,
            "held",
            Part::Main,
            &WriteOptions::default(),
            |current| {
                let mut next = current.clone();
                next["metadata"]["finalizers"] = json!([]);
                Ok(next)
            },
        )
        .await
        .unwrap();
    cluster.wait_gone("v1", "ConfigMap", ns, "held").await;
    cluster.wait_gone("apps/v1", "Deployment", ns, "web").await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaning_delete_keeps_the_dependents_without_the_reference() {
    let cluster = Cluster::start(Engine::Sqlite, 1).await;
    let ns = Some("default");
    let web = cluster
        .create("apps/v1", "Deployment", ns, deployment("web"))
        .await;
    let api = cluster
        .create("apps/v1", "Deployment", ns, deployment("api"))
        .await;
    cluster
        .create("v1", "ConfigMap", ns, configmap("kept", &[&web]))
        .await;
    cluster
        .create(
            "v1",
            "ConfigMap",
            ns,
            configmap("two-owners", &[&web, &api]),
        )
        .await;

    let outcome = cluster
        .delete("apps/v1", "Deployment", ns, "web", Propagation::Orphan)
        .await;
    assert!(matches!(outcome, DeleteOutcome::Pending(_)), "{outcome:?}");
    cluster.wait_gone("apps/v1", "Deployment", ns, "web").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = cluster
        .get("v1", "ConfigMap", ns, "kept")
        .await
        .expect("orphaned, not deleted");
    assert!(kept["metadata"]["ownerReferences"].is_null(), "{kept}");
    let two = cluster
        .get("v1", "ConfigMap", ns, "two-owners")
        .await
        .unwrap();
    let owners = two["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0]["uid"], api["metadata"]["uid"]);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_created_after_its_owner_went_is_collected() {
    let cluster = Cluster::start(Engine::Sqlite, 1).await;
    let ns = Some("default");
    let web = cluster
        .create("apps/v1", "Deployment", ns, deployment("web"))
        .await;
    cluster
        .delete("apps/v1", "Deployment", ns, "web", Propagation::Background)
        .await;
    cluster
        .create("v1", "ConfigMap", ns, configmap("late", &[&web]))
        .await;
    // Well before the 30 s full scan: the creation itself is the trigger.
    cluster.wait_gone("v1", "ConfigMap", ns, "late").await;
    cluster.stop().await;
}

/// How many single-key reads the stores of `db` have sent to the datastore.
fn datastore_gets(db: &TestDatabase) -> u64 {
    db.registry()
        .gather()
        .iter()
        .filter(|family| family.name() == "capstan_datastore_query_duration_seconds")
        .flat_map(|family| family.get_metric())
        .filter(|metric| {
            metric
                .get_label()
                .iter()
                .any(|label| label.name() == "operation" && label.value() == "get")
        })
        .map(|metric| metric.get_histogram().get_sample_count())
        .sum()
}

/// Creates `name` in `ns` through `objects`; the error, if refused.
async fn try_create_configmap(
    objects: &ObjectStore,
    kind: &ResourceType,
    ns: &str,
    name: &str,
) -> Result<Value, RegistryError> {
    objects
        .create(
            kind,
            Some(ns),
            configmap(name, &[]),
            &WriteOptions::default(),
        )
        .await
}

/// Each server keeps a cache of namespaces so a create does not read its namespace; the
/// cache must never refuse a namespace that exists, and must learn of one that another
/// server marked for deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_checks_on_create_follow_other_servers() {
    let cluster = Cluster::start(Engine::Postgres, 1).await;
    let a = cluster.objects.clone();
    let b = ObjectStore::new(Storage::new(cluster.db.open().await));
    let mut trackers = Vec::new();
    for objects in [a.clone(), b.clone()] {
        let shutdown = cluster.shutdown.clone();
        trackers.push(tokio::spawn(async move {
            objects.track_namespaces(shutdown).await
        }));
    }
    let configmaps = cluster.kind("v1", "ConfigMap");
    let namespaces = cluster.kind("v1", "Namespace");

    // Warm both caches, then make a namespace on one server and use it at once on the other.
    for objects in [&a, &b] {
        try_create_configmap(objects, &configmaps, "default", "warm")
            .await
            .ok();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let make_fresh = async || {
        cluster
            .create(
                "v1",
                "Namespace",
                None,
                json!({"metadata": {"name": "fresh"}}),
            )
            .await
    };
    make_fresh().await;
    try_create_configmap(&b, &configmaps, "fresh", "at-once")
        .await
        .expect("a namespace made on another server a moment ago takes content");
    let missing = try_create_configmap(&b, &configmaps, "nowhere", "x").await;
    assert!(
        matches!(missing, Err(RegistryError::NotFound { .. })),
        "a create in a missing namespace is NotFound: {missing:?}"
    );
    // Once B's watch has brought the new namespace, its creates stop reading it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reads_before = datastore_gets(&cluster.db);
    for i in 0..20 {
        try_create_configmap(&b, &configmaps, "fresh", &format!("cm-{i}"))
            .await
            .expect("creates in an open namespace succeed");
    }
    let reads = datastore_gets(&cluster.db) - reads_before;
    assert!(
        reads < 10,
        "20 creates in a known namespace read the datastore {reads} times"
    );

    // Mark it for deletion on A: A refuses at once, B within the change feed's delay.
    let outcome = a
        .delete(&namespaces, None, "fresh", &DeleteOptions::default())
        .await
        .unwrap();
    assert!(matches!(outcome, DeleteOutcome::Pending(_)), "{outcome:?}");
    let refused = try_create_configmap(&a, &configmaps, "fresh", "late-a").await;
    assert!(
        matches!(refused, Err(RegistryError::Forbidden { .. })),
        "the server that marked the namespace refuses at once: {refused:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_create_configmap(&b, &configmaps, "fresh", &format!("late-b-{attempt}")).await {
            Err(RegistryError::Forbidden { .. }) => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the other server still takes content in a terminating namespace: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    // Once the namespace is gone, making it again opens it on both servers.
    cluster.wait_gone("v1", "Namespace", None, "fresh").await;
    make_fresh().await;
    try_create_configmap(&a, &configmaps, "fresh", "again-a")
        .await
        .expect("the server that made the namespace again takes content at once");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Err(error) = try_create_configmap(&b, &configmaps, "fresh", "again-b").await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other server refuses a namespace made again: {error}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop().await;
    for tracker in trackers {
        tokio::time::timeout(Duration::from_secs(5), tracker)
            .await
            .expect("the namespace cache stops on shutdown")
            .unwrap();
    }
}
