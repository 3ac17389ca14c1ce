//! Connecting an engine: the probe connection, the shared pool, migrations, and the
//! writer's and the change feed's own connections.

use std::time::Duration;

use sqlx::pool::PoolOptions;
use sqlx::{Database, Pool};

use super::config::DatastoreConfig;

use super::error::Result;

/// The pool policy every engine shares: at most `max_connections`, waiting at most
/// `acquire_timeout_ms` for one (back-pressure, not an unbounded queue), and some kept open
/// while idle. Opening a connection costs a TLS handshake (~90 ms measured on loopback with
/// Postgres' default `sslmode=prefer`); a pool that grew only on demand put that cost on the
/// request path, as 100 ms stalls in the change feed. No ping before each checkout: it
/// costs a round trip per query, and a dead connection fails its query, which callers
/// handle anyway.
pub(crate) fn pool_options<DB: Database>(config: &DatastoreConfig) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(config.max_connections.max(2))
        .acquire_timeout(Duration::from_millis(config.acquire_timeout_ms))
        .min_connections((config.max_connections / 2).clamp(2, 8))
        .test_before_acquire(false)
}

/// The three pools of a backend (see `SqlBackend` in `sql/mod.rs`).
pub(crate) struct Pools<DB: Database> {
    pub shared: Pool<DB>,
    /// Shared with an engine's own apply (`EngineHooks::apply`).
    pub writer: std::sync::Arc<Held<DB>>,
    pub feed: Held<DB>,
}

/// Connects to an engine. A direct first connection comes first because its error names
/// the real problem (refused, bad password, missing database) where a pool only reports a
/// timeout after retrying; when `is_missing` recognises a missing database, `create` makes
/// it. Then the shared pool, the schema migrations, and the writer's and the feed's own
/// one-connection pools (reopened automatically if their connection breaks).
pub(crate) async fn connect_pools<DB, Create>(
    connect: <DB::Connection as sqlx::Connection>::Options,
    pool_options: sqlx::pool::PoolOptions<DB>,
    migrator: &sqlx::migrate::Migrator,
    endpoint: &str,
    is_missing: fn(&sqlx::Error) -> bool,
    create: Create,
) -> Result<Pools<DB>>
where
    DB: Database,
    DB::Connection: sqlx::migrate::Migrate,
    Create: std::future::Future<Output = Result<()>>,
{
    let first = <DB::Connection as sqlx::Connection>::connect_with(&connect);
    match tokio::time::timeout(pool_options.get_acquire_timeout(), first).await {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(Err(err)) if is_missing(&err) => create.await?,
        Ok(Err(err)) => return Err(super::connect_error(endpoint)(err)),
        Err(_) => return Err(super::connect_error(endpoint)(sqlx::Error::PoolTimedOut)),
    }
    let open = |options: sqlx::pool::PoolOptions<DB>| {
        let connect = connect.clone();
        async move {
            options
                .connect_with(connect)
                .await
                .map_err(super::connect_error(endpoint))
        }
    };
    let shared = open(pool_options.clone()).await?;
    super::migrate(migrator, &shared, endpoint).await?;
    let single = pool_options.max_connections(1).min_connections(1);
    let writer = open(single.clone()).await?;
    let feed = open(single).await?;
    Ok(Pools {
        shared,
        writer: std::sync::Arc::new(Held::new(writer)),
        feed: Held::new(feed),
    })
}

/// The one connection of a loop that queries all the time (the batching writer, the change
/// feed's poller), kept checked out of its one-connection pool. A sqlx pool pings every
/// connection given back to it, so a query through the pool costs two round trips; held,
/// the connection goes back only after a query on it failed (it may be broken), and the next
/// use checks out a fresh one, which the pool reconnects as needed.
pub(crate) struct Held<DB: Database> {
    pool: Pool<DB>,
    slot: tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<DB>>>,
}

/// Exclusive use of a [`Held`] connection until dropped.
pub(crate) struct HeldGuard<'a, DB: Database> {
    slot: tokio::sync::MutexGuard<'a, Option<sqlx::pool::PoolConnection<DB>>>,
    /// Between `conn` and `check`: dropped then (a cancelled query), the connection may be
    /// mid-exchange, so it goes back to the pool to be checked.
    in_use: bool,
}

impl<DB: Database> Held<DB> {
    pub(crate) fn new(pool: Pool<DB>) -> Held<DB> {
        Held {
            pool,
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, checked out first if none is held.
    pub(crate) async fn lock(&self) -> std::result::Result<HeldGuard<'_, DB>, sqlx::Error> {
        let mut slot = self.slot.lock().await;
        if slot.is_none() {
            *slot = Some(self.pool.acquire().await?);
        }
        Ok(HeldGuard {
            slot,
            in_use: false,
        })
    }

    /// Gives the connection back and closes the pool.
    pub(crate) async fn close(&self) {
        self.release().await;
        self.pool.close().await;
    }

    /// Gives the connection back to the pool.
    pub(crate) async fn release(&self) {
        self.slot.lock().await.take();
    }
}

impl<DB: Database> HeldGuard<'_, DB> {
    /// The connection (`lock` made sure there is one).
    pub(crate) fn conn(&mut self) -> std::result::Result<&mut DB::Connection, sqlx::Error> {
        self.in_use = true;
        self.slot.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Passes `result` through; on an error the connection goes back to the pool (which
    /// checks it) and the next `lock` takes another.
    pub(crate) fn check<T>(
        &mut self,
        result: std::result::Result<T, sqlx::Error>,
    ) -> std::result::Result<T, sqlx::Error> {
        self.in_use = false;
        if result.is_err() {
            self.slot.take();
        }
        result
    }
}

impl<DB: Database> Drop for HeldGuard<'_, DB> {
    fn drop(&mut self) {
        if self.in_use {
            self.slot.take();
        }
    }
}
