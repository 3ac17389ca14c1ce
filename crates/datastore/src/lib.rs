//! The datastore: one revisioned key-value log on SQL, shared by every server.
//!
//! This is the layer kine plays in K3s, redesigned around the guarantees in
//! ARCHITECTURE.md. The key decisions, and why:
//!
//! - **Revisions come from a counter row locked by the writing transaction** (`sql/`), not
//!   from an auto-increment id. Commit order therefore equals revision order and revisions
//!   are dense: a failed compare-and-swap takes no revision, a rolled-back transaction
//!   returns its revisions, and a reader that sees revision R can rely on every revision
//!   below R being visible. That is what lets the change feed deliver every event exactly
//!   once, in order, without kine's time-based skipping of "missing" ids.
//! - **Writes are batched per server** (`writer.rs`): the counter serialises transactions,
//!   so each transaction carries every write waiting at that moment.
//! - **Current state and history are separate tables**: reads of current state never scan
//!   history, a list is exact at one revision (the committed counter, never `MAX(id)`), and
//!   later pages of the same list read that revision from history.
//! - **One poller per server** (`feed.rs`), woken by this server's commits, by Postgres
//!   LISTEN/NOTIFY for other servers' commits, and by an adaptive timer (MySQL, SQLite).
//! - **Compaction and TTL expiry run on one elected server** in bounded steps
//!   (`compact.rs`).
//! - **Metrics go to a registry the caller passes in** ([`DatastoreMetrics`], `metrics.rs`),
//!   never the process-global one, so the crate stands alone (as kine does) and several
//!   stores in one process can report separately or together.
//!
//! Engines: `postgres.rs`, `mysql.rs`, `sqlite.rs` differ only in statement text, locks and the
//! push signal; everything else is written once.

mod backend;
mod compact;
mod config;
mod error;
mod feed;
mod metrics;
mod mysql;
mod pools;
mod postgres;
mod sql;
mod sqlite;
mod statements;
mod types;
mod writer;

use std::sync::Arc;

use futures::Stream;
use sqlx::migrate::{MigrateError, Migrator};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use backend::{CompactionState, Engine, PoolStats};
pub use compact::{CompactStats, MAINTENANCE_LOCK, run_maintenance};
pub use config::DatastoreConfig;
pub use error::{DatastoreError, Result};
pub use feed::Watch;
pub use metrics::DatastoreMetrics;
use metrics::StoreOp;
pub use types::{
    Committed, Event, EventKind, KeyRange, KeyValue, ListPage, ListRequest, MAX_KEY_BYTES,
    MAX_VALUE_BYTES, WriteOp, WriteOutcome, prefix_end, validate_key,
};

use backend::Backend;
use feed::ChangeFeed;
use writer::WriteRequest;

/// Writes that may wait for the writer before callers are made to wait too.
const WRITE_QUEUE: usize = 4096;

/// A handle on the datastore; cheap to clone. Each `Store` is what one server holds: its own
/// pool, writer and change feed. Several stores (servers) may share one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    backend: Arc<dyn Backend>,
    feed: Arc<ChangeFeed>,
    writes: mpsc::Sender<WriteRequest>,
    config: DatastoreConfig,
    endpoint: String,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Store {
    /// Connects to the endpoint in `config`, creating the database when it is missing and
    /// the credentials allow, applies schema migrations, and starts the writer and the
    /// change feed. The store records into `metrics` (see [`DatastoreMetrics::new`]).
    pub async fn open(config: &DatastoreConfig, metrics: &DatastoreMetrics) -> Result<Store> {
        let endpoint = config.endpoint.trim();
        let backend: Arc<dyn Backend> =
            if endpoint.starts_with("postgres://") || endpoint.starts_with("postgresql://") {
                Arc::new(postgres::open(config).await?)
            } else if endpoint.starts_with("mysql://") || endpoint.starts_with("mariadb://") {
                let mut config = config.clone();
                if let Some(rest) = endpoint.strip_prefix("mariadb://") {
                    config.endpoint = format!("mysql://{rest}");
                }
                Arc::new(mysql::open(&config).await?)
            } else if endpoint.starts_with("sqlite:") {
                Arc::new(sqlite::open(config).await?)
            } else {
                return Err(DatastoreError::InvalidEndpoint {
                    endpoint: masked(endpoint),
                    reason: "unknown scheme".into(),
                });
            };
        let position = backend.current_revision().await?;
        let feed = Arc::new(ChangeFeed::new(position, config, metrics.clone()));
        let (writes, requests) = mpsc::channel(WRITE_QUEUE);
        let (committed, announcements) = tokio::sync::watch::channel(position);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(writer::run(
            backend.clone(),
            feed.clone(),
            requests,
            committed,
            config.write_batch_max,
            shutdown.clone(),
        ));
        if backend.engine() == Engine::Postgres {
            tasks.spawn(writer::run_announcer(
                backend.clone(),
                announcements,
                shutdown.clone(),
            ));
        }
        tasks.spawn(feed::run_poller(
            feed.clone(),
            backend.clone(),
            config.clone(),
            shutdown.clone(),
        ));
        tracing::info!(engine = backend.engine().name(), endpoint = %masked(endpoint), revision = position, "datastore open");
        Ok(Store {
            inner: Arc::new(StoreInner {
                backend,
                feed,
                writes,
                config: config.clone(),
                endpoint: masked(endpoint),
                tasks,
                shutdown,
            }),
        })
    }

    /// The engine this store runs on.
    pub fn engine(&self) -> Engine {
        self.inner.backend.engine()
    }

    /// The endpoint, with any password masked.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Connection pool occupancy.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.backend.pool_stats()
    }

    /// The latest committed revision.
    pub async fn current_revision(&self) -> Result<i64> {
        self.inner
            .feed
            .metrics
            .observe(StoreOp::Revision, self.inner.backend.current_revision())
            .await
    }

    /// Where compaction stands.
    pub async fn compaction_state(&self) -> Result<CompactionState> {
        self.inner.backend.compaction_state().await
    }

    /// The current value of `key`.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        self.inner
            .feed
            .metrics
            .observe(StoreOp::Get, self.inner.backend.get(key))
            .await
    }

    /// The value `key` had at `revision`.
    pub async fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        self.check_readable(revision).await?;
        let found = self
            .inner
            .feed
            .metrics
            .observe(StoreOp::GetAt, self.inner.backend.get_at(key, revision))
            .await?;
        // Compaction may have passed `revision` while we read.
        self.check_readable(revision).await?;
        Ok(found)
    }

    /// Fails with `Compacted` if compaction passed `revision` while we read at it (it
    /// publishes the new oldest revision before it deletes anything).
    async fn check_not_compacted(&self, revision: i64) -> Result<()> {
        let state = self.inner.backend.compaction_state().await?;
        if revision < state.compact_revision {
            return Err(DatastoreError::Compacted {
                requested: revision,
                compact_revision: state.compact_revision,
            });
        }
        Ok(())
    }

    /// Fails with `Compacted` or `FutureRevision` unless `revision` can be read.
    async fn check_readable(&self, revision: i64) -> Result<()> {
        self.check_not_compacted(revision).await?;
        let current = self.inner.backend.current_revision().await?;
        if revision > current {
            return Err(DatastoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        Ok(())
    }

    /// One page of a list, exact at one revision. Pass the returned revision and a range
    /// starting after the last key to read the next page of the same snapshot.
    pub async fn list(&self, request: &ListRequest) -> Result<ListPage> {
        let revision = match request.revision {
            Some(revision) => {
                self.check_readable(revision).await?;
                revision
            }
            // The committed counter: every revision up to it is visible, none after it is
            // included, so the page is exact even while writes continue.
            None => self.current_revision().await?,
        };
        let (items, more) = self
            .inner
            .feed
            .metrics
            .observe(
                StoreOp::List,
                self.inner
                    .backend
                    .list_at(&request.range, revision, request.limit),
            )
            .await?;
        if request.revision.is_some() {
            self.check_not_compacted(revision).await?;
        }
        Ok(ListPage {
            items,
            revision,
            more,
        })
    }

    /// How many keys exist in `range` now, with the revision of the count.
    pub async fn count(&self, range: &KeyRange) -> Result<(i64, i64)> {
        let revision = self.current_revision().await?;
        let count = self
            .inner
            .feed
            .metrics
            .observe(StoreOp::Count, self.inner.backend.count(range))
            .await?;
        Ok((revision, count))
    }

    /// Applies one write (batched with whatever else this server is writing).
    pub async fn write(&self, op: WriteOp) -> Result<Committed> {
        op.validate()?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| DatastoreError::ShuttingDown)?;
        answer.await.map_err(|_| DatastoreError::ShuttingDown)?
    }

    /// Creates `key`; `Conflict` if it exists.
    pub async fn create(&self, key: &str, value: impl Into<bytes::Bytes>) -> Result<WriteOutcome> {
        let op = WriteOp::Create {
            key: key.to_string(),
            value: value.into(),
            ttl: None,
        };
        Ok(self.write(op).await?.outcome)
    }

    /// Replaces `key`'s value if its mod revision is `expected_revision`.
    pub async fn update(
        &self,
        key: &str,
        value: impl Into<bytes::Bytes>,
        expected_revision: i64,
    ) -> Result<WriteOutcome> {
        let op = WriteOp::Update {
            key: key.to_string(),
            value: value.into(),
            expected_revision,
            ttl: None,
        };
        Ok(self.write(op).await?.outcome)
    }

    /// Deletes `key` (if its mod revision is `expected_revision`, when given).
    pub async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<WriteOutcome> {
        Ok(self
            .write(WriteOp::Delete {
                key: key.to_string(),
                expected_revision,
            })
            .await?
            .outcome)
    }

    /// Every change in `range` after revision `after` (or after the current revision when
    /// `None`), once each, in revision order, from whichever server it was written on.
    pub async fn watch(&self, range: KeyRange, after: Option<i64>) -> Watch {
        let feed = self.inner.feed.clone();
        let backend = self.inner.backend.clone();
        let after = match after {
            Some(after) => after,
            None => match self.current_revision().await {
                Ok(current) => current,
                Err(error) => return Watch::failed(feed, backend, range, error),
            },
        };
        match self.inner.backend.compaction_state().await {
            Ok(state) if after < state.compact_revision => Watch::failed(
                feed,
                backend,
                range,
                DatastoreError::Compacted {
                    requested: after,
                    compact_revision: state.compact_revision,
                },
            ),
            Ok(_) => Watch::new(feed, backend, range, after),
            Err(error) => Watch::failed(feed, backend, range, error),
        }
    }

    /// [`Store::watch`] as a `Stream`.
    pub async fn watch_stream(
        &self,
        range: KeyRange,
        after: Option<i64>,
    ) -> impl Stream<Item = Result<Event>> + Send {
        self.watch(range, after).await.into_stream()
    }

    /// Takes the leader lock `name` if it is free. Hold the returned lease while doing the
    /// singleton job; check it with `still_held` and give it up with `release`.
    pub async fn try_lock(&self, name: &str, holder: &str) -> Result<Option<LeaderLease>> {
        Ok(self
            .inner
            .backend
            .try_lock(name, holder)
            .await?
            .map(|lease| LeaderLease { lease }))
    }

    /// Stops the writer and the feed (queued writes fail with `ShuttingDown`, watches end)
    /// and closes the pool.
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.backend.close().await;
    }
}

/// A held leader lock.
pub struct LeaderLease {
    lease: Box<dyn backend::LockLease>,
}

impl LeaderLease {
    /// Whether the lock is still held (renewing it where it is a lease).
    pub async fn still_held(&mut self) -> bool {
        self.lease.still_held().await
    }

    /// Gives the lock up so a standby takes it at once.
    pub async fn release(self) {
        self.lease.release().await;
    }
}

/// The endpoint with its password replaced by `***`, for messages and logs.
pub fn masked(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return endpoint.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => endpoint.to_string(),
    }
}

fn connect_error(endpoint: &str) -> impl FnOnce(sqlx::Error) -> DatastoreError + '_ {
    move |source| {
        let hint = match &source {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => {
                "is the database running and reachable from this host?"
            }
            sqlx::Error::Tls(_) => {
                "check --datastore-cafile/--datastore-certfile/--datastore-keyfile"
            }
            sqlx::Error::Database(_) => {
                "check the user, password, database name and its permissions"
            }
            _ => "check the endpoint and that the database is up",
        };
        DatastoreError::Connect {
            endpoint: endpoint.to_string(),
            hint,
            source,
        }
    }
}

async fn migrate<DB>(migrator: &Migrator, pool: &sqlx::Pool<DB>, endpoint: &str) -> Result<()>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Connection: sqlx::migrate::Migrate,
{
    match migrator.run(pool).await {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(found)) => Err(DatastoreError::SchemaTooNew {
            endpoint: endpoint.to_string(),
            found,
            known: migrator.iter().map(|m| m.version).max().unwrap_or(0),
        }),
        Err(source) => Err(DatastoreError::Migrate {
            endpoint: endpoint.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_hides_passwords_only() {
        assert_eq!(
            masked("postgres://u:secret@db:5432/k"),
            "postgres://u:***@db:5432/k"
        );
        assert_eq!(masked("postgres://u@db/k"), "postgres://u@db/k");
        assert_eq!(masked("sqlite:///var/x.db"), "sqlite:///var/x.db");
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        let range = KeyRange::prefix("/registry/pods/");
        assert!(range.contains("/registry/pods/default/a"));
        assert!(!range.contains("/registry/pods0"));
        assert!(!range.contains("/registry/pod"));
    }

    #[test]
    fn keys_are_validated() {
        assert!(validate_key("/registry/a").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("has space").is_err());
        assert!(validate_key("bad\u{0}byte").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }
}
