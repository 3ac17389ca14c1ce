#![allow(clippy::unwrap_used)]
//! Custom resources: a CustomResourceDefinition becomes a served kind on every server
//! sharing the database within a second, gets its status conditions, and takes its
//! objects with it when deleted; custom objects are pruned and validated by their schema.
//! SQLite only: the controller sits above the storage layer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::registry::{
    DeleteOptions, DeleteOutcome, ObjectStore, Registry, RegistryError, ResourceType, WriteOptions,
    unknown_fields, validate_and_prune, validate_crd,
};
use capstan_apiserver::storage::{ListOptions, Storage};
use capstan_controllers::crd;
use capstan_datastore::Engine;
use common::TestDatabase;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a new kind may take to be served by every server.
const SERVED_WITHIN: Duration = Duration::from_secs(1);
/// How long status writes and cleanup may take.
const SETTLED_WITHIN: Duration = Duration::from_secs(10);

/// One API server: its object store and registry, with the CRD controller running.
struct Server {
    objects: ObjectStore,
    registry: Arc<Registry>,
}

struct Cluster {
    db: TestDatabase,
    servers: Vec<Server>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Cluster {
    async fn start(count: usize) -> Cluster {
        let db = TestDatabase::create(Engine::Sqlite).await;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut servers = Vec::new();
        for _ in 0..count {
            let objects = ObjectStore::new(Storage::new(db.open().await));
            let registry = Arc::new(Registry::new());
            tasks.spawn(crd::run(
                objects.clone(),
                registry.clone(),
                shutdown.clone(),
            ));
            servers.push(Server { objects, registry });
        }
        Cluster {
            db,
            servers,
            shutdown,
            tasks,
        }
    }

    fn objects(&self) -> &ObjectStore {
        &self.servers[0].objects
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(result) = self.tasks.join_next().await {
            result.expect("the controller ends cleanly on shutdown");
        }
        self.db.cleanup().await;
    }
}

fn builtin(group: &str, resource: &str) -> Arc<ResourceType> {
    Registry::new()
        .catalog()
        .lookup(group, "v1", resource)
        .expect("a built-in kind")
}

fn crds() -> Arc<ResourceType> {
    builtin("apiextensions.k8s.io", "customresourcedefinitions")
}

fn widget_schema() -> Value {
    json!({"type": "object", "properties": {
        "spec": {"type": "object", "required": ["replicas"], "properties": {
            "replicas": {"type": "integer"},
            "color": {"type": "string", "enum": ["red", "blue"]},
            "port": {"x-kubernetes-int-or-string": true},
            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}})
}

fn widget_crd(kind: &str, plural: &str) -> Value {
    let version = |name: &str, storage: bool| {
        json!({"name": name, "served": true, "storage": storage,
            "schema": {"openAPIV3Schema": widget_schema()},
            "subresources": {"status": {}, "scale": {
                "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
            "additionalPrinterColumns": [
                {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]})
    };
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.example.com")},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind},
            "versions": [version("v1", true), version("v1beta1", false)]}})
}

async fn create_crd(objects: &ObjectStore, crd: Value) -> Value {
    assert_eq!(validate_crd(&crd), [], "the test CRD is valid");
    objects
        .create(&crds(), None, crd, &WriteOptions::default())
        .await
        .unwrap()
}

/// Polls `check` until it holds or `within` passes.
async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn condition<'a>(crd: &'a Value, condition_type: &str) -> &'a Value {
    crd["status"]["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == condition_type))
        .unwrap_or(&Value::Null)
}

async fn settled_crd(objects: &ObjectStore, name: &str) -> Value {
    let mut found = Value::Null;
    eventually(SETTLED_WITHIN, "the CRD is established", async || {
        found = objects.get(&crds(), None, name).await.unwrap();
        condition(&found, "Established")["status"] == "True"
    })
    .await;
    found
}

#[tokio::test]
async fn a_new_crd_is_served_by_every_server_and_established() {
    let cluster = Cluster::start(2).await;
    create_crd(cluster.objects(), widget_crd("Widget", "widgets")).await;
    for server in &cluster.servers {
        eventually(SERVED_WITHIN, "widgets are served", async || {
            let catalog = server.registry.catalog();
            catalog.lookup("example.com", "v1", "widgets").is_some()
                && catalog
                    .lookup("example.com", "v1beta1", "widgets")
                    .is_some()
        })
        .await;
    }
    let widget = cluster.servers[1]
        .registry
        .catalog()
        .lookup("example.com", "v1", "widgets")
        .unwrap();
    assert_eq!(widget.kind, "Widget");
    assert!(widget.namespaced && widget.subresources.status);
    assert_eq!(
        widget.subresources.scale.as_ref().unwrap().spec_replicas,
        "spec.replicas"
    );
    assert_eq!(widget.columns[0].name, "Replicas");

    let crd = settled_crd(cluster.objects(), "widgets.example.com").await;
    let accepted = condition(&crd, "NamesAccepted");
    assert_eq!(
        (
            &accepted["status"],
            &accepted["reason"],
            &accepted["message"]
        ),
        (
            &json!("True"),
            &json!("NoConflicts"),
            &json!("no conflicts found")
        )
    );
    assert_eq!(
        condition(&crd, "Established")["reason"],
        "InitialNamesAccepted"
    );
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["acceptedNames"]["listKind"], "WidgetList");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    assert_eq!(
        crd["metadata"]["finalizers"],
        json!(["customresourcecleanup.apiextensions.k8s.io"])
    );
    cluster.stop().await;
}

#[tokio::test]
async fn a_crd_whose_names_are_taken_is_not_served() {
    let cluster = Cluster::start(1).await;
    create_crd(cluster.objects(), widget_crd("Widget", "widgets")).await;
    settled_crd(cluster.objects(), "widgets.example.com").await;
    create_crd(cluster.objects(), widget_crd("Widget", "gizmos")).await;
    let mut rejected = Value::Null;
    eventually(SETTLED_WITHIN, "the clash is reported", async || {
        rejected = cluster
            .objects()
            .get(&crds(), None, "gizmos.example.com")
            .await
            .unwrap();
        condition(&rejected, "NamesAccepted")["status"] == "False"
    })
    .await;
    assert_eq!(
        condition(&rejected, "NamesAccepted")["reason"],
        "NameConflict"
    );
    assert_eq!(condition(&rejected, "Established")["status"], "False");
    let catalog = cluster.servers[0].registry.catalog();
    assert!(catalog.lookup("example.com", "v1", "gizmos").is_none());
    assert!(catalog.lookup("example.com", "v1", "widgets").is_some());
    cluster.stop().await;
}

#[tokio::test]
async fn deleting_a_crd_deletes_its_objects_then_the_crd() {
    let cluster = Cluster::start(2).await;
    let objects = cluster.objects();
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    objects
        .create(
            &builtin("", "namespaces"),
            None,
            namespace,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    create_crd(objects, widget_crd("Widget", "widgets")).await;
    settled_crd(objects, "widgets.example.com").await;
    let widget = cluster.servers[0]
        .registry
        .catalog()
        .lookup("example.com", "v1", "widgets")
        .unwrap();
    for name in ["a", "b", "c"] {
        let object = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": name}, "spec": {"replicas": 1}});
        objects
            .create(&widget, Some("default"), object, &WriteOptions::default())
            .await
            .unwrap();
    }

    let outcome = objects
        .delete(
            &crds(),
            None,
            "widgets.example.com",
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, DeleteOutcome::Pending(_)),
        "the cleanup finalizer holds the CRD"
    );
    eventually(SETTLED_WITHIN, "the CRD is gone", async || {
        matches!(
            objects.get(&crds(), None, "widgets.example.com").await,
            Err(RegistryError::NotFound { .. })
        )
    })
    .await;
    let left = objects
        .list(&widget, None, &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(left.items, Vec::<Value>::new(), "objects go before the CRD");
    for server in &cluster.servers {
        eventually(SERVED_WITHIN, "widgets are no longer served", async || {
            let catalog = server.registry.catalog();
            catalog.lookup("example.com", "v1", "widgets").is_none()
        })
        .await;
    }
    cluster.stop().await;
}

#[test]
fn custom_objects_are_validated_against_their_schema() {
    let mut object = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"replicas": "three", "color": "green"}});
    let errors = validate_and_prune(&widget_schema(), &mut object);
    let rendered: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    assert_eq!(
        rendered,
        [
            "spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\"",
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
        ]
    );

    let mut missing = json!({"spec": {}});
    let errors = validate_and_prune(&widget_schema(), &mut missing);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (
            errors[0].field.as_str(),
            errors[0].cause,
            errors[0].message.as_str()
        ),
        ("spec.replicas", "FieldValueRequired", "Required value")
    );
}

#[test]
fn unknown_fields_are_pruned_unless_preserved() {
    let mut object = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "labels": {"a": "b"}},
        "spec": {"replicas": 1, "bogus": true, "extra": {"anything": {"goes": 1}}},
        "status": {"replicas": 1, "phase": "x"}, "top": 1});
    assert_eq!(
        unknown_fields(&widget_schema(), &object),
        ["spec.bogus", "status.phase", "top"]
    );
    let errors = validate_and_prune(&widget_schema(), &mut object);
    assert_eq!(errors, []);
    assert_eq!(
        object,
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "labels": {"a": "b"}},
            "spec": {"replicas": 1, "extra": {"anything": {"goes": 1}}},
            "status": {"replicas": 1}})
    );
}

#[test]
fn int_or_string_accepts_both() {
    for port in [json!(8080), json!("http")] {
        let mut object = json!({"spec": {"replicas": 1, "port": port}});
        assert_eq!(validate_and_prune(&widget_schema(), &mut object), []);
    }
    let mut object = json!({"spec": {"replicas": 1, "port": true}});
    let errors = validate_and_prune(&widget_schema(), &mut object);
    assert_eq!(errors[0].field, "spec.port");
}
