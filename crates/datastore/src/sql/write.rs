//! The write transaction: one batch of creates, updates and deletes under the revision
//! counter's lock. Every key the batch touches is read first (under the lock, so nothing
//! changes it before commit), each operation's comparison is decided in order against the
//! state the earlier operations of the batch left, the applied ones take consecutive
//! revisions, and history rows, `kv_current` and the counter are written in a few
//! multi-row statements.

use std::collections::HashMap;

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type,
};

use super::{ROWS_PER_STATEMENT, RowsAffected, SqlBackend};
use crate::types::{WriteOp, WriteOutcome};

/// A key's row in `kv_current` as read inside a write transaction.
#[derive(Clone, Copy)]
struct CurrentState {
    revision: i64,
    create_revision: i64,
}

/// A history row about to be inserted.
struct NewHistory<'a> {
    revision: i64,
    key: &'a str,
    create_revision: i64,
    prev_revision: i64,
    deleted: bool,
    value: &'a [u8],
}

/// What a batch leaves in `kv_current` for a key it touched.
enum FinalState {
    Live {
        revision: i64,
        create_revision: i64,
        expires_at: Option<i64>,
    },
    Gone,
}

pub(crate) fn expiry(now_ms: i64, ttl: Option<std::time::Duration>) -> Option<i64> {
    ttl.map(|ttl| now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
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
    pub(super) async fn apply_in_transaction(
        &self,
        ops: &[WriteOp],
        now_ms: i64,
    ) -> std::result::Result<Vec<WriteOutcome>, sqlx::Error> {
        let mut held = self.writer.lock().await?;
        let result = self.apply_on(held.conn()?, ops, now_ms).await;
        held.check(result)
    }

    async fn apply_on(
        &self,
        conn: &mut DB::Connection,
        ops: &[WriteOp],
        now_ms: i64,
    ) -> std::result::Result<Vec<WriteOutcome>, sqlx::Error> {
        let mut tx = match self.hooks.begin_write() {
            Some(statement) => sqlx::Connection::begin_with(conn, statement).await?,
            None => sqlx::Connection::begin(conn).await?,
        };
        let head: i64 = sqlx::query_scalar(self.sql.lock_revision)
            .fetch_one(&mut *tx)
            .await?;

        // Current state of every key the batch touches, read under the counter lock, so
        // nothing can change it before commit.
        let mut state: HashMap<&str, Option<CurrentState>> = HashMap::new();
        let mut keys: Vec<&str> = ops.iter().map(WriteOp::key).collect();
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new(
                "SELECT name, revision, create_revision FROM kv_current WHERE name IN (",
            );
            let mut list = query.separated(", ");
            for key in chunk {
                list.push_bind(*key);
            }
            query.push(")");
            for row in query.build().fetch_all(&mut *tx).await? {
                let name: String = row.try_get(0)?;
                let current = CurrentState {
                    revision: row.try_get(1)?,
                    create_revision: row.try_get(2)?,
                };
                // `keys` is sorted, so each name is found by binary search.
                if let Ok(index) = chunk.binary_search(&name.as_str()) {
                    state.insert(chunk[index], Some(current));
                }
            }
        }
        let existed_before: HashMap<&str, bool> = keys
            .iter()
            .map(|k| (*k, state.get(k).is_some_and(Option::is_some)))
            .collect();

        let mut revision = head;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut history: Vec<NewHistory<'_>> = Vec::with_capacity(ops.len());
        let mut finals: HashMap<&str, FinalState> = HashMap::new();
        for op in ops {
            let key = op.key();
            let current = state.get(key).copied().flatten();
            let applies = match (op, current) {
                (WriteOp::Create { .. }, existing) => existing.is_none(),
                (
                    WriteOp::Update {
                        expected_revision, ..
                    },
                    Some(c),
                ) => c.revision == *expected_revision,
                (WriteOp::Update { .. }, None) => false,
                (
                    WriteOp::Delete {
                        expected_revision, ..
                    },
                    Some(c),
                ) => expected_revision.is_none_or(|expected| expected == c.revision),
                (WriteOp::Delete { .. }, None) => false,
            };
            if !applies {
                outcomes.push(WriteOutcome::Conflict {
                    current_revision: current.map(|c| c.revision),
                });
                continue;
            }
            revision += 1;
            let (create_revision, prev_revision) = match current {
                Some(c) => (c.create_revision, c.revision),
                None => (revision, 0),
            };
            match op {
                WriteOp::Create { value, ttl, .. } | WriteOp::Update { value, ttl, .. } => {
                    history.push(NewHistory {
                        revision,
                        key,
                        create_revision,
                        prev_revision,
                        deleted: false,
                        value,
                    });
                    state.insert(
                        key,
                        Some(CurrentState {
                            revision,
                            create_revision,
                        }),
                    );
                    finals.insert(
                        key,
                        FinalState::Live {
                            revision,
                            create_revision,
                            expires_at: expiry(now_ms, *ttl),
                        },
                    );
                }
                WriteOp::Delete { .. } => {
                    history.push(NewHistory {
                        revision,
                        key,
                        create_revision,
                        prev_revision,
                        deleted: true,
                        value: &[],
                    });
                    state.insert(key, None);
                    finals.insert(key, FinalState::Gone);
                }
            }
            outcomes.push(WriteOutcome::Applied { revision });
        }

        if revision == head {
            // Nothing applied: no revision taken, nothing written.
            tx.rollback().await?;
            return Ok(outcomes);
        }

        for chunk in history.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO kv_history (revision, name, create_revision, prev_revision, deleted, value) ",
            );
            query.push_values(chunk, |mut row, h| {
                row.push_bind(h.revision)
                    .push_bind(h.key)
                    .push_bind(h.create_revision)
                    .push_bind(h.prev_revision)
                    .push_bind(h.deleted)
                    .push_bind(h.value);
            });
            query.build().execute(&mut *tx).await?;
        }

        let mut live = Vec::new();
        let mut gone = Vec::new();
        for (key, last) in &finals {
            match last {
                FinalState::Live {
                    revision,
                    create_revision,
                    expires_at,
                } => live.push((*key, *revision, *create_revision, *expires_at)),
                FinalState::Gone if existed_before.get(key).copied().unwrap_or(false) => {
                    gone.push(*key)
                }
                FinalState::Gone => {}
            }
        }
        for chunk in live.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new(
                "INSERT INTO kv_current (name, revision, create_revision, expires_at) ",
            );
            query.push_values(
                chunk,
                |mut row, (key, revision, create_revision, expires_at)| {
                    row.push_bind(*key)
                        .push_bind(*revision)
                        .push_bind(*create_revision)
                        .push_bind(*expires_at);
                },
            );
            query.push(self.sql.upsert_current_suffix);
            query.build().execute(&mut *tx).await?;
        }
        for chunk in gone.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<DB>::new("DELETE FROM kv_current WHERE name IN (");
            let mut list = query.separated(", ");
            for key in chunk {
                list.push_bind(*key);
            }
            query.push(")");
            query.build().execute(&mut *tx).await?;
        }

        sqlx::query(self.sql.set_revision)
            .bind(revision)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(outcomes)
    }
}
