//! The recorded history of a chaos run and the checks run over it afterwards.
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

/// How a write ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The server acknowledged it (2xx).
    Ok,
    /// The server refused it (a definite 4xx such as 409 or 404): it must not have applied.
    Failed,
    /// No answer, a cut connection or a 5xx: it may or may not have applied.
    Indeterminate,
}

/// What a write tried to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// PUT of counter `counter` with value `read_value + 1`, conditional on `read_rv`.
    Increment {
        /// Index of the counter ConfigMap.
        counter: usize,
        /// The value the client read.
        read_value: u64,
        /// The resourceVersion it read (the PUT's precondition).
        read_rv: u64,
    },
    /// POST of a new, uniquely named ConfigMap.
    Create {
        /// Its name.
        name: String,
    },
    /// DELETE of a ConfigMap the same client created before.
    Delete {
        /// Its name.
        name: String,
    },
}

/// One write attempt and how it ended.
#[derive(Debug, Clone)]
pub struct Op {
    /// The client that sent it.
    pub client: usize,
    /// The server (index) it was sent to.
    pub server: usize,
    /// What it tried.
    pub write: Write,
    /// How it ended.
    pub outcome: Outcome,
    /// The HTTP status (0 when there was none).
    pub status: u16,
    /// The resourceVersion of the answer, when acknowledged.
    pub rv: Option<u64>,
    /// Seconds since the run started, when sent and when answered.
    pub start: f64,
    /// See `start`.
    pub end: f64,
}

/// One read of a counter by a client (for the per-client monotonic-read check).
#[derive(Debug, Clone, Copy)]
pub struct Read {
    /// The client.
    pub client: usize,
    /// The counter index.
    pub counter: usize,
    /// The resourceVersion it saw.
    pub rv: u64,
    /// The value it saw.
    pub value: u64,
}

/// One event a watcher received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// ADDED, MODIFIED or DELETED.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// Its resourceVersion.
    pub rv: u64,
    /// Its `data.value`, when a number.
    pub value: Option<u64>,
}

/// What a watcher's log holds, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEntry {
    /// An event.
    Event(Event),
    /// The stream ended; it was re-opened from the last resourceVersion on `server`.
    Resume {
        /// The server it resumed on.
        server: usize,
    },
    /// The server said 410 Gone; the watcher listed again at `rv` (events between its last
    /// resourceVersion and `rv` are not covered).
    Relist {
        /// The list's resourceVersion.
        rv: u64,
    },
}

/// Everything one watcher saw.
#[derive(Debug, Clone, Default)]
pub struct WatcherLog {
    /// The resourceVersion it started from.
    pub start_rv: u64,
    /// Events, resumes and re-lists.
    pub entries: Vec<WatchEntry>,
}

/// The recorded history of one run.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Names of the counter ConfigMaps, by index.
    pub counters: Vec<String>,
    /// Every write attempt.
    pub ops: Vec<Op>,
    /// Every counter read, in each client's order.
    pub reads: Vec<Read>,
    /// Every watcher's log.
    pub watchers: Vec<WatcherLog>,
    /// The namespace's ConfigMaps at the end: name -> `data.value` if a number.
    pub final_state: HashMap<String, Option<u64>>,
    /// Names of the ConfigMaps the clients create (others in the namespace are ignored).
    pub created_prefix: String,
}

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
mod tests {
    use super::*;

    fn op(client: usize, write: Write, outcome: Outcome, status: u16, rv: Option<u64>) -> Op {
        Op {
            client,
            server: 0,
            write,
            outcome,
            status,
            rv,
            start: 0.0,
            end: 0.0,
        }
    }

    fn event(kind: &str, name: &str, rv: u64, value: Option<u64>) -> WatchEntry {
        WatchEntry::Event(Event {
            kind: kind.into(),
            name: name.into(),
            rv,
            value,
        })
    }

    fn increment(client: usize, read_value: u64, read_rv: u64, outcome: Outcome, rv: u64) -> Op {
        let status = match outcome {
            Outcome::Ok => 200,
            Outcome::Failed => 409,
            Outcome::Indeterminate => 0,
        };
        op(
            client,
            Write::Increment {
                counter: 0,
                read_value,
                read_rv,
            },
            outcome,
            status,
            (outcome == Outcome::Ok).then_some(rv),
        )
    }

    /// A clean history: counter 0 -> 1 -> 2 (the second one indeterminate but applied),
    /// an object created and one created then deleted, two watchers that saw it all.
    fn clean() -> History {
        let create = |name: &str, rv| {
            op(
                1,
                Write::Create { name: name.into() },
                Outcome::Ok,
                201,
                Some(rv),
            )
        };
        let events = vec![
            event("MODIFIED", "counter-0", 11, Some(1)),
            event("ADDED", "obj-a", 12, None),
            event("MODIFIED", "counter-0", 13, Some(2)),
            event("ADDED", "obj-b", 14, None),
            event("DELETED", "obj-b", 15, None),
        ];
        History {
            counters: vec!["counter-0".into()],
            ops: vec![
                increment(0, 0, 10, Outcome::Ok, 11),
                create("obj-a", 12),
                increment(0, 1, 11, Outcome::Indeterminate, 0),
                increment(2, 1, 11, Outcome::Failed, 0),
                create("obj-b", 14),
                op(
                    1,
                    Write::Delete {
                        name: "obj-b".into(),
                    },
                    Outcome::Ok,
                    200,
                    Some(15),
                ),
            ],
            reads: vec![
                Read {
                    client: 0,
                    counter: 0,
                    rv: 10,
                    value: 0,
                },
                Read {
                    client: 0,
                    counter: 0,
                    rv: 11,
                    value: 1,
                },
            ],
            watchers: vec![
                WatcherLog {
                    start_rv: 10,
                    entries: events.clone(),
                },
                WatcherLog {
                    start_rv: 10,
                    entries: events,
                },
            ],
            final_state: [
                ("counter-0".to_string(), Some(2)),
                ("obj-a".to_string(), None),
            ]
            .into_iter()
            .collect(),
            created_prefix: "obj-".into(),
        }
    }

    fn kinds(history: &History) -> Vec<String> {
        let mut kinds: Vec<String> = check(history).into_iter().map(|a| a.kind).collect();
        kinds.sort();
        kinds
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        assert_eq!(check(&clean()), Vec::<Anomaly>::new());
    }

    #[test]
    fn a_lost_acknowledged_create_is_reported() {
        let mut history = clean();
        history.final_state.remove("obj-a");
        assert_eq!(kinds(&history), ["lost-write"]);
    }

    #[test]
    fn a_duplicated_watch_event_is_reported() {
        let mut history = clean();
        history.watchers[1]
            .entries
            .insert(2, event("ADDED", "obj-a", 12, None));
        assert_eq!(kinds(&history), ["watch-order"]);
    }

    #[test]
    fn a_missed_watch_event_is_reported_unless_the_watcher_relisted() {
        let mut history = clean();
        history.watchers[0].entries.remove(1);
        assert_eq!(kinds(&history), ["missed-event"]);
        history.watchers[0]
            .entries
            .insert(1, WatchEntry::Relist { rv: 12 });
        assert_eq!(kinds(&history), Vec::<String>::new());
    }

    #[test]
    fn an_increment_applied_twice_is_reported() {
        let mut history = clean();
        // Two acknowledged writes of the same value: one of them was applied over the other.
        history.ops.push(increment(3, 0, 10, Outcome::Ok, 16));
        let found = kinds(&history);
        assert!(
            found.contains(&"duplicate-increment".to_string()),
            "{found:?}"
        );
        // A counter that moved by two for one acknowledged increment.
        let mut history = clean();
        history.ops.remove(2);
        history.final_state.insert("counter-0".into(), Some(2));
        assert!(
            kinds(&history).contains(&"failed-write-applied".to_string()),
            "{:?}",
            kinds(&history)
        );
    }

    #[test]
    fn a_stale_read_is_reported() {
        let mut history = clean();
        history.reads.push(Read {
            client: 0,
            counter: 0,
            rv: 10,
            value: 0,
        });
        assert_eq!(kinds(&history), ["stale-read"]);
    }

    #[test]
    fn watchers_that_disagree_are_reported() {
        let mut history = clean();
        history.watchers[1].entries[0] = event("MODIFIED", "counter-0", 11, Some(7));
        let found = kinds(&history);
        assert!(found.contains(&"watch-mismatch".to_string()), "{found:?}");
    }

    #[test]
    fn an_event_one_watcher_saw_and_another_covering_it_missed_is_reported() {
        let mut history = clean();
        // An indeterminate write (revision unknown to the client) that one watcher saw.
        history.watchers[0]
            .entries
            .push(event("ADDED", "obj-maybe", 16, None));
        history.watchers[1]
            .entries
            .push(event("ADDED", "obj-other", 17, None));
        history.final_state.insert("obj-maybe".into(), None);
        history.final_state.insert("obj-other".into(), None);
        history.created_prefix = "none-".into();
        assert_eq!(kinds(&history), ["missed-event"]);
    }
}
