//! Datastore metrics, registered next to the code they measure. Every backend call that
//! matters goes through [`observe`], the one choke point for latency and outcome, and for
//! the tracing span of each call.

use std::future::Future;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use prometheus::{
    Histogram, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, register_histogram,
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec,
};

use tracing::Instrument as _;
use tracing::field::Empty;

use super::error::Result;

/// The datastore operations, as metric label values (a fixed set, never user input).
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    /// Read one key.
    Get,
    /// Read one key at a past revision.
    GetAt,
    /// Read a page of keys.
    List,
    /// Count keys.
    Count,
    /// One write transaction (a batch).
    WriteBatch,
    /// Read the change log.
    History,
    /// Read the revision counter.
    Revision,
    /// One compaction step.
    CompactStep,
}

impl StoreOp {
    /// Whether the operation runs on the shared pool (not the writer's or the feed's own
    /// connection): those are the ones that can queue for a connection.
    fn uses_shared_pool(self) -> bool {
        matches!(
            self,
            StoreOp::Get | StoreOp::GetAt | StoreOp::List | StoreOp::Count | StoreOp::Revision
        )
    }

    fn label(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::GetAt => "get_at",
            StoreOp::List => "list",
            StoreOp::Count => "count",
            StoreOp::WriteBatch => "write_batch",
            StoreOp::History => "history",
            StoreOp::Revision => "revision",
            StoreOp::CompactStep => "compact_step",
        }
    }
}

static QUERY_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "capstan_datastore_query_duration_seconds",
        "Latency of datastore operations by operation and outcome.",
        &["operation", "outcome"],
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
        ]
    )
    .expect("datastore metric names are registered once")
});

/// Writes per write transaction.
pub static WRITE_BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "capstan_datastore_write_batch_size",
        "Writes gathered into one write transaction.",
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    )
    .expect("datastore metric names are registered once")
});

/// The newest revision the change feed has delivered.
pub static FEED_REVISION: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "capstan_datastore_revision",
        "Newest revision seen by this server's change feed."
    )
    .expect("datastore metric names are registered once")
});

/// Watchers cut off, by reason.
pub static WATCHERS_CLOSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "capstan_datastore_watchers_closed_total",
        "Watchers closed by the datastore, by reason.",
        &["reason"]
    )
    .expect("datastore metric names are registered once")
});

/// Open datastore watchers on this server.
pub static WATCHERS_OPEN: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "capstan_datastore_watchers",
        "Datastore watchers open on this server."
    )
    .expect("datastore metric names are registered once")
});

/// History rows removed by compaction.
pub static COMPACTED_ROWS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "capstan_datastore_compacted_rows_total",
        "History rows removed by compaction."
    )
    .expect("datastore metric names are registered once")
});

/// Connections of this server's shared pool, by state (`in_use`, `idle`, `waiting`).
pub static POOL_CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "capstan_datastore_pool_connections",
        "Connections of the shared datastore pool, by state: in_use, idle, and waiting \
         (reads under way beyond the connections in use, i.e. queued for a connection; \
         sampled at each change-feed poll).",
        &["state"]
    )
    .expect("datastore metric names are registered once")
});

/// Revisions published as compacted whose history is not cleaned yet.
pub static COMPACTION_BACKLOG: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "capstan_datastore_compaction_backlog_revisions",
        "Revisions below the compact revision whose history is not cleaned yet."
    )
    .expect("datastore metric names are registered once")
});

/// Wall time of compaction runs.
pub static COMPACTION_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "capstan_datastore_compaction_duration_seconds",
        "Wall time of one compaction run (all its steps).",
        vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]
    )
    .expect("datastore metric names are registered once")
});

/// Commit-to-delivery time of the change feed.
pub static POLLER_LAG: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "capstan_datastore_poller_lag_seconds",
        "Time from a change's commit to its delivery to this server's watchers, per change. \
         For this server's own writes, from the instant the commit returned to the writer; \
         for other servers' writes (the datastore stores no commit times), from the instant \
         this server's feed learned of them (a notification, or the poll that found them), \
         so timer-driven polling (MySQL, SQLite) adds up to one poll interval not shown here.",
        vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
        ]
    )
    .expect("datastore metric names are registered once")
});

/// Registers every datastore family so `/metrics` shows it from the start, before the
/// first compaction or watch.
pub fn touch() {
    LazyLock::force(&QUERY_SECONDS);
    LazyLock::force(&WRITE_BATCH_SIZE);
    LazyLock::force(&FEED_REVISION);
    for reason in ["too_slow", "compacted"] {
        WATCHERS_CLOSED.with_label_values(&[reason]);
    }
    LazyLock::force(&WATCHERS_OPEN);
    LazyLock::force(&COMPACTED_ROWS);
    LazyLock::force(&COMPACTION_BACKLOG);
    LazyLock::force(&COMPACTION_SECONDS);
    LazyLock::force(&POLLER_LAG);
    for state in ["in_use", "idle", "waiting"] {
        POOL_CONNECTIONS.with_label_values(&[state]);
    }
}

/// Shared-pool operations under way (holding a connection or waiting for one).
static SHARED_POOL_OPERATIONS: AtomicI64 = AtomicI64::new(0);

/// Counts one shared-pool operation as under way until dropped (also when the caller
/// gives up on it mid-query).
struct UnderWay;

impl UnderWay {
    fn start() -> UnderWay {
        SHARED_POOL_OPERATIONS.fetch_add(1, Ordering::Relaxed);
        UnderWay
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        SHARED_POOL_OPERATIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Records pool occupancy.
pub fn record_pool(stats: super::PoolStats) {
    let in_use = i64::from(stats.size.saturating_sub(stats.idle));
    let under_way = SHARED_POOL_OPERATIONS.load(Ordering::Relaxed);
    POOL_CONNECTIONS
        .with_label_values(&["waiting"])
        .set((under_way - in_use).max(0));
    POOL_CONNECTIONS
        .with_label_values(&["idle"])
        .set(i64::from(stats.idle));
    POOL_CONNECTIONS.with_label_values(&["in_use"]).set(in_use);
}

/// Runs `operation`, recording its latency and whether it succeeded, inside a `debug`
/// span named `datastore` with the operation and its outcome (a child of the API
/// request's span when a request made the call; nothing is logged at `info`).
pub async fn observe<T>(op: StoreOp, operation: impl Future<Output = Result<T>>) -> Result<T> {
    let span = tracing::debug_span!("datastore", operation = op.label(), outcome = Empty);
    let _under_way = op.uses_shared_pool().then(UnderWay::start);
    let started = Instant::now();
    let result = operation.instrument(span.clone()).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    span.record("outcome", outcome);
    QUERY_SECONDS
        .with_label_values(&[op.label(), outcome])
        .observe(started.elapsed().as_secs_f64());
    result
}
