//! `capstan bench datastore`: drives N store instances (as N servers would) on one
//! database and checks what users of kine have learned to fear.
//!
//! Writers do compare-and-swap writes on random keys of their own and on a few hot keys
//! shared by all (so conflicts happen where they do in a cluster: on contended objects),
//! without reading first: each remembers the revisions it has seen, exactly like an API
//! server retrying a stale update. Watchers on every instance watch the run's
//! prefix from the revision before the load and must receive every applied revision once
//! and in order; the delivery latency is measured from the writing transaction's commit to
//! the watcher, and reported separately for watchers on another instance than the writer
//! ("cross-server"). Readers on every instance time gets and 500-item list pages.
//!
//! Two extra modes answer scaling questions:
//! - `--preload N` creates N extra keys before the load, to compare list page cost at
//!   different table sizes;
//! - `--compact-backlog N` writes N revisions of history first, runs half the load as a
//!   baseline, then compacts the whole backlog while the other half runs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use capstan_datastore::{
    DatastoreConfig, DatastoreMetrics, KeyRange, ListRequest, Store, WriteOp, WriteOutcome,
};

use super::report::{
    AppliedWrite, DatastoreBenchReport, ReaderLog, RunShape, WatcherLog, WriterLog, percentile_ms,
    print_text, summarise,
};

/// Options of `capstan bench datastore`.
#[derive(Debug, Clone, Args)]
pub struct DatastoreBenchArgs {
    /// Datastore endpoint (sqlite://PATH, postgres://…, mysql://…).
    #[arg(long)]
    pub endpoint: String,
    /// Store instances on the database, as that many servers would run.
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// Concurrent writers, spread over the instances.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Watchers on each instance.
    #[arg(long, default_value_t = 2)]
    pub watchers: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Distinct random keys, split evenly among the writers.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Hot keys that a share of the writes contend on.
    #[arg(long, default_value_t = 8)]
    pub hot_keys: usize,
    /// Share of writes that go to a hot key (0 to 1).
    #[arg(long, default_value_t = 0.2)]
    pub hot_share: f64,
    /// Create this many extra keys before the load (list-scaling comparisons).
    #[arg(long, default_value_t = 0)]
    pub preload: usize,
    /// Items per list page the readers ask for.
    #[arg(long, default_value_t = 500)]
    pub list_page: usize,
    /// Write this many revisions of history first, then compact them during the load.
    #[arg(long, default_value_t = 0)]
    pub compact_backlog: usize,
    /// The change feed's idle poll interval (the datastore's `poll-interval-ms`).
    #[arg(long, default_value_t = DatastoreConfig::default().poll_interval_ms)]
    pub poll_interval_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: DatastoreBenchArgs) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

/// Runs the benchmark and returns its measurements.
pub async fn measure(args: &DatastoreBenchArgs) -> anyhow::Result<DatastoreBenchReport> {
    anyhow::ensure!(args.servers >= 1, "--servers must be at least 1");
    anyhow::ensure!(args.writers >= 1, "--writers must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.hot_share),
        "--hot-share must be between 0 and 1"
    );
    let mut config = DatastoreConfig::for_endpoint(args.endpoint.clone());
    config.write_batch_max = 512;
    config.poll_interval_ms = args.poll_interval_ms;
    config.max_connections = 16;
    // The bench compacts on its own schedule.
    config.compact_interval_seconds = u64::MAX / 4;
    let metrics = DatastoreMetrics::unscraped();
    let mut stores = Vec::with_capacity(args.servers);
    for _ in 0..args.servers {
        stores.push(
            Store::open(&config, &metrics)
                .await
                .with_context(|| "opening the datastore")?,
        );
    }
    let result = drive(args, &stores).await;
    for store in &stores {
        store.close().await;
    }
    result
}

async fn drive(
    args: &DatastoreBenchArgs,
    stores: &[Store],
) -> anyhow::Result<DatastoreBenchReport> {
    let run_id: u32 = rand::rng().random();
    let prefix = format!("/bench/{run_id:08x}/");
    let value = Bytes::from(vec![b'v'; args.value_bytes]);

    if args.preload > 0 {
        progress(args, &format!("preloading {} keys", args.preload));
        preload(&stores[0], &format!("{prefix}k/pre-"), args.preload, &value).await?;
    }
    let mut backlog_revisions = 0;
    if args.compact_backlog > 0 {
        progress(
            args,
            &format!("writing a backlog of {} revisions", args.compact_backlog),
        );
        let before = stores[0].current_revision().await?;
        backlog(
            &stores[0],
            &format!("{prefix}backlog/"),
            args.compact_backlog,
            &value,
        )
        .await?;
        backlog_revisions = stores[0].current_revision().await? - before;
    }

    let start_revision = stores[0].current_revision().await?;
    let stop = CancellationToken::new();
    let watch_range = KeyRange::prefix(&format!("{prefix}k/"));

    let mut watchers = JoinSet::new();
    for (instance, store) in stores.iter().enumerate() {
        for _ in 0..args.watchers {
            let watch = store.watch(watch_range.clone(), Some(start_revision)).await;
            let stop = stop.clone();
            watchers.spawn(watch_until_stopped(watch, instance, stop));
        }
    }

    let deadline = Duration::from_secs(args.duration.max(1));
    let load_stop = CancellationToken::new();
    let mut writers = JoinSet::new();
    for writer in 0..args.writers {
        let instance = writer % stores.len();
        writers.spawn(write_until_stopped(
            stores[instance].clone(),
            instance,
            writer,
            prefix.clone(),
            args.clone(),
            value.clone(),
            load_stop.clone(),
        ));
    }
    let mut readers = JoinSet::new();
    for store in stores {
        readers.spawn(read_until_stopped(
            store.clone(),
            prefix.clone(),
            args.list_page,
            load_stop.clone(),
        ));
    }

    let started = Instant::now();
    let mut compaction = None;
    if args.compact_backlog > 0 {
        tokio::time::sleep(deadline / 2).await;
        let compact_from = Instant::now();
        let target = stores[0].current_revision().await? - 1;
        progress(
            args,
            &format!("compacting through revision {target} while writers run"),
        );
        let stats = stores[0].compact(target, &CancellationToken::new()).await?;
        compaction = Some((compact_from, stats, compact_from.elapsed()));
        let remaining = deadline.saturating_sub(started.elapsed());
        tokio::time::sleep(remaining).await;
    } else {
        tokio::time::sleep(deadline).await;
    }
    load_stop.cancel();
    let elapsed = started.elapsed();

    let mut logs = Vec::new();
    while let Some(log) = writers.join_next().await {
        logs.push(log?);
    }
    let mut reads = ReaderLog::default();
    while let Some(log) = readers.join_next().await {
        let log = log?;
        reads.gets.extend(log.gets);
        reads.lists.extend(log.lists);
    }

    // Let the watchers drain: every applied revision should arrive within a few seconds.
    let last_applied = logs
        .iter()
        .flat_map(|l| l.applied.iter().map(|w| w.revision))
        .max()
        .unwrap_or(start_revision);
    wait_for_watchers(stores, &watch_range, last_applied).await;
    stop.cancel();
    let mut watcher_logs = Vec::new();
    while let Some(log) = watchers.join_next().await {
        watcher_logs.push(log?);
    }

    let engine = stores[0].engine().name().to_string();
    let shape = RunShape {
        servers: args.servers,
        writers: args.writers,
        value_bytes: args.value_bytes,
    };
    let mut report = summarise(&shape, engine, elapsed, &logs, &reads, &watcher_logs);
    report.list_table_keys = args.keys.min(report.writes as usize) + args.preload;
    if let Some((compact_from, stats, took)) = compaction {
        let (before, during): (Vec<_>, Vec<_>) = logs
            .iter()
            .flat_map(|l| l.applied.iter())
            .partition(|w| w.started < compact_from);
        let during: Vec<_> = during
            .into_iter()
            .filter(|w| w.started < compact_from + took)
            .collect();
        report.baseline_write_p99_ms = Some(percentile_ms(
            before.iter().map(|w| w.committed_at - w.started).collect(),
            0.99,
        ));
        report.compaction_write_p99_ms = Some(percentile_ms(
            during.iter().map(|w| w.committed_at - w.started).collect(),
            0.99,
        ));
        report.compaction_revisions = Some(backlog_revisions);
        report.compaction_steps = Some(stats.steps);
        report.compaction_rows_removed = Some(stats.rows_removed);
        report.compaction_longest_step_ms = Some(stats.longest_step.as_secs_f64() * 1000.0);
        report.compaction_seconds = Some(took.as_secs_f64());
    }
    Ok(report)
}

fn progress(args: &DatastoreBenchArgs, message: &str) {
    if !args.json {
        eprintln!("bench: {message}");
    }
}

async fn preload(store: &Store, prefix: &str, count: usize, value: &Bytes) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    let per_task = count.div_ceil(64);
    for task in 0..64 {
        let store = store.clone();
        let value = value.clone();
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            for i in (task * per_task)..((task + 1) * per_task).min(count) {
                store
                    .create(&format!("{prefix}{i:09}"), value.clone())
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Writes `revisions` updates over 1000 keys, so nearly all of the history is superseded.
async fn backlog(
    store: &Store,
    prefix: &str,
    revisions: usize,
    value: &Bytes,
) -> anyhow::Result<()> {
    let mut tasks = JoinSet::new();
    let per_task = revisions.div_ceil(256);
    for task in 0..256 {
        let store = store.clone();
        let value = value.clone();
        let key = format!("{prefix}{:04}", task % 1000);
        tasks.spawn(async move {
            let mut known: Option<i64> = None;
            for _ in 0..per_task {
                let op = match known {
                    None => WriteOp::Create {
                        key: key.clone(),
                        value: value.clone(),
                        ttl: None,
                    },
                    Some(expected_revision) => WriteOp::Update {
                        key: key.clone(),
                        value: value.clone(),
                        expected_revision,
                        ttl: None,
                    },
                };
                match store.write(op).await?.outcome {
                    WriteOutcome::Applied { revision } => known = Some(revision),
                    WriteOutcome::Conflict { current_revision } => known = current_revision,
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn write_until_stopped(
    store: Store,
    instance: usize,
    writer: usize,
    prefix: String,
    args: DatastoreBenchArgs,
    value: Bytes,
    stop: CancellationToken,
) -> WriterLog {
    let mut log = WriterLog::default();
    let mut known: HashMap<String, i64> = HashMap::new();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let own_keys = (args.keys / args.writers).max(1);
    while !stop.is_cancelled() {
        let key = if args.hot_keys > 0 && rng.random_bool(args.hot_share) {
            format!("{prefix}k/hot-{}", rng.random_range(0..args.hot_keys))
        } else {
            format!(
                "{prefix}k/key-{:08}",
                writer * own_keys + rng.random_range(0..own_keys)
            )
        };
        let op = match known.get(&key) {
            None => WriteOp::Create {
                key: key.clone(),
                value: value.clone(),
                ttl: None,
            },
            Some(&expected) if rng.random_bool(0.05) => WriteOp::Delete {
                key: key.clone(),
                expected_revision: Some(expected),
            },
            Some(&expected_revision) => WriteOp::Update {
                key: key.clone(),
                value: value.clone(),
                expected_revision,
                ttl: None,
            },
        };
        let deleting = matches!(op, WriteOp::Delete { .. });
        let started = Instant::now();
        match store.write(op).await {
            Ok(committed) => match committed.outcome {
                WriteOutcome::Applied { revision } => {
                    if deleting {
                        known.remove(&key);
                    } else {
                        known.insert(key, revision);
                    }
                    log.applied.push(AppliedWrite {
                        revision,
                        instance,
                        committed_at: committed.committed_at,
                        started,
                    });
                }
                WriteOutcome::Conflict { current_revision } => {
                    log.conflicts += 1;
                    match current_revision {
                        Some(current) => known.insert(key, current),
                        None => known.remove(&key),
                    };
                }
            },
            Err(err) => {
                log.errors += 1;
                tracing::warn!(error = %err, "bench write failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    log
}

async fn read_until_stopped(
    store: Store,
    prefix: String,
    page: usize,
    stop: CancellationToken,
) -> ReaderLog {
    let mut log = ReaderLog::default();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let range = KeyRange::prefix(&format!("{prefix}k/"));
    while !stop.is_cancelled() {
        let key = format!("{prefix}k/key-{:08}", rng.random_range(0..10_000));
        let started = Instant::now();
        if store.get(&key).await.is_ok() {
            log.gets.push(started.elapsed());
        }
        // A page starting at a random point of the range, as a paging client would read.
        let start = format!("{prefix}k/{}", random_start(&mut rng));
        let request = ListRequest {
            range: KeyRange {
                start,
                end: range.end.clone(),
            },
            revision: None,
            limit: page,
        };
        let started = Instant::now();
        if store.list(&request).await.is_ok() {
            log.lists.push(started.elapsed());
        }
        // Samples latency; it is not meant to load the database (a page of 500 every few
        // milliseconds on each instance would compete with the writers being measured).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    log
}

fn random_start(rng: &mut impl Rng) -> String {
    match rng.random_range(0..3) {
        0 => format!("key-{:08}", rng.random_range(0..10_000)),
        _ => format!("pre-{:09}", rng.random_range(0..1_000_000)),
    }
}

async fn watch_until_stopped(
    mut watch: capstan_datastore::Watch,
    instance: usize,
    stop: CancellationToken,
) -> WatcherLog {
    let mut log = WatcherLog {
        instance,
        received: Vec::new(),
        errors: 0,
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            next = watch.next() => match next {
                Some(Ok(event)) => log.received.push((event.revision, Instant::now())),
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "bench watch failed");
                    log.errors += 1;
                    break;
                }
                None => break,
            }
        }
    }
    log
}

/// Waits (up to 10 s) until every instance's feed has passed `revision`, then a little
/// more for the watchers' queues to drain.
async fn wait_for_watchers(stores: &[Store], range: &KeyRange, revision: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for store in stores {
        let mut probe = store.watch(range.clone(), Some(revision - 1)).await;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(remaining, probe.next()).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}
