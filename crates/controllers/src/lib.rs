//! Controllers: the loops that make objects mean what Kubernetes says they mean.
//!
//! - `namespace.rs`: a deleted namespace is emptied, then finalized.
//! - `gc.rs` (with its picture of ownership, `graph.rs`): objects whose owners are gone
//!   are deleted; foreground and orphan deletes are carried out.
//! - `bootstrap.rs`: the namespaces every cluster has.
//! - `crd.rs`: CustomResourceDefinitions become served kinds on this server, and get their
//!   `Established`/`NamesAccepted` status.
//! - `kubernetes_endpoints.rs` and `node_lifecycle.rs`: the singletons, run by the cluster
//!   leader only ([`run_leader_singletons`]): the `default/kubernetes` endpoints from the
//!   live servers, and NotReady/unreachable marking of nodes whose heartbeat lapsed.
//! - `node_password.rs`: a deleted Node's password Secret is deleted; orphans are swept.
//! - `deploy/`: auto-deployed manifests from `<data-dir>/server/manifests` (leader only).
//!
//! Every other controller runs on every server at once: each write is conditional (uid,
//! resourceVersion) and idempotent, and `NotFound`/`Conflict` just mean another server got
//! there first. [`run`] owns the controller tasks; a controller that fails (the datastore
//! is unreachable, its watch was cut off) is restarted with a fresh list after a back-off,
//! and shutdown stops them all and waits for them.

mod bootstrap;
pub mod crd;
pub mod deploy;
mod gc;
mod graph;
mod kubernetes_endpoints;
mod namespace;
mod node_lifecycle;
mod node_password;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use capstan_apiserver::registry::{ObjectStore, Registry, RegistryError, ResourceType};
use capstan_cluster::leader;
use capstan_cluster::membership::ServerRecord;
use capstan_datastore::DatastoreError;

pub use bootstrap::{DEFAULT_NAMESPACES, ensure_default_namespaces};
pub use kubernetes_endpoints::KUBERNETES_SERVICE_IP;
pub use namespace::KUBERNETES_FINALIZER;
pub use node_lifecycle::{NODE_LEASE_NAMESPACE, UNREACHABLE_TAINT};

/// Why a controller stopped (it is restarted).
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Reading or writing objects failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The datastore failed under a list or watch of every object.
    #[error("datastore: {0}")]
    Datastore(#[from] DatastoreError),
    /// A watch ended without an error (the datastore is shutting down).
    #[error("the watch on {0} ended")]
    WatchEnded(&'static str),
}

/// A run shorter than this counts as a failure in a row for the back-off.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs every controller until `shutdown` is cancelled, then waits for them to stop.
pub async fn run(objects: ObjectStore, registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut tasks = JoinSet::new();
    // Every server runs the CRD controller: each serves the kinds of every CRD.
    tasks.spawn(crd::run(
        objects.clone(),
        registry.clone(),
        shutdown.clone(),
    ));
    {
        let (objects, registry) = (objects.clone(), registry.clone());
        tasks.spawn(supervise("namespace", shutdown.clone(), move || {
            namespace::run(objects.clone(), registry.clone())
        }));
    }
    {
        let (objects, registry) = (objects.clone(), registry.clone());
        tasks.spawn(supervise("node-password", shutdown.clone(), move || {
            node_password::run(objects.clone(), registry.clone())
        }));
    }
    tasks.spawn(supervise(
        "garbage-collector",
        shutdown.clone(),
        move || gc::run(objects.clone(), registry.clone()),
    ));
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "a controller task ended abnormally");
        }
    }
}

/// What the leader-only controllers need to know.
#[derive(Debug, Clone)]
pub struct LeaderSettings {
    /// This server's API port: the `kubernetes` Service's target port.
    pub https_port: u16,
    /// A node whose heartbeat is older than this is marked unreachable.
    pub node_monitor_grace_period: Duration,
    /// The auto-deployed manifests: this server's directory, `--disable`, its identity.
    pub deploy: deploy::DeploySettings,
}

/// Runs the singletons (the `default/kubernetes` endpoints, node lifecycle) while `leader`
/// says this server leads; stops them when leadership is lost and starts them again when it
/// returns, until `shutdown`.
pub async fn run_leader_singletons(
    objects: ObjectStore,
    registry: Arc<Registry>,
    servers: watch::Receiver<Vec<ServerRecord>>,
    mut leading: watch::Receiver<bool>,
    settings: LeaderSettings,
    shutdown: CancellationToken,
) {
    while leader::wait_to_lead(&mut leading, &shutdown).await {
        let term = shutdown.child_token();
        let mut tasks = JoinSet::new();
        {
            let (objects, registry, servers) = (objects.clone(), registry.clone(), servers.clone());
            let port = settings.https_port;
            tasks.spawn(supervise("kubernetes-endpoints", term.clone(), move || {
                kubernetes_endpoints::run(objects.clone(), registry.clone(), servers.clone(), port)
            }));
        }
        {
            let (objects, registry) = (objects.clone(), registry.clone());
            let grace = settings.node_monitor_grace_period;
            tasks.spawn(supervise("node-lifecycle", term.clone(), move || {
                node_lifecycle::run(objects.clone(), registry.clone(), grace)
            }));
        }
        {
            let (objects, registry) = (objects.clone(), registry.clone());
            let deploy = settings.deploy.clone();
            tasks.spawn(supervise("deploy", term.clone(), move || {
                deploy::run(objects.clone(), registry.clone(), deploy.clone())
            }));
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = leader::wait_to_lose(&mut leading) => {}
        }
        term.cancel();
        while let Some(done) = tasks.join_next().await {
            if let Err(error) = done {
                tracing::error!(%error, "a leader controller task ended abnormally");
            }
        }
    }
}

/// Runs `start()` again and again until shutdown, with a back-off after failures.
async fn supervise<F, Fut>(name: &'static str, shutdown: CancellationToken, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ControllerError>>,
{
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = start() => outcome,
        };
        if started.elapsed() > HEALTHY_RUN {
            backoff.reset();
        }
        match outcome {
            Ok(()) => tracing::debug!(controller = name, "controller returned; restarting"),
            Err(error) => {
                tracing::warn!(controller = name, %error, "controller failed; restarting")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Exponential back-off from 100 ms to 30 s.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    fn next_delay(&mut self) -> Duration {
        let delay = Self::FIRST.saturating_mul(1 << self.failures.min(10));
        self.failures = self.failures.saturating_add(1);
        delay.min(Self::MAX)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The core `Namespace` kind of the current catalog.
fn namespace_kind(registry: &Registry) -> Result<Arc<ResourceType>, RegistryError> {
    registry
        .catalog()
        .by_kind("v1", "Namespace")
        .ok_or_else(|| RegistryError::Internal("the catalog has no v1 Namespace kind".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_ceiling_and_resets() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        assert_eq!(backoff.next_delay(), Duration::from_millis(200));
        for _ in 0..20 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), Duration::from_secs(30));
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
