//! `capstan bench api`: a load generator against a running cluster, as the Kubernetes
//! density tests drive an API server. Clients create, get, update (with conflicts on a few
//! shared "hot" objects), list (paged, with label selectors) and delete ConfigMaps and the
//! objects of a bench CRD, at a fixed total write rate or at full speed; watchers follow
//! both kinds on every server; `--nodes N` adds N simulated agents' heartbeats.
//!
//! The point is twofold: the latency and throughput a user sees per verb, and proof that
//! the watch cache never loses an event. Every acknowledged write is expected exactly once,
//! in resourceVersion order, on every watcher of its kind, whichever server took the write
//! and whichever server serves the watch; the end of the run is fenced by one more write
//! per kind that every watcher must reach before the counts are taken.
//!
//! The pieces: [`load`] (the clients), [`nodes`] (the simulated nodes' heartbeats),
//! [`watch`] (the watchers), [`report`] (what the run measured and how it is printed);
//! this file holds the options, the setup (namespace, CRD) and the cleanup.

mod load;
mod nodes;
mod report;
mod watch;

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::client::{ClusterArgs, Sender, Target, connect, request, send};
use capstan_machinery::meta;
pub use report::{ApiBenchReport, VerbReport, WatchReport};

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new CRD may take to be served by every server.
const CRD_SERVED_WITHIN: Duration = Duration::from_secs(30);
/// Clients per hot object: every client updates the hot objects with read-modify-write,
/// so they conflict; one per 8 clients (at least 2 per kind) keeps conflicts frequent
/// without a retry storm that never lets an update through.
const CLIENTS_PER_HOT_OBJECT: usize = 8;
/// The label every object of a run carries, with the run's id as value.
const RUN_LABEL: &str = "capstan-bench/run";
/// The CRD the bench installs.
const CRD_NAME: &str = "benchobjects.bench.capstan.io";

/// Options of `capstan bench api`.
#[derive(Debug, Clone, Args)]
pub struct ApiBenchArgs {
    /// Where the servers are and the credentials to reach them; repeat `--server` to spread
    /// clients and watchers over servers (client i and watcher j use server i % n, j % n).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Concurrent clients, each on its own HTTP/2 connection.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub clients: usize,
    /// Watchers per kind (ConfigMaps, and bench objects in the mixed workload).
    #[arg(long, value_name = "M", default_value_t = 2)]
    pub watchers: usize,
    /// Seconds of load.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub duration: f64,
    /// Total writes per second over all clients; 0 runs at full speed (closed loop).
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub rate: f64,
    /// What the clients do.
    #[arg(long, value_enum, default_value = "mixed")]
    pub workload: Workload,
    /// Bytes of payload per object.
    #[arg(long, value_name = "BYTES", default_value_t = 256)]
    pub value_bytes: usize,
    /// Namespace of the objects (created if missing).
    #[arg(long, default_value = "capstan-bench")]
    pub namespace: String,
    /// Simulated agents: each PATCHes its Node status and its Lease every 10 s.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub nodes: usize,
    /// Delete what the run made at the end (`--cleanup false` keeps it).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub cleanup: bool,
    /// Seconds a watcher may lag behind the last write before its events count as missed.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub deadline: f64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The clients' mix of requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Creates, gets, updates with conflicts, paged lists, deletes; ConfigMaps and CRD objects.
    Mixed,
    /// ConfigMap creates only (to compare with pgbench at the same concurrency).
    Create,
    /// Node heartbeats only (`--nodes`), no clients or watchers.
    NodesOnly,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Mixed => "mixed",
            Workload::Create => "create",
            Workload::NodesOnly => "nodes-only",
        }
    }
}

/// The kinds the clients write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ObjectKind {
    ConfigMap,
    BenchObject,
}

impl ObjectKind {
    fn short(self) -> &'static str {
        match self {
            ObjectKind::ConfigMap => "cm",
            ObjectKind::BenchObject => "bo",
        }
    }

    /// The collection path in `namespace`.
    fn collection(self, namespace: &str) -> String {
        match self {
            ObjectKind::ConfigMap => format!("/api/v1/namespaces/{namespace}/configmaps"),
            ObjectKind::BenchObject => {
                format!("/apis/bench.capstan.io/v1/namespaces/{namespace}/benchobjects")
            }
        }
    }

    /// A whole object named `name` with `labels` and `value` as payload.
    fn object(self, name: &str, labels: Value, value: &str) -> Value {
        match self {
            ObjectKind::ConfigMap => json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "labels": labels},
                "data": {"value": value},
            }),
            ObjectKind::BenchObject => json!({
                "apiVersion": "bench.capstan.io/v1", "kind": "BenchObject",
                "metadata": {"name": name, "labels": labels},
                "spec": {"value": value},
            }),
        }
    }

    /// Replaces the payload of `object` with `value`.
    fn set_value(self, object: &mut Value, value: &str) {
        match self {
            ObjectKind::ConfigMap => object["data"]["value"] = json!(value),
            ObjectKind::BenchObject => object["spec"]["value"] = json!(value),
        }
    }
}

/// One HTTP/2 connection to one server.
#[derive(Clone)]
struct Conn {
    target: Arc<Target>,
    sender: Sender,
    /// Which `--server` it goes to (0 with a kubeconfig's own server).
    server: usize,
}

impl Conn {
    async fn open(target: Arc<Target>, server: usize) -> anyhow::Result<Conn> {
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, connect(&target))
            .await
            .with_context(|| {
                format!(
                    "cannot connect to {} within {CONNECT_TIMEOUT:?}",
                    target.uri
                )
            })??;
        Ok(Conn {
            target,
            sender,
            server,
        })
    }

    /// One request, its status and whole body; a timeout is an error.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let body = body.map(Value::to_string);
        let content_type = body.as_ref().map(|_| content_type);
        let request = request(&self.target, method.clone(), path, content_type, body)?;
        tokio::time::timeout(REQUEST_TIMEOUT, send(&self.sender, request))
            .await
            .with_context(|| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
            .with_context(|| format!("{method} {path}"))
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        self.call(method, path, body, "application/json").await
    }
}

/// The numeric resourceVersion of an object (or a list's metadata) in a JSON body.
fn resource_version(value: &Value) -> Option<u64> {
    meta(value).resource_version()?.parse().ok()
}

/// The body of an answer, parsed, or an error that quotes it.
fn parse_body(status: StatusCode, body: &[u8], what: &str) -> anyhow::Result<Value> {
    serde_json::from_slice(body).with_context(|| {
        format!(
            "{what}: HTTP {status}: answer is not JSON: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )
    })
}

/// An error for an unexpected status, with the start of the answer.
fn unexpected(what: &str, status: StatusCode, body: &[u8]) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: HTTP {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    )
}

/// Runs the benchmark and prints its report (text, or JSON with `--json`) on stdout.
pub async fn run(args: ApiBenchArgs) -> anyhow::Result<ApiBenchReport> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(report)
}

/// What a run shares between its clients, watchers and the progress line.
struct Shared {
    args: ApiBenchArgs,
    run_id: String,
    /// Requests done, for the progress line.
    ops: AtomicU64,
    /// Requests failed, for the progress line and to cap the messages printed.
    errors: AtomicU64,
}

impl Shared {
    /// The label selector of this run's objects (URL-encoded).
    fn run_selector(&self) -> String {
        format!("capstan-bench%2Frun%3D{}", self.run_id)
    }

    /// Counts a failed request and prints the first few.
    fn error(&self, message: impl std::fmt::Display) {
        let before = self.errors.fetch_add(1, Ordering::Relaxed);
        if before < 5 {
            eprintln!("bench: error: {message}");
        } else if before == 5 {
            eprintln!("bench: more errors; counting them without printing");
        }
    }
}

/// Runs the benchmark and returns its report without printing it.
pub async fn measure(args: &ApiBenchArgs) -> anyhow::Result<ApiBenchReport> {
    check(args)?;
    let targets: Vec<Arc<Target>> = args.cluster.targets()?.into_iter().map(Arc::new).collect();
    let mut setup_conns = Vec::with_capacity(targets.len());
    for (index, target) in targets.iter().enumerate() {
        setup_conns.push(Conn::open(target.clone(), index).await?);
    }
    let admin = setup_conns[0].clone();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let shared = Arc::new(Shared {
        args: args.clone(),
        run_id,
        ops: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let kinds: Vec<ObjectKind> = match args.workload {
        Workload::Mixed => vec![ObjectKind::ConfigMap, ObjectKind::BenchObject],
        Workload::Create => vec![ObjectKind::ConfigMap],
        Workload::NodesOnly => Vec::new(),
    };

    ensure_namespace(&admin, &args.namespace).await?;
    if kinds.contains(&ObjectKind::BenchObject) {
        ensure_crd(&admin, &setup_conns, &args.namespace).await?;
    }
    let hot = load::create_hot_objects(&shared, &admin, &kinds).await?;
    let nodes = nodes::create_nodes(&shared, &setup_conns).await?;
    let start_version = current_version(&admin, &args.namespace).await?;

    // Watchers first, from the run's starting version: every write after it is expected.
    let stop_watching = CancellationToken::new();
    let mut watchers = Vec::new();
    let mut watcher_tasks = JoinSet::new();
    for kind in &kinds {
        for index in 0..args.watchers {
            let server = index % targets.len();
            let conn = Conn::open(targets[server].clone(), server).await?;
            let watcher = Arc::new(watch::Watcher::new(*kind, server));
            watchers.push(watcher.clone());
            watcher_tasks.spawn(watch::run(
                shared.clone(),
                watcher,
                conn,
                start_version,
                stop_watching.clone(),
            ));
        }
    }
    watch::wait_established(&watchers, Duration::from_secs(30)).await?;

    let mut clients = Vec::with_capacity(args.clients);
    if args.workload != Workload::NodesOnly {
        for index in 0..args.clients {
            let server = index % targets.len();
            clients.push(Conn::open(targets[server].clone(), server).await?);
        }
    }
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let (progress, progress_task) = progress(shared.clone(), started, args.duration);
    let mut client_tasks = JoinSet::new();
    for (index, conn) in clients.into_iter().enumerate() {
        client_tasks.spawn(load::client(
            shared.clone(),
            index,
            conn,
            kinds.clone(),
            hot.clone(),
            started,
            end,
        ));
    }
    let heartbeats = tokio::spawn(nodes::heartbeats(
        shared.clone(),
        setup_conns.clone(),
        nodes.clone(),
        started,
        end,
    ));
    let mut logs = Vec::with_capacity(args.clients);
    while let Some(finished) = client_tasks.join_next().await {
        logs.push(finished.context("a bench client panicked")?);
    }
    let heartbeat_log = heartbeats.await.context("the heartbeat task panicked")?;
    let load_seconds = started.elapsed().as_secs_f64();
    progress.cancel();
    if let Some(task) = progress_task {
        let _ = task.await;
    }

    // Fence: one more write per kind; once every watcher has it, it has everything before.
    let deadline = Instant::now() + Duration::from_secs_f64(args.deadline);
    for kind in &kinds {
        match load::fence(&shared, &admin, *kind).await {
            Ok(version) => watch::wait_for(&watchers, *kind, version, deadline).await,
            Err(error) => shared.error(format!("fence write: {error:#}")),
        }
    }
    stop_watching.cancel();
    while let Some(finished) = watcher_tasks.join_next().await {
        finished.context("a watcher panicked")?;
    }

    let report = report::build(
        &shared,
        targets.len(),
        load_seconds,
        &logs,
        &heartbeat_log,
        &watchers,
    );
    if args.cleanup {
        cleanup(&shared, &admin, &kinds, &nodes).await;
    }
    Ok(report)
}

fn check(args: &ApiBenchArgs) -> anyhow::Result<()> {
    if !args.duration.is_finite() || args.duration <= 0.0 {
        bail!("--duration must be more than 0 seconds");
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!("--rate must be 0 (full speed) or more");
    }
    if !args.deadline.is_finite() || args.deadline < 0.0 {
        bail!("--deadline must be 0 or more seconds");
    }
    match args.workload {
        Workload::NodesOnly if args.nodes == 0 => {
            bail!("--workload nodes-only needs --nodes N (N > 0)")
        }
        Workload::NodesOnly => {}
        _ if args.clients == 0 => bail!("--clients must be at least 1"),
        _ if args.watchers == 0 => {
            bail!("--watchers must be at least 1 (the bench checks every write is seen)")
        }
        _ => {}
    }
    Ok(())
}

/// Creates the namespace unless it exists.
async fn ensure_namespace(conn: &Conn, namespace: &str) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    let (status, answer) = conn
        .json(Method::POST, "/api/v1/namespaces", Some(&body))
        .await?;
    match status {
        StatusCode::CREATED | StatusCode::OK | StatusCode::CONFLICT => Ok(()),
        other => Err(unexpected(
            &format!("creating namespace {namespace}"),
            other,
            &answer,
        )),
    }
}

/// Installs the bench CRD unless it exists, and waits until every server serves it.
async fn ensure_crd(admin: &Conn, servers: &[Conn], namespace: &str) -> anyhow::Result<()> {
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": "bench.capstan.io",
            "scope": "Namespaced",
            "names": {
                "plural": "benchobjects", "singular": "benchobject",
                "kind": "BenchObject", "listKind": "BenchObjectList",
            },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": true,
                    }},
                }},
            }],
        },
    });
    let (status, answer) = admin
        .json(
            Method::POST,
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            Some(&crd),
        )
        .await?;
    if !matches!(
        status,
        StatusCode::CREATED | StatusCode::OK | StatusCode::CONFLICT
    ) {
        return Err(unexpected(
            &format!("creating CRD {CRD_NAME}"),
            status,
            &answer,
        ));
    }
    let path = format!("{}?limit=1", ObjectKind::BenchObject.collection(namespace));
    let started = Instant::now();
    for conn in servers {
        loop {
            let (status, _) = conn.json(Method::GET, &path, None).await?;
            if status == StatusCode::OK {
                break;
            }
            if started.elapsed() > CRD_SERVED_WITHIN {
                bail!(
                    "{CRD_NAME} is not served by {} after {CRD_SERVED_WITHIN:?} (last answer HTTP {status})",
                    conn.target.uri
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The datastore's current revision, from a one-item list's metadata.
async fn current_version(conn: &Conn, namespace: &str) -> anyhow::Result<u64> {
    let path = format!("{}?limit=1", ObjectKind::ConfigMap.collection(namespace));
    let (status, body) = conn.json(Method::GET, &path, None).await?;
    if status != StatusCode::OK {
        return Err(unexpected("listing ConfigMaps", status, &body));
    }
    resource_version(&parse_body(status, &body, "listing ConfigMaps")?)
        .context("the ConfigMap list has no numeric resourceVersion")
}

/// Deletes every object labelled with the run (listed a page at a time, deleted a few at
/// once, so no single request has to delete thousands), then the simulated nodes and their
/// Leases. Failures are printed, not fatal: the report is already made.
async fn cleanup(shared: &Shared, conn: &Conn, kinds: &[ObjectKind], nodes: &[String]) {
    let selector = shared.run_selector();
    for kind in kinds {
        let collection = kind.collection(&shared.args.namespace);
        let list = format!("{collection}?labelSelector={selector}&limit=500");
        loop {
            let names: Vec<String> = match conn.json(Method::GET, &list, None).await {
                Ok((StatusCode::OK, body)) => serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|list| {
                        list["items"].as_array().map(|items| {
                            items
                                .iter()
                                .filter_map(|item| meta(item).name())
                                .map(str::to_string)
                                .collect()
                        })
                    })
                    .unwrap_or_default(),
                Ok((status, body)) => {
                    eprintln!(
                        "bench: cleanup: {}",
                        unexpected("listing the run's objects", status, &body)
                    );
                    break;
                }
                Err(error) => {
                    eprintln!("bench: cleanup: {error:#}");
                    break;
                }
            };
            if names.is_empty() {
                break;
            }
            let failures: Vec<anyhow::Error> = futures::stream::iter(names)
                .map(|name| {
                    let path = format!("{collection}/{name}");
                    async move {
                        match conn.json(Method::DELETE, &path, None).await {
                            Ok((
                                StatusCode::OK | StatusCode::ACCEPTED | StatusCode::NOT_FOUND,
                                _,
                            )) => None,
                            Ok((status, body)) => {
                                Some(unexpected(&format!("DELETE {path}"), status, &body))
                            }
                            Err(error) => Some(error),
                        }
                    }
                })
                .buffer_unordered(16)
                .filter_map(|failure| async move { failure })
                .collect()
                .await;
            if !failures.is_empty() {
                for failure in failures.iter().take(3) {
                    eprintln!("bench: cleanup: {failure:#}");
                }
                break;
            }
        }
    }
    nodes::delete_nodes(conn, nodes).await;
}

/// A progress line on stderr while the load runs, only when stderr is a terminal.
fn progress(
    shared: Arc<Shared>,
    started: Instant,
    duration: f64,
) -> (CancellationToken, Option<tokio::task::JoinHandle<()>>) {
    let stop = CancellationToken::new();
    if !std::io::stderr().is_terminal() {
        return (stop, None);
    }
    let token = stop.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            let elapsed = started.elapsed().as_secs_f64().min(duration);
            let filled = ((elapsed / duration) * 30.0) as usize;
            let ops = shared.ops.load(Ordering::Relaxed);
            eprint!(
                "\r[{}{}] {elapsed:5.1}/{duration:.0} s  {ops} requests  {:.0}/s  {} errors ",
                "#".repeat(filled.min(30)),
                " ".repeat(30 - filled.min(30)),
                ops as f64 / elapsed.max(0.001),
                shared.errors.load(Ordering::Relaxed),
            );
            let _ = std::io::stderr().flush();
        }
        eprint!("\r\x1b[K");
        let _ = std::io::stderr().flush();
    });
    (stop, Some(task))
}
