//! The fault schedule of a chaos run: every `--fault-interval` seconds the next kind in
//! turn (kill -9 and restart of a server, SIGSTOP of a server past its membership lease,
//! a crash restart of the database, every server's database connection cut), each
//! recorded with its time. Servers that exit on their own are noted and restarted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio::sync::Mutex;

use super::cluster::{
    PrivateDatabase, ServerProcess, ServerSpec, drop_connections, signal, wait_ready,
};
use super::workload::Shared;

/// How long a restarted server may take to be ready again.
const RESTART_READY: Duration = Duration::from_secs(90);

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// kill -9 of a server, then a restart.
    KillServer,
    /// SIGSTOP of a server for longer than its lease, then SIGCONT.
    PauseServer,
    /// Every server's database connection terminated.
    DropConnections,
    /// A crash restart of the database.
    RestartDatabase,
}

impl FaultKind {
    /// The kebab-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillServer => "kill-server",
            FaultKind::PauseServer => "pause-server",
            FaultKind::DropConnections => "drop-connections",
            FaultKind::RestartDatabase => "restart-database",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Its kind.
    pub kind: FaultKind,
    /// Seconds since the run started.
    pub at: f64,
    /// The server it hit (0-based), if one.
    pub server: Option<usize>,
    /// What happened (connections cut, seconds to be ready again, …) or what went wrong.
    pub detail: String,
    /// Whether the fault could not be injected or recovered from.
    pub error: bool,
}

/// The servers and the database a run may break.
pub struct Cluster {
    /// The server processes.
    pub servers: Vec<ServerProcess>,
    /// Which servers are stopped right now.
    pub paused: Vec<bool>,
    /// What every server is started with.
    pub spec: ServerSpec,
    /// The private database, when the run started one.
    pub database: Option<PrivateDatabase>,
    /// A shell command restarting the database, when it is not private.
    pub restart_command: Option<String>,
    /// Servers that exited without being killed, with when and how.
    pub unexpected_exits: Vec<String>,
}

impl Cluster {
    /// Which kinds of faults this cluster can be given.
    pub fn kinds(&self) -> Vec<FaultKind> {
        let mut kinds = vec![
            FaultKind::KillServer,
            FaultKind::PauseServer,
            FaultKind::DropConnections,
        ];
        if self.database.is_some() || self.restart_command.is_some() {
            kinds.push(FaultKind::RestartDatabase);
        }
        kinds
    }

    /// Restarts servers that exited on their own (and notes it); returns their indexes.
    pub fn revive(&mut self, at: f64) -> Vec<usize> {
        let mut revived = Vec::new();
        for index in 0..self.servers.len() {
            if let Some(status) = self.servers[index].exited() {
                let log = self.servers[index].data_dir().display().to_string();
                self.unexpected_exits.push(format!(
                    "server {index} exited on its own ({status}) before {at:.1} s; logs in {log}"
                ));
                if let Err(error) = self.servers[index].spawn(&self.spec) {
                    self.unexpected_exits
                        .push(format!("server {index} could not be restarted: {error:#}"));
                } else {
                    revived.push(index);
                }
            }
        }
        revived
    }
}

/// Options of the schedule.
pub struct Schedule {
    /// How many faults.
    pub count: usize,
    /// Seconds between the end of one fault and the next.
    pub interval: Duration,
    /// How long a paused server stays stopped.
    pub pause: Duration,
    /// Kinds to cycle through (empty: every kind the cluster allows).
    pub kinds: Vec<FaultKind>,
    /// Seed of the choice of servers.
    pub seed: u64,
}

/// Runs the schedule; returns every fault injected.
pub async fn run(
    schedule: Schedule,
    cluster: Arc<Mutex<Cluster>>,
    shared: Arc<Shared>,
) -> Vec<Fault> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(schedule.seed);
    let possible = cluster.lock().await.kinds();
    let mut kinds: Vec<FaultKind> = schedule
        .kinds
        .iter()
        .copied()
        .filter(|kind| possible.contains(kind))
        .collect();
    if kinds.is_empty() {
        kinds = possible;
    }
    let mut faults = Vec::new();
    let mut pauses = tokio::task::JoinSet::new();
    for number in 0..schedule.count {
        tokio::time::sleep(schedule.interval).await;
        let at = shared.started.elapsed().as_secs_f64();
        for index in cluster.lock().await.revive(at) {
            let _ = wait_ready(&shared.targets[index], RESTART_READY).await;
        }
        let kind = kinds[number % kinds.len()];
        let fault = match kind {
            FaultKind::KillServer => kill(&cluster, &shared, &mut rng).await,
            FaultKind::PauseServer => {
                pause(&cluster, &shared, &mut rng, schedule.pause, &mut pauses).await
            }
            FaultKind::DropConnections => {
                let endpoint = cluster.lock().await.spec.endpoint.clone();
                match drop_connections(&endpoint).await {
                    Ok(cut) => fault(kind, at, None, format!("{cut} connections cut"), false),
                    Err(error) => fault(kind, at, None, format!("{error:#}"), true),
                }
            }
            FaultKind::RestartDatabase => restart_database(&cluster, at).await,
        };
        eprintln!(
            "chaos: fault {}/{} at {:.1} s: {}{} ({})",
            number + 1,
            schedule.count,
            fault.at,
            fault.kind.name(),
            fault
                .server
                .map(|s| format!(" server {s}"))
                .unwrap_or_default(),
            fault.detail
        );
        faults.push(fault);
    }
    while pauses.join_next().await.is_some() {}
    let at = shared.started.elapsed().as_secs_f64();
    for index in cluster.lock().await.revive(at) {
        let _ = wait_ready(&shared.targets[index], RESTART_READY).await;
    }
    faults
}

fn fault(kind: FaultKind, at: f64, server: Option<usize>, detail: String, error: bool) -> Fault {
    Fault {
        kind,
        at,
        server,
        detail,
        error,
    }
}

/// A server that is running and not paused, at random.
fn pick(cluster: &mut Cluster, rng: &mut rand::rngs::StdRng) -> Option<usize> {
    let candidates: Vec<usize> = (0..cluster.servers.len())
        .filter(|i| !cluster.paused[*i] && cluster.servers[*i].pid().is_some())
        .collect();
    if candidates.is_empty() {
        return None;
    }
    Some(candidates[rng.random_range(0..candidates.len())])
}

async fn kill(
    cluster: &Arc<Mutex<Cluster>>,
    shared: &Arc<Shared>,
    rng: &mut rand::rngs::StdRng,
) -> Fault {
    let at = shared.started.elapsed().as_secs_f64();
    let index = {
        let mut cluster = cluster.lock().await;
        let Some(index) = pick(&mut cluster, rng) else {
            return fault(
                FaultKind::KillServer,
                at,
                None,
                "no server to kill".into(),
                true,
            );
        };
        cluster.servers[index].kill();
        index
    };
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..2000))).await;
    {
        let mut cluster = cluster.lock().await;
        let spec = cluster.spec.clone();
        if let Err(error) = cluster.servers[index].spawn(&spec) {
            return fault(
                FaultKind::KillServer,
                at,
                Some(index),
                format!("restart: {error:#}"),
                true,
            );
        }
    }
    let restarted = std::time::Instant::now();
    match wait_ready(&shared.targets[index], RESTART_READY).await {
        Ok(()) => fault(
            FaultKind::KillServer,
            at,
            Some(index),
            format!(
                "ready again {:.1} s after the restart",
                restarted.elapsed().as_secs_f64()
            ),
            false,
        ),
        Err(error) => fault(
            FaultKind::KillServer,
            at,
            Some(index),
            format!("{error:#}"),
            true,
        ),
    }
}

async fn pause(
    cluster: &Arc<Mutex<Cluster>>,
    shared: &Arc<Shared>,
    rng: &mut rand::rngs::StdRng,
    length: Duration,
    pauses: &mut tokio::task::JoinSet<()>,
) -> Fault {
    // One stopped server at a time: wait for the previous one to resume.
    while cluster.lock().await.paused.iter().any(|p| *p) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at = shared.started.elapsed().as_secs_f64();
    let (index, pid) = {
        let mut cluster = cluster.lock().await;
        let Some(index) = pick(&mut cluster, rng) else {
            return fault(
                FaultKind::PauseServer,
                at,
                None,
                "no server to pause".into(),
                true,
            );
        };
        let Some(pid) = cluster.servers[index].pid() else {
            return fault(
                FaultKind::PauseServer,
                at,
                None,
                "no server to pause".into(),
                true,
            );
        };
        signal(pid, "STOP");
        cluster.paused[index] = true;
        (index, pid)
    };
    let cluster = cluster.clone();
    pauses.spawn(async move {
        tokio::time::sleep(length).await;
        let mut cluster = cluster.lock().await;
        if cluster.servers[index].pid() == Some(pid) {
            signal(pid, "CONT");
        }
        cluster.paused[index] = false;
    });
    fault(
        FaultKind::PauseServer,
        at,
        Some(index),
        format!("SIGSTOP for {} s", length.as_secs()),
        false,
    )
}

async fn restart_database(cluster: &Arc<Mutex<Cluster>>, at: f64) -> Fault {
    let started = std::time::Instant::now();
    let mut cluster = cluster.lock().await;
    let outcome = if let Some(database) = cluster.database.as_mut() {
        database.restart().await
    } else if let Some(command) = cluster.restart_command.clone() {
        match tokio::process::Command::new("sh")
            .args(["-c", &command])
            .status()
            .await
        {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(anyhow::anyhow!("{command:?} exited with {status}")),
            Err(error) => Err(anyhow::anyhow!("cannot run {command:?}: {error}")),
        }
    } else {
        Err(anyhow::anyhow!("no way to restart the database"))
    };
    match outcome {
        Ok(()) => fault(
            FaultKind::RestartDatabase,
            at,
            None,
            format!("up again after {:.1} s", started.elapsed().as_secs_f64()),
            false,
        ),
        Err(error) => fault(
            FaultKind::RestartDatabase,
            at,
            None,
            format!("{error:#}"),
            true,
        ),
    }
}

/// Faults by kind, for the report.
pub fn by_kind(faults: &[Fault]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for fault in faults.iter().filter(|f| !f.error) {
        *counts.entry(fault.kind.name().to_string()).or_default() += 1;
    }
    counts
}
