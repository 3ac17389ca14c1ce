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

/// The three pools of a backend (see `SqlBackend` in `sql.rs`).
pub(crate) struct Pools<DB: Database> {
    pub shared: Pool<DB>,
    pub writer: Pool<DB>,
    pub feed: Pool<DB>,
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
        writer,
        feed,
    })
}
