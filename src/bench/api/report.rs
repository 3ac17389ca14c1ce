//! The report of `capstan bench api`: per-verb throughput and latency, watch delivery
//! latency (same-server and cross-server), and the watch checks. The JSON field names are
//! a contract: plots and the product's benchmark pages read them.
//!
//! The checks: every acknowledged write must reach every watcher of its kind exactly once
//! and in resourceVersion order. Creates and updates are known by the resourceVersion the
//! server answered; deletes by name (the Status a delete answers has no version).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::load::{Log, Verb, Write, WriteKey};
use super::watch::{EventType, Watcher};
use super::{ObjectKind, Shared};
use crate::bench::client::percentile;

/// One verb's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct VerbReport {
    /// Successful requests.
    pub count: u64,
    /// Failed requests (connection errors, timeouts, unexpected statuses).
    pub errors: u64,
    /// Successful requests per second.
    pub per_sec: f64,
    /// Median latency, milliseconds (writes: from when they were due in paced runs).
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// Watch delivery latency: from a write's acknowledgement to its arrival on a watcher.
#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    /// Events of acknowledged writes received, over all watchers.
    pub events: u64,
    /// Median delivery latency, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Median for watchers on another server than the one that took the write.
    pub cross_server_p50_ms: f64,
    /// 90th percentile of the same.
    pub cross_server_p90_ms: f64,
    /// 99th percentile of the same.
    pub cross_server_p99_ms: f64,
    /// How many deliveries were cross-server (0 with one server).
    pub cross_server_samples: u64,
    /// 99th percentile measured from when the write was sent (an upper bound).
    pub from_send_p99_ms: f64,
    /// Events that arrived before the writer had its answer (counted as 0 ms).
    pub watch_before_ack: u64,
}

/// What `capstan bench api` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ApiBenchReport {
    /// The run's id (the value of the `capstan-bench/run` label).
    pub run_id: String,
    /// Servers the load was spread over.
    pub servers: usize,
    /// Clients.
    pub clients: usize,
    /// Watchers per kind.
    pub watchers: usize,
    /// `mixed`, `create` or `nodes-only`.
    pub workload: String,
    /// Writes per second asked for (null: full speed).
    pub rate_offered: Option<f64>,
    /// Seconds the load ran.
    pub duration_s: f64,
    /// Payload bytes per object.
    pub value_bytes: usize,
    /// Simulated nodes.
    pub nodes: usize,
    /// Successful requests (all verbs but watch).
    pub ops: u64,
    /// The same per second.
    pub ops_per_sec: f64,
    /// Acknowledged creates, updates and deletes.
    pub writes: u64,
    /// The same per second.
    pub writes_per_sec: f64,
    /// Updates answered 409 Conflict (retried; not errors).
    pub conflicts: u64,
    /// Failed requests of every verb.
    pub errors: u64,
    /// Per verb: create, get, update, list, delete, watch (count: streams opened), heartbeat.
    pub verbs: BTreeMap<String, VerbReport>,
    /// Watch delivery latency.
    pub watch: WatchReport,
    /// (write, watcher) pairs never delivered by the deadline (must be 0).
    pub events_missed: u64,
    /// Events a watcher received more than once (must be 0).
    pub events_duplicated: u64,
    /// Events that arrived after a later version (must be 0).
    pub events_out_of_order: u64,
    /// Relists after an expired watch.
    pub relists: u64,
}

impl VerbReport {
    /// The report of successful requests' latencies (milliseconds, any order) and the
    /// failures, over `seconds`; `capstan bench etcd` reports its puts the same way.
    pub fn from_samples(mut samples: Vec<f64>, errors: u64, seconds: f64) -> VerbReport {
        samples.sort_by(f64::total_cmp);
        VerbReport {
            count: samples.len() as u64,
            errors,
            per_sec: samples.len() as f64 / seconds,
            p50_ms: percentile(&samples, 0.50),
            p90_ms: percentile(&samples, 0.90),
            p99_ms: percentile(&samples, 0.99),
        }
    }
}

/// The delivery checks and latencies over every watcher.
#[derive(Default)]
struct Deliveries {
    all: Vec<f64>,
    cross: Vec<f64>,
    from_send: Vec<f64>,
    before_ack: u64,
    missed: u64,
    duplicated: u64,
    out_of_order: u64,
}

fn check_watchers(writes: &[&Write], watchers: &[Arc<Watcher>]) -> Deliveries {
    let mut by_version: HashMap<ObjectKind, HashMap<u64, &Write>> = HashMap::new();
    let mut by_name: HashMap<ObjectKind, HashMap<&str, &Write>> = HashMap::new();
    for write in writes {
        match &write.key {
            WriteKey::Version(version) => {
                by_version
                    .entry(write.kind)
                    .or_default()
                    .insert(*version, write);
            }
            WriteKey::Deleted(name) => {
                by_name
                    .entry(write.kind)
                    .or_default()
                    .insert(name.as_str(), write);
            }
        }
    }
    let empty_versions = HashMap::new();
    let empty_names = HashMap::new();
    let mut out = Deliveries::default();
    for watcher in watchers {
        let versions = by_version.get(&watcher.kind).unwrap_or(&empty_versions);
        let names = by_name.get(&watcher.kind).unwrap_or(&empty_names);
        let mut seen_versions: HashSet<u64> = HashSet::new();
        let mut seen_names: HashSet<&str> = HashSet::new();
        let mut received: HashSet<(u64, bool)> = HashSet::new();
        let mut last = 0u64;
        for arrival in watcher.take_arrivals() {
            let deleted = arrival.event == EventType::Deleted;
            if arrival.relisted {
                if let Some((key, _)) = versions.get_key_value(&arrival.version) {
                    seen_versions.insert(*key);
                }
                last = last.max(arrival.version);
                continue;
            }
            if !received.insert((arrival.version, deleted)) {
                out.duplicated += 1;
                continue;
            }
            if arrival.version <= last {
                out.out_of_order += 1;
            }
            last = last.max(arrival.version);
            let write = if deleted {
                names
                    .get_key_value(arrival.name.as_str())
                    .map(|(name, write)| {
                        seen_names.insert(name);
                        *write
                    })
            } else {
                versions.get(&arrival.version).map(|write| {
                    seen_versions.insert(arrival.version);
                    *write
                })
            };
            if let Some(write) = write {
                if arrival.at < write.acked {
                    out.before_ack += 1;
                }
                let ms = arrival
                    .at
                    .saturating_duration_since(write.acked)
                    .as_secs_f64()
                    * 1000.0;
                out.all.push(ms);
                if write.server != watcher.server {
                    out.cross.push(ms);
                }
                out.from_send.push(
                    arrival
                        .at
                        .saturating_duration_since(write.sent)
                        .as_secs_f64()
                        * 1000.0,
                );
            }
        }
        out.missed += (versions.len() - seen_versions.len()) as u64;
        out.missed += (names.len() - seen_names.len()) as u64;
    }
    out
}

/// Puts the run's records together.
pub(super) fn build(
    shared: &Shared,
    servers: usize,
    seconds: f64,
    logs: &[Log],
    heartbeats: &Log,
    watchers: &[Arc<Watcher>],
) -> ApiBenchReport {
    let seconds = seconds.max(1e-9);
    let mut samples: BTreeMap<Verb, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<Verb, u64> = BTreeMap::new();
    let mut conflicts = 0;
    for log in logs.iter().chain(std::iter::once(heartbeats)) {
        for (verb, values) in &log.samples {
            samples.entry(*verb).or_default().extend(values);
        }
        for (verb, count) in &log.errors {
            *errors.entry(*verb).or_default() += count;
        }
        conflicts += log.conflicts;
    }
    let mut verbs = BTreeMap::new();
    for verb in Verb::ALL {
        verbs.insert(
            verb.name().to_string(),
            VerbReport::from_samples(
                samples.remove(&verb).unwrap_or_default(),
                errors.get(&verb).copied().unwrap_or(0),
                seconds,
            ),
        );
    }
    let watch_streams: u64 = watchers
        .iter()
        .map(|w| w.established.load(Ordering::Relaxed))
        .sum();
    let watch_errors: u64 = watchers
        .iter()
        .map(|w| w.errors.load(Ordering::Relaxed))
        .sum();
    let mut watch_verb = VerbReport::from_samples(Vec::new(), watch_errors, seconds);
    watch_verb.count = watch_streams;
    verbs.insert("watch".to_string(), watch_verb);

    let writes: Vec<&Write> = logs.iter().flat_map(|log| &log.writes).collect();
    let mut deliveries = check_watchers(&writes, watchers);
    deliveries.all.sort_by(f64::total_cmp);
    deliveries.cross.sort_by(f64::total_cmp);
    deliveries.from_send.sort_by(f64::total_cmp);
    let ops: u64 = verbs
        .iter()
        .filter(|(name, _)| name.as_str() != "watch")
        .map(|(_, verb)| verb.count)
        .sum();
    let request_errors: u64 = verbs.values().map(|verb| verb.errors).sum();
    let args = &shared.args;
    ApiBenchReport {
        run_id: shared.run_id.clone(),
        servers,
        clients: args.clients,
        watchers: args.watchers,
        workload: args.workload.name().to_string(),
        rate_offered: (args.rate > 0.0).then_some(args.rate),
        duration_s: seconds,
        value_bytes: args.value_bytes,
        nodes: args.nodes,
        ops,
        ops_per_sec: ops as f64 / seconds,
        writes: writes.len() as u64,
        writes_per_sec: writes.len() as f64 / seconds,
        conflicts,
        errors: request_errors,
        verbs,
        watch: WatchReport {
            events: deliveries.all.len() as u64,
            p50_ms: percentile(&deliveries.all, 0.50),
            p90_ms: percentile(&deliveries.all, 0.90),
            p99_ms: percentile(&deliveries.all, 0.99),
            cross_server_p50_ms: percentile(&deliveries.cross, 0.50),
            cross_server_p90_ms: percentile(&deliveries.cross, 0.90),
            cross_server_p99_ms: percentile(&deliveries.cross, 0.99),
            cross_server_samples: deliveries.cross.len() as u64,
            from_send_p99_ms: percentile(&deliveries.from_send, 0.99),
            watch_before_ack: deliveries.before_ack,
        },
        events_missed: deliveries.missed,
        events_duplicated: deliveries.duplicated,
        events_out_of_order: deliveries.out_of_order,
        relists: watchers
            .iter()
            .map(|w| w.relists.load(Ordering::Relaxed))
            .sum(),
    }
}

impl ApiBenchReport {
    /// The report as a readable table.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rate = match self.rate_offered {
            Some(rate) => format!("{rate} writes/s"),
            None => "full speed".to_string(),
        };
        let _ = writeln!(
            out,
            "capstan bench api: {} workload, {} clients, {} watchers per kind, {} server(s), {} nodes, {rate}, {:.1} s, {} B values (run {})",
            self.workload,
            self.clients,
            self.watchers,
            self.servers,
            self.nodes,
            self.duration_s,
            self.value_bytes,
            self.run_id
        );
        let _ = writeln!(
            out,
            "{:<10} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9}",
            "verb", "count", "errors", "per sec", "p50 ms", "p90 ms", "p99 ms"
        );
        for (name, verb) in &self.verbs {
            let _ = writeln!(
                out,
                "{name:<10} {:>9} {:>7} {:>10.1} {:>9.2} {:>9.2} {:>9.2}",
                verb.count, verb.errors, verb.per_sec, verb.p50_ms, verb.p90_ms, verb.p99_ms
            );
        }
        let _ = writeln!(
            out,
            "total: {} requests ({:.1}/s), {} writes ({:.1}/s), {} conflicts, {} errors",
            self.ops,
            self.ops_per_sec,
            self.writes,
            self.writes_per_sec,
            self.conflicts,
            self.errors
        );
        let watch = &self.watch;
        let _ = writeln!(
            out,
            "watch delivery (ack to arrival): {} events, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms; from send p99 {:.2} ms; {} before the ack",
            watch.events,
            watch.p50_ms,
            watch.p90_ms,
            watch.p99_ms,
            watch.from_send_p99_ms,
            watch.watch_before_ack
        );
        let _ = writeln!(
            out,
            "cross-server: {} events, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
            watch.cross_server_samples,
            watch.cross_server_p50_ms,
            watch.cross_server_p90_ms,
            watch.cross_server_p99_ms
        );
        let _ = writeln!(
            out,
            "events missed {}, duplicated {}, out of order {}, relists {}",
            self.events_missed, self.events_duplicated, self.events_out_of_order, self.relists
        );
        out
    }
}
