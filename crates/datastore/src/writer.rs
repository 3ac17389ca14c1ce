//! The per-server writer: one task that gathers the writes waiting at any moment into a
//! single transaction. The counter row serialises transactions across all servers, so one
//! transaction per write would cap throughput at one commit (one fsync, several round
//! trips) per write; a batch pays that cost once. While a batch commits, the next one
//! queues up, so batches grow exactly as fast as load does and an idle server commits a
//! lone write at once.
//!
//! The request channel is bounded: when it is full, callers wait (back-pressure) rather
//! than queueing without limit.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::backend::Backend;
use super::error::{DatastoreError, Result};
use super::feed::ChangeFeed;
use super::metrics::StoreOp;
use super::types::{Committed, WriteOp, WriteOutcome};

/// A write waiting for its batch.
pub(crate) struct WriteRequest {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<Committed>>,
}

/// Attempts for a batch that failed with a transient error (deadlock, serialisation);
/// such a batch was rolled back whole, so trying again cannot apply anything twice.
const ATTEMPTS: usize = 3;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn is_transient(err: &DatastoreError) -> bool {
    let DatastoreError::Query {
        source: sqlx::Error::Database(db),
        ..
    } = err
    else {
        return false;
    };
    // Postgres serialization_failure / deadlock_detected; MySQL ER_LOCK_DEADLOCK and
    // ER_LOCK_WAIT_TIMEOUT (SQLSTATE 40001 / HY000 with those codes).
    matches!(db.code().as_deref(), Some("40001") | Some("40P01"))
        || db.message().contains("Deadlock found")
        || db.message().contains("Lock wait timeout")
}

/// Runs until `shutdown`, then fails what is still queued.
pub(crate) async fn run(
    backend: Arc<dyn Backend>,
    feed: Arc<ChangeFeed>,
    mut requests: mpsc::Receiver<WriteRequest>,
    committed: watch::Sender<i64>,
    batch_max: usize,
    shutdown: CancellationToken,
) {
    let batch_max = batch_max.max(1);
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(batch_max);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            request = requests.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        batch.push(first);
        while batch.len() < batch_max {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let ops: Vec<WriteOp> = batch.iter().map(|r| r.op.clone()).collect();
        let mut result = Err(DatastoreError::ShuttingDown);
        for attempt in 1..=ATTEMPTS {
            result = feed
                .metrics
                .observe(StoreOp::WriteBatch, backend.apply(&ops, now_ms()))
                .await;
            match &result {
                Err(err) if attempt < ATTEMPTS && is_transient(err) => {
                    tracing::debug!(attempt, error = %err, "write batch hit a transient error; retrying");
                }
                _ => break,
            }
        }
        let committed_at = Instant::now();
        feed.metrics.write_batch(batch.len());
        match result {
            Ok(outcomes) => {
                let applied = || {
                    outcomes.iter().filter_map(|o| match o {
                        WriteOutcome::Applied { revision } => Some(*revision),
                        WriteOutcome::Conflict { .. } => None,
                    })
                };
                if let (Some(oldest), Some(newest)) = (applied().min(), applied().max()) {
                    // A batch's revisions are consecutive: the counter row serialises it.
                    feed.committed(oldest, newest, committed_at);
                    feed.wake();
                    committed.send_replace(newest);
                }
                for (request, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = request.reply.send(Ok(Committed {
                        outcome,
                        committed_at,
                    }));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, writes = batch.len(), "write batch failed");
                let shared = Arc::new(err);
                for request in batch.drain(..) {
                    let _ = request
                        .reply
                        .send(Err(DatastoreError::Batch(shared.clone())));
                }
            }
        }
    }
    requests.close();
    while let Ok(request) = requests.try_recv() {
        let _ = request.reply.send(Err(DatastoreError::ShuttingDown));
    }
}

/// Tells the other servers about this server's commits (Postgres NOTIFY), outside the
/// write transaction. Commits that land while a notification is being sent are covered by
/// the next one, so under load there is one notification per round trip, not per commit.
pub(crate) async fn run_announcer(
    backend: Arc<dyn Backend>,
    mut committed: watch::Receiver<i64>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = committed.changed() => if changed.is_err() { break },
        }
        let revision = *committed.borrow_and_update();
        if let Err(err) = backend.announce(revision).await {
            // Other servers still find the change by polling, just later.
            tracing::warn!(error = %err, revision, "could not announce a commit to other servers");
        }
    }
}
