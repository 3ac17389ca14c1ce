//! The `capstan` binary: parses the command line, loads the configuration, starts tracing
//! and hands over to a layer (`server::run`, `bench::datastore::run`). Nothing else lives
//! here.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use capstan::bench::api::ApiBenchArgs;
use capstan::bench::chaos::ChaosBenchArgs;
use capstan::bench::datastore::DatastoreBenchArgs;
use capstan::bench::etcd::EtcdBenchArgs;
use capstan::bench::join::JoinBenchArgs;
use capstan::bench::plot::PlotArgs;
use capstan::bench::watches::WatchBenchArgs;
use capstan::config::{self, LogFormat, ServerFlags};
use capstan::token::TokenArgs;
use capstan_agent::AgentFlags;

/// A Kubernetes control plane in one binary, highly available on an external SQL datastore.
#[derive(Parser)]
#[command(name = "capstan", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server (today: the datastore and its maintenance; the API comes later).
    Server(Box<ServerFlags>),
    /// Print the cluster token (`<data-dir>/server/token`), or rotate it.
    Token(Box<TokenArgs>),
    /// Show the servers, agents and datastore of the cluster (reads the datastore directly).
    Status(Box<StatusArgs>),
    /// Join a cluster as a node: register, keep the server list, serve a local load balancer.
    Agent(Box<AgentFlags>),
    /// Load generators to measure your own datastore and cluster.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `capstan status`: the server's configuration flags, plus the output format.
#[derive(clap::Args)]
struct StatusArgs {
    /// `text` (aligned columns) or `json`.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    output: StatusOutput,
    #[command(flatten)]
    flags: ServerFlags,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StatusOutput {
    Text,
    Json,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Writers, readers and watchers against a datastore endpoint; checks every event arrives.
    Datastore(DatastoreBenchArgs),
    /// Many simulated agents registering at once; join latency and spread over servers.
    Join(JoinBenchArgs),
    /// Thousands of watches on one server: its memory, and how fast a write reaches them all.
    Watches(WatchBenchArgs),
    /// The create load of `bench api`, put straight into an etcd v3 server (the reference).
    Etcd(EtcdBenchArgs),
    /// Draws latency against load from saved `bench api` / `bench etcd` JSON reports (SVG).
    Plot(PlotArgs),
    /// Creates, gets, updates, lists, deletes and watches against a cluster, with simulated
    /// node heartbeats: latency per verb and proof that no watch event is lost.
    Api(Box<ApiBenchArgs>),
    /// Servers, clients and watchers under a fault schedule; checks the history for anomalies.
    Chaos(Box<ChaosBenchArgs>),
}

/// mimalloc instead of the system allocator: the server allocates many small JSON values
/// per request, and glibc's malloc and free took about a quarter of its CPU under a create
/// load (perf, `capstan bench api --workload create`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Only ring is compiled in; installing it explicitly keeps rustls from guessing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Server(flags) => serve(*flags).await,
        Command::Token(args) => token(*args).await,
        Command::Status(args) => status(*args).await,
        Command::Agent(flags) => agent(*flags).await,
        Command::Bench(BenchCommand::Datastore(args)) => bench_datastore(args).await,
        Command::Bench(BenchCommand::Join(args)) => bench_join(args).await,
        Command::Bench(BenchCommand::Watches(args)) => bench_watches(args).await,
        Command::Bench(BenchCommand::Etcd(args)) => bench_etcd(args).await,
        Command::Bench(BenchCommand::Plot(args)) => {
            capstan::bench::plot::run(&args).map(|()| ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Api(args)) => bench_api(*args).await,
        Command::Bench(BenchCommand::Chaos(args)) => bench_chaos(*args).await,
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("capstan: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

async fn serve(flags: ServerFlags) -> anyhow::Result<ExitCode> {
    if flags.print_reference {
        print!("{}", config::server_reference());
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = config::load(&flags)?;
    if flags.print_config {
        print!("{}", loaded.render());
        return Ok(ExitCode::SUCCESS);
    }
    let config = loaded.config;
    init_tracing(config.log_format, config.log_level.as_deref())?;

    let shutdown = CancellationToken::new();
    let server = capstan::server::run(config, shutdown.clone());
    tokio::pin!(server);
    tokio::select! {
        finished = &mut server => return finished.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        signal = shutdown_signal() => {
            let name = signal.context("cannot listen for shutdown signals")?;
            tracing::info!(signal = name, "shutdown requested (send it again to exit at once)");
            shutdown.cancel();
        }
    }
    tokio::select! {
        finished = &mut server => finished.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        _ = shutdown_signal() => {
            tracing::warn!("second signal: exiting without waiting for shutdown to finish");
            Ok(ExitCode::from(130))
        }
    }
}

async fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    // The token goes to stdout; the datastore's chatter would only get in the way.
    init_tracing(
        LogFormat::Text,
        Some(std::env::var("RUST_LOG").as_deref().unwrap_or("error")),
    )?;
    capstan::token::command(args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let config = config::load(&args.flags)?.config;
    init_tracing(
        LogFormat::Text,
        Some(std::env::var("RUST_LOG").as_deref().unwrap_or("warn")),
    )?;
    let json = matches!(args.output, StatusOutput::Json);
    print!("{}", capstan::status::run(&config, json).await?);
    Ok(ExitCode::SUCCESS)
}

async fn agent(flags: AgentFlags) -> anyhow::Result<ExitCode> {
    if flags.print_reference {
        print!("{}", capstan_agent::settings::reference());
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = capstan_agent::settings::load(&flags)?;
    if flags.print_config {
        print!("{}", loaded.render());
        return Ok(ExitCode::SUCCESS);
    }
    init_tracing(LogFormat::Text, loaded.config.log_level.as_deref())?;
    let config = capstan_agent::AgentConfig::from_settings(&loaded.config)?;
    let shutdown = CancellationToken::new();
    let agent = capstan_agent::run(config, shutdown.clone());
    tokio::pin!(agent);
    tokio::select! {
        finished = &mut agent => return finished.map(|()| ExitCode::SUCCESS).map_err(Into::into),
        signal = shutdown_signal() => {
            let name = signal.context("cannot listen for shutdown signals")?;
            tracing::info!(signal = name, "shutdown requested");
            shutdown.cancel();
        }
    }
    agent.await?;
    Ok(ExitCode::SUCCESS)
}

async fn bench_join(args: JoinBenchArgs) -> anyhow::Result<ExitCode> {
    init_tracing(
        LogFormat::Text,
        Some(std::env::var("RUST_LOG").as_deref().unwrap_or("warn")),
    )?;
    capstan::bench::join::run(args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn bench_watches(args: WatchBenchArgs) -> anyhow::Result<ExitCode> {
    init_tracing(
        LogFormat::Text,
        Some(std::env::var("RUST_LOG").as_deref().unwrap_or("warn")),
    )?;
    let report = capstan::bench::watches::run(args).await?;
    Ok(
        if report.events_missed == 0 && report.watches_established == report.watches {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

async fn bench_etcd(args: EtcdBenchArgs) -> anyhow::Result<ExitCode> {
    init_tracing(
        LogFormat::Text,
        Some(std::env::var("RUST_LOG").as_deref().unwrap_or("warn")),
    )?;
    let report = capstan::bench::etcd::run(args).await?;
    Ok(if report.errors == 0 && report.writes > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn bench_chaos(args: ChaosBenchArgs) -> anyhow::Result<ExitCode> {
    init_tracing(
        LogFormat::Text,
        Some(std::env::var("RUST_LOG").as_deref().unwrap_or("warn")),
    )?;
    // On Ctrl-C or SIGTERM the run is dropped, which kills its servers and stops its
    // private database, instead of leaving them behind.
    let report = tokio::select! {
        report = capstan::bench::chaos::run(args) => report?,
        signal = shutdown_signal() => {
            let name = signal.context("cannot listen for shutdown signals")?;
            anyhow::bail!("interrupted by {name}; servers and the private database were stopped");
        }
    };
    Ok(if report.anomalies == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn bench_api(args: ApiBenchArgs) -> anyhow::Result<ExitCode> {
    init_tracing(
        LogFormat::Text,
        Some(std::env::var("RUST_LOG").as_deref().unwrap_or("warn")),
    )?;
    let report = capstan::bench::api::run(args).await?;
    Ok(
        if report.events_missed == 0
            && report.events_duplicated == 0
            && report.events_out_of_order == 0
        {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

async fn bench_datastore(args: DatastoreBenchArgs) -> anyhow::Result<ExitCode> {
    // Reports go to stdout; keep logs quiet and on stderr unless RUST_LOG asks for more.
    init_tracing(
        LogFormat::Text,
        Some(std::env::var("RUST_LOG").as_deref().unwrap_or("warn")),
    )?;
    capstan::bench::datastore::run(args).await?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr. The level is `--log-level` if given, else `RUST_LOG`, else `info`.
fn init_tracing(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level.map(str::trim).filter(|level| !level.is_empty()) {
        Some(level) => EnvFilter::try_new(level)
            .with_context(|| format!("log level {level:?} is not a valid filter"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot start logging: {error}"))
}

/// Waits for SIGINT or SIGTERM and says which arrived.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    })
}

/// The error and its causes on one line, leaving out causes the message already quotes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = inner.source();
    }
    line
}
