#![allow(clippy::unwrap_used)]
//! The datastore's contract, written once and checked on every engine (SQLite, Postgres,
//! MySQL/MariaDB), each scenario on a throwaway database of its own:
//!
//! - `writes`: create, update and delete with their comparisons, and the revisions they
//!   take: dense and global, none for a failed comparison.
//! - `reads`: get, get at a past revision, lists exact at one revision across pages, count.
//! - `watches`: every revision after the start exactly once, in order, from the database
//!   and then live, with previous values.
//! - `concurrency`: contended compare-and-swap writers lose nothing and watchers see it all.
//! - `maintenance`: compaction, TTL expiry and leader locks.
//! - `two_servers`: the same guarantees across two stores (servers) on one database.
//! - `bad_input`: invalid keys, oversize values, unreachable databases, newer schemas.
//! - `metrics`: the store's Prometheus families, on the registry it was given.
//!
//! Each scenario is an `async fn(&TestDatabase)`; `conformance!` turns it into one test
//! per engine (`<group>::<engine>::<scenario>`, so `cargo test -p capstan-datastore --test
//! conformance mysql` runs one engine). The throwaway databases come from `database.rs`,
//! which the server's integration tests (`tests/common` of the `capstan` package) use too.

mod database;

/// Instantiates each named scenario of the enclosing module as a test on every engine.
/// Every test gets a fresh database, a time limit (a hang fails instead of blocking the
/// run), and drops its database afterwards.
macro_rules! conformance {
    ($($scenario:ident),+ $(,)?) => {
        conformance!(@engine sqlite, Sqlite, $($scenario),+);
        conformance!(@engine postgres, Postgres, $($scenario),+);
        conformance!(@engine mysql, MySql, $($scenario),+);
    };
    (@engine $module:ident, $engine:ident, $($scenario:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = crate::database::TestDatabase::create(
                        capstan_datastore::Engine::$engine,
                    )
                    .await;
                    let finished =
                        tokio::time::timeout(crate::SCENARIO_LIMIT, super::$scenario(&db)).await;
                    db.cleanup().await;
                    if finished.is_err() {
                        panic!(
                            "{} did not finish within {:?}",
                            stringify!($scenario),
                            crate::SCENARIO_LIMIT
                        );
                    }
                }
            )+
        }
    };
}

/// The longest any one scenario may take.
const SCENARIO_LIMIT: std::time::Duration = std::time::Duration::from_secs(90);

mod bad_input;
mod concurrency;
mod maintenance;
mod metrics;
mod reads;
mod two_servers;
mod watches;
mod writes;

/// Helpers the scenario groups share.
mod support {
    use std::collections::HashMap;

    use bytes::Bytes;
    use capstan_datastore::{Event, EventKind, Store, WriteOp, WriteOutcome};

    /// A create without a TTL, owning its key (for writes issued all at once).
    pub fn create_op(key: impl Into<String>, value: impl Into<Bytes>) -> WriteOp {
        WriteOp::Create {
            key: key.into(),
            value: value.into(),
            ttl: None,
        }
    }

    /// The revision of a write that must have applied.
    pub fn applied(outcome: WriteOutcome) -> i64 {
        match outcome {
            WriteOutcome::Applied { revision } => revision,
            conflict => panic!("expected the write to apply, got {conflict:?}"),
        }
    }

    /// Fails unless `events` are exactly revisions `first..=last`, each once, in order.
    pub fn assert_every_revision_once(events: &[Event], first: i64, last: i64) {
        let revisions: Vec<i64> = events.iter().map(|e| e.revision).collect();
        let expected: Vec<i64> = (first..=last).collect();
        if revisions != expected {
            let missing: Vec<i64> = expected
                .iter()
                .filter(|r| !revisions.contains(r))
                .copied()
                .collect();
            panic!(
                "expected revisions {first}..={last} once each in order; got {} events, \
                 missing {missing:?}, first out of order at index {:?}",
                revisions.len(),
                revisions.iter().zip(&expected).position(|(a, b)| a != b)
            );
        }
    }

    /// What contended writers did: successful increments per hot key and every revision
    /// they took.
    #[derive(Debug, Default)]
    pub struct WriterReport {
        pub increments: HashMap<String, u64>,
        pub revisions: Vec<i64>,
    }

    /// The counter a hot key holds.
    pub fn counter(value: &[u8]) -> u64 {
        std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("a hot key holds a decimal counter, not {value:?}"))
    }

    /// Runs `tasks_per_store` writer tasks on each store at once. Each task makes
    /// `attempts` compare-and-swap increments (read, then update at the revision read) on
    /// `hot_keys`, which must exist holding "0", and creates `creates` keys of its own
    /// under `prefix`. A lost race is a conflict, not retried: the counters must end at
    /// exactly the number of increments that applied.
    pub async fn run_contended_writers(
        stores: &[Store],
        tasks_per_store: usize,
        attempts: usize,
        creates: usize,
        hot_keys: &[String],
        prefix: &str,
    ) -> WriterReport {
        let mut tasks = tokio::task::JoinSet::new();
        for (server, store) in stores.iter().enumerate() {
            for task in 0..tasks_per_store {
                let store = store.clone();
                let hot_keys = hot_keys.to_vec();
                let own_prefix = format!("{prefix}own/{server}-{task}/");
                tasks.spawn(async move {
                    let mut report = WriterReport::default();
                    for attempt in 0..attempts {
                        let key = &hot_keys[(task + attempt) % hot_keys.len()];
                        let current = store.get(key).await.unwrap().expect("hot keys exist");
                        let next = (counter(&current.value) + 1).to_string();
                        let outcome = store.update(key, next, current.mod_revision).await;
                        if let WriteOutcome::Applied { revision } = outcome.unwrap() {
                            *report.increments.entry(key.clone()).or_default() += 1;
                            report.revisions.push(revision);
                        }
                        if attempt < creates {
                            let own = format!("{own_prefix}{attempt}");
                            report
                                .revisions
                                .push(applied(store.create(&own, "mine").await.unwrap()));
                        }
                    }
                    report
                });
            }
        }
        let mut total = WriterReport::default();
        while let Some(report) = tasks.join_next().await {
            let report = report.expect("writer tasks do not panic");
            for (key, count) in report.increments {
                *total.increments.entry(key).or_default() += count;
            }
            total.revisions.extend(report.revisions);
        }
        total.revisions.sort_unstable();
        total
    }

    /// Checks what a watcher saw of a contended run: every update of a hot key moved its
    /// counter up by exactly one from the value it replaced.
    pub fn assert_increments_chain(events: &[Event], hot_keys: &[String]) {
        for event in events
            .iter()
            .filter(|e| e.kind == EventKind::Put && e.prev_revision != 0)
            .filter(|e| hot_keys.contains(&e.key))
        {
            let previous = event
                .prev_value
                .as_ref()
                .expect("an update event carries the value it replaced");
            assert_eq!(
                counter(&event.value),
                counter(previous) + 1,
                "update of {} at revision {}",
                event.key,
                event.revision
            );
        }
    }
}
