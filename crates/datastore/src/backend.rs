//! The one trait where the engines differ. Everything above it (batching, the change feed,
//! compaction policy) is written once in terms of these calls; everything below it is SQL.

use async_trait::async_trait;

use super::error::Result;
use super::types::{Event, KeyRange, KeyValue, WriteOp, WriteOutcome};

/// Which SQL engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// PostgreSQL (and wire-compatible engines).
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// An embedded SQLite file.
    Sqlite,
}

impl Engine {
    /// The engine's name as shown to users.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MySql => "mysql",
            Engine::Sqlite => "sqlite",
        }
    }
}

/// Connection pool occupancy.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    /// Connections open.
    pub size: u32,
    /// Connections open and idle.
    pub idle: u32,
}

/// Where compaction stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionState {
    /// Reads and watches below this revision fail as compacted.
    pub compact_revision: i64,
    /// History up to here has been cleaned; between it and `compact_revision` work remains.
    pub compacted_through: i64,
}

/// An exclusive lock held in the database for a singleton job.
#[async_trait]
pub trait LockLease: Send {
    /// Confirms the lock is still held (renewing it where it is a lease). `false` means
    /// leadership is lost and the job must stop.
    async fn still_held(&mut self) -> bool;
    /// Gives the lock up so a standby can take it at once.
    async fn release(self: Box<Self>);
}

/// A push signal that some other server committed a change (Postgres LISTEN/NOTIFY).
#[async_trait]
pub trait ChangeSignal: Send {
    /// Waits for the next signal: the revision it announces, when it says. An error means
    /// the signal connection broke; the caller falls back to polling and asks for a new
    /// signal later.
    async fn recv(&mut self) -> Result<Option<i64>>;
}

/// SQL access to the revisioned key-value log.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The engine.
    fn engine(&self) -> Engine;
    /// The latest committed revision.
    async fn current_revision(&self) -> Result<i64>;
    /// Where compaction stands.
    async fn compaction_state(&self) -> Result<CompactionState>;
    /// The current value of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// The value `key` had at `revision` (which must not be compacted).
    async fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>>;
    /// Up to `limit` keys of `range` (0: all) as they were at `revision`, in key order,
    /// and whether more follow.
    async fn list_at(
        &self,
        range: &KeyRange,
        revision: i64,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, bool)>;
    /// How many keys exist in `range` now.
    async fn count(&self, range: &KeyRange) -> Result<i64>;
    /// Applies `ops` in order in one transaction, each with its own revision; failed
    /// comparisons take no revision. `now_ms` turns TTLs into absolute expiry times.
    async fn apply(&self, ops: &[WriteOp], now_ms: i64) -> Result<Vec<WriteOutcome>>;
    /// Changes with revision in `(after, until]`, optionally only within `range`, in
    /// revision order, at most `limit`.
    async fn history(
        &self,
        after: i64,
        until: i64,
        range: Option<&KeyRange>,
        limit: usize,
    ) -> Result<Vec<Event>>;
    /// Keys whose expiry time is at or before `now_ms`, with their mod revisions.
    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<(String, i64)>>;
    /// Makes `revision` the oldest readable revision (never moves backwards).
    async fn publish_compact_revision(&self, revision: i64) -> Result<()>;
    /// Deletes history that is superseded or deleted by revisions in `(after, through]`,
    /// and records `through` as done. Returns the rows removed.
    async fn compact_range(&self, after: i64, through: i64) -> Result<u64>;
    /// Tries to take the exclusive lock `name` for `holder`; `None` if another has it.
    async fn try_lock(&self, name: &str, holder: &str) -> Result<Option<Box<dyn LockLease>>>;
    /// A push signal for changes committed by other servers, where the engine has one.
    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>>;
    /// Tells the other servers' change signals that revisions up to `revision` are
    /// committed (a no-op on engines without one).
    async fn announce(&self, revision: i64) -> Result<()>;
    /// Pool occupancy.
    fn pool_stats(&self) -> PoolStats;
    /// Closes every connection.
    async fn close(&self);
}
