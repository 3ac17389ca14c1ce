//! The load of a chaos run: clients doing compare-and-swap increments, creates and
//! deletes of ConfigMaps through every server in turn, and watchers following the
//! namespace across server deaths. Everything they see is recorded for the checker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use super::causes::{Cause, CauseCounts};
use super::history::{Event, Op, Outcome, Read, WatchEntry, WatcherLog, Write};
use crate::bench::client::{Sender, Target, connect, request, send};
use capstan_machinery::meta;

/// Prefix of the ConfigMaps clients create and delete.
pub const CREATED_PREFIX: &str = "obj-";

/// What clients and watchers share.
pub struct Shared {
    /// One target per server.
    pub targets: Vec<Arc<Target>>,
    /// The namespace everything happens in.
    pub namespace: String,
    /// Names of the counter ConfigMaps.
    pub counters: Vec<String>,
    /// When the run started.
    pub started: Instant,
    /// How long one request may take before it counts as unanswered.
    pub request_timeout: Duration,
    /// Set when clients must stop.
    pub stop_clients: AtomicBool,
    /// The fence's resourceVersion once written (0 before): watchers stop after it.
    pub fence: AtomicU64,
    /// Set when watchers must stop whatever they have seen.
    pub stop_watchers: AtomicBool,
    /// Write attempts so far, by outcome.
    pub ok: AtomicU64,
    /// See `ok`.
    pub failed: AtomicU64,
    /// See `ok`.
    pub indeterminate: AtomicU64,
    /// Write attempts not acknowledged so far, by cause (in [`Cause::ALL`] order).
    pub causes: [AtomicU64; 4],
    /// Watch events received so far.
    pub events: AtomicU64,
}

impl Shared {
    /// Write attempts so far.
    pub fn operations(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.indeterminate.load(Ordering::Relaxed)
    }

    /// Write attempts not acknowledged so far, by cause.
    pub fn causes(&self) -> CauseCounts {
        CauseCounts::from_fn(|cause| self.causes[cause.index()].load(Ordering::Relaxed))
    }

    fn base(&self) -> String {
        format!("/api/v1/namespaces/{}/configmaps", self.namespace)
    }

    fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// Per-server connections of one client or watcher, re-made after a failure.
struct Connections {
    shared: Arc<Shared>,
    senders: Vec<Option<Sender>>,
    /// Servers that did not answer lately are left alone until then.
    avoid_until: Vec<Option<Instant>>,
}

/// How long a client leaves a server alone after it did not answer.
const AVOID: Duration = Duration::from_secs(10);

/// A request that got no answer (connection refused or cut, or a timeout), and why.
struct NoAnswer(Cause);

impl Connections {
    fn new(shared: Arc<Shared>) -> Connections {
        let senders = vec![None; shared.targets.len()];
        let avoid_until = vec![None; shared.targets.len()];
        Connections {
            shared,
            senders,
            avoid_until,
        }
    }

    /// The next server after `server` in turn that answered lately (any, if none did).
    fn next(&self, server: usize) -> usize {
        let servers = self.senders.len();
        let now = Instant::now();
        (1..=servers)
            .map(|step| (server + step) % servers)
            .find(|candidate| self.avoid_until[*candidate].is_none_or(|until| until <= now))
            .unwrap_or((server + 1) % servers)
    }

    async fn sender(&mut self, server: usize) -> Result<Sender, NoAnswer> {
        if let Some(sender) = &self.senders[server]
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let target = &self.shared.targets[server];
        let cause = match tokio::time::timeout(Duration::from_secs(3), connect(target)).await {
            Ok(Ok(sender)) => {
                self.senders[server] = Some(sender.clone());
                return Ok(sender);
            }
            Ok(Err(error)) => Cause::of_error(&error),
            Err(_) => Cause::Timeout,
        };
        self.senders[server] = None;
        self.avoid_until[server] = Some(Instant::now() + AVOID);
        Err(NoAnswer(cause))
    }

    async fn call(
        &mut self,
        server: usize,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Bytes), NoAnswer> {
        let sender = self.sender(server).await?;
        let content_type = body.as_ref().map(|_| "application/json");
        let Ok(request) = request(
            &self.shared.targets[server],
            method,
            path,
            content_type,
            body,
        ) else {
            return Err(NoAnswer(Cause::Other));
        };
        let cause =
            match tokio::time::timeout(self.shared.request_timeout, send(&sender, request)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(error)) => Cause::of_error(&error),
                Err(_) => Cause::Timeout,
            };
        // The connection may hang on a paused server: start afresh next time.
        self.senders[server] = None;
        self.avoid_until[server] = Some(Instant::now() + AVOID);
        Err(NoAnswer(cause))
    }
}

/// What one client did.
#[derive(Default)]
pub struct ClientLog {
    /// Its write attempts.
    pub ops: Vec<Op>,
    /// Its counter reads.
    pub reads: Vec<Read>,
}

fn resource_version(object: &Value) -> Option<u64> {
    meta(object).resource_version()?.parse().ok()
}

fn counter_value(object: &Value) -> Option<u64> {
    object["data"]["value"].as_str()?.parse().ok()
}

/// One client: increments, creates and deletes until told to stop.
pub async fn client(id: usize, shared: Arc<Shared>, seed: u64) -> ClientLog {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut connections = Connections::new(shared.clone());
    let mut log = ClientLog::default();
    let servers = shared.targets.len();
    let mut server = id % servers;
    let mut created: Vec<String> = Vec::new();
    let mut sequence = 0u64;
    let base = shared.base();
    while !shared.stop_clients.load(Ordering::Relaxed) {
        server = connections.next(server);
        let roll: f64 = rng.random();
        if roll < 0.5 && !shared.counters.is_empty() {
            let counter = rng.random_range(0..shared.counters.len());
            increment(
                id,
                counter,
                &mut server,
                &mut connections,
                &mut log,
                &shared,
            )
            .await;
        } else if roll < 0.8 || created.is_empty() {
            sequence += 1;
            let name = format!("{CREATED_PREFIX}{id}-{sequence}");
            let body = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name}, "data": {"client": id.to_string()},
            })
            .to_string();
            let start = shared.seconds();
            let answer = connections
                .call(server, Method::POST, &base, Some(body))
                .await;
            let op = record(&shared, id, server, Write::Create { name }, start, answer);
            if op.outcome == Outcome::Ok
                && let Write::Create { name } = &op.write
            {
                created.push(name.clone());
            }
            log.ops.push(op);
        } else {
            let name = created.swap_remove(rng.random_range(0..created.len()));
            let start = shared.seconds();
            let answer = connections
                .call(server, Method::DELETE, &format!("{base}/{name}"), None)
                .await;
            let op = record(&shared, id, server, Write::Delete { name }, start, answer);
            log.ops.push(op);
        }
    }
    log
}

/// Turns an answer into a recorded write attempt and counts it.
fn record(
    shared: &Shared,
    client: usize,
    server: usize,
    write: Write,
    start: f64,
    answer: Result<(StatusCode, Bytes), NoAnswer>,
) -> Op {
    let end = shared.seconds();
    let (outcome, status, cause, rv) = match answer {
        Err(NoAnswer(cause)) => (Outcome::Indeterminate, 0, Some(cause), None),
        Ok((status, body)) if status.is_success() => {
            let rv = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|object| resource_version(&object));
            (Outcome::Ok, status.as_u16(), None, rv)
        }
        Ok((status, body)) => {
            // A 4xx, 429 (too many requests) too, is refused before anything is done.
            let outcome = if status.is_client_error() {
                Outcome::Failed
            } else {
                Outcome::Indeterminate
            };
            let cause = Cause::of_answer(status.as_u16(), &body);
            (outcome, status.as_u16(), Some(cause), None)
        }
    };
    match outcome {
        Outcome::Ok => &shared.ok,
        Outcome::Failed => &shared.failed,
        Outcome::Indeterminate => &shared.indeterminate,
    }
    .fetch_add(1, Ordering::Relaxed);
    if let Some(cause) = cause {
        shared.causes[cause.index()].fetch_add(1, Ordering::Relaxed);
    }
    Op {
        client,
        server,
        write,
        outcome,
        status,
        cause,
        rv,
        start,
        end,
    }
}

/// Read the counter, write it plus one conditional on the version read; on 409 read again
/// and retry (a few times), until acknowledged or unanswered.
async fn increment(
    id: usize,
    counter: usize,
    server: &mut usize,
    connections: &mut Connections,
    log: &mut ClientLog,
    shared: &Shared,
) {
    let path = format!("{}/{}", shared.base(), shared.counters[counter]);
    for _ in 0..10 {
        if shared.stop_clients.load(Ordering::Relaxed) {
            return;
        }
        let read = match connections.call(*server, Method::GET, &path, None).await {
            Ok((StatusCode::OK, body)) => serde_json::from_slice::<Value>(&body).ok(),
            Ok(_) | Err(NoAnswer(_)) => None,
        };
        let Some((rv, value)) = read
            .as_ref()
            .and_then(|object| Some((resource_version(object)?, counter_value(object)?)))
        else {
            *server = connections.next(*server);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        log.reads.push(Read {
            client: id,
            counter,
            rv,
            value,
        });
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": shared.counters[counter],
                "namespace": shared.namespace,
                "resourceVersion": rv.to_string(),
            },
            "data": {"value": (value + 1).to_string()},
        })
        .to_string();
        let start = shared.seconds();
        let answer = connections
            .call(*server, Method::PUT, &path, Some(body))
            .await;
        let op = record(
            shared,
            id,
            *server,
            Write::Increment {
                counter,
                read_value: value,
                read_rv: rv,
            },
            start,
            answer,
        );
        let (outcome, status, written) = (op.outcome, op.status, op.rv);
        log.ops.push(op);
        match outcome {
            Outcome::Ok => {
                if let Some(written) = written {
                    log.reads.push(Read {
                        client: id,
                        counter,
                        rv: written,
                        value: value + 1,
                    });
                }
                return;
            }
            Outcome::Failed if status == 409 => continue,
            Outcome::Failed => return,
            Outcome::Indeterminate => {
                *server = connections.next(*server);
                return;
            }
        }
    }
}

/// One watcher: follows the namespace from `start_rv`, resuming on any server after a lost
/// stream and re-listing after 410, until the fence arrives or it is told to stop.
pub async fn watcher(index: usize, shared: Arc<Shared>, start_rv: u64) -> WatcherLog {
    let mut log = WatcherLog {
        start_rv,
        entries: Vec::new(),
    };
    let servers = shared.targets.len();
    let mut server = index % servers;
    let mut last = start_rv;
    let mut connections = Connections::new(shared.clone());
    let base = shared.base();
    let done = |last: u64| {
        let fence = shared.fence.load(Ordering::Relaxed);
        (fence != 0 && last >= fence) || shared.stop_watchers.load(Ordering::Relaxed)
    };
    let mut first = true;
    while !done(last) {
        if !first {
            server = connections.next(server);
            log.entries.push(WatchEntry::Resume { server });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first = false;
        let Ok(mut sender) = connections.sender(server).await else {
            continue;
        };
        let path = format!("{base}?watch=true&resourceVersion={last}");
        let Ok(request) = request(&shared.targets[server], Method::GET, &path, None, None) else {
            continue;
        };
        let response = tokio::time::timeout(shared.request_timeout, async {
            sender.ready().await?;
            sender.send_request(request).await
        })
        .await;
        let response = match response {
            Ok(Ok(response)) => response,
            _ => {
                connections.senders[server] = None;
                connections.avoid_until[server] = Some(Instant::now() + AVOID);
                continue;
            }
        };
        if response.status() == StatusCode::GONE {
            if let Some(rv) = relist(&mut connections, server, &base).await {
                log.entries.push(WatchEntry::Relist { rv });
                last = rv;
            }
            continue;
        }
        if response.status() != StatusCode::OK {
            continue;
        }
        let mut body = response.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        'stream: loop {
            if done(last) {
                break;
            }
            // Writes never pause for long during a run: a silent stream is a stopped server.
            let frame = match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(_) => break,
                Err(_) => {
                    connections.senders[server] = None;
                    connections.avoid_until[server] = Some(Instant::now() + AVOID);
                    break;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let kind = event["type"].as_str().unwrap_or_default().to_string();
                let object = &event["object"];
                match kind.as_str() {
                    "ERROR" => {
                        if object["code"].as_u64() == Some(410)
                            && let Some(rv) = relist(&mut connections, server, &base).await
                        {
                            log.entries.push(WatchEntry::Relist { rv });
                            last = rv;
                        }
                        break 'stream;
                    }
                    "BOOKMARK" => {}
                    _ => {
                        let Some(rv) = resource_version(object) else {
                            continue;
                        };
                        shared.events.fetch_add(1, Ordering::Relaxed);
                        log.entries.push(WatchEntry::Event(Event {
                            kind,
                            name: meta(object).name().unwrap_or_default().to_string(),
                            rv,
                            value: counter_value(object),
                        }));
                        last = last.max(rv);
                    }
                }
            }
        }
    }
    log
}

/// Lists the namespace after a 410; the list's resourceVersion.
async fn relist(connections: &mut Connections, server: usize, base: &str) -> Option<u64> {
    match connections.call(server, Method::GET, base, None).await {
        Ok((StatusCode::OK, body)) => {
            let list: Value = serde_json::from_slice(&body).ok()?;
            resource_version(&list)
        }
        _ => None,
    }
}

/// Sends one request to each server in turn until one answers with a status in `accept`.
pub async fn any_server(
    shared: &Arc<Shared>,
    method: Method,
    path: &str,
    body: Option<String>,
    accept: &[StatusCode],
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut connections = Connections::new(shared.clone());
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no server answered");
    let mut server = 0;
    while Instant::now() < deadline {
        match connections
            .call(server, method.clone(), path, body.clone())
            .await
        {
            Ok((status, answer)) if accept.contains(&status) => {
                let value = serde_json::from_slice(&answer)
                    .with_context(|| format!("{method} {path}: the answer is not JSON"))?;
                return Ok((status, value));
            }
            Ok((status, answer)) => {
                last = format!("HTTP {status}: {}", String::from_utf8_lossy(&answer));
            }
            Err(NoAnswer(cause)) => {
                last = format!("server {server} did not answer ({})", cause.name());
            }
        }
        server = connections.next(server);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("{method} {path}: {last}")
}

/// Creates the namespace and the counters (value 0); returns the resourceVersion to
/// watch from.
pub async fn setup(shared: &Arc<Shared>) -> anyhow::Result<u64> {
    let timeout = Duration::from_secs(60);
    let namespace = json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": shared.namespace},
    });
    any_server(
        shared,
        Method::POST,
        "/api/v1/namespaces",
        Some(namespace.to_string()),
        &[StatusCode::CREATED, StatusCode::OK, StatusCode::CONFLICT],
        timeout,
    )
    .await?;
    for name in &shared.counters {
        let counter = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"value": "0"},
        });
        any_server(
            shared,
            Method::POST,
            &shared.base(),
            Some(counter.to_string()),
            &[StatusCode::CREATED, StatusCode::OK],
            timeout,
        )
        .await?;
    }
    let (_, list) = any_server(
        shared,
        Method::GET,
        &shared.base(),
        None,
        &[StatusCode::OK],
        timeout,
    )
    .await?;
    resource_version(&list).context("the list has no resourceVersion")
}

/// Writes the fence ConfigMap; its resourceVersion, after every client's write.
pub async fn fence(shared: &Arc<Shared>) -> anyhow::Result<u64> {
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "fence"}, "data": {"end": "true"},
    });
    let (_, object) = any_server(
        shared,
        Method::POST,
        &shared.base(),
        Some(body.to_string()),
        &[StatusCode::CREATED, StatusCode::OK],
        Duration::from_secs(60),
    )
    .await?;
    resource_version(&object).context("the fence has no resourceVersion")
}

/// The namespace's ConfigMaps now: name -> `data.value` if a number.
pub async fn final_state(shared: &Arc<Shared>) -> anyhow::Result<HashMap<String, Option<u64>>> {
    let (_, list) = any_server(
        shared,
        Method::GET,
        &shared.base(),
        None,
        &[StatusCode::OK],
        Duration::from_secs(60),
    )
    .await?;
    let items = list["items"].as_array().context("the list has no items")?;
    Ok(items
        .iter()
        .filter_map(|item| {
            let name = meta(item).name()?.to_string();
            Some((name, counter_value(item)))
        })
        .collect())
}
