//! Throwaway databases for tests, on any engine, and waits on watches that fail instead of
//! hanging. The datastore's conformance suite uses them, and so do the server's integration
//! tests (`tests/common` of the `capstan` package includes this file).
//!
//! Postgres and MySQL tests create a uniquely named database on the server named by
//! `CAPSTAN_TEST_POSTGRES` / `CAPSTAN_TEST_MYSQL` (admin URLs; unset means the local
//! servers `scripts/test` provides) and drop it afterwards. A server that cannot be reached
//! fails the test with a message saying so: conformance is checked on every engine or the
//! run is red, never quietly skipped. SQLite tests use a file in a temporary folder.

#![allow(dead_code)]

use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use capstan_datastore::{DatastoreConfig, DatastoreMetrics, Engine, Event, Store, Watch, masked};
use sqlx::Connection;

/// The Postgres server tests run against when `CAPSTAN_TEST_POSTGRES` is unset.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The MySQL/MariaDB server tests run against when `CAPSTAN_TEST_MYSQL` is unset.
const DEFAULT_MYSQL: &str = "mysql://root@127.0.0.1:3306/mysql";

/// How long a test waits to reach a database server before failing.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long closing a store may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a test waits for any one watch event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a test database lives.
enum Location {
    /// A file in a folder removed with the fixture.
    Sqlite { dir: tempfile::TempDir },
    /// A database created on a server through `admin_url`.
    Server { admin_url: String, name: String },
}

/// A database of its own for one test, dropped when the test ends. Call
/// [`TestDatabase::cleanup`] at the end of a test to close its stores first; a test that
/// panics drops the database from `Drop` instead (connections and all).
pub struct TestDatabase {
    engine: Engine,
    endpoint: String,
    location: Location,
    /// Stores opened through the fixture, closed by `cleanup`.
    stores: Mutex<Vec<Store>>,
    /// The registry every store of the fixture records into.
    registry: prometheus::Registry,
    metrics: DatastoreMetrics,
    dropped: bool,
}

/// Installs the process-wide TLS provider the datastore's drivers use (as `main` does).
pub fn install_crypto_provider() {
    // Fails only when another test of this process installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A database name no other test (of this or any concurrent run) uses.
fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "capstan_test_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = base
        .split_once("://")
        .unwrap_or_else(|| panic!("admin URL {url} has no scheme://"));
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _)| authority);
    match query {
        Some(query) => format!("{scheme}://{authority}/{database}?{query}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

fn admin_url(engine: Engine) -> (String, &'static str) {
    let (variable, default) = match engine {
        Engine::Postgres => ("CAPSTAN_TEST_POSTGRES", DEFAULT_POSTGRES),
        Engine::MySql => ("CAPSTAN_TEST_MYSQL", DEFAULT_MYSQL),
        Engine::Sqlite => unreachable!("SQLite needs no server"),
    };
    let url = std::env::var(variable)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    (url, variable)
}

impl TestDatabase {
    /// Creates an empty database on `engine`. Panics, saying what to fix, when the server
    /// cannot be reached.
    pub async fn create(engine: Engine) -> TestDatabase {
        install_crypto_provider();
        let (endpoint, location) = match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary folder for the SQLite file");
                let endpoint = format!("sqlite://{}", dir.path().join("state.db").display());
                (endpoint, Location::Sqlite { dir })
            }
            Engine::Postgres | Engine::MySql => {
                let (admin_url, variable) = admin_url(engine);
                let name = unique_name();
                let quoted = quote_identifier(engine, &name);
                execute_on_server(
                    engine,
                    &admin_url,
                    variable,
                    &[format!("CREATE DATABASE {quoted}")],
                )
                .await;
                (
                    with_database(&admin_url, &name),
                    Location::Server { admin_url, name },
                )
            }
        };
        let registry = prometheus::Registry::new();
        let metrics = DatastoreMetrics::new(&registry)
            .expect("a fresh registry holds none of the datastore's families");
        TestDatabase {
            engine,
            endpoint,
            location,
            stores: Mutex::new(Vec::new()),
            registry,
            metrics,
            dropped: false,
        }
    }

    /// The engine the database runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The registry the fixture's stores record their metrics into.
    pub fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// The metrics the fixture's stores record into (for a store opened by hand).
    pub fn metrics(&self) -> &DatastoreMetrics {
        &self.metrics
    }

    /// The datastore endpoint of this database.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// For a database on a server: the admin URL it was created through and its name
    /// (`None` for SQLite).
    pub fn on_server(&self) -> Option<(&str, &str)> {
        match &self.location {
            Location::Server { admin_url, name } => Some((admin_url, name)),
            Location::Sqlite { .. } => None,
        }
    }

    /// A config for this database. Pools are kept small: every store opens a writer, a
    /// feed and (on Postgres) a listener connection besides its pool, tests run in
    /// parallel, and the servers are shared with other users.
    pub fn config(&self) -> DatastoreConfig {
        DatastoreConfig {
            max_connections: 6,
            ..DatastoreConfig::for_endpoint(self.endpoint.clone())
        }
    }

    /// Opens a store (one "server") on this database; closed by `cleanup`.
    pub async fn open(&self) -> Store {
        self.open_with(|_| {}).await
    }

    /// Opens a store with `adjust` applied to [`TestDatabase::config`].
    pub async fn open_with(&self, adjust: impl FnOnce(&mut DatastoreConfig)) -> Store {
        let mut config = self.config();
        adjust(&mut config);
        let store = match Store::open(&config, &self.metrics).await {
            Ok(store) => store,
            Err(err) => panic!("opening a store on {}: {err}", self.endpoint),
        };
        self.stores
            .lock()
            .expect("no test panics while holding the store list")
            .push(store.clone());
        store
    }

    /// An endpoint of this engine where no database can be opened.
    pub fn unreachable_endpoint(&self) -> String {
        match (self.engine, &self.location) {
            // Port 1 (tcpmux) is closed on any ordinary host: connections are refused.
            (Engine::Postgres, _) => "postgres://postgres@127.0.0.1:1/x".to_string(),
            (Engine::MySql, _) => "mysql://root@127.0.0.1:1/x".to_string(),
            // A folder where the database file should be: SQLite cannot open it.
            (Engine::Sqlite, Location::Sqlite { dir }) => {
                format!("sqlite://{}", dir.path().display())
            }
            (Engine::Sqlite, Location::Server { .. }) => {
                unreachable!("SQLite databases are files")
            }
        }
    }

    /// Runs `statement` directly on the test database, outside any store.
    pub async fn execute(&self, statement: &str) {
        let statement = sqlx::AssertSqlSafe(statement.to_string());
        let result = match self.engine {
            Engine::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.endpoint)
                    .await
                    .expect("connect to the test database");
                sqlx::query(statement).execute(&mut conn).await.map(drop)
            }
            Engine::MySql => {
                let mut conn = sqlx::MySqlConnection::connect(&self.endpoint)
                    .await
                    .expect("connect to the test database");
                sqlx::query(statement).execute(&mut conn).await.map(drop)
            }
            Engine::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&self.endpoint)
                    .expect("the fixture's SQLite endpoint parses");
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("open the test database");
                sqlx::query(statement).execute(&mut conn).await.map(drop)
            }
        };
        if let Err(err) = result {
            panic!("executing SQL on {}: {err}", self.endpoint);
        }
    }

    /// Closes the stores opened through the fixture, then drops the database.
    pub async fn cleanup(mut self) {
        let stores = std::mem::take(
            &mut *self
                .stores
                .lock()
                .expect("no test panics while holding the store list"),
        );
        for store in stores {
            // Closing is part of the contract (shutdown stops the writer and the feed): a
            // store that does not close fails the test instead of hanging it.
            if tokio::time::timeout(CLOSE_TIMEOUT, store.close())
                .await
                .is_err()
            {
                panic!(
                    "a store on {} did not close within {CLOSE_TIMEOUT:?}",
                    self.endpoint
                );
            }
        }
        if let Location::Server { admin_url, name } = &self.location {
            drop_database(self.engine, admin_url, name).await;
        }
        self.dropped = true;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let Location::Server { admin_url, name } = &self.location else {
            return; // The temporary folder removes itself.
        };
        // Reached when a test panicked before `cleanup`. Drop (and Drop of a panicking
        // test) cannot await, so the database is dropped from a thread with a runtime of
        // its own; it closes this test's connections server-side.
        let (engine, admin_url, name) = (self.engine, admin_url.clone(), name.clone());
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database");
            runtime.block_on(drop_database(engine, &admin_url, &name));
        });
        let _ = dropper.join();
    }
}

fn quote_identifier(engine: Engine, name: &str) -> String {
    match engine {
        Engine::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

/// Drops a test database, ending any connection still using it. Best effort: a failure
/// is reported but does not fail the test.
async fn drop_database(engine: Engine, admin_url: &str, name: &str) {
    let quoted = quote_identifier(engine, name);
    let statements = match engine {
        Engine::Postgres => vec![format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")],
        Engine::MySql => {
            // A connection inside a transaction would make DROP DATABASE wait for its
            // metadata lock; end every connection on the database first.
            let ids = match sqlx::MySqlConnection::connect(admin_url).await {
                Ok(mut conn) => sqlx::query_scalar::<_, u64>(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?",
                )
                .bind(name)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            let mut statements: Vec<String> = ids.iter().map(|id| format!("KILL {id}")).collect();
            statements.push(format!("DROP DATABASE IF EXISTS {quoted}"));
            statements
        }
        Engine::Sqlite => return,
    };
    let run = async {
        match engine {
            Engine::Postgres => {
                let mut conn = sqlx::PgConnection::connect(admin_url).await?;
                for statement in statements {
                    sqlx::query(sqlx::AssertSqlSafe(statement))
                        .execute(&mut conn)
                        .await?;
                }
            }
            _ => {
                let mut conn = sqlx::MySqlConnection::connect(admin_url).await?;
                for statement in statements {
                    let result = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                        .execute(&mut conn)
                        .await;
                    // A connection may have ended by itself since it was listed.
                    if result.is_err() && !statement.starts_with("KILL") {
                        result?;
                    }
                }
            }
        }
        Ok::<(), sqlx::Error>(())
    };
    if let Err(err) = run.await {
        eprintln!("warning: could not drop test database {name}: {err}");
    }
}

/// Runs `statements` on the server at `admin_url`, failing the test with a clear message
/// when the server cannot be reached.
async fn execute_on_server(engine: Engine, admin_url: &str, variable: &str, statements: &[String]) {
    let unreachable = |err: &dyn std::fmt::Display| -> ! {
        panic!(
            "cannot reach the {} server for datastore tests at {}: {err}\n\
             Start it (scripts/test does) or point {variable} at a reachable server's admin URL.",
            engine.name(),
            masked(admin_url)
        )
    };
    let run = async {
        match engine {
            Engine::Postgres => {
                let mut conn = sqlx::PgConnection::connect(admin_url).await?;
                for statement in statements {
                    sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                        .execute(&mut conn)
                        .await?;
                }
                conn.close().await
            }
            _ => {
                let mut conn = sqlx::MySqlConnection::connect(admin_url).await?;
                for statement in statements {
                    sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                        .execute(&mut conn)
                        .await?;
                }
                conn.close().await
            }
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, run).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => unreachable(&err),
        Err(_) => unreachable(&format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// The next event of `watch`; fails the test if the watch errs, ends, or stays silent for
/// [`EVENT_TIMEOUT`].
pub async fn next_event(watch: &mut Watch) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(err))) => panic!("the watch failed: {err}"),
        Ok(None) => panic!("the watch ended while events were expected"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Every event of `watch` up to and including revision `last`.
pub async fn events_through(watch: &mut Watch, last: i64) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let event = next_event(watch).await;
        let revision = event.revision;
        events.push(event);
        if revision >= last {
            return events;
        }
    }
}
