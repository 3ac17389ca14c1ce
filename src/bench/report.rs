//! What `capstan bench datastore` recorded, and the report made of it: throughput,
//! latency percentiles, and the watch checks (every applied revision received once, in
//! order, by every watcher).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The measurements, with the field names `--json` prints.
#[derive(Debug, Serialize)]
pub struct DatastoreBenchReport {
    /// Engine name.
    pub engine: String,
    /// Store instances.
    pub servers: usize,
    /// Writers.
    pub writers: usize,
    /// Watchers in all.
    pub watchers: usize,
    /// Seconds of load.
    pub duration_s: f64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Applied writes.
    pub writes: u64,
    /// Applied writes per second.
    pub writes_per_sec: f64,
    /// Compare-and-swap writes that found another revision.
    pub conflicts: u64,
    /// Writes that failed with an error.
    pub write_errors: u64,
    /// Write latency (request to commit), median.
    pub write_p50_ms: f64,
    /// Write latency, 99th percentile.
    pub write_p99_ms: f64,
    /// Get latency, median.
    pub get_p50_ms: f64,
    /// Get latency, 99th percentile.
    pub get_p99_ms: f64,
    /// List page latency, median.
    pub list_p50_ms: f64,
    /// List page latency, 99th percentile.
    pub list_p99_ms: f64,
    /// Keys in the table the lists read (random keys written plus preloaded).
    pub list_table_keys: usize,
    /// Commit-to-delivery latency over all watchers, median.
    pub watch_p50_ms: f64,
    /// Commit-to-delivery latency over all watchers, 99th percentile.
    pub watch_p99_ms: f64,
    /// Commit-to-delivery latency for watchers on another instance than the writer, median
    /// (all watchers when there is one instance).
    pub cross_server_watch_p50_ms: f64,
    /// The same, 99th percentile.
    pub cross_server_watch_p99_ms: f64,
    /// Events delivered to all watchers.
    pub events_received: u64,
    /// Applied revisions a watcher never received (must be 0).
    pub events_missed: u64,
    /// Revisions a watcher received more than once (must be 0).
    pub events_duplicated: u64,
    /// Events that arrived after a later revision (must be 0).
    pub events_out_of_order: u64,
    /// Watch errors (a watcher cut off or failed).
    pub watch_errors: u64,
    /// Compaction mode: writer p99 before compaction started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_write_p99_ms: Option<f64>,
    /// Compaction mode: writer p99 while compaction ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_write_p99_ms: Option<f64>,
    /// Compaction mode: revisions of backlog compacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_revisions: Option<i64>,
    /// Compaction mode: steps (transactions) taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_steps: Option<u64>,
    /// Compaction mode: history rows removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_rows_removed: Option<u64>,
    /// Compaction mode: the longest step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_longest_step_ms: Option<f64>,
    /// Compaction mode: wall time of the whole compaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction_seconds: Option<f64>,
}

/// One applied write, for matching against what watchers saw.
pub(crate) struct AppliedWrite {
    pub(crate) revision: i64,
    pub(crate) instance: usize,
    pub(crate) committed_at: Instant,
    pub(crate) started: Instant,
}

#[derive(Default)]
pub(crate) struct WriterLog {
    pub(crate) applied: Vec<AppliedWrite>,
    pub(crate) conflicts: u64,
    pub(crate) errors: u64,
}

pub(crate) struct WatcherLog {
    pub(crate) instance: usize,
    pub(crate) received: Vec<(i64, Instant)>,
    pub(crate) errors: u64,
}

#[derive(Default)]
pub(crate) struct ReaderLog {
    pub(crate) gets: Vec<Duration>,
    pub(crate) lists: Vec<Duration>,
}

/// What a run was asked to do, as the report repeats it.
pub(crate) struct RunShape {
    /// Store instances (servers) sharing the database.
    pub(crate) servers: usize,
    /// Concurrent writers.
    pub(crate) writers: usize,
    /// Bytes per written value.
    pub(crate) value_bytes: usize,
}

pub(crate) fn summarise(
    args: &RunShape,
    engine: String,
    elapsed: Duration,
    writers: &[WriterLog],
    reads: &ReaderLog,
    watchers: &[WatcherLog],
) -> DatastoreBenchReport {
    let applied: HashMap<i64, &AppliedWrite> = writers
        .iter()
        .flat_map(|l| l.applied.iter())
        .map(|w| (w.revision, w))
        .collect();
    let writes = applied.len() as u64;
    let write_latencies: Vec<Duration> = applied
        .values()
        .map(|w| w.committed_at - w.started)
        .collect();

    let mut all_delivery = Vec::new();
    let mut cross_delivery = Vec::new();
    let (mut missed, mut duplicated, mut out_of_order, mut received, mut watch_errors) =
        (0, 0, 0, 0, 0);
    for watcher in watchers {
        watch_errors += watcher.errors;
        received += watcher.received.len() as u64;
        let mut seen = HashSet::with_capacity(watcher.received.len());
        let mut last = i64::MIN;
        for (revision, at) in &watcher.received {
            if !seen.insert(*revision) {
                duplicated += 1;
            }
            if *revision <= last {
                out_of_order += 1;
            }
            last = last.max(*revision);
            if let Some(write) = applied.get(revision) {
                let delivery = at.saturating_duration_since(write.committed_at);
                all_delivery.push(delivery);
                if args.servers == 1 || write.instance != watcher.instance {
                    cross_delivery.push(delivery);
                }
            }
        }
        missed += applied.keys().filter(|r| !seen.contains(r)).count() as u64;
    }

    DatastoreBenchReport {
        engine,
        servers: args.servers,
        writers: args.writers,
        watchers: watchers.len(),
        duration_s: elapsed.as_secs_f64(),
        value_bytes: args.value_bytes,
        writes,
        writes_per_sec: writes as f64 / elapsed.as_secs_f64(),
        conflicts: writers.iter().map(|l| l.conflicts).sum(),
        write_errors: writers.iter().map(|l| l.errors).sum(),
        write_p50_ms: percentile_ms_ref(&write_latencies, 0.50),
        write_p99_ms: percentile_ms_ref(&write_latencies, 0.99),
        get_p50_ms: percentile_ms_ref(&reads.gets, 0.50),
        get_p99_ms: percentile_ms_ref(&reads.gets, 0.99),
        list_p50_ms: percentile_ms_ref(&reads.lists, 0.50),
        list_p99_ms: percentile_ms_ref(&reads.lists, 0.99),
        list_table_keys: 0,
        watch_p50_ms: percentile_ms_ref(&all_delivery, 0.50),
        watch_p99_ms: percentile_ms_ref(&all_delivery, 0.99),
        cross_server_watch_p50_ms: percentile_ms_ref(&cross_delivery, 0.50),
        cross_server_watch_p99_ms: percentile_ms_ref(&cross_delivery, 0.99),
        events_received: received,
        events_missed: missed,
        events_duplicated: duplicated,
        events_out_of_order: out_of_order,
        watch_errors,
        baseline_write_p99_ms: None,
        compaction_write_p99_ms: None,
        compaction_revisions: None,
        compaction_steps: None,
        compaction_rows_removed: None,
        compaction_longest_step_ms: None,
        compaction_seconds: None,
    }
}

pub(crate) fn percentile_ms(mut samples: Vec<Duration>, quantile: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let index = ((samples.len() as f64 - 1.0) * quantile).round() as usize;
    samples[index.min(samples.len() - 1)].as_secs_f64() * 1000.0
}

fn percentile_ms_ref(samples: &[Duration], quantile: f64) -> f64 {
    percentile_ms(samples.to_vec(), quantile)
}

pub(crate) fn print_text(r: &DatastoreBenchReport) {
    println!(
        "engine {}: {} server(s), {} writers, {} watchers, {:.1} s, {}-byte values",
        r.engine, r.servers, r.writers, r.watchers, r.duration_s, r.value_bytes
    );
    println!(
        "writes        {:>10} applied  {:>9.0}/s  conflicts {}  errors {}",
        r.writes, r.writes_per_sec, r.conflicts, r.write_errors
    );
    println!(
        "write latency p50 {:>8.2} ms  p99 {:>8.2} ms",
        r.write_p50_ms, r.write_p99_ms
    );
    println!(
        "get latency   p50 {:>8.2} ms  p99 {:>8.2} ms",
        r.get_p50_ms, r.get_p99_ms
    );
    println!(
        "list {:>4}     p50 {:>8.2} ms  p99 {:>8.2} ms  (table ~{} keys)",
        500, r.list_p50_ms, r.list_p99_ms, r.list_table_keys
    );
    println!(
        "watch delivery p50 {:>7.2} ms  p99 {:>8.2} ms  (cross-server p50 {:.2} ms, p99 {:.2} ms)",
        r.watch_p50_ms, r.watch_p99_ms, r.cross_server_watch_p50_ms, r.cross_server_watch_p99_ms
    );
    println!(
        "events received {}  missed {}  duplicated {}  out of order {}  watch errors {}",
        r.events_received,
        r.events_missed,
        r.events_duplicated,
        r.events_out_of_order,
        r.watch_errors
    );
    if let (Some(base), Some(during)) = (r.baseline_write_p99_ms, r.compaction_write_p99_ms) {
        println!(
            "compaction    {} revisions in {:.1} s, {} steps (longest {:.1} ms), {} rows removed; write p99 {:.2} ms before, {:.2} ms during",
            r.compaction_revisions.unwrap_or(0),
            r.compaction_seconds.unwrap_or(0.0),
            r.compaction_steps.unwrap_or(0),
            r.compaction_longest_step_ms.unwrap_or(0.0),
            r.compaction_rows_removed.unwrap_or(0),
            base,
            during
        );
    }
}
