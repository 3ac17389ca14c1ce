//! The SQL of the log, written once for all engines on top of sqlx's generic traits.
//!
//! Tables (see `migrations/<engine>/`):
//! - `kv_history(revision PK, name, create_revision, prev_revision, deleted, value)`: every
//!   change ever made and not yet compacted, one row per revision. Values live only here.
//! - `kv_current(name PK, revision, create_revision, expires_at)`: one row per live key,
//!   pointing at the history row that holds its value. Reads of current state walk this
//!   table by primary key and join one history row per item, so a page costs O(page) no
//!   matter how long the history is.
//! - `kv_revision(id = 1, revision)`: the revision counter. Every write transaction locks
//!   this row first, so writers are serialised, the revisions a transaction takes are
//!   exactly the ones after the last committed one, and commit order equals revision order:
//!   there are never gaps, and a reader that sees revision R has every revision below R
//!   available too. The per-server writer (`writer.rs`) batches many operations into one
//!   such transaction, which is what keeps throughput up despite the serial counter.
//! - `kv_compaction(id = 1, compact_revision, compacted_through)`: the oldest readable
//!   revision, and how far history cleaning has got.
//! - `kv_lock(name PK, holder, expires_at)`: leases for engines without advisory locks.
//!
//! Statement texts live in `statements.rs`, connection set-up in `pools.rs`, the write
//! transaction in `sql/write.rs`.

mod write;

pub(crate) use write::expiry;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Row, Type,
};

use super::backend::{Backend, ChangeSignal, CompactionState, Engine, LockLease, PoolStats};
use super::error::{DatastoreError, Result};
use super::types::{Event, EventKind, KeyRange, KeyValue, WriteOp, WriteOutcome};

use super::pools::{Held, Pools};
use super::statements::Statements;

/// Rows per multi-row statement: 6 binds a history row keeps this under every engine's
/// bind-parameter limit (SQLite's is the lowest at 32766).
const ROWS_PER_STATEMENT: usize = 500;

/// The rows a statement changed (sqlx has no engine-neutral trait for this).
pub(crate) trait RowsAffected {
    fn rows(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::mysql::MySqlQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

/// What differs per engine beyond statement text.
#[async_trait]
pub(crate) trait EngineHooks: Send + Sync {
    /// The statement that opens a write transaction (SQLite takes its write lock up front
    /// so the busy handler, not an immediate SQLITE_BUSY, deals with contention).
    fn begin_write(&self) -> Option<&'static str>;
    async fn try_lock(&self, name: &str, holder: &str) -> Result<Option<Box<dyn LockLease>>>;
    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>>;
    /// Tells other servers that revisions up to `revision` are committed (a no-op where
    /// the engine has no push signal).
    async fn announce(&self, revision: i64) -> Result<()>;
    /// Applies a batch in one server-side call, where the engine has one; `None` means use
    /// the portable transaction (`SqlBackend::apply_in_transaction`).
    async fn apply(&self, _ops: &[WriteOp], _now_ms: i64) -> Option<Result<Vec<WriteOutcome>>> {
        None
    }
    /// Gives back connections the engine holds out of the shared pool (closing the pool
    /// waits for every connection).
    async fn release(&self) {}
}

impl<DB: Database> SqlBackend<DB> {
    pub(crate) fn new(
        pools: Pools<DB>,
        sql: &'static Statements,
        engine: Engine,
        hooks: Arc<dyn EngineHooks>,
    ) -> Self {
        SqlBackend {
            pool: pools.shared,
            writer: pools.writer,
            feed: pools.feed,
            sql,
            engine,
            hooks,
        }
    }
}

/// The log on sqlx pools. The two loops whose latency every client sees, the batching
/// writer and the change feed's poller, each own a one-connection pool; reads share the
/// main pool. A burst of reads, or the main pool opening a connection (a TLS handshake,
/// ~90 ms measured), can then never delay a commit or a watch event.
pub(crate) struct SqlBackend<DB: Database> {
    pub pool: Pool<DB>,
    pub writer: Arc<Held<DB>>,
    pub feed: Held<DB>,
    pub sql: &'static Statements,
    pub engine: Engine,
    pub hooks: Arc<dyn EngineHooks>,
}

fn limit_param(limit: usize) -> i64 {
    if limit == 0 {
        i64::MAX
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX)
    }
}

impl<DB> SqlBackend<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Option<i64>: Type<DB> + for<'q> Encode<'q, DB>,
    bool: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    Vec<u8>: Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q [u8]: Type<DB> + Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    DB::QueryResult: RowsAffected,
{
    fn event_from_row(row: &DB::Row) -> std::result::Result<Event, sqlx::Error> {
        let deleted: bool = row.try_get(4)?;
        let value: Vec<u8> = row.try_get(5)?;
        let prev_value: Option<Vec<u8>> = row.try_get(6)?;
        Ok(Event {
            revision: row.try_get(0)?,
            key: row.try_get(1)?,
            create_revision: row.try_get(2)?,
            prev_revision: row.try_get(3)?,
            kind: if deleted {
                EventKind::Delete
            } else {
                EventKind::Put
            },
            value: if deleted {
                Bytes::new()
            } else {
                Bytes::from(value)
            },
            prev_value: prev_value.map(Bytes::from),
        })
    }

    /// Distinct keys of `range` (up to `last`, when given) written in `(after, through]`,
    /// found by walking the revision window on the primary key.
    async fn changed_names(
        &self,
        range: &KeyRange,
        after: i64,
        through: i64,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        const WINDOW_PAGE: usize = 1000;
        let mut names = std::collections::BTreeSet::new();
        let mut cursor = after;
        while cursor < through {
            let rows = sqlx::query(self.sql.changed_names)
                .bind(cursor)
                .bind(through)
                .bind(range.start.as_str())
                .bind(range.end.as_str())
                .bind(limit_param(WINDOW_PAGE))
                .fetch_all(&self.pool)
                .await
                .map_err(DatastoreError::query("list changed keys"))?;
            for row in &rows {
                let name: String = row
                    .try_get(0)
                    .map_err(DatastoreError::query("list changed keys"))?;
                cursor = row
                    .try_get(1)
                    .map_err(DatastoreError::query("list changed keys"))?;
                if last.is_none_or(|last| name.as_str() <= last) {
                    names.insert(name);
                }
            }
            if rows.len() < WINDOW_PAGE {
                break;
            }
        }
        Ok(names.into_iter().collect())
    }

    /// The state of each of `names` at `revision` (absent keys left out).
    async fn states_at(&self, names: &[String], revision: i64) -> Result<Vec<KeyValue>> {
        let mut items = Vec::with_capacity(names.len());
        for chunk in names.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new(
                "SELECT h.name, h.revision, h.create_revision, h.deleted, h.value FROM kv_history h \
                 WHERE h.name IN (",
            );
            let mut list = query.separated(", ");
            for name in chunk {
                list.push_bind(name.as_str());
            }
            query.push(") AND h.revision = (SELECT MAX(m.revision) FROM kv_history m WHERE m.name = h.name AND m.revision <= ");
            query.push_bind(revision);
            query.push(")");
            let rows = query
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(DatastoreError::query("list at revision"))?;
            for row in &rows {
                let decode = || -> std::result::Result<Option<KeyValue>, sqlx::Error> {
                    let deleted: bool = row.try_get(3)?;
                    if deleted {
                        return Ok(None);
                    }
                    let value: Vec<u8> = row.try_get(4)?;
                    Ok(Some(KeyValue {
                        key: row.try_get(0)?,
                        mod_revision: row.try_get(1)?,
                        create_revision: row.try_get(2)?,
                        value: Bytes::from(value),
                    }))
                };
                items.extend(decode().map_err(DatastoreError::query("list at revision"))?);
            }
        }
        Ok(items)
    }
}

#[async_trait]
impl<DB> Backend for SqlBackend<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    Option<i64>: Type<DB> + for<'q> Encode<'q, DB>,
    bool: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB>,
    String: Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB>,
    Vec<u8>: Type<DB> + for<'r> Decode<'r, DB>,
    for<'q> &'q [u8]: Type<DB> + Encode<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    DB::QueryResult: RowsAffected,
{
    fn engine(&self) -> Engine {
        self.engine
    }

    async fn current_revision(&self) -> Result<i64> {
        sqlx::query_scalar(self.sql.current_revision)
            .fetch_optional(&self.pool)
            .await
            .map_err(DatastoreError::query("read revision"))?
            .ok_or_else(|| DatastoreError::Corrupt("the kv_revision row is missing".into()))
    }

    async fn compaction_state(&self) -> Result<CompactionState> {
        let row = sqlx::query(self.sql.compaction_state)
            .fetch_optional(&self.pool)
            .await
            .map_err(DatastoreError::query("read compaction state"))?
            .ok_or_else(|| DatastoreError::Corrupt("the kv_compaction row is missing".into()))?;
        let decode = || -> std::result::Result<CompactionState, sqlx::Error> {
            Ok(CompactionState {
                compact_revision: row.try_get(0)?,
                compacted_through: row.try_get(1)?,
            })
        };
        decode().map_err(DatastoreError::query("read compaction state"))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let row = sqlx::query(self.sql.get)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(DatastoreError::query("get"))?;
        let Some(row) = row else { return Ok(None) };
        let decode = || -> std::result::Result<KeyValue, sqlx::Error> {
            let value: Vec<u8> = row.try_get(2)?;
            Ok(KeyValue {
                key: key.to_string(),
                mod_revision: row.try_get(0)?,
                create_revision: row.try_get(1)?,
                value: Bytes::from(value),
            })
        };
        decode().map(Some).map_err(DatastoreError::query("get"))
    }

    async fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>> {
        let row = sqlx::query(self.sql.get_at)
            .bind(key)
            .bind(revision)
            .fetch_optional(&self.pool)
            .await
            .map_err(DatastoreError::query("get at revision"))?;
        let Some(row) = row else { return Ok(None) };
        let decode = || -> std::result::Result<Option<KeyValue>, sqlx::Error> {
            let deleted: bool = row.try_get(2)?;
            if deleted {
                return Ok(None);
            }
            let value: Vec<u8> = row.try_get(3)?;
            Ok(Some(KeyValue {
                key: key.to_string(),
                mod_revision: row.try_get(0)?,
                create_revision: row.try_get(1)?,
                value: Bytes::from(value),
            }))
        };
        decode().map_err(DatastoreError::query("get at revision"))
    }

    async fn list_at(
        &self,
        range: &KeyRange,
        revision: i64,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, bool)> {
        // Keys unchanged since `revision`, from current state (ask for one more than the
        // page to learn whether more follow).
        let fetch = if limit == 0 { 0 } else { limit + 1 };
        let unchanged = sqlx::query(self.sql.list_current)
            .bind(range.start.as_str())
            .bind(range.end.as_str())
            .bind(revision)
            .bind(limit_param(fetch))
            .fetch_all(&self.pool)
            .await
            .map_err(DatastoreError::query("list"))?;
        let mut items = unchanged
            .iter()
            .map(|row| {
                let value: Vec<u8> = row.try_get(3)?;
                Ok(KeyValue {
                    key: row.try_get(0)?,
                    mod_revision: row.try_get(1)?,
                    create_revision: row.try_get(2)?,
                    value: Bytes::from(value),
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
            .map_err(DatastoreError::query("list"))?;

        // Keys changed after `revision` (read after the query above, so every change its
        // snapshot excluded is covered): their state at `revision` comes from history.
        // Usually nothing changed and this is one read of the counter.
        let head = self.current_revision().await?;
        if head > revision {
            // A changed key past the last unchanged one of a full page cannot be on it.
            let page_end = (limit != 0 && items.len() == fetch)
                .then(|| items.last().map(|kv| kv.key.clone()))
                .flatten();
            let changed = self
                .changed_names(range, revision, head, page_end.as_deref())
                .await?;
            items.extend(self.states_at(&changed, revision).await?);
            items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            // A key changed after the first query's snapshot is in both; same state.
            items.dedup_by(|a, b| a.key == b.key);
        }
        let more = limit != 0 && items.len() > limit;
        if limit != 0 {
            items.truncate(limit);
        }
        Ok((items, more))
    }

    async fn count(&self, range: &KeyRange) -> Result<i64> {
        sqlx::query_scalar(self.sql.count)
            .bind(range.start.as_str())
            .bind(range.end.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(DatastoreError::query("count"))
    }

    async fn apply(&self, ops: &[WriteOp], now_ms: i64) -> Result<Vec<WriteOutcome>> {
        if let Some(result) = self.hooks.apply(ops, now_ms).await {
            return result;
        }
        self.apply_in_transaction(ops, now_ms)
            .await
            .map_err(DatastoreError::query("write"))
    }

    async fn history(
        &self,
        after: i64,
        until: i64,
        range: Option<&KeyRange>,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let query = match range {
            None => sqlx::query(self.sql.history)
                .bind(after)
                .bind(until)
                .bind(limit_param(limit)),
            Some(range) => sqlx::query(self.sql.history_in_range)
                .bind(after)
                .bind(until)
                .bind(range.start.as_str())
                .bind(range.end.as_str())
                .bind(limit_param(limit)),
        };
        // Without a range this is the change feed's poll, on the feed's own connection.
        let rows = if range.is_none() {
            let mut held = self
                .feed
                .lock()
                .await
                .map_err(DatastoreError::query("read history"))?;
            let conn = held.conn().map_err(DatastoreError::query("read history"))?;
            let result = query.fetch_all(conn).await;
            held.check(result)
        } else {
            query.fetch_all(&self.pool).await
        }
        .map_err(DatastoreError::query("read history"))?;
        rows.iter()
            .map(Self::event_from_row)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(DatastoreError::query("read history"))
    }

    async fn expired(&self, now_ms: i64, limit: usize) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(self.sql.expired)
            .bind(now_ms)
            .bind(limit_param(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(DatastoreError::query("find expired keys"))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
            .map_err(DatastoreError::query("find expired keys"))
    }

    async fn publish_compact_revision(&self, revision: i64) -> Result<()> {
        sqlx::query(self.sql.publish_compact)
            .bind(revision)
            .bind(revision)
            .execute(&self.pool)
            .await
            .map_err(DatastoreError::query("publish compact revision"))?;
        Ok(())
    }

    async fn compact_range(&self, after: i64, through: i64) -> Result<u64> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            let superseded: Vec<i64> = sqlx::query_scalar(self.sql.compact_predecessors)
                .bind(after)
                .bind(through)
                .fetch_all(&mut *tx)
                .await?;
            let mut removed = 0;
            for chunk in superseded.chunks(ROWS_PER_STATEMENT) {
                let mut query =
                    QueryBuilder::<DB>::new("DELETE FROM kv_history WHERE revision IN (");
                let mut list = query.separated(", ");
                for revision in chunk {
                    list.push_bind(*revision);
                }
                query.push(")");
                removed += query.build().execute(&mut *tx).await?.rows();
            }
            removed += sqlx::query(self.sql.compact_tombstones)
                .bind(after)
                .bind(through)
                .execute(&mut *tx)
                .await?
                .rows();
            sqlx::query(self.sql.set_compacted_through)
                .bind(through)
                .bind(through)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(removed)
        };
        run.await.map_err(DatastoreError::query("compact"))
    }

    async fn try_lock(&self, name: &str, holder: &str) -> Result<Option<Box<dyn LockLease>>> {
        self.hooks.try_lock(name, holder).await
    }

    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>> {
        self.hooks.change_signal().await
    }

    async fn announce(&self, revision: i64) -> Result<()> {
        self.hooks.announce(revision).await
    }

    fn pool_stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats { size, idle }
    }

    async fn close(&self) {
        self.writer.close().await;
        self.feed.close().await;
        self.hooks.release().await;
        self.pool.close().await;
    }
}
