//! The watchers of `capstan bench api`: each follows one kind's objects of the run (a label
//! selector) on one server, from the run's starting resourceVersion, with bookmarks, and
//! records every event with its arrival time. The checks (missed, duplicated, out of
//! order) are made afterwards by the report, against the writes the clients recorded.
//!
//! When a stream ends the watcher watches again from the last version it saw; an
//! `Expired` (410) answer means that version is compacted: the watcher lists the objects
//! again (a relist), records them as recovered, and goes on from the list's version.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{Method, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Conn, ObjectKind, REQUEST_TIMEOUT, Shared, parse_body, resource_version, unexpected};
use crate::bench::client::request;
use capstan_machinery::meta;

/// What a watch event said happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One event as a watcher received it.
#[derive(Debug, Clone)]
pub(super) struct Arrival {
    pub event: EventType,
    pub name: String,
    pub version: u64,
    pub at: Instant,
    /// Taken from a relist rather than a watch event (not a latency sample).
    pub relisted: bool,
}

/// One watcher's identity and what it saw so far.
pub(super) struct Watcher {
    pub kind: ObjectKind,
    /// The server it watches on.
    pub server: usize,
    /// The highest resourceVersion of an event (or bookmark, or relist) seen.
    pub highest: AtomicU64,
    /// Watch requests answered 200.
    pub established: AtomicU64,
    /// Relists after an `Expired` answer.
    pub relists: AtomicU64,
    /// Failed watch requests and broken streams.
    pub errors: AtomicU64,
    pub arrivals: Mutex<Vec<Arrival>>,
}

impl Watcher {
    pub(super) fn new(kind: ObjectKind, server: usize) -> Watcher {
        Watcher {
            kind,
            server,
            highest: AtomicU64::new(0),
            established: AtomicU64::new(0),
            relists: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
        }
    }

    fn record(&self, arrival: Arrival) {
        self.highest.fetch_max(arrival.version, Ordering::Relaxed);
        self.arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(arrival);
    }

    /// What it received, in order of arrival.
    pub(super) fn take_arrivals(&self) -> Vec<Arrival> {
        std::mem::take(
            &mut *self
                .arrivals
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// What to do after one line of a watch stream.
enum Next {
    Continue,
    Rewatch,
    Relist,
}

/// Follows the kind on `conn`'s server until `stop`.
pub(super) async fn run(
    shared: Arc<Shared>,
    watcher: Arc<Watcher>,
    mut conn: Conn,
    start: u64,
    stop: CancellationToken,
) {
    let collection = watcher.kind.collection(&shared.args.namespace);
    let selector = shared.run_selector();
    let mut version = start;
    while !stop.is_cancelled() {
        let path = format!(
            "{collection}?watch=true&allowWatchBookmarks=true&labelSelector={selector}&resourceVersion={version}"
        );
        let response = tokio::select! {
            _ = stop.cancelled() => return,
            response = open(&conn, &path) => response,
        };
        let mut body = match response {
            Ok(response) if response.status() == StatusCode::OK => response.into_body(),
            Ok(response) if response.status() == StatusCode::GONE => {
                relist(&shared, &watcher, &conn, &collection, &mut version).await;
                continue;
            }
            Ok(response) => {
                watcher.errors.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("watch {path}: HTTP {}", response.status()));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(error) => {
                watcher.errors.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("watch {path}: {error:#}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                if let Ok(fresh) = Conn::open(conn.target.clone(), conn.server).await {
                    conn = fresh;
                }
                continue;
            }
        };
        watcher.established.fetch_add(1, Ordering::Relaxed);
        let mut buffer: Vec<u8> = Vec::new();
        let mut next = Next::Rewatch;
        'stream: loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                frame = body.frame() => frame,
            };
            let data = match frame {
                None => break,
                Some(Err(error)) => {
                    if !stop.is_cancelled() {
                        watcher.errors.fetch_add(1, Ordering::Relaxed);
                        shared.error(format!("watch stream on {}: {error}", conn.target.uri));
                    }
                    break;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            let at = Instant::now();
            buffer.extend_from_slice(&data);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                match handle_line(&shared, &watcher, &line, at, &mut version) {
                    Next::Continue => {}
                    other => {
                        next = other;
                        break 'stream;
                    }
                }
            }
        }
        if matches!(next, Next::Relist) {
            relist(&shared, &watcher, &conn, &collection, &mut version).await;
        }
    }
}

/// Opens a watch stream (the answer's head only).
async fn open(conn: &Conn, path: &str) -> anyhow::Result<Response<Incoming>> {
    let request = request(&conn.target, Method::GET, path, None, None)?;
    let mut sender = conn.sender.clone();
    tokio::time::timeout(REQUEST_TIMEOUT, async move {
        sender.ready().await?;
        sender.send_request(request).await
    })
    .await
    .context("no answer to the watch request")?
    .context("watch request failed")
}

fn handle_line(
    shared: &Shared,
    watcher: &Watcher,
    line: &[u8],
    at: Instant,
    version: &mut u64,
) -> Next {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Next::Continue;
    }
    let Ok(event) = serde_json::from_slice::<Value>(line) else {
        watcher.errors.fetch_add(1, Ordering::Relaxed);
        shared.error(format!(
            "watch: a line that is not JSON: {}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        ));
        return Next::Rewatch;
    };
    let object = &event["object"];
    let kind = match event["type"].as_str() {
        Some("ADDED") => EventType::Added,
        Some("MODIFIED") => EventType::Modified,
        Some("DELETED") => EventType::Deleted,
        Some("BOOKMARK") => {
            if let Some(bookmark) = resource_version(object) {
                *version = bookmark.max(*version);
                watcher.highest.fetch_max(bookmark, Ordering::Relaxed);
            }
            return Next::Continue;
        }
        Some("ERROR") if object["code"].as_u64() == Some(410) => return Next::Relist,
        _ => {
            watcher.errors.fetch_add(1, Ordering::Relaxed);
            shared.error(format!(
                "watch: unexpected event {}",
                String::from_utf8_lossy(&line[..line.len().min(300)])
            ));
            return Next::Rewatch;
        }
    };
    let (Some(name), Some(event_version)) = (meta(object).name(), resource_version(object)) else {
        watcher.errors.fetch_add(1, Ordering::Relaxed);
        shared.error("watch: an event without name or resourceVersion");
        return Next::Rewatch;
    };
    *version = event_version.max(*version);
    watcher.record(Arrival {
        event: kind,
        name: name.to_string(),
        version: event_version,
        at,
        relisted: false,
    });
    Next::Continue
}

/// Lists the run's objects again after an `Expired` answer; what the list holds counts as
/// received, and the watch goes on from the list's version.
async fn relist(
    shared: &Shared,
    watcher: &Watcher,
    conn: &Conn,
    collection: &str,
    version: &mut u64,
) {
    watcher.relists.fetch_add(1, Ordering::Relaxed);
    let base = format!(
        "{collection}?labelSelector={}&limit=500",
        shared.run_selector()
    );
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(token) => format!("{base}&continue={token}"),
            None => base.clone(),
        };
        let page = match conn.json(Method::GET, &path, None).await {
            Ok((StatusCode::OK, body)) => parse_body(StatusCode::OK, &body, "relist"),
            Ok((status, body)) => Err(unexpected("relist", status, &body)),
            Err(error) => Err(error),
        };
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                watcher.errors.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("{error:#}"));
                tokio::time::sleep(Duration::from_millis(500)).await;
                return;
            }
        };
        let at = Instant::now();
        for item in page["items"].as_array().into_iter().flatten() {
            if let (Some(name), Some(item_version)) = (meta(item).name(), resource_version(item)) {
                watcher.record(Arrival {
                    event: EventType::Added,
                    name: name.to_string(),
                    version: item_version,
                    at,
                    relisted: true,
                });
            }
        }
        if token.is_none()
            && let Some(list_version) = resource_version(&page)
        {
            *version = list_version;
            watcher.highest.fetch_max(list_version, Ordering::Relaxed);
        }
        match page["metadata"]["continue"].as_str() {
            Some(next) if !next.is_empty() => token = Some(super::load::url_encode(next)),
            _ => return,
        }
    }
}

/// Waits until every watcher has had one stream established.
pub(super) async fn wait_established(
    watchers: &[Arc<Watcher>],
    within: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    while watchers
        .iter()
        .any(|w| w.established.load(Ordering::Relaxed) == 0)
    {
        if started.elapsed() > within {
            bail!("the watches were not established within {within:?} (see the errors above)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Waits until every watcher of `kind` has seen `version`, or `deadline` passes.
pub(super) async fn wait_for(
    watchers: &[Arc<Watcher>],
    kind: ObjectKind,
    version: u64,
    deadline: Instant,
) {
    while watchers
        .iter()
        .filter(|w| w.kind == kind)
        .any(|w| w.highest.load(Ordering::Relaxed) < version)
    {
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
