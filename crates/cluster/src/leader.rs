//! Leader election among servers, for the singletons that must run once per cluster (the
//! `default/kubernetes` endpoints, node lifecycle).
//!
//! The datastore's leader locks do the real work (an advisory lock on Postgres, `GET_LOCK`
//! on MySQL, a lease row on SQLite): whoever holds `capstan-leader` leads. A lock held on a
//! database session dies with the session, so a crashed leader's lock frees itself when its
//! connection drops; a clean stop releases it at once. The holder checks the lock every
//! second and steps down the moment it is lost, so two servers never both think they lead
//! for longer than that.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{IntGauge, register_int_gauge};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use capstan_datastore::Store;

/// The name of the cluster leader lock.
pub const LEADER_LOCK: &str = "capstan-leader";
/// How often a standby tries to take the lock, and the leader checks it still holds it.
const CHECK_EVERY: Duration = Duration::from_secs(1);

static LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "capstan_cluster_leader",
        "1 while this server is the cluster leader, else 0."
    )
    .expect("cluster metric names are registered once")
});

/// Campaigns for the leader lock as `holder` until `shutdown` (then releases it). The
/// receiver says whether this server leads now.
pub fn start(
    store: Store,
    holder: String,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> watch::Receiver<bool> {
    let (leading, receiver) = watch::channel(false);
    LEADER.set(0);
    tasks.spawn(campaign(store, holder, leading, shutdown));
    receiver
}

async fn campaign(
    store: Store,
    holder: String,
    leading: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut lease = match store.try_lock(LEADER_LOCK, &holder).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                pause(&shutdown).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot campaign for cluster leadership; retrying");
                pause(&shutdown).await;
                continue;
            }
        };
        tracing::info!(%holder, "became the cluster leader");
        LEADER.set(1);
        leading.send_replace(true);
        loop {
            pause(&shutdown).await;
            if shutdown.is_cancelled() {
                leading.send_replace(false);
                LEADER.set(0);
                lease.release().await;
                tracing::info!(%holder, "released cluster leadership");
                return;
            }
            if !lease.still_held().await {
                tracing::warn!(%holder, "lost cluster leadership; standing by");
                leading.send_replace(false);
                LEADER.set(0);
                break;
            }
        }
    }
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(CHECK_EVERY) => {}
    }
}

/// Waits until this server leads (or `shutdown`); `false` when shutting down or when the
/// election has stopped.
pub async fn wait_to_lead(
    leader: &mut watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        outcome = leader.wait_for(|leading| *leading) => outcome.is_ok(),
    }
}

/// Waits until this server no longer leads.
pub async fn wait_to_lose(leader: &mut watch::Receiver<bool>) {
    let _ = leader.wait_for(|leading| !*leading).await;
}
