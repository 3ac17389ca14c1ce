//! `capstan bench join`: N simulated agents register at once through the real registration
//! path (the agent's own client code), to measure how fast a cluster admits a fleet, how the
//! fleet spreads over the servers, and, while the connections are held, what they cost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use capstan_agent::client::{self, Credentials, Ended};
use capstan_agent::{self, tls};
use capstan_machinery::join::ClusterToken;

/// How long one simulated registration may take.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `capstan bench join`.
#[derive(Debug, Clone, Args)]
pub struct JoinBenchArgs {
    /// A registration address, `https://host[:port]` (repeat or separate with commas; the
    /// agents are dealt over them in turn).
    #[arg(
        long = "server",
        env = "CAPSTAN_URL",
        value_delimiter = ',',
        required = true
    )]
    pub servers: Vec<String>,
    /// The cluster token (full `K10…` form, or the bare secret).
    #[arg(
        long,
        env = "CAPSTAN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// Simulated agents (node names `sim-0`, `sim-1`…).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub agents: usize,
    /// Registrations in flight at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to hold the connections open after all joined (answering pings), to measure
    /// the servers' memory.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub hold: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `capstan bench join` measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinBenchReport {
    /// Agents simulated.
    pub agents: usize,
    /// Agents that received a Welcome.
    pub joined: usize,
    /// Failed registrations by reason.
    pub failures: BTreeMap<String, usize>,
    /// Seconds from the first attempt until the last registration finished.
    pub all_joined_seconds: f64,
    /// Median time from connecting to the Welcome, milliseconds.
    pub join_p50_ms: f64,
    /// 99th percentile of the same.
    pub join_p99_ms: f64,
    /// Agents per server id (from the Welcome).
    pub agents_per_server: BTreeMap<String, usize>,
    /// Seconds the connections were held.
    pub held_seconds: u64,
    /// Connections that dropped while held.
    pub dropped_during_hold: usize,
}

enum Outcome {
    Joined {
        latency: Duration,
        server_id: String,
    },
    Failed(&'static str),
}

/// Runs the benchmark and prints its report (text or JSON) on stdout.
pub async fn run(args: JoinBenchArgs) -> anyhow::Result<JoinBenchReport> {
    let servers = args
        .servers
        .iter()
        .map(|server| capstan_agent::server_address(server.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!servers.is_empty(), "--server names no server");
    let token: ClusterToken = args.token.parse()?;
    let ca_pem = capstan_agent::fetch_ca(&servers, &token)
        .await?
        .context("no registration address answered GET /cacerts")?;
    let tls = tls::verifying(&ca_pem)?;

    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let release = CancellationToken::new();
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel::<String>();
    let mut holders = tokio::task::JoinSet::new();
    let started = Instant::now();
    for index in 0..args.agents {
        let address = servers[index % servers.len()].clone();
        let credentials = Credentials {
            secret: token.secret.clone(),
            node_name: format!("sim-{index}"),
            node_password: hex::encode(rand::random::<[u8; 16]>()),
        };
        let (tls, permits, release) = (tls.clone(), permits.clone(), release.clone());
        let (outcomes_tx, dropped_tx) = (outcomes_tx.clone(), dropped_tx.clone());
        holders.spawn(async move {
            let Ok(permit) = permits.acquire_owned().await else {
                return;
            };
            let begun = Instant::now();
            let joined = client::connect(&address, tls, &credentials, JOIN_TIMEOUT).await;
            drop(permit);
            let registration = match joined {
                Ok(registration) => registration,
                Err(error) => {
                    tracing::debug!(%error, node = %credentials.node_name, "registration failed");
                    let _ = outcomes_tx.send(Outcome::Failed(error.kind()));
                    return;
                }
            };
            let _ = outcomes_tx.send(Outcome::Joined {
                latency: begun.elapsed(),
                server_id: registration.server_id.clone(),
            });
            if let Ended::Dropped(reason) = registration.hold(&release, |_| {}, None).await {
                let _ = dropped_tx.send(reason);
            }
        });
    }
    drop((outcomes_tx, dropped_tx));

    let mut latencies = Vec::new();
    let mut failures = BTreeMap::new();
    let mut agents_per_server = BTreeMap::new();
    for _ in 0..args.agents {
        match outcomes.recv().await {
            Some(Outcome::Joined { latency, server_id }) => {
                latencies.push(latency);
                *agents_per_server.entry(server_id).or_insert(0) += 1;
            }
            Some(Outcome::Failed(kind)) => *failures.entry(kind.to_string()).or_insert(0) += 1,
            None => break,
        }
    }
    let all_joined = started.elapsed();
    if args.hold > 0 {
        eprintln!(
            "holding {} connections for {} s",
            latencies.len(),
            args.hold
        );
        tokio::time::sleep(Duration::from_secs(args.hold)).await;
    }
    release.cancel();
    while holders.join_next().await.is_some() {}
    let mut dropped_during_hold = 0;
    while let Ok(reason) = dropped.try_recv() {
        tracing::debug!(%reason, "a held connection dropped");
        dropped_during_hold += 1;
    }

    latencies.sort();
    let report = JoinBenchReport {
        agents: args.agents,
        joined: latencies.len(),
        failures,
        all_joined_seconds: all_joined.as_secs_f64(),
        join_p50_ms: percentile_ms(&latencies, 0.50),
        join_p99_ms: percentile_ms(&latencies, 0.99),
        agents_per_server,
        held_seconds: args.hold,
        dropped_during_hold,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(report)
}

fn percentile_ms(sorted: &[Duration], quantile: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

fn print_text(report: &JoinBenchReport) {
    println!(
        "joined {}/{} in {:.2} s (join latency p50 {:.1} ms, p99 {:.1} ms)",
        report.joined,
        report.agents,
        report.all_joined_seconds,
        report.join_p50_ms,
        report.join_p99_ms
    );
    for (reason, count) in &report.failures {
        println!("failed: {count} ({reason})");
    }
    for (server, count) in &report.agents_per_server {
        println!("server {server}: {count} agents");
    }
    if report.held_seconds > 0 {
        println!(
            "held {} s; {} connections dropped meanwhile",
            report.held_seconds, report.dropped_during_hold
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_ranked_sample() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 0.50), 50.0);
        assert_eq!(percentile_ms(&samples, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.99), 0.0);
    }
}
