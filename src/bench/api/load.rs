//! The clients of `capstan bench api`.
//!
//! Paced runs follow one global schedule: write k is due at `start + k / rate`, and client
//! i takes the writes k ≡ i (mod clients). A write's latency is measured from when it was
//! due, not from when it was sent, so a server that stalls is charged for the writes it
//! delayed (no coordinated omission); `sent` is kept too, for the watch latency's upper
//! bound. Full-speed runs are a closed loop: each client sends its next request as soon as
//! the previous one is answered.
//!
//! In the mixed workload each slot is one write (create 40%, update of an own object 25%,
//! read-modify-write of a shared hot object 15%, delete of an own object 20%) on a
//! ConfigMap or a bench object, followed half the time by a GET and one time in ten by a
//! paged, label-selected LIST of the client's own objects.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use super::{
    CLIENTS_PER_HOT_OBJECT, Conn, ObjectKind, RUN_LABEL, Shared, Workload, parse_body,
    resource_version, unexpected,
};

/// Attempts of a read-modify-write before it counts as an error.
const UPDATE_ATTEMPTS: usize = 20;

/// The verbs the report has a row for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Verb {
    Create,
    Get,
    Update,
    List,
    Delete,
    Heartbeat,
}

impl Verb {
    pub(super) const ALL: [Verb; 6] = [
        Verb::Create,
        Verb::Get,
        Verb::Update,
        Verb::List,
        Verb::Delete,
        Verb::Heartbeat,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Get => "get",
            Verb::Update => "update",
            Verb::List => "list",
            Verb::Delete => "delete",
            Verb::Heartbeat => "heartbeat",
        }
    }
}

/// How a watcher recognises an acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum WriteKey {
    /// A create or update: the resourceVersion the server answered with.
    Version(u64),
    /// A delete, by the object's name (a run never re-creates a name): capstan answers a
    /// delete with a Status that carries no resourceVersion.
    Deleted(String),
}

/// One acknowledged write.
#[derive(Debug, Clone)]
pub(super) struct Write {
    pub kind: ObjectKind,
    pub key: WriteKey,
    /// When the (last, successful) request was sent.
    pub sent: Instant,
    /// When its answer arrived.
    pub acked: Instant,
    /// The server that took it.
    pub server: usize,
}

/// What one client (or the heartbeat loop) recorded.
#[derive(Debug, Default)]
pub(super) struct Log {
    /// Latencies in milliseconds of successful requests, by verb.
    pub samples: BTreeMap<Verb, Vec<f64>>,
    /// Failed requests by verb.
    pub errors: BTreeMap<Verb, u64>,
    /// Updates answered 409 Conflict (retried after a fresh GET).
    pub conflicts: u64,
    /// Acknowledged writes, for the watch checks.
    pub writes: Vec<Write>,
}

impl Log {
    pub(super) fn sample(&mut self, shared: &Shared, verb: Verb, from: Instant) {
        shared.ops.fetch_add(1, Ordering::Relaxed);
        self.samples
            .entry(verb)
            .or_default()
            .push(from.elapsed().as_secs_f64() * 1000.0);
    }

    pub(super) fn error(&mut self, shared: &Shared, verb: Verb, message: impl std::fmt::Display) {
        shared.ops.fetch_add(1, Ordering::Relaxed);
        *self.errors.entry(verb).or_default() += 1;
        shared.error(format!("{}: {message}", verb.name()));
    }
}

/// An object the client made and may update, read or delete.
struct Owned {
    kind: ObjectKind,
    name: String,
    object: Value,
}

/// The hot objects: per kind, their names.
pub(super) type Hot = Arc<HashMap<ObjectKind, Vec<String>>>;

struct Client {
    shared: Arc<Shared>,
    index: usize,
    conn: Conn,
    kinds: Vec<ObjectKind>,
    hot: Hot,
    /// The last version of each hot object this client saw (often stale: that is the point).
    hot_objects: HashMap<(ObjectKind, usize), Value>,
    owned: VecDeque<Owned>,
    created: u64,
    rng: StdRng,
    payload: String,
    log: Log,
}

/// One client's run: its slots until `end`, paced or closed-loop.
pub(super) async fn client(
    shared: Arc<Shared>,
    index: usize,
    conn: Conn,
    kinds: Vec<ObjectKind>,
    hot: Hot,
    started: Instant,
    end: Instant,
) -> Log {
    let clients = shared.args.clients.max(1) as u64;
    let rate = shared.args.rate;
    let payload = "x".repeat(shared.args.value_bytes);
    let mut client = Client {
        rng: StdRng::seed_from_u64(rand::random::<u64>() ^ index as u64),
        shared,
        index,
        conn,
        kinds,
        hot,
        hot_objects: HashMap::new(),
        owned: VecDeque::new(),
        created: 0,
        payload,
        log: Log::default(),
    };
    let mut slot = index as u64;
    loop {
        let due = if rate > 0.0 {
            let due = started + Duration::from_secs_f64(slot as f64 / rate);
            // A client that fell behind does not run on past the end: the writes it could
            // not send show as a lower writes_per_sec than offered.
            if due >= end || Instant::now() >= end {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            slot += clients;
            due
        } else {
            let now = Instant::now();
            if now >= end {
                break;
            }
            now
        };
        client.slot(due).await;
    }
    client.log
}

impl Client {
    async fn slot(&mut self, due: Instant) {
        if self.shared.args.workload == Workload::Create {
            self.create(ObjectKind::ConfigMap, due).await;
            return;
        }
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        let roll: f64 = self.rng.random();
        let own = self.owned.iter().filter(|o| o.kind == kind).count();
        if (0.40..0.65).contains(&roll) && own > 0 {
            self.update_own(kind, due).await;
        } else if (0.65..0.80).contains(&roll) {
            self.update_hot(kind, due).await;
        } else if roll >= 0.80 && own >= 3 {
            self.delete_own(kind, due).await;
        } else {
            // Creates: 40%, and the updates and deletes a client has no object for yet.
            self.create(kind, due).await;
        }
        if self.rng.random_bool(0.5) {
            self.get(kind).await;
        }
        if self.rng.random_bool(0.1) {
            self.list(kind).await;
        }
    }

    fn labels(&self) -> Value {
        json!({RUN_LABEL: self.shared.run_id, "capstan-bench/client": self.index.to_string()})
    }

    fn acknowledged(&mut self, kind: ObjectKind, key: WriteKey, sent: Instant) {
        self.log.writes.push(Write {
            kind,
            key,
            sent,
            acked: Instant::now(),
            server: self.conn.server,
        });
    }

    async fn create(&mut self, kind: ObjectKind, due: Instant) {
        self.created += 1;
        let name = format!(
            "cb-{}-{}-{}-{}",
            self.shared.run_id,
            kind.short(),
            self.index,
            self.created
        );
        let object = kind.object(&name, self.labels(), &self.payload);
        let path = kind.collection(&self.shared.args.namespace);
        let sent = Instant::now();
        match self.conn.json(Method::POST, &path, Some(&object)).await {
            Ok((StatusCode::CREATED, body)) => {
                match parse_body(StatusCode::CREATED, &body, "create") {
                    Ok(object) => match resource_version(&object) {
                        Some(version) => {
                            self.acknowledged(kind, WriteKey::Version(version), sent);
                            self.log.sample(&self.shared, Verb::Create, due);
                            if self.shared.args.workload == Workload::Mixed {
                                self.owned.push_back(Owned { kind, name, object });
                            }
                        }
                        None => self.log.error(
                            &self.shared,
                            Verb::Create,
                            "answer without resourceVersion",
                        ),
                    },
                    Err(error) => self.log.error(&self.shared, Verb::Create, error),
                }
            }
            Ok((status, body)) => {
                let error = unexpected(&format!("POST {path}"), status, &body);
                self.log.error(&self.shared, Verb::Create, error);
            }
            Err(error) => self
                .log
                .error(&self.shared, Verb::Create, format!("{error:#}")),
        }
    }

    /// A PUT of one of the client's own objects with its resourceVersion (no one else
    /// writes it, so it cannot conflict).
    async fn update_own(&mut self, kind: ObjectKind, due: Instant) {
        let candidates: Vec<usize> = (0..self.owned.len())
            .filter(|i| self.owned[*i].kind == kind)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let at = candidates[self.rng.random_range(0..candidates.len())];
        let value = format!("{}-{}", self.payload, self.rng.random::<u32>());
        let owned = &mut self.owned[at];
        kind.set_value(&mut owned.object, &value);
        let path = format!(
            "{}/{}",
            kind.collection(&self.shared.args.namespace),
            owned.name
        );
        let sent = Instant::now();
        let answer = self
            .conn
            .json(Method::PUT, &path, Some(&owned.object))
            .await;
        match answer.and_then(|(status, body)| match status {
            StatusCode::OK => parse_body(status, &body, "update"),
            other => Err(unexpected(&format!("PUT {path}"), other, &body)),
        }) {
            Ok(object) => match resource_version(&object) {
                Some(version) => {
                    self.owned[at].object = object;
                    self.acknowledged(kind, WriteKey::Version(version), sent);
                    self.log.sample(&self.shared, Verb::Update, due);
                }
                None => {
                    self.log
                        .error(&self.shared, Verb::Update, "answer without resourceVersion")
                }
            },
            Err(error) => {
                // Forget it: its version is unknown now.
                self.owned.remove(at);
                self.log
                    .error(&self.shared, Verb::Update, format!("{error:#}"));
            }
        }
    }

    /// Read-modify-write of a shared object with the version this client last saw; a 409
    /// is a conflict (not an error): GET it again and retry.
    async fn update_hot(&mut self, kind: ObjectKind, due: Instant) {
        let Some(names) = self.hot.get(&kind).cloned() else {
            return;
        };
        let which = self.rng.random_range(0..names.len());
        let path = format!(
            "{}/{}",
            kind.collection(&self.shared.args.namespace),
            names[which]
        );
        let value = format!(
            "{}-{}-{}",
            self.payload,
            self.index,
            self.rng.random::<u32>()
        );
        for _ in 0..UPDATE_ATTEMPTS {
            let mut object = match self.hot_objects.get(&(kind, which)) {
                Some(object) => object.clone(),
                None => match self.fetch(&path).await {
                    Some(object) => object,
                    None => return,
                },
            };
            kind.set_value(&mut object, &value);
            let sent = Instant::now();
            match self.conn.json(Method::PUT, &path, Some(&object)).await {
                Ok((StatusCode::OK, body)) => {
                    let version = parse_body(StatusCode::OK, &body, "update")
                        .ok()
                        .and_then(|object| Some((resource_version(&object)?, object)));
                    match version {
                        Some((version, object)) => {
                            self.hot_objects.insert((kind, which), object);
                            self.acknowledged(kind, WriteKey::Version(version), sent);
                            self.log.sample(&self.shared, Verb::Update, due);
                        }
                        None => self.log.error(
                            &self.shared,
                            Verb::Update,
                            "answer without resourceVersion",
                        ),
                    }
                    return;
                }
                Ok((StatusCode::CONFLICT, _)) => {
                    self.log.conflicts += 1;
                    self.shared.ops.fetch_add(1, Ordering::Relaxed);
                    self.hot_objects.remove(&(kind, which));
                }
                Ok((status, body)) => {
                    let error = unexpected(&format!("PUT {path}"), status, &body);
                    self.log.error(&self.shared, Verb::Update, error);
                    return;
                }
                Err(error) => {
                    self.log
                        .error(&self.shared, Verb::Update, format!("{error:#}"));
                    return;
                }
            }
        }
        self.log.error(
            &self.shared,
            Verb::Update,
            format!("{path}: still conflicting after {UPDATE_ATTEMPTS} attempts"),
        );
    }

    /// A GET that counts as a get; None (and an error counted) when it fails.
    async fn fetch(&mut self, path: &str) -> Option<Value> {
        let sent = Instant::now();
        match self.conn.json(Method::GET, path, None).await {
            Ok((StatusCode::OK, body)) => match parse_body(StatusCode::OK, &body, "get") {
                Ok(object) => {
                    self.log.sample(&self.shared, Verb::Get, sent);
                    Some(object)
                }
                Err(error) => {
                    self.log
                        .error(&self.shared, Verb::Get, format!("{error:#}"));
                    None
                }
            },
            Ok((status, body)) => {
                let error = unexpected(&format!("GET {path}"), status, &body);
                self.log.error(&self.shared, Verb::Get, error);
                None
            }
            Err(error) => {
                self.log
                    .error(&self.shared, Verb::Get, format!("{error:#}"));
                None
            }
        }
    }

    async fn delete_own(&mut self, kind: ObjectKind, due: Instant) {
        let Some(at) = self.owned.iter().position(|o| o.kind == kind) else {
            return;
        };
        let Some(owned) = self.owned.remove(at) else {
            return;
        };
        let path = format!(
            "{}/{}",
            kind.collection(&self.shared.args.namespace),
            owned.name
        );
        let sent = Instant::now();
        match self.conn.json(Method::DELETE, &path, None).await {
            Ok((StatusCode::OK | StatusCode::ACCEPTED, _)) => {
                self.acknowledged(kind, WriteKey::Deleted(owned.name), sent);
                self.log.sample(&self.shared, Verb::Delete, due);
            }
            Ok((status, body)) => {
                let error = unexpected(&format!("DELETE {path}"), status, &body);
                self.log.error(&self.shared, Verb::Delete, error);
            }
            Err(error) => self
                .log
                .error(&self.shared, Verb::Delete, format!("{error:#}")),
        }
    }

    /// A GET of an own object, or of a hot one when the client has none of this kind.
    async fn get(&mut self, kind: ObjectKind) {
        let own: Vec<&Owned> = self.owned.iter().filter(|o| o.kind == kind).collect();
        let name = if own.is_empty() {
            match self.hot.get(&kind) {
                Some(names) if !names.is_empty() => {
                    names[self.rng.random_range(0..names.len())].clone()
                }
                _ => return,
            }
        } else {
            own[self.rng.random_range(0..own.len())].name.clone()
        };
        let path = format!("{}/{name}", kind.collection(&self.shared.args.namespace));
        self.fetch(&path).await;
    }

    /// A paged LIST of the client's own objects of `kind` (label selector, 50 per page);
    /// each page is one list request.
    async fn list(&mut self, kind: ObjectKind) {
        let base = format!(
            "{}?labelSelector={}%2Ccapstan-bench%2Fclient%3D{}&limit=50",
            kind.collection(&self.shared.args.namespace),
            self.shared.run_selector(),
            self.index
        );
        let mut token: Option<String> = None;
        for _ in 0..100 {
            let path = match &token {
                Some(token) => format!("{base}&continue={token}"),
                None => base.clone(),
            };
            let sent = Instant::now();
            let page = match self.conn.json(Method::GET, &path, None).await {
                Ok((StatusCode::OK, body)) => parse_body(StatusCode::OK, &body, "list"),
                Ok((status, body)) => Err(unexpected(&format!("GET {path}"), status, &body)),
                Err(error) => Err(error),
            };
            match page {
                Ok(page) => {
                    self.log.sample(&self.shared, Verb::List, sent);
                    match page["metadata"]["continue"].as_str() {
                        Some(next) if !next.is_empty() => token = Some(url_encode(next)),
                        _ => return,
                    }
                }
                Err(error) => {
                    self.log
                        .error(&self.shared, Verb::List, format!("{error:#}"));
                    return;
                }
            }
        }
    }
}

/// Percent-encodes a continue token for a query string.
pub(super) fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Creates the hot objects of each kind (before the run starts: not counted).
pub(super) async fn create_hot_objects(
    shared: &Shared,
    conn: &Conn,
    kinds: &[ObjectKind],
) -> anyhow::Result<Hot> {
    let mut hot = HashMap::new();
    if shared.args.workload != Workload::Mixed {
        return Ok(Arc::new(hot));
    }
    let labels = json!({RUN_LABEL: shared.run_id, "capstan-bench/client": "hot"});
    for kind in kinds {
        let mut names = Vec::new();
        for index in 0..(shared.args.clients / CLIENTS_PER_HOT_OBJECT).max(2) {
            let name = format!("cb-{}-{}-hot-{index}", shared.run_id, kind.short());
            let object = kind.object(&name, labels.clone(), "hot");
            let path = kind.collection(&shared.args.namespace);
            let (status, body) = conn.json(Method::POST, &path, Some(&object)).await?;
            if status != StatusCode::CREATED {
                return Err(unexpected(&format!("creating {name}"), status, &body));
            }
            names.push(name);
        }
        hot.insert(*kind, names);
    }
    Ok(Arc::new(hot))
}

/// One more write per kind after the load; returns its resourceVersion.
pub(super) async fn fence(shared: &Shared, conn: &Conn, kind: ObjectKind) -> anyhow::Result<u64> {
    let name = format!("cb-{}-{}-fence", shared.run_id, kind.short());
    let labels = json!({RUN_LABEL: shared.run_id, "capstan-bench/client": "fence"});
    let object = kind.object(&name, labels, "fence");
    let path = kind.collection(&shared.args.namespace);
    let (status, body) = conn.json(Method::POST, &path, Some(&object)).await?;
    if status != StatusCode::CREATED {
        return Err(unexpected(&format!("creating {name}"), status, &body));
    }
    resource_version(&parse_body(status, &body, "fence")?)
        .ok_or_else(|| anyhow::anyhow!("the fence write's answer has no resourceVersion"))
}
