//! The consistency checker end to end: three real `capstan server` processes on a private
//! Postgres or MariaDB instance (started by the run, removed at the end, pass or fail),
//! clients and watchers under at least twenty faults of every kind, and a history with no
//! anomalies. Plus the checker on a fabricated bad history, to show it can fail.

use std::path::PathBuf;

use capstan::bench::chaos::causes::Cause;
use capstan::bench::chaos::check;
use capstan::bench::chaos::cluster::PrivateEngine;
use capstan::bench::chaos::history::{Event, History, Op, Outcome, WatchEntry, WatcherLog, Write};
use capstan::bench::chaos::{ChaosBenchArgs, ChaosReport, measure};

/// A run sized for two cores in about two minutes of a debug build.
fn args(engine: PrivateEngine, work_dir: &tempfile::TempDir) -> ChaosBenchArgs {
    let mut args = ChaosBenchArgs::defaults();
    args.private_database = Some(engine);
    args.binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_capstan")));
    args.work_dir = Some(work_dir.path().to_path_buf());
    args.operations = 2_000;
    args.faults = 20;
    args.fault_interval = 2.0;
    args.pause_seconds = 17;
    args.clients = 12;
    args
}

fn assert_clean(report: &ChaosReport) {
    let described = serde_json::to_string_pretty(report).unwrap_or_default();
    assert_eq!(
        report.anomalies, 0,
        "the history has anomalies: {described}"
    );
    assert!(
        report.faults >= 20,
        "at least 20 faults were injected: {described}"
    );
    for kind in [
        "kill-server",
        "pause-server",
        "drop-connections",
        "restart-database",
    ] {
        assert!(
            report.faults_by_kind.get(kind).is_some_and(|n| *n > 0),
            "a {kind} fault was injected: {described}"
        );
    }
    assert!(report.ok > 0, "writes were acknowledged: {described}");
    assert!(
        report.failed + report.indeterminate > 0,
        "some writes were refused or left without an answer, and classified: {described}"
    );
    assert_eq!(
        (
            report.failed_by_cause.total(),
            report.indeterminate_by_cause.total()
        ),
        (report.failed, report.indeterminate),
        "every write not acknowledged has a cause: {described}"
    );
    assert!(report.watch_events > 0, "watchers saw events: {described}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_on_postgres_under_faults() {
    let work_dir = tempfile::tempdir().expect("a temporary dir can be created");
    let report = measure(&args(PrivateEngine::Postgres, &work_dir))
        .await
        .expect("the chaos run completes");
    assert_clean(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_on_mariadb_under_faults() {
    let work_dir = tempfile::tempdir().expect("a temporary dir can be created");
    let report = measure(&args(PrivateEngine::Mariadb, &work_dir))
        .await
        .expect("the chaos run completes");
    assert_clean(&report);
}

fn op(client: usize, write: Write, outcome: Outcome, rv: Option<u64>) -> Op {
    Op {
        client,
        server: 0,
        write,
        outcome,
        status: if outcome == Outcome::Ok { 200 } else { 0 },
        cause: (outcome != Outcome::Ok).then_some(Cause::Unavailable),
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

#[test]
fn the_checker_reports_a_lost_write_a_duplicated_event_and_a_double_increment() {
    let increment = |client, read_value, read_rv, rv| {
        op(
            client,
            Write::Increment {
                counter: 0,
                read_value,
                read_rv,
            },
            Outcome::Ok,
            Some(rv),
        )
    };
    let history = History {
        counters: vec!["counter-0".into()],
        ops: vec![
            // Two acknowledged increments from the same read: one was applied on top of
            // the other (the compare-and-swap let both through).
            increment(0, 0, 10, 11),
            increment(1, 0, 10, 12),
            // An acknowledged create that is gone at the end.
            op(
                2,
                Write::Create {
                    name: "obj-lost".into(),
                },
                Outcome::Ok,
                Some(13),
            ),
        ],
        reads: Vec::new(),
        watchers: vec![WatcherLog {
            start_rv: 10,
            entries: vec![
                event("MODIFIED", "counter-0", 11, Some(1)),
                event("MODIFIED", "counter-0", 12, Some(1)),
                event("ADDED", "obj-lost", 13, None),
                // The same revision twice.
                event("ADDED", "obj-lost", 13, None),
            ],
        }],
        final_state: [("counter-0".to_string(), Some(1))].into_iter().collect(),
        created_prefix: "obj-".into(),
    };
    let found = check::check(&history);
    let kinds: Vec<&str> = found.iter().map(|a| a.kind.as_str()).collect();
    for expected in ["lost-write", "watch-order", "duplicate-increment"] {
        assert!(
            kinds.contains(&expected),
            "{expected} is reported; found {found:#?}"
        );
    }
}
