//! `capstan bench watches`: many open watches on one server, to show what they cost (the
//! server's resident memory) and that a write still reaches every one of them quickly.
//!
//! Watches are multiplexed over a few HTTP/2 connections (as client-go does), so the
//! client and the server need few file descriptors; a server caps the streams per
//! connection, so `--streams-per-connection` spreads them. Each write is timed from its
//! response to its arrival on every watch. An optional overload phase hammers GETs with
//! more clients than the server's max-in-flight limit, to show it sheds load with 429 and
//! Retry-After while its memory stays bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{self, Method, Request, StatusCode};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

pub use super::client::Memory;
use super::client::{ClusterArgs, Sender, Target, connect, memory, percentile, request, send};
use capstan_machinery::meta;

/// Name of the ConfigMap the bench writes.
const CONFIGMAP: &str = "capstan-bench-watches";

/// Options of `capstan bench watches`.
#[derive(Debug, Clone, Args)]
pub struct WatchBenchArgs {
    /// Where the server is and the credentials to reach it (the first `--server` only).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The namespace of the watched ConfigMap.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Watch streams to open.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub watches: usize,
    /// Streams per HTTP/2 connection (servers cap it; Capstan's cap is 200).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub streams_per_connection: usize,
    /// Updates of the ConfigMap, one after another once every watch has the previous one.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub writes: usize,
    /// Seconds to wait for one write to reach every watch before counting it missed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub deadline: u64,
    /// The server's process id, to report its memory (VmRSS, VmHWM from /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Concurrent GET clients for an overload phase after the writes (0: none).
    #[arg(long, value_name = "C", default_value_t = 0)]
    pub overload_clients: usize,
    /// Seconds the overload phase lasts.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub overload_seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the overload phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests sent.
    pub requests: u64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Share of answers that were 429, in percent.
    pub rejected_percent: f64,
    /// 429 answers without a Retry-After header (must be 0).
    pub rejected_without_retry_after: u64,
    /// Highest server RSS sampled during the phase.
    pub server_rss_peak_mib: Option<f64>,
}

/// What `capstan bench watches` measured.
#[derive(Debug, Clone, Serialize)]
pub struct WatchBenchReport {
    /// Watches asked for.
    pub watches: usize,
    /// Watches whose stream was established (HTTP 200).
    pub watches_established: usize,
    /// HTTP/2 connections used.
    pub connections: usize,
    /// Seconds to establish every watch.
    pub establish_seconds: f64,
    /// Writes performed.
    pub writes: usize,
    /// Watches that received every write.
    pub watches_complete: usize,
    /// (write, watch) pairs that never arrived within the deadline (must be 0).
    pub events_missed: u64,
    /// Median delivery latency from a write's response to its arrival, milliseconds.
    pub delivery_p50_ms: f64,
    /// 99th percentile of the same.
    pub delivery_p99_ms: f64,
    /// Slowest delivery.
    pub delivery_max_ms: f64,
    /// Per write, the time until the last watch had it (the slowest), milliseconds.
    pub write_to_all_max_ms: f64,
    /// Server memory before opening the watches.
    pub memory_before: Option<Memory>,
    /// Server memory with every watch open.
    pub memory_watching: Option<Memory>,
    /// Server memory after the writes.
    pub memory_after: Option<Memory>,
    /// The overload phase, if asked for.
    pub overload: Option<OverloadReport>,
}

/// One arrival: (watch index, resourceVersion, when).
type Arrival = (usize, u64, Instant);

/// Runs the benchmark and prints its report (text or JSON) on stdout.
pub async fn run(args: WatchBenchArgs) -> anyhow::Result<WatchBenchReport> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(report)
}

/// Runs the benchmark and returns its report without printing it.
pub async fn measure(args: &WatchBenchArgs) -> anyhow::Result<WatchBenchReport> {
    let target = Arc::new(
        args.cluster
            .targets()?
            .into_iter()
            .next()
            .context("no server to measure")?,
    );
    let memory_before = args.server_pid.and_then(memory);
    let per_connection = args.streams_per_connection.max(1);
    let connection_count = args.watches.div_ceil(per_connection).max(1);
    let mut connections = Vec::with_capacity(connection_count);
    for _ in 0..connection_count {
        connections.push(connect(&target).await?);
    }
    let base = format!("/api/v1/namespaces/{}/configmaps", args.namespace);
    let start_version = ensure_configmap(&connections[0], &target, &base).await?;

    // Open the watches, from the ConfigMap's current version, so no initial list is sent.
    let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel::<Arrival>();
    let (established_tx, mut established) = mpsc::unbounded_channel::<bool>();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let path = format!(
        "{base}?watch=true&fieldSelector=metadata.name%3D{CONFIGMAP}&resourceVersion={start_version}"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..args.watches {
        let sender = connections[index / per_connection].clone();
        let request = request(&target, Method::GET, &path, None, None)?;
        let (arrivals_tx, established_tx) = (arrivals_tx.clone(), established_tx.clone());
        let stop = stop.clone();
        tasks.spawn(async move {
            watch(index, sender, request, arrivals_tx, established_tx, stop).await;
        });
    }
    drop(established_tx);
    drop(arrivals_tx);
    let mut watches_established = 0;
    let establish_deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for _ in 0..args.watches {
        match tokio::time::timeout_at(establish_deadline, established.recv()).await {
            Ok(Some(true)) => watches_established += 1,
            Ok(Some(false)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let establish_seconds = started.elapsed().as_secs_f64();
    if watches_established < args.watches {
        eprintln!(
            "bench: only {watches_established} of {} watches were established",
            args.watches
        );
    }
    let memory_watching = args.server_pid.and_then(memory);

    // The writes, one at a time: each waits until every established watch has it.
    let mut latencies: Vec<f64> = Vec::with_capacity(args.writes * args.watches);
    let mut received = vec![0usize; args.watches];
    let mut events_missed = 0u64;
    let mut write_to_all_max_ms: f64 = 0.0;
    let mut early: HashMap<u64, Vec<(usize, Instant)>> = HashMap::new();
    for write in 0..args.writes {
        let patch = serde_json::json!({"data": {"write": write.to_string()}}).to_string();
        let request = request(
            &target,
            Method::PATCH,
            &format!("{base}/{CONFIGMAP}"),
            Some("application/merge-patch+json"),
            Some(patch),
        )?;
        let (status, body) = send(&connections[0], request).await?;
        let answered = Instant::now();
        if status != StatusCode::OK {
            bail!(
                "write {write}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let version = version_of(&body)?;
        let mut seen = vec![false; args.watches];
        let mut count = 0;
        let mut slowest: f64 = 0.0;
        let mut record = |index: usize, at: Instant, count: &mut usize| {
            if index < seen.len() && !seen[index] {
                seen[index] = true;
                *count += 1;
                let ms = at.saturating_duration_since(answered).as_secs_f64() * 1000.0;
                slowest = slowest.max(ms);
                latencies.push(ms);
            }
        };
        for (index, at) in early.remove(&version).unwrap_or_default() {
            record(index, at, &mut count);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(args.deadline);
        while count < watches_established {
            match tokio::time::timeout_at(deadline, arrivals.recv()).await {
                Ok(Some((index, rv, at))) if rv == version => record(index, at, &mut count),
                Ok(Some((index, rv, at))) if rv > version => {
                    early.entry(rv).or_default().push((index, at));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        for (index, got) in seen.iter().enumerate() {
            if *got {
                received[index] += 1;
            }
        }
        events_missed += (args.watches - count) as u64;
        write_to_all_max_ms = write_to_all_max_ms.max(slowest);
    }
    let memory_after = args.server_pid.and_then(memory);

    let overload = if args.overload_clients > 0 {
        Some(overload(args, &target, &base).await?)
    } else {
        None
    };
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    drop(connections);

    latencies.sort_by(f64::total_cmp);
    Ok(WatchBenchReport {
        watches: args.watches,
        watches_established,
        connections: connection_count,
        establish_seconds,
        writes: args.writes,
        watches_complete: received.iter().filter(|n| **n == args.writes).count(),
        events_missed,
        delivery_p50_ms: percentile(&latencies, 0.50),
        delivery_p99_ms: percentile(&latencies, 0.99),
        delivery_max_ms: latencies.last().copied().unwrap_or(0.0),
        write_to_all_max_ms,
        memory_before,
        memory_watching,
        memory_after,
        overload,
    })
}

/// One watch stream: reports its establishment, then every MODIFIED version it sees.
async fn watch(
    index: usize,
    mut sender: Sender,
    request: Request<Full<Bytes>>,
    arrivals: mpsc::UnboundedSender<Arrival>,
    established: mpsc::UnboundedSender<bool>,
    stop: Arc<AtomicBool>,
) {
    let response = match sender.ready().await {
        Ok(()) => sender.send_request(request).await,
        Err(error) => Err(error),
    };
    let mut body = match response {
        Ok(response) if response.status() == StatusCode::OK => {
            let _ = established.send(true);
            response.into_body()
        }
        Ok(response) => {
            eprintln!("bench: watch {index}: HTTP {}", response.status());
            let _ = established.send(false);
            return;
        }
        Err(error) => {
            eprintln!("bench: watch {index}: {error}");
            let _ = established.send(false);
            return;
        }
    };
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let at = Instant::now();
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if let Some(version) = modified_version(&line) {
                let _ = arrivals.send((index, version, at));
            }
        }
    }
    if !stop.load(Ordering::Relaxed) {
        eprintln!("bench: watch {index} ended early");
    }
}

/// The resourceVersion of a `MODIFIED` event line, found without parsing the whole line
/// (10,000 watchers parsing JSON would slow the client more than the server).
fn modified_version(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    if !text.contains("\"type\":\"MODIFIED\"") {
        return None;
    }
    let marker = "\"resourceVersion\":\"";
    let start = text.find(marker)? + marker.len();
    let digits: &str = &text[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

fn version_of(body: &[u8]) -> anyhow::Result<u64> {
    let object: Value = serde_json::from_slice(body).context("write answer is not JSON")?;
    meta(&object)
        .resource_version()
        .and_then(|v| v.parse().ok())
        .context("write answer has no numeric resourceVersion")
}

/// Creates the ConfigMap if missing; returns its resourceVersion.
async fn ensure_configmap(sender: &Sender, target: &Target, base: &str) -> anyhow::Result<u64> {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP}, "data": {"write": "none"},
    })
    .to_string();
    let create = request(
        target,
        Method::POST,
        base,
        Some("application/json"),
        Some(body),
    )?;
    let (status, answer) = send(sender, create).await?;
    match status {
        StatusCode::CREATED | StatusCode::OK => version_of(&answer),
        StatusCode::CONFLICT => {
            let get = request(
                target,
                Method::GET,
                &format!("{base}/{CONFIGMAP}"),
                None,
                None,
            )?;
            let (status, answer) = send(sender, get).await?;
            if status != StatusCode::OK {
                bail!("GET {base}/{CONFIGMAP}: HTTP {status}");
            }
            version_of(&answer)
        }
        other => bail!(
            "creating {base}/{CONFIGMAP}: HTTP {other}: {}",
            String::from_utf8_lossy(&answer)
        ),
    }
}

/// More GET clients than the server admits at once, for `--overload-seconds`.
async fn overload(
    args: &WatchBenchArgs,
    target: &Arc<Target>,
    base: &str,
) -> anyhow::Result<OverloadReport> {
    let per_connection = args.streams_per_connection.max(1);
    let mut senders = Vec::new();
    for _ in 0..args.overload_clients.div_ceil(per_connection) {
        senders.push(connect(target).await?);
    }
    let until = Instant::now() + Duration::from_secs(args.overload_seconds);
    let path = format!("{base}/{CONFIGMAP}");
    let requests = Arc::new(AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..args.overload_clients {
        let mut sender = senders[client / per_connection].clone();
        let (target, path, requests) = (target.clone(), path.clone(), requests.clone());
        clients.spawn(async move {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut without_retry_after = 0u64;
            while Instant::now() < until {
                let Ok(request) = request(&target, Method::GET, &path, None, None) else {
                    break;
                };
                if sender.ready().await.is_err() {
                    break;
                }
                requests.fetch_add(1, Ordering::Relaxed);
                match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        if status == StatusCode::TOO_MANY_REQUESTS
                            && !response.headers().contains_key(http::header::RETRY_AFTER)
                        {
                            without_retry_after += 1;
                        }
                        let _ = response.into_body().collect().await;
                        *statuses.entry(status.as_u16()).or_default() += 1;
                    }
                    Err(_) => *statuses.entry(0).or_default() += 1,
                }
            }
            (statuses, without_retry_after)
        });
    }
    let mut peak: Option<f64> = None;
    while Instant::now() < until {
        if let Some(now) = args.server_pid.and_then(memory) {
            peak = Some(peak.map_or(now.rss_mib, |p: f64| p.max(now.rss_mib)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut rejected_without_retry_after = 0;
    while let Some(done) = clients.join_next().await {
        let (counts, without) = done.context("an overload client panicked")?;
        for (status, count) in counts {
            *statuses.entry(status).or_default() += count;
        }
        rejected_without_retry_after += without;
    }
    let answered: u64 = statuses.values().sum();
    let rejected = statuses.get(&429).copied().unwrap_or(0);
    Ok(OverloadReport {
        clients: args.overload_clients,
        requests: requests.load(Ordering::Relaxed),
        statuses,
        rejected_percent: if answered == 0 {
            0.0
        } else {
            rejected as f64 * 100.0 / answered as f64
        },
        rejected_without_retry_after,
        server_rss_peak_mib: peak,
    })
}

fn print_text(report: &WatchBenchReport) {
    let memory = |m: Option<Memory>| match m {
        Some(m) => format!("RSS {:.1} MiB (peak {:.1} MiB)", m.rss_mib, m.hwm_mib),
        None => "n/a (no --server-pid)".to_string(),
    };
    println!(
        "watches:        {} established of {} over {} HTTP/2 connections in {:.2} s",
        report.watches_established, report.watches, report.connections, report.establish_seconds
    );
    println!(
        "writes:         {} (every one reached {} of {} watches; events missed: {})",
        report.writes, report.watches_complete, report.watches, report.events_missed
    );
    println!(
        "delivery:       p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (write answered -> event on the watch)",
        report.delivery_p50_ms, report.delivery_p99_ms, report.delivery_max_ms
    );
    println!("server before:  {}", memory(report.memory_before));
    println!("server watching:{}", memory(report.memory_watching));
    println!("server after:   {}", memory(report.memory_after));
    if let Some(overload) = &report.overload {
        println!(
            "overload:       {} clients, {} requests, {:.1}% answered 429 ({} without Retry-After), statuses {:?}, server RSS peak {}",
            overload.clients,
            overload.requests,
            overload.rejected_percent,
            overload.rejected_without_retry_after,
            overload.statuses,
            overload
                .server_rss_peak_mib
                .map_or("n/a".to_string(), |p| format!("{p:.1} MiB"))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modified_line_yields_its_version_and_others_none() {
        let line =
            br#"{"type":"MODIFIED","object":{"metadata":{"name":"a","resourceVersion":"42"}}}"#;
        assert_eq!(modified_version(line), Some(42));
        let added = br#"{"type":"ADDED","object":{"metadata":{"resourceVersion":"42"}}}"#;
        assert_eq!(modified_version(added), None);
    }
}
