//! Datastore metrics, registered next to the code they measure. Every backend call that
//! matters goes through [`DatastoreMetrics::observe`], the one choke point for latency and
//! outcome, and for the tracing span of each call (`debug`, named `datastore`, a child of
//! the API request's span when a request made the call).
//!
//! The families live on a `prometheus::Registry` the caller passes in, not on the
//! process-global one: the datastore is usable on its own, and several stores (servers) in
//! one process either share one set ([`DatastoreMetrics`] is a cheap handle) or each report
//! to a registry of their own.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
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

/// The datastore's metric families, registered on one registry; cheap to clone (every clone
/// records into the same families).
#[derive(Clone)]
pub struct DatastoreMetrics {
    inner: Arc<Families>,
}

struct Families {
    query_seconds: HistogramVec,
    write_batch_size: Histogram,
    feed_revision: IntGauge,
    watchers_closed: IntCounterVec,
    watchers_open: IntGauge,
    compacted_rows: IntCounter,
    pool_connections: IntGaugeVec,
    compaction_backlog: IntGauge,
    compaction_seconds: Histogram,
    poller_lag: Histogram,
    /// Shared-pool operations under way (holding a connection or waiting for one).
    shared_pool_operations: AtomicI64,
}

/// Why the feed cut a watcher off, as a metric label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ClosedReason {
    /// Its queue was full.
    TooSlow,
    /// Compaction passed it.
    Compacted,
}

impl ClosedReason {
    fn label(self) -> &'static str {
        match self {
            ClosedReason::TooSlow => "too_slow",
            ClosedReason::Compacted => "compacted",
        }
    }
}

impl DatastoreMetrics {
    /// Creates every datastore family and registers it on `registry`, so a scrape shows each
    /// from the start, before the first compaction or watch. Fails when `registry` already
    /// holds them (register one set per registry and clone it).
    pub fn new(registry: &Registry) -> prometheus::Result<DatastoreMetrics> {
        let families = Families {
            query_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "capstan_datastore_query_duration_seconds",
                    "Latency of datastore operations by operation and outcome.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["operation", "outcome"],
            )?,
            write_batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "capstan_datastore_write_batch_size",
                    "Writes gathered into one write transaction.",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
            feed_revision: IntGauge::new(
                "capstan_datastore_revision",
                "Newest revision seen by this server's change feed.",
            )?,
            watchers_closed: IntCounterVec::new(
                Opts::new(
                    "capstan_datastore_watchers_closed_total",
                    "Watchers closed by the datastore, by reason.",
                ),
                &["reason"],
            )?,
            watchers_open: IntGauge::new(
                "capstan_datastore_watchers",
                "Datastore watchers open on this server.",
            )?,
            compacted_rows: IntCounter::new(
                "capstan_datastore_compacted_rows_total",
                "History rows removed by compaction.",
            )?,
            pool_connections: IntGaugeVec::new(
                Opts::new(
                    "capstan_datastore_pool_connections",
                    "Connections of the shared datastore pool, by state: in_use, idle, and waiting \
                     (reads under way beyond the connections in use, i.e. queued for a connection; \
                     sampled at each change-feed poll).",
                ),
                &["state"],
            )?,
            compaction_backlog: IntGauge::new(
                "capstan_datastore_compaction_backlog_revisions",
                "Revisions below the compact revision whose history is not cleaned yet.",
            )?,
            compaction_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "capstan_datastore_compaction_duration_seconds",
                    "Wall time of one compaction run (all its steps).",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
            )?,
            poller_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "capstan_datastore_poller_lag_seconds",
                    "Time from a change's commit to its delivery to this server's watchers, per change. \
                     For this server's own writes, from the instant the commit returned to the writer; \
                     for other servers' writes (the datastore stores no commit times), from the instant \
                     this server's feed learned of them (a notification, or the poll that found them), \
                     so timer-driven polling (MySQL, SQLite) adds up to one poll interval not shown here.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ]),
            )?,
            shared_pool_operations: AtomicI64::new(0),
        };
        registry.register(Box::new(families.query_seconds.clone()))?;
        registry.register(Box::new(families.write_batch_size.clone()))?;
        registry.register(Box::new(families.feed_revision.clone()))?;
        registry.register(Box::new(families.watchers_closed.clone()))?;
        registry.register(Box::new(families.watchers_open.clone()))?;
        registry.register(Box::new(families.compacted_rows.clone()))?;
        registry.register(Box::new(families.pool_connections.clone()))?;
        registry.register(Box::new(families.compaction_backlog.clone()))?;
        registry.register(Box::new(families.compaction_seconds.clone()))?;
        registry.register(Box::new(families.poller_lag.clone()))?;
        // Label sets that exist before their first event, so a scrape shows them at zero.
        for reason in [ClosedReason::TooSlow, ClosedReason::Compacted] {
            families
                .watchers_closed
                .with_label_values(&[reason.label()]);
        }
        for state in ["in_use", "idle", "waiting"] {
            families.pool_connections.with_label_values(&[state]);
        }
        Ok(DatastoreMetrics {
            inner: Arc::new(families),
        })
    }

    /// A set registered on a registry of its own that nobody scrapes: for short-lived tools
    /// (a CLI command) that open a store and need no metrics.
    pub fn unscraped() -> DatastoreMetrics {
        DatastoreMetrics::new(&Registry::new())
            .expect("a fresh registry holds none of the datastore's families")
    }

    /// Runs `operation`, recording its latency and whether it succeeded.
    pub(crate) async fn observe<T>(
        &self,
        op: StoreOp,
        operation: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let span = tracing::debug_span!("datastore", operation = op.label(), outcome = Empty);
        let _under_way = op.uses_shared_pool().then(|| UnderWay::start(&self.inner));
        let started = Instant::now();
        let result = operation.instrument(span.clone()).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        span.record("outcome", outcome);
        self.inner
            .query_seconds
            .with_label_values(&[op.label(), outcome])
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Records pool occupancy.
    pub(crate) fn record_pool(&self, stats: super::PoolStats) {
        let in_use = i64::from(stats.size.saturating_sub(stats.idle));
        let under_way = self.inner.shared_pool_operations.load(Ordering::Relaxed);
        let gauge = &self.inner.pool_connections;
        gauge
            .with_label_values(&["waiting"])
            .set((under_way - in_use).max(0));
        gauge
            .with_label_values(&["idle"])
            .set(i64::from(stats.idle));
        gauge.with_label_values(&["in_use"]).set(in_use);
    }

    /// Records the size of one write transaction.
    pub(crate) fn write_batch(&self, writes: usize) {
        self.inner.write_batch_size.observe(writes as f64);
    }

    /// Records the newest revision the change feed delivered.
    pub(crate) fn feed_revision(&self, revision: i64) {
        self.inner.feed_revision.set(revision);
    }

    /// Records one change's commit-to-delivery time.
    pub(crate) fn poller_lag(&self, committed_at: Instant) {
        self.inner
            .poller_lag
            .observe(committed_at.elapsed().as_secs_f64());
    }

    /// Records a watcher cut off by the feed.
    pub(crate) fn watcher_closed(&self, reason: ClosedReason) {
        self.inner
            .watchers_closed
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// Records a watcher opened (`+1`) or dropped (`-1`).
    pub(crate) fn watchers_open(&self, change: i64) {
        self.inner.watchers_open.add(change);
    }

    /// Records the revisions compaction still has to clean.
    pub(crate) fn compaction_backlog(&self, revisions: i64) {
        self.inner.compaction_backlog.set(revisions);
    }

    /// Records history rows removed by one compaction step.
    pub(crate) fn compacted_rows(&self, rows: u64) {
        self.inner.compacted_rows.inc_by(rows);
    }

    /// Records the wall time of a compaction run that did work.
    pub(crate) fn compaction_run(&self, started: Instant) {
        self.inner
            .compaction_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Counts one shared-pool operation as under way until dropped (also when the caller
/// gives up on it mid-query).
struct UnderWay<'a>(&'a Families);

impl<'a> UnderWay<'a> {
    fn start(families: &'a Families) -> UnderWay<'a> {
        families
            .shared_pool_operations
            .fetch_add(1, Ordering::Relaxed);
        UnderWay(families)
    }
}

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0
            .shared_pool_operations
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_on_the_given_registry_from_the_start() {
        let registry = Registry::new();
        DatastoreMetrics::new(&registry).expect("a fresh registry");
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_string())
            .collect();
        // A labelled family shows once it has a label set: the query latencies after the
        // first query, the watcher and pool families from the start.
        for expected in [
            "capstan_datastore_write_batch_size",
            "capstan_datastore_revision",
            "capstan_datastore_watchers",
            "capstan_datastore_watchers_closed_total",
            "capstan_datastore_pool_connections",
            "capstan_datastore_compaction_duration_seconds",
            "capstan_datastore_poller_lag_seconds",
        ] {
            assert!(
                names.iter().any(|name| name == expected),
                "{expected} in {names:?}"
            );
        }
    }

    #[test]
    fn one_registry_takes_one_set() {
        let registry = Registry::new();
        let first = DatastoreMetrics::new(&registry).expect("a fresh registry");
        assert!(DatastoreMetrics::new(&registry).is_err());
        // Clones share the families: what one records, a scrape of the registry shows.
        first.clone().write_batch(3);
        let batches = registry
            .gather()
            .into_iter()
            .find(|family| family.name() == "capstan_datastore_write_batch_size")
            .expect("the batch size family");
        assert_eq!(
            batches.get_metric()[0].get_histogram().get_sample_count(),
            1
        );
    }
}
