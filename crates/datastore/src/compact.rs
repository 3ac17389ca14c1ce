//! Upkeep that exactly one server does at a time: compaction of old history and expiry of
//! keys with a TTL. The server holding the `datastore-maintenance` lock does both; the
//! others stand by and take over when the lock frees (at once on Postgres and MySQL, where
//! it dies with the holder's connection; within the lease on SQLite).
//!
//! Compaction keeps a window of history (at least `compact_retain_revisions` revisions and
//! `compact_retain_seconds` seconds) and removes, below it, every version that a later one
//! replaced and every deletion marker. It first publishes the new oldest readable revision,
//! then cleans in steps of `compact_step_revisions` revisions, each its own short
//! transaction: revisions are dense, so a step's work is bounded by its size, and writers
//! (which only append at the head) never wait on it. Progress is stored, so a new leader
//! resumes where the old one stopped.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Store;
use super::backend::LockLease;
use super::error::Result;
use super::metrics::StoreOp;
use super::types::{WriteOp, WriteOutcome};

/// Name of the leader lock for datastore upkeep.
pub const MAINTENANCE_LOCK: &str = "datastore-maintenance";

/// What one compaction did.
#[derive(Debug, Clone, Default)]
pub struct CompactStats {
    /// The oldest readable revision afterwards.
    pub compact_revision: i64,
    /// Steps (transactions) run.
    pub steps: u64,
    /// History rows removed.
    pub rows_removed: u64,
    /// The longest step.
    pub longest_step: Duration,
}

impl Store {
    /// Makes `revision` the oldest readable revision and removes the history below it, in
    /// bounded steps. Stops early (with what it did) when `stop` is cancelled.
    pub async fn compact(&self, revision: i64, stop: &CancellationToken) -> Result<CompactStats> {
        let backend = &self.inner.backend;
        let metrics = &self.inner.feed.metrics;
        let current = backend.current_revision().await?;
        let target = revision.min(current);
        let state = backend.compaction_state().await?;
        if target > state.compact_revision {
            backend.publish_compact_revision(target).await?;
        }
        let compact_revision = target.max(state.compact_revision);
        let step = self.inner.config.compact_step_revisions.max(1);
        let mut stats = CompactStats {
            compact_revision,
            ..Default::default()
        };
        let mut through = state.compacted_through;
        let run_started = Instant::now();
        while through < compact_revision && !stop.is_cancelled() {
            metrics.compaction_backlog(compact_revision - through);
            let end = (through + step).min(compact_revision);
            let started = Instant::now();
            let removed = metrics
                .observe(StoreOp::CompactStep, backend.compact_range(through, end))
                .await?;
            stats.longest_step = stats.longest_step.max(started.elapsed());
            stats.steps += 1;
            stats.rows_removed += removed;
            metrics.compacted_rows(removed);
            through = end;
            // Let other work in between steps.
            tokio::task::yield_now().await;
        }
        metrics.compaction_backlog(compact_revision - through);
        if stats.steps > 0 {
            metrics.compaction_run(run_started);
        }
        Ok(stats)
    }

    /// Deletes keys whose TTL has passed (each with a compare on its revision, so a key
    /// rewritten meanwhile survives). Returns how many were deleted.
    pub async fn expire_keys(&self) -> Result<usize> {
        let expired = self
            .inner
            .backend
            .expired(super::writer::now_ms(), 500)
            .await?;
        let mut deleted = 0;
        let writes = expired.into_iter().map(|(key, revision)| {
            self.write(WriteOp::Delete {
                key,
                expected_revision: Some(revision),
            })
        });
        for result in futures::future::join_all(writes).await {
            if matches!(result?.outcome, WriteOutcome::Applied { .. }) {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// Campaigns for the maintenance lock and, while holding it, expires keys every second and
/// compacts every `compact_interval_seconds`, until `shutdown` (then releases the lock so a
/// standby takes over at once).
pub async fn run_maintenance(store: Store, holder: String, shutdown: CancellationToken) {
    let config = store.inner.config.clone();
    // (when, revision) samples, to find the newest revision older than the time window.
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    while !shutdown.is_cancelled() {
        let lease = match store
            .inner
            .backend
            .try_lock(MAINTENANCE_LOCK, &holder)
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                sleep_or_stop(Duration::from_secs(2), &shutdown).await;
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not campaign for datastore maintenance");
                sleep_or_stop(Duration::from_secs(5), &shutdown).await;
                continue;
            }
        };
        tracing::info!(%holder, "leading datastore maintenance (compaction, TTL expiry)");
        lead(&store, lease, &mut samples, &config, &shutdown).await;
    }
}

async fn lead(
    store: &Store,
    mut lease: Box<dyn LockLease>,
    samples: &mut VecDeque<(Instant, i64)>,
    config: &super::DatastoreConfig,
    shutdown: &CancellationToken,
) {
    let compact_every = Duration::from_secs(config.compact_interval_seconds.max(1));
    let retain_for = Duration::from_secs(config.compact_retain_seconds);
    let mut last_compaction = Instant::now();
    loop {
        sleep_or_stop(Duration::from_secs(1), shutdown).await;
        if shutdown.is_cancelled() {
            lease.release().await;
            return;
        }
        if !lease.still_held().await {
            tracing::warn!("lost the datastore maintenance lock; standing by");
            return;
        }
        if let Err(err) = store.expire_keys().await {
            tracing::warn!(error = %err, "TTL expiry failed; will retry");
        }
        if last_compaction.elapsed() < compact_every {
            continue;
        }
        last_compaction = Instant::now();
        let current = match store.inner.backend.current_revision().await {
            Ok(current) => current,
            Err(err) => {
                tracing::warn!(error = %err, "compaction could not read the revision; will retry");
                continue;
            }
        };
        samples.push_back((Instant::now(), current));
        let aged = newest_aged_revision(samples, retain_for);
        let target = (current - config.compact_retain_revisions).min(aged);
        if target <= 0 {
            continue;
        }
        match store.compact(target, shutdown).await {
            Ok(stats) if stats.steps > 0 => tracing::info!(
                compact_revision = stats.compact_revision,
                steps = stats.steps,
                rows_removed = stats.rows_removed,
                longest_step_ms = stats.longest_step.as_millis() as u64,
                "compacted datastore history"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "compaction failed; will retry"),
        }
    }
}

/// The revision of the newest sample at least `retain_for` old (0 when none is), dropping
/// the samples that it supersedes so the window stays small.
fn newest_aged_revision(samples: &mut VecDeque<(Instant, i64)>, retain_for: Duration) -> i64 {
    while samples
        .get(1)
        .is_some_and(|(when, _)| when.elapsed() >= retain_for)
    {
        samples.pop_front();
    }
    samples
        .front()
        .filter(|(when, _)| when.elapsed() >= retain_for)
        .map_or(0, |(_, revision)| *revision)
}

async fn sleep_or_stop(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_by_age_takes_the_newest_revision_old_enough() {
        let now = Instant::now();
        let ago = |seconds| {
            now.checked_sub(Duration::from_secs(seconds))
                .expect("test clock")
        };
        let mut samples: VecDeque<(Instant, i64)> =
            [(ago(400), 10), (ago(310), 20), (ago(200), 30), (ago(0), 40)]
                .into_iter()
                .collect();
        assert_eq!(
            newest_aged_revision(&mut samples, Duration::from_secs(300)),
            20
        );
        assert_eq!(
            samples.len(),
            3,
            "the sample superseded by an older-than-window one is dropped"
        );

        let mut young: VecDeque<(Instant, i64)> = [(ago(10), 5)].into_iter().collect();
        assert_eq!(
            newest_aged_revision(&mut young, Duration::from_secs(300)),
            0
        );
        assert_eq!(
            newest_aged_revision(&mut VecDeque::new(), Duration::from_secs(300)),
            0
        );
    }
}
