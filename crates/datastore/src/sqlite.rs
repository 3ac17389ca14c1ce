//! The embedded SQLite file, the single-server default. WAL mode lets readers run beside
//! the one writer; write transactions start with `BEGIN IMMEDIATE` so contention waits in
//! SQLite's busy handler instead of failing with "database is locked". Leader locks are
//! leases in the `kv_lock` table (there are no advisory locks), which also makes them
//! correct for several store instances on one file.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use super::backend::{ChangeSignal, Engine, LockLease};
use super::config::DatastoreConfig;
use super::error::{DatastoreError, Result};
use super::masked;
use super::pools::{connect_pools, pool_options};
use super::sql::{EngineHooks, SqlBackend};
use super::statements::{Statements, Templates};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a leader lease lasts without renewal.
const LEASE: Duration = Duration::from_secs(15);

fn statements() -> &'static Statements {
    static STATEMENTS: OnceLock<Statements> = OnceLock::new();
    STATEMENTS.get_or_init(|| {
        Templates {
            for_update: "",
            upsert_current_suffix: " ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, \
                 create_revision = excluded.create_revision, expires_at = excluded.expires_at",
            dollar_placeholders: false,
        }
        .build()
    })
}

/// The files SQLite keeps beside the database: they hold the same data (the WAL holds
/// every recent write, Secrets included).
const COMPANION_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Makes the database's folder (0700) and file (0600) private to this user, creating them
/// when missing and tightening them when another user could read them. SQLite gives its
/// WAL, shared-memory and journal files the database file's mode, so they follow; the ones
/// already there are tightened too.
fn restrict_to_owner(file: &Path, parent: Option<&Path>) -> Result<(), String> {
    use std::os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    };
    let tighten = |path: &Path, mode: u32| -> Result<(), String> {
        let current = match std::fs::metadata(path) {
            Ok(metadata) => metadata.permissions().mode() & 0o777,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        if current & 0o077 == 0 {
            return Ok(());
        }
        tracing::warn!(path = %path.display(), mode = format!("{current:o}"), "the datastore is readable by other users; restricting it to its owner");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|error| {
            format!(
                "{} is readable by other users (mode {current:o}) and cannot be restricted: {error} (run as its owner, or chmod {mode:o} it)",
                path.display()
            )
        })
    };
    if let Some(parent) = parent {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot create folder {}: {e}", parent.display()))?;
    }
    let created = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .and_then(|opened| opened.metadata());
    // A path that cannot be a file (a folder, say) is left for SQLite to refuse, with the
    // connect error that names the endpoint.
    let Ok(created) = created else {
        return Ok(());
    };
    // The folder is tightened only when it is this user's own and not a shared one (a
    // sticky-bit folder such as /tmp is everyone's: making it private would break others).
    if let Some(parent) = parent
        && let Ok(folder) = std::fs::metadata(parent)
        && folder.uid() == created.uid()
        && folder.permissions().mode() & 0o1000 == 0
    {
        tighten(parent, 0o700)?;
    }
    tighten(file, 0o600)?;
    for suffix in COMPANION_SUFFIXES {
        let mut companion = file.as_os_str().to_owned();
        companion.push(suffix);
        tighten(Path::new(&companion), 0o600)?;
    }
    Ok(())
}

/// Opens (creating the file and its folder if missing), migrates, and returns the backend.
pub(crate) async fn open(config: &DatastoreConfig) -> Result<SqlBackend<Sqlite>> {
    let endpoint = masked(&config.endpoint);
    let path = config
        .endpoint
        .strip_prefix("sqlite://")
        .or_else(|| config.endpoint.strip_prefix("sqlite:"))
        .unwrap_or(&config.endpoint);
    let (file, _query) = path.split_once('?').unwrap_or((path, ""));
    if file.is_empty() {
        return Err(DatastoreError::InvalidEndpoint {
            endpoint,
            reason: "no file path given".into(),
        });
    }
    let parent = Path::new(file)
        .parent()
        .filter(|p| !p.as_os_str().is_empty());
    if file != ":memory:" {
        restrict_to_owner(Path::new(file), parent).map_err(|reason| {
            DatastoreError::InvalidEndpoint {
                endpoint: endpoint.clone(),
                reason,
            }
        })?;
    }
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
        .map_err(|e| DatastoreError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30));
    // One writer at a time anyway; a few readers beside it.
    let pool_options =
        pool_options::<Sqlite>(config).max_connections(config.max_connections.clamp(2, 8));
    // SQLite creates a missing file itself (create_if_missing), so nothing is "missing".
    let pools = connect_pools(
        options,
        pool_options,
        &MIGRATOR,
        &endpoint,
        |_| false,
        async { Ok(()) },
    )
    .await?;
    let hooks = Arc::new(SqliteHooks {
        pool: pools.shared.clone(),
    });
    Ok(SqlBackend::new(pools, statements(), Engine::Sqlite, hooks))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct SqliteHooks {
    pool: SqlitePool,
}

#[async_trait]
impl EngineHooks for SqliteHooks {
    fn begin_write(&self) -> Option<&'static str> {
        Some("BEGIN IMMEDIATE")
    }

    async fn try_lock(&self, name: &str, holder: &str) -> Result<Option<Box<dyn LockLease>>> {
        let lease = SqliteLease {
            pool: self.pool.clone(),
            name: name.to_string(),
            holder: holder.to_string(),
        };
        Ok(if lease.claim().await? {
            Some(Box::new(lease))
        } else {
            None
        })
    }

    async fn change_signal(&self) -> Result<Option<Box<dyn ChangeSignal>>> {
        Ok(None)
    }

    async fn announce(&self, _revision: i64) -> Result<()> {
        Ok(())
    }
}

struct SqliteLease {
    pool: SqlitePool,
    name: String,
    holder: String,
}

impl SqliteLease {
    /// Takes or renews the lease: free, expired, or already ours.
    async fn claim(&self) -> Result<bool> {
        let now = now_ms();
        let expires = now + LEASE.as_millis() as i64;
        let result = sqlx::query(
            "INSERT INTO kv_lock (name, holder, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE kv_lock.holder = excluded.holder OR kv_lock.expires_at < ?",
        )
        .bind(self.name.as_str())
        .bind(self.holder.as_str())
        .bind(expires)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(DatastoreError::query("leader lock"))?;
        Ok(result.rows_affected() == 1)
    }
}

#[async_trait]
impl LockLease for SqliteLease {
    async fn still_held(&mut self) -> bool {
        self.claim().await.unwrap_or(false)
    }

    async fn release(self: Box<Self>) {
        let _ = sqlx::query("DELETE FROM kv_lock WHERE name = ? AND holder = ?")
            .bind(self.name.as_str())
            .bind(self.holder.as_str())
            .execute(&self.pool)
            .await;
    }
}
