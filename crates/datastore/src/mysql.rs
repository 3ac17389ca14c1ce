//! MySQL and MariaDB: named locks (`GET_LOCK`) for leaders; no push notification exists,
//! so the change feed polls (adaptively, see `feed.rs`). Sessions run at READ COMMITTED so
//! every statement of a write transaction sees what the previous lock holder committed.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlSslMode};
use sqlx::{Connection, Executor, MySql};

use super::backend::{ChangeSignal, Engine, LockLease};
use super::config::DatastoreConfig;
use super::error::{DatastoreError, Result};
use super::pools::{connect_pools, pool_options};
use super::sql::{EngineHooks, SqlBackend};
use super::statements::{Statements, Templates};
use super::{connect_error, masked};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

fn statements() -> &'static Statements {
    static STATEMENTS: OnceLock<Statements> = OnceLock::new();
    STATEMENTS.get_or_init(|| {
        Templates {
            for_update: " FOR UPDATE",
            upsert_current_suffix: " ON DUPLICATE KEY UPDATE revision = VALUES(revision), \
                 create_revision = VALUES(create_revision), expires_at = VALUES(expires_at)",
            dollar_placeholders: false,
        }
        .build()
    })
}

/// Connects (creating the database if it is missing and we may), migrates, and returns
/// the backend.
pub(crate) async fn open(config: &DatastoreConfig) -> Result<SqlBackend<MySql>> {
    let endpoint = masked(&config.endpoint);
    let mut options = MySqlConnectOptions::from_str(&config.endpoint).map_err(|e| {
        DatastoreError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        }
    })?;
    if let Some(ca) = &config.cafile {
        options = options.ssl_mode(MySqlSslMode::VerifyIdentity).ssl_ca(ca);
    }
    if let Some(cert) = &config.certfile {
        options = options.ssl_client_cert(cert);
    }
    if let Some(key) = &config.keyfile {
        options = options.ssl_client_key(key);
    }
    if !config.prepared_statements {
        options = options.statement_cache_capacity(0);
    }
    let pool_options = pool_options::<MySql>(config).after_connect(|conn, _| {
        Box::pin(async move {
            conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                .await?;
            Ok(())
        })
    });

    let database = options.get_database().unwrap_or("capstan").to_string();
    let migration_lock = lock_migrations(&options, &database, &endpoint).await?;
    let pools = connect_pools(
        options.clone(),
        pool_options,
        &MIGRATOR,
        &endpoint,
        is_missing_database,
        create_database(&options, &endpoint),
    )
    .await;
    // Closing the connection releases the lock, also when connecting or migrating failed.
    migration_lock.close().await.ok();
    let pools = pools?;
    let hooks = Arc::new(MySqlHooks {
        pool: pools.shared.clone(),
        database,
    });
    Ok(SqlBackend::new(pools, statements(), Engine::MySql, hooks))
}

fn is_missing_database(err: &sqlx::Error) -> bool {
    // ER_BAD_DB_ERROR
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("42000")
        && db.message().contains("Unknown database"))
}

async fn create_database(options: &MySqlConnectOptions, endpoint: &str) -> Result<()> {
    let name = options.get_database().unwrap_or("capstan").to_string();
    let server = options.clone().database("");
    let mut conn = sqlx::MySqlConnection::connect_with(&server)
        .await
        .map_err(connect_error(endpoint))?;
    let quoted = format!("`{}`", name.replace('`', "``"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE IF NOT EXISTS {quoted}"
    )))
    .execute(&mut conn)
    .await
    .map_err(connect_error(endpoint))?;
    tracing::info!(database = %name, "created the datastore database");
    conn.close().await.ok();
    Ok(())
}

struct MySqlHooks {
    pool: MySqlPool,
    database: String,
}

impl MySqlHooks {
    fn lock_name(&self, name: &str) -> String {
        lock_name(&self.database, name)
    }
}

/// `GET_LOCK` names are server-wide (not per database) and at most 64 characters, so the
/// database name is part of the lock name and long names are hashed.
fn lock_name(database: &str, name: &str) -> String {
    let full = format!("capstan.{database}.{name}");
    if full.len() <= 64 {
        return full;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in full.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("capstan.{hash:016x}")
}

/// How long a server waits for another one's schema migration before giving up.
const MIGRATION_WAIT_SECONDS: u32 = 120;

/// Holds the server-wide named lock `capstan.<database>.migrate` on its own connection
/// while the pools connect and migrate. sqlx's own migration lock did not keep servers
/// started at the same moment on a fresh MariaDB database apart: two of them ran the first
/// migration and one failed on its `INSERT` ("Duplicate entry '1'"). The connection has no
/// default database, so it works before the database exists.
async fn lock_migrations(
    options: &MySqlConnectOptions,
    database: &str,
    endpoint: &str,
) -> Result<sqlx::MySqlConnection> {
    let server = options.clone().database("");
    let mut conn = sqlx::MySqlConnection::connect_with(&server)
        .await
        .map_err(connect_error(endpoint))?;
    let obtained: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(lock_name(database, "migrate"))
        .bind(MIGRATION_WAIT_SECONDS)
        .fetch_one(&mut conn)
        .await
        .map_err(connect_error(endpoint))?;
    if obtained != Some(1) {
        return Err(DatastoreError::MigrationLocked {
            endpoint: endpoint.to_string(),
            seconds: MIGRATION_WAIT_SECONDS,
        });
    }
    Ok(conn)
}

#[async_trait]
impl EngineHooks for MySqlHooks {
    fn begin_write(&self) -> Option<&'static str> {
        None
    }

    async fn try_lock(&self, name: &str, _holder: &str) -> Result<Option<Box<dyn LockLease>>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(DatastoreError::query("leader lock"))?
            .detach();
        let lock = self.lock_name(name);
        let held: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
            .bind(lock.as_str())
            .fetch_one(&mut conn)
            .await
            .map_err(DatastoreError::query("leader lock"))?;
        if held != Some(1) {
            conn.close().await.ok();
            return Ok(None);
        }
        Ok(Some(Box::new(MySqlLock { conn, name: lock })))
    }

    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>> {
        Ok(None)
    }

    async fn announce(&self, _revision: i64) -> Result<()> {
        Ok(())
    }
}

struct MySqlLock {
    conn: sqlx::MySqlConnection,
    name: String,
}

#[async_trait]
impl LockLease for MySqlLock {
    async fn still_held(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }

    async fn release(mut self: Box<Self>) {
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(self.name.as_str())
            .execute(&mut self.conn)
            .await;
        self.conn.close().await.ok();
    }
}
