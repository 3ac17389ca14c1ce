//! `capstan bench chaos`: a consistency checker in the spirit of etcd's robustness tests
//! and Jepsen's etcd analysis. It starts several `capstan server` processes on one
//! datastore (optionally a private Postgres or MariaDB instance it also restarts), runs
//! clients doing compare-and-swap increments, creates and deletes through all of them and
//! watchers following the namespace, while a fault schedule kills, pauses and restarts
//! servers and the database and cuts database connections. Afterwards the recorded
//! history is checked (see [`check`]); every violation is an anomaly, and any anomaly
//! makes the command fail.

pub mod causes;
pub mod check;
pub mod cluster;
pub mod faults;
pub mod history;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;
use tokio::sync::Mutex;

use self::causes::{Cause, CauseCounts};
use self::check::Anomaly;
use self::cluster::{PrivateDatabase, PrivateEngine, ServerProcess, ServerSpec, wait_ready};
use self::faults::{Cluster, Fault, FaultKind, Schedule};
use self::history::{History, Outcome, WatchEntry, Write};
use self::workload::{CREATED_PREFIX, Shared};
use super::client::ClusterArgs;

/// Options of `capstan bench chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosBenchArgs {
    /// Datastore endpoint the servers share (postgres://… or mysql://…); not needed with
    /// `--private-database`.
    #[arg(long, value_name = "URL", conflicts_with = "private_database")]
    pub datastore_endpoint: Option<String>,
    /// Start a private database instance of this engine under the work dir, restart it as
    /// a fault and remove it at the end (never touches a shared database).
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub private_database: Option<PrivateEngine>,
    /// Shell command restarting the database of `--datastore-endpoint` (without it, and
    /// without `--private-database`, database restarts are left out of the schedule).
    #[arg(long, value_name = "SHELL")]
    pub db_restart_command: Option<String>,
    /// Folder of the Postgres binaries (`initdb`, `pg_ctl`).
    #[arg(long, value_name = "DIR", default_value = "/usr/lib/postgresql/15/bin")]
    pub postgres_bin: PathBuf,
    /// Server processes to start (on 127.0.0.2, 127.0.0.3, …).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub servers: usize,
    /// Concurrent clients.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub clients: usize,
    /// Watchers per server (each starts on its server and resumes anywhere).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub watchers_per_server: usize,
    /// Counter ConfigMaps the clients increment.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub counters: usize,
    /// Write attempts to make at least (the run also lasts until every fault is done).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub operations: u64,
    /// Faults to inject.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub faults: usize,
    /// Seconds between faults.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub fault_interval: f64,
    /// Fault kinds to cycle through (default: every kind the setup allows).
    #[arg(long = "fault-kind", value_enum, value_name = "KIND")]
    pub fault_kinds: Vec<FaultKind>,
    /// Seconds a paused server stays stopped (the membership lease is 15 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    pub pause_seconds: u64,
    /// Seconds before a request without an answer counts as indeterminate.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub request_timeout: u64,
    /// Folder for the servers' data dirs and the private database (default: a new one
    /// under the temporary folder, removed at the end unless `--keep-work-dir`).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Keep the work dir (logs) after the run.
    #[arg(long)]
    pub keep_work_dir: bool,
    /// The `capstan` binary to start servers from (default: this one).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Seed of the random choices (operations, servers to hit).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ChaosBenchArgs {
    /// The defaults, as the command line has them (for tests).
    pub fn defaults() -> ChaosBenchArgs {
        ChaosBenchArgs {
            datastore_endpoint: None,
            private_database: None,
            db_restart_command: None,
            postgres_bin: PathBuf::from("/usr/lib/postgresql/15/bin"),
            servers: 3,
            clients: 16,
            watchers_per_server: 1,
            counters: 8,
            operations: 100_000,
            faults: 20,
            fault_interval: 5.0,
            fault_kinds: Vec::new(),
            pause_seconds: 20,
            request_timeout: 5,
            work_dir: None,
            keep_work_dir: false,
            binary: None,
            seed: None,
            json: false,
        }
    }
}

/// What a chaos run did and found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    /// The datastore engine (postgres, mysql).
    pub engine: String,
    /// Server processes.
    pub servers: usize,
    /// Clients.
    pub clients: usize,
    /// Watchers.
    pub watchers: usize,
    /// Seconds the load ran.
    pub seconds: f64,
    /// Write attempts.
    pub operations: u64,
    /// Acknowledged.
    pub ok: u64,
    /// Definitely refused (409 conflicts and other 4xx).
    pub failed: u64,
    /// No answer or 5xx: resolved by the checker against the final state and watches.
    pub indeterminate: u64,
    /// The definitely refused writes by cause (conflict, unavailable, timeout, other).
    pub failed_by_cause: CauseCounts,
    /// The indeterminate writes by cause.
    pub indeterminate_by_cause: CauseCounts,
    /// Write attempts per second.
    pub ops_per_second: f64,
    /// Counter reads (GET before each compare-and-swap).
    pub reads: u64,
    /// Acknowledged counter increments.
    pub increments_acked: u64,
    /// Indeterminate increments that did apply (the counters' sum minus the acknowledged).
    pub increments_indeterminate_applied: u64,
    /// Faults injected.
    pub faults: usize,
    /// Faults injected, by kind.
    pub faults_by_kind: BTreeMap<String, usize>,
    /// Faults that could not be injected or recovered from.
    pub fault_errors: Vec<String>,
    /// Servers that exited without being killed.
    pub unexpected_exits: Vec<String>,
    /// Every fault, in order.
    pub fault_log: Vec<Fault>,
    /// Watch events received over all watchers.
    pub watch_events: u64,
    /// Times a watcher resumed after losing its stream.
    pub watch_resumes: u64,
    /// Times a watcher got 410 and listed again.
    pub relists: u64,
    /// Anomalies found (must be 0).
    pub anomalies: usize,
    /// The first anomalies (up to 20).
    pub anomaly_list: Vec<Anomaly>,
}

/// Runs the chaos bench and prints its report on stdout (progress on stderr).
pub async fn run(args: ChaosBenchArgs) -> anyhow::Result<ChaosReport> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(report)
}

/// Runs the chaos bench and returns its report without printing it.
pub async fn measure(args: &ChaosBenchArgs) -> anyhow::Result<ChaosReport> {
    if args.servers == 0 || args.servers > 250 || args.clients == 0 {
        bail!("--servers must be 1..=250 and --clients at least 1");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let (work_dir, remove_work_dir) = match &args.work_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("capstan-chaos-{:08x}", rand::random::<u32>())),
            !args.keep_work_dir,
        ),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    eprintln!("chaos: work dir {} (seed {seed})", work_dir.display());
    let outcome = measure_in(args, seed, &work_dir).await;
    if remove_work_dir && outcome.as_ref().is_ok_and(|r| r.anomalies == 0) {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    outcome
}

async fn measure_in(
    args: &ChaosBenchArgs,
    seed: u64,
    work_dir: &std::path::Path,
) -> anyhow::Result<ChaosReport> {
    let database = match args.private_database {
        Some(engine) => Some(
            PrivateDatabase::start(engine, &work_dir.join("database"), &args.postgres_bin)
                .await
                .context("cannot start the private database")?,
        ),
        None => None,
    };
    let endpoint = match (&database, &args.datastore_endpoint) {
        (Some(database), _) => database.endpoint(),
        (None, Some(endpoint)) => endpoint.clone(),
        (None, None) => bail!("give --datastore-endpoint or --private-database"),
    };
    let engine = endpoint.split(':').next().unwrap_or_default().to_string();
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe().context("cannot find the capstan binary")?,
    };
    let token = format!("chaos-{:016x}", rand::random::<u64>());
    let spec = ServerSpec {
        binary,
        endpoint: endpoint.clone(),
        token: token.clone(),
        work_dir: work_dir.to_path_buf(),
    };
    let mut servers = Vec::new();
    // The admin kubeconfig of the first server: its client certificate is signed by the CA
    // every server shares, so it is the admin on all of them (the cluster token is a join
    // credential, not an API one).
    let mut admin_kubeconfig = PathBuf::new();
    for index in 0..args.servers {
        servers.push(ServerProcess::start(&spec, index)?);
        // The first one alone migrates the schema and bootstraps the cluster (servers
        // started at once on a fresh MariaDB database race in the schema migration).
        if index == 0 {
            admin_kubeconfig = servers[0].data_dir().join("server/admin.kubeconfig");
            wait_for_file(&admin_kubeconfig, Duration::from_secs(120)).await?;
            let first = ClusterArgs {
                kubeconfig: Some(admin_kubeconfig.clone()),
                data_dir: PathBuf::from("/nonexistent"),
                server: vec![servers[0].url()],
                token: None,
                certificate_authority: None,
            };
            for target in first.targets()? {
                wait_ready(&Arc::new(target), Duration::from_secs(120)).await?;
            }
        }
    }
    let cluster_args = ClusterArgs {
        kubeconfig: Some(admin_kubeconfig),
        data_dir: PathBuf::from("/nonexistent"),
        server: servers.iter().map(ServerProcess::url).collect(),
        token: None,
        certificate_authority: None,
    };
    let targets: Vec<_> = cluster_args.targets()?.into_iter().map(Arc::new).collect();
    for target in &targets {
        wait_ready(target, Duration::from_secs(120)).await?;
    }
    let cluster = Arc::new(Mutex::new(Cluster {
        paused: vec![false; servers.len()],
        servers,
        spec,
        database,
        restart_command: args.db_restart_command.clone(),
        unexpected_exits: Vec::new(),
    }));

    let shared = Arc::new(Shared {
        targets,
        namespace: format!("chaos-{:08x}", rand::random::<u32>()),
        counters: (0..args.counters).map(|i| format!("counter-{i}")).collect(),
        started: Instant::now(),
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        stop_clients: AtomicBool::new(false),
        fence: AtomicU64::new(0),
        stop_watchers: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        indeterminate: AtomicU64::new(0),
        causes: Default::default(),
        events: AtomicU64::new(0),
    });
    let start_rv = workload::setup(&shared).await?;
    let started = Instant::now();

    let mut watchers = tokio::task::JoinSet::new();
    let watcher_count = args.servers * args.watchers_per_server;
    for index in 0..watcher_count {
        let shared = shared.clone();
        watchers.spawn(async move { (index, workload::watcher(index, shared, start_rv).await) });
    }
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..args.clients {
        let shared = shared.clone();
        let client_seed = seed.wrapping_add(id as u64 + 1);
        clients.spawn(workload::client(id, shared, client_seed));
    }
    let schedule = Schedule {
        count: args.faults,
        interval: Duration::from_secs_f64(args.fault_interval.max(0.0)),
        pause: Duration::from_secs(args.pause_seconds),
        kinds: args.fault_kinds.clone(),
        seed,
    };
    let fault_task = tokio::spawn(faults::run(schedule, cluster.clone(), shared.clone()));

    // Progress, until every fault is done and enough operations were made.
    let mut last_progress = Instant::now();
    while !fault_task.is_finished() || shared.operations() < args.operations {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "chaos: {:.0} s: {} operations ({} ok, {} failed, {} indeterminate; not acknowledged: {}), {} watch events",
                started.elapsed().as_secs_f64(),
                shared.operations(),
                shared.ok.load(Ordering::Relaxed),
                shared.failed.load(Ordering::Relaxed),
                shared.indeterminate.load(Ordering::Relaxed),
                shared.causes().describe(),
                shared.events.load(Ordering::Relaxed),
            );
        }
    }
    let fault_log = fault_task.await.context("the fault schedule panicked")?;
    shared.stop_clients.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut history = History {
        counters: shared.counters.clone(),
        created_prefix: CREATED_PREFIX.to_string(),
        ..History::default()
    };
    while let Some(log) = clients.join_next().await {
        let log = log.context("a client panicked")?;
        history.ops.extend(log.ops);
        history.reads.extend(log.reads);
    }

    // Every watcher must reach the fence, written after the last client's write.
    let fence = workload::fence(&shared).await?;
    shared.fence.store(fence, Ordering::Relaxed);
    let mut logs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match tokio::time::timeout_at(deadline, watchers.join_next()).await {
            Ok(Some(joined)) => logs.push(joined.context("a watcher panicked")?),
            Ok(None) => break,
            Err(_) => {
                eprintln!("chaos: watchers did not reach the fence within 120 s; stopping them");
                shared.stop_watchers.store(true, Ordering::Relaxed);
                while let Some(joined) = watchers.join_next().await {
                    logs.push(joined.context("a watcher panicked")?);
                }
                break;
            }
        }
    }
    logs.sort_by_key(|(index, _)| *index);
    history.watchers = logs.into_iter().map(|(_, log)| log).collect();
    history.final_state = workload::final_state(&shared).await?;

    let mut anomalies = check::check(&history);
    anomalies.sort();
    for (index, log) in history.watchers.iter().enumerate() {
        let fenced = log
            .entries
            .iter()
            .any(|e| matches!(e, WatchEntry::Event(event) if event.rv >= fence));
        if !fenced {
            anomalies.push(Anomaly {
                kind: "watch-stalled".into(),
                detail: format!("watcher {index} never received the fence (rv {fence})"),
            });
        }
    }

    let unexpected_exits = cluster.lock().await.unexpected_exits.clone();
    // Stop the servers and the database before the work dir may go.
    drop(cluster);
    Ok(report(ReportInput {
        args,
        engine,
        history: &history,
        seconds,
        shared: &shared,
        fault_log,
        unexpected_exits,
        anomalies,
    }))
}

struct ReportInput<'a> {
    args: &'a ChaosBenchArgs,
    engine: String,
    history: &'a History,
    seconds: f64,
    shared: &'a Shared,
    fault_log: Vec<Fault>,
    unexpected_exits: Vec<String>,
    anomalies: Vec<Anomaly>,
}

fn report(input: ReportInput<'_>) -> ChaosReport {
    let history = input.history;
    let count = |outcome: Outcome| {
        history
            .ops
            .iter()
            .filter(|op| op.outcome == outcome)
            .count() as u64
    };
    let by_cause = |outcome: Outcome| {
        let mut counts = CauseCounts::default();
        for op in history.ops.iter().filter(|op| op.outcome == outcome) {
            // A write is recorded without a cause only when acknowledged.
            counts.add(op.cause.unwrap_or(Cause::Other));
        }
        counts
    };
    let operations = history.ops.len() as u64;
    let increments_acked = history
        .ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok && matches!(op.write, Write::Increment { .. }))
        .count() as u64;
    let counter_sum: u64 = history
        .counters
        .iter()
        .filter_map(|name| history.final_state.get(name).copied().flatten())
        .sum();
    let entries = |wanted: fn(&WatchEntry) -> bool| {
        history
            .watchers
            .iter()
            .flat_map(|log| log.entries.iter())
            .filter(|entry| wanted(entry))
            .count() as u64
    };
    let fault_errors = input
        .fault_log
        .iter()
        .filter(|f| f.error)
        .map(|f| format!("{} at {:.1} s: {}", f.kind.name(), f.at, f.detail))
        .collect();
    ChaosReport {
        engine: input.engine,
        servers: input.args.servers,
        clients: input.args.clients,
        watchers: history.watchers.len(),
        seconds: input.seconds,
        operations,
        ok: count(Outcome::Ok),
        failed: count(Outcome::Failed),
        indeterminate: count(Outcome::Indeterminate),
        failed_by_cause: by_cause(Outcome::Failed),
        indeterminate_by_cause: by_cause(Outcome::Indeterminate),
        ops_per_second: operations as f64 / input.seconds.max(0.001),
        reads: history.reads.len() as u64,
        increments_acked,
        increments_indeterminate_applied: counter_sum.saturating_sub(increments_acked),
        faults: input.fault_log.iter().filter(|f| !f.error).count(),
        faults_by_kind: faults::by_kind(&input.fault_log),
        fault_errors,
        unexpected_exits: input.unexpected_exits,
        fault_log: input.fault_log,
        watch_events: input.shared.events.load(Ordering::Relaxed),
        watch_resumes: entries(|e| matches!(e, WatchEntry::Resume { .. })),
        relists: entries(|e| matches!(e, WatchEntry::Relist { .. })),
        anomalies: input.anomalies.len(),
        anomaly_list: input.anomalies.into_iter().take(20).collect(),
    }
}

fn print_text(report: &ChaosReport) {
    println!(
        "cluster:     {} servers on {}, {} clients, {} watchers",
        report.servers, report.engine, report.clients, report.watchers
    );
    println!(
        "operations:  {} in {:.1} s ({:.0}/s): {} ok, {} failed (definite), {} indeterminate",
        report.operations,
        report.seconds,
        report.ops_per_second,
        report.ok,
        report.failed,
        report.indeterminate
    );
    println!(
        "  failed by cause:         {}",
        report.failed_by_cause.describe()
    );
    println!(
        "  indeterminate by cause:  {}",
        report.indeterminate_by_cause.describe()
    );
    println!(
        "increments:  {} acknowledged, {} indeterminate ones applied; {} counter reads",
        report.increments_acked, report.increments_indeterminate_applied, report.reads
    );
    let kinds: Vec<String> = report
        .faults_by_kind
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    println!("faults:      {} ({})", report.faults, kinds.join(", "));
    for error in &report.fault_errors {
        println!("fault error: {error}");
    }
    for exit in &report.unexpected_exits {
        println!("exit:        {exit}");
    }
    println!(
        "watches:     {} events, {} resumes, {} re-lists after 410",
        report.watch_events, report.watch_resumes, report.relists
    );
    println!("anomalies:   {}", report.anomalies);
    for anomaly in &report.anomaly_list {
        println!("  {}: {}", anomaly.kind, anomaly.detail);
    }
}

/// Waits until `path` exists (a server writes its admin kubeconfig early in its start).
async fn wait_for_file(path: &std::path::Path, timeout: Duration) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !path.is_file() {
        if std::time::Instant::now() >= deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
