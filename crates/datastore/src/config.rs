//! Settings of the datastore, part of the server's configuration. Field names are the
//! flag names without the `datastore-` prefix where the flag has one.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the database and how hard to drive it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatastoreConfig {
    /// `sqlite://PATH`, `postgres://USER[:PASS]@HOST[:PORT]/DB` or
    /// `mysql://USER[:PASS]@HOST[:PORT]/DB`. Empty means the embedded SQLite file
    /// `<data-dir>/server/db/state.db`.
    pub endpoint: String,
    /// CA bundle that verifies the database server's certificate (turns on verified TLS).
    pub cafile: Option<PathBuf>,
    /// Client certificate for TLS to the database.
    pub certfile: Option<PathBuf>,
    /// Client key for TLS to the database.
    pub keyfile: Option<PathBuf>,
    /// Most connections this server opens to the database; further requests wait.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing, in milliseconds.
    pub acquire_timeout_ms: u64,
    /// Longest pause between change-feed polls while nothing changes, in milliseconds.
    /// On Postgres, LISTEN/NOTIFY wakes the poller at once and this is only the fallback.
    pub poll_interval_ms: u64,
    /// Pause between polls while changes keep arriving, in milliseconds.
    pub poll_interval_busy_ms: u64,
    /// Writes of this server gathered into one transaction at most.
    pub write_batch_max: usize,
    /// Events each watcher may have queued before it is cut off as too slow.
    pub watch_queue: usize,
    /// Bytes of events each watcher may have queued before it is cut off as too slow.
    pub watch_queue_bytes: usize,
    /// Bytes of events queued for all of this server's watchers together; past it, a
    /// watcher that is behind is cut off instead of being handed more.
    pub watch_queue_total_bytes: usize,
    /// Bytes of recent events kept in memory (besides their number, `recent_events`).
    pub recent_events_bytes: usize,
    /// Recent events kept in memory so new watches start without reading the database.
    pub recent_events: usize,
    /// Keep at least this many revisions of history.
    pub compact_retain_revisions: i64,
    /// Keep history younger than this many seconds.
    pub compact_retain_seconds: u64,
    /// Seconds between compaction rounds.
    pub compact_interval_seconds: u64,
    /// Revisions compacted per step (one short transaction each).
    pub compact_step_revisions: i64,
    /// Keep prepared statements cached per connection (false prepares each query afresh;
    /// it does not make PgBouncer's transaction mode work, see the README).
    pub prepared_statements: bool,
}

impl Default for DatastoreConfig {
    fn default() -> Self {
        DatastoreConfig {
            endpoint: String::new(),
            cafile: None,
            certfile: None,
            keyfile: None,
            max_connections: 20,
            acquire_timeout_ms: 10_000,
            poll_interval_ms: 100,
            poll_interval_busy_ms: 5,
            write_batch_max: 256,
            watch_queue: 2048,
            watch_queue_bytes: 16 * 1024 * 1024,
            watch_queue_total_bytes: 512 * 1024 * 1024,
            recent_events_bytes: 64 * 1024 * 1024,
            recent_events: 10_000,
            compact_retain_revisions: 10_000,
            compact_retain_seconds: 300,
            compact_interval_seconds: 10,
            compact_step_revisions: 1_000,
            prepared_statements: true,
        }
    }
}

impl DatastoreConfig {
    /// A config for `endpoint` with every other setting at its default.
    pub fn for_endpoint(endpoint: impl Into<String>) -> Self {
        DatastoreConfig {
            endpoint: endpoint.into(),
            ..Default::default()
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }

    pub(crate) fn poll_interval_busy(&self) -> Duration {
        Duration::from_millis(self.poll_interval_busy_ms.max(1))
    }
}
