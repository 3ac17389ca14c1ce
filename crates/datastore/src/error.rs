//! Errors of the datastore layer. Each says what failed and with what input; the API layer
//! turns them into Kubernetes `Status` objects.

use super::types::KeyRange;

/// A datastore failure.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    /// The endpoint string could not be understood.
    #[error(
        "datastore endpoint {endpoint}: {reason} (expected sqlite://PATH, postgres://USER@HOST:PORT/DB or mysql://USER:PASS@HOST:PORT/DB)"
    )]
    InvalidEndpoint {
        /// The endpoint as given (credentials masked).
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or refused the connection.
    #[error("datastore endpoint {endpoint}: {source} ({hint})")]
    Connect {
        /// The endpoint (credentials masked).
        endpoint: String,
        /// What to check.
        hint: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database's schema was written by a newer Capstan.
    #[error(
        "datastore endpoint {endpoint}: the schema is at migration {found}, newer than this capstan binary knows (latest {known}); upgrade capstan before pointing it at this database"
    )]
    SchemaTooNew {
        /// The endpoint (credentials masked).
        endpoint: String,
        /// The newest migration applied in the database.
        found: i64,
        /// The newest migration this binary has.
        known: i64,
    },
    /// A schema migration failed.
    #[error("datastore endpoint {endpoint}: schema migration failed: {source}")]
    Migrate {
        /// The endpoint (credentials masked).
        endpoint: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Another server kept the schema migration lock too long.
    #[error(
        "datastore endpoint {endpoint}: another server held the schema migration lock for {seconds} s; check the other servers' logs, then start this one again"
    )]
    MigrationLocked {
        /// The endpoint (credentials masked).
        endpoint: String,
        /// How long this server waited.
        seconds: u32,
    },
    /// A query failed.
    #[error("datastore {operation} failed: {source}")]
    Query {
        /// The operation that ran the query.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A key is not acceptable.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key (truncated, non-printable bytes replaced).
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A value is larger than the datastore accepts.
    #[error("value for key {key:?} is {size} bytes, over the {limit}-byte limit")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The requested revision has been compacted away.
    #[error(
        "revision {requested} has been compacted; the oldest available revision is {compact_revision}"
    )]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The oldest revision that can still be read or watched from.
        compact_revision: i64,
    },
    /// The requested revision is newer than the store's current revision.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The current revision.
        current: i64,
    },
    /// A watcher did not keep up and was cut off so it cannot stall others.
    #[error(
        "watch on {range:?} fell more than {buffered} events behind and was closed at revision {revision}; restart the watch from that revision"
    )]
    WatcherTooSlow {
        /// The watched range.
        range: KeyRange,
        /// Events the watcher may have buffered.
        buffered: usize,
        /// The last revision the watcher received.
        revision: i64,
    },
    /// The write's batch failed as a whole (shared by every write of the batch).
    #[error("{0}")]
    Batch(std::sync::Arc<DatastoreError>),
    /// The store is shutting down.
    #[error("the datastore is shutting down")]
    ShuttingDown,
    /// Data in the database breaks an invariant (for example a missing revision counter).
    #[error("datastore is inconsistent: {0}")]
    Corrupt(String),
}

impl DatastoreError {
    pub(crate) fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> DatastoreError {
        move |source| DatastoreError::Query { operation, source }
    }
}

/// Result of a datastore call.
pub type Result<T, E = DatastoreError> = std::result::Result<T, E>;
