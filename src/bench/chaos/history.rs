//! The recorded history of a chaos run: every write clients attempted (with its outcome:
//! acknowledged, definitely failed, or indeterminate, and the cause of a failure), every
//! counter read, every event watchers received and every time they resumed or re-listed,
//! and the final state of the namespace. The workload records it; [`super::check`] judges it.

use std::collections::HashMap;

use serde::Serialize;

use super::causes::Cause;

/// How a write ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The server acknowledged it (2xx).
    Ok,
    /// The server refused it (a definite 4xx such as 409 or 404): it must not have applied.
    Failed,
    /// No answer, a cut connection or a 5xx: it may or may not have applied.
    Indeterminate,
}

/// What a write tried to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// PUT of counter `counter` with value `read_value + 1`, conditional on `read_rv`.
    Increment {
        /// Index of the counter ConfigMap.
        counter: usize,
        /// The value the client read.
        read_value: u64,
        /// The resourceVersion it read (the PUT's precondition).
        read_rv: u64,
    },
    /// POST of a new, uniquely named ConfigMap.
    Create {
        /// Its name.
        name: String,
    },
    /// DELETE of a ConfigMap the same client created before.
    Delete {
        /// Its name.
        name: String,
    },
}

/// One write attempt and how it ended.
#[derive(Debug, Clone)]
pub struct Op {
    /// The client that sent it.
    pub client: usize,
    /// The server (index) it was sent to.
    pub server: usize,
    /// What it tried.
    pub write: Write,
    /// How it ended.
    pub outcome: Outcome,
    /// The HTTP status (0 when there was none).
    pub status: u16,
    /// Why it was not acknowledged (`None` when it was).
    pub cause: Option<Cause>,
    /// The resourceVersion of the answer, when acknowledged.
    pub rv: Option<u64>,
    /// Seconds since the run started, when sent and when answered.
    pub start: f64,
    /// See `start`.
    pub end: f64,
}

/// One read of a counter by a client (for the per-client monotonic-read check).
#[derive(Debug, Clone, Copy)]
pub struct Read {
    /// The client.
    pub client: usize,
    /// The counter index.
    pub counter: usize,
    /// The resourceVersion it saw.
    pub rv: u64,
    /// The value it saw.
    pub value: u64,
}

/// One event a watcher received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// ADDED, MODIFIED or DELETED.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// Its resourceVersion.
    pub rv: u64,
    /// Its `data.value`, when a number.
    pub value: Option<u64>,
}

/// What a watcher's log holds, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEntry {
    /// An event.
    Event(Event),
    /// The stream ended; it was re-opened from the last resourceVersion on `server`.
    Resume {
        /// The server it resumed on.
        server: usize,
    },
    /// The server said 410 Gone; the watcher listed again at `rv` (events between its last
    /// resourceVersion and `rv` are not covered).
    Relist {
        /// The list's resourceVersion.
        rv: u64,
    },
}

/// Everything one watcher saw.
#[derive(Debug, Clone, Default)]
pub struct WatcherLog {
    /// The resourceVersion it started from.
    pub start_rv: u64,
    /// Events, resumes and re-lists.
    pub entries: Vec<WatchEntry>,
}

/// The recorded history of one run.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Names of the counter ConfigMaps, by index.
    pub counters: Vec<String>,
    /// Every write attempt.
    pub ops: Vec<Op>,
    /// Every counter read, in each client's order.
    pub reads: Vec<Read>,
    /// Every watcher's log.
    pub watchers: Vec<WatcherLog>,
    /// The namespace's ConfigMaps at the end: name -> `data.value` if a number.
    pub final_state: HashMap<String, Option<u64>>,
    /// Names of the ConfigMaps the clients create (others in the namespace are ignored).
    pub created_prefix: String,
}
