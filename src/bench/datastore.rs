//! `capstan bench datastore`: drives N store instances (as N servers would) on one database.

use clap::Args;

/// Options of `capstan bench datastore`.
#[derive(Debug, Clone, Args)]
pub struct DatastoreBenchArgs {
    /// Datastore endpoint (sqlite://PATH, postgres://…, mysql://…).
    #[arg(long)]
    pub endpoint: String,
    /// Store instances on the database, as that many servers would run.
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// Concurrent writers, spread over the instances.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Watchers per instance.
    #[arg(long, default_value_t = 2)]
    pub watchers: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_bytes: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: DatastoreBenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench datastore is not built yet (endpoint {})", args.endpoint)
}
