//! Controllers: the loops that make objects mean what Kubernetes says they mean.
//!
//! - `namespace.rs`: a deleted namespace is emptied, then finalized.
//! - `gc.rs` (with its picture of ownership, `graph.rs`): objects whose owners are gone
//!   are deleted; foreground and orphan deletes are carried out.
//! - `bootstrap.rs`: the namespaces every cluster has.
//! - `crd.rs`: CustomResourceDefinitions become served kinds on this server, and get their
//!   `Established`/`NamesAccepted` status.
//! - `node_password.rs`: a deleted Node's password Secret is deleted; orphans are swept.
//!
//! Every controller runs on every server at once: each write is conditional (uid,
//! resourceVersion) and idempotent, and `NotFound`/`Conflict` just mean another server got
//! there first. [`run`] owns the controller tasks; a controller that fails (the datastore
//! is unreachable, its watch was cut off) is restarted with a fresh list after a back-off,
//! and shutdown stops them all and waits for them.

mod bootstrap;
pub mod crd;
mod gc;
mod graph;
mod namespace;
mod node_password;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::datastore::DatastoreError;
use crate::registry::{ObjectStore, Registry, RegistryError, ResourceType};

pub use bootstrap::{DEFAULT_NAMESPACES, ensure_default_namespaces};
pub use namespace::KUBERNETES_FINALIZER;

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
