//! The checker on fabricated histories: a clean one, and each kind of violation.

use super::*;
use crate::bench::chaos::causes::Cause;
use crate::bench::chaos::history::{Read, WatcherLog};

fn op(client: usize, write: Write, outcome: Outcome, status: u16, rv: Option<u64>) -> Op {
    Op {
        client,
        server: 0,
        write,
        outcome,
        status,
        cause: (outcome != Outcome::Ok).then(|| Cause::of_answer(status, b"")),
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
