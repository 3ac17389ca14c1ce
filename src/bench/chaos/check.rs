//! The checks run over the recorded history of a chaos run ([`super::history`]) afterwards.
//!
//! Clients record every write they attempt (with its outcome: acknowledged, definitely
//! failed, or indeterminate), watchers record every event they receive and every time
//! they resumed or re-listed, and the run ends with the final state of the namespace.
//! [`check`] then looks for what a correct store can never produce: an acknowledged write
//! missing, a write that failed yet applied, a counter increment lost or applied twice,
//! a resourceVersion going backwards, a watcher missing or repeating a revision of its
//! range. Indeterminate writes are resolved against the final state and the watch
//! history, as Jepsen does, instead of being guessed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use super::history::{Event, History, Op, Outcome, WatchEntry, Write};

/// One violation found in the history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Anomaly {
    /// A short kind: lost-write, failed-write-applied, duplicate-increment, …
    pub kind: String,
    /// What exactly, with names, values and resourceVersions.
    pub detail: String,
}

fn anomaly(kind: &str, detail: String) -> Anomaly {
    Anomaly {
        kind: kind.to_string(),
        detail,
    }
}

/// Checks the history; every violation is one anomaly.
pub fn check(history: &History) -> Vec<Anomaly> {
    let mut found = Vec::new();
    check_objects(history, &mut found);
    check_counters(history, &mut found);
    check_reads(history, &mut found);
    check_watchers(history, &mut found);
    found
}

/// Creates and deletes against the final state.
fn check_objects(history: &History, found: &mut Vec<Anomaly>) {
    let mut creates: HashMap<&str, &Op> = HashMap::new();
    let mut deletes: HashMap<&str, &Op> = HashMap::new();
    for op in &history.ops {
        match &op.write {
            Write::Create { name } => {
                creates.insert(name, op);
            }
            Write::Delete { name } => {
                deletes.insert(name, op);
            }
            Write::Increment { .. } => {}
        }
    }
    for (name, create) in &creates {
        let exists = history.final_state.contains_key(*name);
        let delete = deletes.get(name);
        match (create.outcome, delete.map(|d| (d.outcome, d.status))) {
            (Outcome::Ok, None) if !exists => found.push(anomaly(
                "lost-write",
                format!(
                    "create of {name} was acknowledged (rv {:?}, server {}) but it is gone at the end and nobody deleted it",
                    create.rv, create.server
                ),
            )),
            (Outcome::Ok, Some((Outcome::Failed, status))) => {
                if status == 404 {
                    found.push(anomaly(
                        "lost-write",
                        format!(
                            "create of {name} was acknowledged (rv {:?}) but its only delete got 404",
                            create.rv
                        ),
                    ));
                } else if !exists {
                    found.push(anomaly(
                        "failed-write-applied",
                        format!("delete of {name} failed with HTTP {status} yet it is gone"),
                    ));
                }
            }
            (_, Some((Outcome::Ok, _))) if exists => found.push(anomaly(
                "lost-write",
                format!("delete of {name} was acknowledged but it still exists at the end"),
            )),
            (Outcome::Failed, _) if exists => found.push(anomaly(
                "failed-write-applied",
                format!(
                    "create of {name} failed with HTTP {} yet it exists at the end",
                    create.status
                ),
            )),
            _ => {}
        }
    }
    for name in history.final_state.keys() {
        if name.starts_with(&history.created_prefix) && !creates.contains_key(name.as_str()) {
            found.push(anomaly(
                "phantom-write",
                format!("{name} exists at the end but no client ever created it"),
            ));
        }
    }
}

/// Each counter's final value against its acknowledged and indeterminate increments.
fn check_counters(history: &History, found: &mut Vec<Anomaly>) {
    for (index, name) in history.counters.iter().enumerate() {
        let Some(Some(final_value)) = history.final_state.get(name).copied() else {
            found.push(anomaly(
                "lost-write",
                format!("counter {name} is missing or not a number at the end"),
            ));
            continue;
        };
        let mut acked: BTreeMap<u64, &Op> = BTreeMap::new();
        let mut maybe: HashSet<u64> = HashSet::new();
        let mut failed: HashMap<u64, &Op> = HashMap::new();
        for op in &history.ops {
            let Write::Increment {
                counter,
                read_value,
                ..
            } = &op.write
            else {
                continue;
            };
            if *counter != index {
                continue;
            }
            let value = read_value + 1;
            match op.outcome {
                Outcome::Ok => {
                    if let Some(first) = acked.insert(value, op) {
                        found.push(anomaly(
                            "duplicate-increment",
                            format!(
                                "counter {name}: two acknowledged increments both wrote {value} (clients {} and {}, rvs {:?} and {:?})",
                                first.client, op.client, first.rv, op.rv
                            ),
                        ));
                    }
                }
                Outcome::Indeterminate => {
                    maybe.insert(value);
                }
                Outcome::Failed => {
                    failed.insert(value, op);
                }
            }
        }
        for (value, op) in acked.range(final_value + 1..) {
            found.push(anomaly(
                "lost-write",
                format!(
                    "counter {name}: increment to {value} was acknowledged (client {}, rv {:?}) but the final value is {final_value}",
                    op.client, op.rv
                ),
            ));
        }
        for value in 1..=final_value {
            if acked.contains_key(&value) || maybe.contains(&value) {
                continue;
            }
            match failed.get(&value) {
                Some(op) => found.push(anomaly(
                    "failed-write-applied",
                    format!(
                        "counter {name}: the only increment to {value} failed with HTTP {} (client {}) yet the counter passed through {value}",
                        op.status, op.client
                    ),
                )),
                None => found.push(anomaly(
                    "phantom-write",
                    format!("counter {name}: the counter reached {value} but no client wrote it"),
                )),
            }
        }
    }
}

/// Per client and counter, resourceVersions read never go backwards.
fn check_reads(history: &History, found: &mut Vec<Anomaly>) {
    let mut last: HashMap<(usize, usize), (u64, u64)> = HashMap::new();
    for read in &history.reads {
        let key = (read.client, read.counter);
        if let Some((rv, value)) = last.get(&key).copied()
            && (read.rv < rv || read.value < value)
        {
            found.push(anomaly(
                "stale-read",
                format!(
                    "client {} read counter {} at rv {} value {} after having seen rv {rv} value {value}",
                    read.client,
                    history.counters.get(read.counter).map_or("?", String::as_str),
                    read.rv,
                    read.value
                ),
            ));
        }
        let entry = last.entry(key).or_insert((read.rv, read.value));
        *entry = (entry.0.max(read.rv), entry.1.max(read.value));
    }
}

/// A watcher's covered revision ranges `(from, to]` and the revisions it saw.
type Coverage = (Vec<(u64, u64)>, BTreeSet<u64>);

/// Every watcher: strictly increasing revisions, every acknowledged write of the ranges it
/// covered seen once, counter values in steps of one, and the same content at the same
/// revision as every other watcher.
fn check_watchers(history: &History, found: &mut Vec<Anomaly>) {
    let counter_names: HashSet<&str> = history.counters.iter().map(String::as_str).collect();
    // The acknowledged writes whose revision is known, by revision.
    let mut acked: BTreeMap<u64, &Op> = BTreeMap::new();
    for op in &history.ops {
        if op.outcome == Outcome::Ok
            && !matches!(op.write, Write::Delete { .. })
            && let Some(rv) = op.rv
        {
            acked.insert(rv, op);
        }
    }
    let mut content: HashMap<u64, (usize, &Event)> = HashMap::new();
    let mut coverage: Vec<Coverage> = Vec::new();
    for (index, log) in history.watchers.iter().enumerate() {
        let mut last = log.start_rv;
        let mut segment_start = log.start_rv;
        let mut covered: Vec<(u64, u64)> = Vec::new();
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        let mut counter_values: HashMap<&str, u64> = history
            .counters
            .iter()
            .map(|name| (name.as_str(), 0))
            .collect();
        for entry in &log.entries {
            match entry {
                WatchEntry::Event(event) => {
                    if event.rv <= last {
                        found.push(anomaly(
                            "watch-order",
                            format!(
                                "watcher {index}: event {} {} at rv {} after rv {last} (repeated or out of order)",
                                event.kind, event.name, event.rv
                            ),
                        ));
                        continue;
                    }
                    last = event.rv;
                    seen.insert(event.rv);
                    match content.get(&event.rv) {
                        Some((other, first)) if *first != event => found.push(anomaly(
                            "watch-mismatch",
                            format!(
                                "rv {}: watcher {other} saw {} {} value {:?}, watcher {index} saw {} {} value {:?}",
                                event.rv,
                                first.kind,
                                first.name,
                                first.value,
                                event.kind,
                                event.name,
                                event.value
                            ),
                        )),
                        Some(_) => {}
                        None => {
                            content.insert(event.rv, (index, event));
                        }
                    }
                    if counter_names.contains(event.name.as_str()) && event.kind == "MODIFIED" {
                        let name = event.name.as_str();
                        if let (Some(previous), Some(value)) =
                            (counter_values.get(name).copied(), event.value)
                            && value != previous + 1
                        {
                            found.push(anomaly(
                                "counter-gap",
                                format!(
                                    "watcher {index}: counter {name} went from {previous} to {value} at rv {}",
                                    event.rv
                                ),
                            ));
                        }
                        match event.value {
                            Some(value) => {
                                counter_values.insert(name, value);
                            }
                            None => {
                                counter_values.remove(name);
                            }
                        }
                    }
                }
                WatchEntry::Resume { .. } => {}
                WatchEntry::Relist { rv } => {
                    if *rv < last {
                        found.push(anomaly(
                            "watch-order",
                            format!("watcher {index}: re-list at rv {rv} after rv {last}"),
                        ));
                    }
                    covered.push((segment_start, last));
                    segment_start = (*rv).max(last);
                    last = segment_start;
                    // After a gap the counters' values are unknown until the next event.
                    counter_values.clear();
                }
            }
        }
        covered.push((segment_start, last));
        coverage.push((covered, seen));
    }
    // Every revision an acknowledged write made, or any watcher saw, must reach every
    // watcher whose range covered it.
    for (index, (covered, seen)) in coverage.iter().enumerate() {
        for (from, to) in covered {
            let known = acked
                .range(from + 1..=*to)
                .map(|(rv, op)| (*rv, format!("{:?} by client {}", op.write, op.client)));
            let watched = content
                .iter()
                .filter(|(rv, _)| (from + 1..=*to).contains(*rv) && !acked.contains_key(*rv))
                .map(|(rv, (other, event))| {
                    (
                        *rv,
                        format!("{} {} seen by watcher {other}", event.kind, event.name),
                    )
                });
            let mut missing: Vec<(u64, String)> = known
                .chain(watched)
                .filter(|(rv, _)| !seen.contains(rv))
                .collect();
            missing.sort();
            for (rv, what) in missing {
                found.push(anomaly(
                    "missed-event",
                    format!(
                        "watcher {index} covered rvs {}..={to} but never saw rv {rv} ({what})",
                        from + 1
                    ),
                ));
            }
        }
    }
    // An acknowledged write must show up with its own content.
    for (rv, op) in &acked {
        let Some((watcher, event)) = content.get(rv) else {
            continue;
        };
        let expected = match &op.write {
            Write::Increment {
                counter,
                read_value,
                ..
            } => history
                .counters
                .get(*counter)
                .map(|name| (name.as_str(), Some(read_value + 1))),
            Write::Create { name } => Some((name.as_str(), None)),
            Write::Delete { .. } => None,
        };
        if let Some((name, value)) = expected
            && (event.name != name || (value.is_some() && event.value != value))
        {
            found.push(anomaly(
                "watch-mismatch",
                format!(
                    "rv {rv} was acknowledged for {name} value {value:?} but watcher {watcher} saw {} {} value {:?}",
                    event.kind, event.name, event.value
                ),
            ));
        }
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
