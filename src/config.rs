//! The server's configuration: one struct, [`ServerConfig`], and the layers it is read from.
//!
//! Layers, later ones winning key by key (the contract in ARCHITECTURE.md):
//!
//! 1. defaults ([`ServerConfig::default`]);
//! 2. the config file, `--config FILE` (default `/etc/capstan/config.yaml`; the default may
//!    be absent, a file named explicitly must exist);
//! 3. its drop-ins, `FILE.d/*.yaml` in alphabetical order;
//! 4. environment variables `CAPSTAN_<KEY>` (upper snake case, e.g. `CAPSTAN_DATA_DIR`);
//! 5. command-line flags, only those given.
//!
//! Keys are the flag names (`data-dir`, `datastore-endpoint`). Figment merges the layers;
//! every layer is its own provider with its own metadata so `--print-config` can say where
//! each effective value came from. YAML is read through serde-saphyr (figment's own `yaml`
//! feature pulls the archived serde_yaml). Unknown keys in a file are an error naming the
//! key and the file, because a misspelt key silently ignored is a setting silently lost.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use capstan_config::{ConfigError, Loaded, Settings};
use capstan_config::{
    derived_log_level, host_name, list_or_commas, load_layers, process_env, reference, yaml_scalar,
};
use capstan_datastore::{DatastoreConfig, masked};

/// Where the config file is read from when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/capstan/config.yaml";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

capstan_config::declare_settings! {
    /// Everything `capstan server` can be told. Each field is a key of the config file, a flag
    /// (`--<key>`) and an environment variable (`CAPSTAN_<KEY>`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    pub struct ServerConfig;

    /// The flag layer: every key of [`ServerConfig`] as an optional flag, plus the flags that
    /// choose and show the configuration. Only flags given on the command line override.
    #[derive(Debug, Default, Clone, clap::Args, Serialize)]
    #[serde(rename_all = "kebab-case")]
    pub struct ServerFlags {
        /// Config file (YAML) [default: /etc/capstan/config.yaml, if it exists]. Its drop-ins
        /// FILE.d/*.yaml are read after it, in alphabetical order.
        #[arg(long, short = 'c', env = "CAPSTAN_CONFIG", value_name = "FILE")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Print the effective configuration with the source of each value, then exit.
        #[arg(long)]
        #[serde(skip)]
        pub print_config: bool,
        /// Print every configuration key with its type, default and meaning (Markdown), then exit.
        #[arg(long)]
        #[serde(skip)]
        pub print_reference: bool,
    }

    keys {
        /// Folder for this server's state: the embedded SQLite database, generated files and the
        /// admin kubeconfig.
        #[flag(
            help = "Folder for this server's state [default: /var/lib/capstan].",
            value_name = "DIR",
        )]
        data_dir: PathBuf = PathBuf::from("/var/lib/capstan"),
        /// `sqlite://PATH`, `postgres://USER[:PASS]@HOST[:PORT]/DB` or
        /// `mysql://USER[:PASS]@HOST[:PORT]/DB`. Empty means the embedded SQLite file
        /// `<data-dir>/server/db/state.db`. The database is created if missing.
        #[flag(
            help = "sqlite://PATH, postgres://USER[:PASS]@HOST[:PORT]/DB or mysql://… [default: \
             SQLite under data-dir].",
            value_name = "URL",
        )]
        datastore_endpoint: String = String::new(),
        /// CA bundle that verifies the database server's certificate (turns on verified TLS).
        #[flag(
            help = "CA bundle verifying the database server's certificate.",
            value_name = "FILE",
        )]
        datastore_cafile: Option<PathBuf> = None,
        /// Client certificate for TLS to the database.
        #[flag(help = "Client certificate for TLS to the database.", value_name = "FILE")]
        datastore_certfile: Option<PathBuf> = None,
        /// Client key for TLS to the database.
        #[flag(help = "Client key for TLS to the database.", value_name = "FILE")]
        datastore_keyfile: Option<PathBuf> = None,
        /// Most connections this server opens to the database; further requests wait.
        #[flag(help = "Most connections to the database.", value_name = "N")]
        datastore_max_connections: u32 = DatastoreConfig::default().max_connections,
        /// Longest pause between change-feed polls while nothing changes, in milliseconds
        /// (on Postgres LISTEN/NOTIFY wakes the feed at once and this is only the fallback).
        #[flag(
            help = "Longest pause between change-feed polls, in milliseconds.",
            value_name = "MS",
        )]
        datastore_poll_interval_ms: u64 = DatastoreConfig::default().poll_interval_ms,
        /// Keep at least this many revisions of history.
        #[flag(help = "Keep at least this many revisions of history.", value_name = "N")]
        datastore_compact_retain_revisions: i64 = DatastoreConfig::default().compact_retain_revisions,
        /// Keep history younger than this many seconds.
        #[flag(help = "Keep history younger than this many seconds.", value_name = "SECONDS")]
        datastore_compact_retain_seconds: u64 = DatastoreConfig::default().compact_retain_seconds,
        /// Seconds between compaction rounds.
        #[flag(help = "Seconds between compaction rounds.", value_name = "SECONDS")]
        datastore_compact_interval_seconds: u64 = DatastoreConfig::default().compact_interval_seconds,
        /// Keep prepared statements cached per connection (false prepares each query afresh;
        /// it does not make PgBouncer's transaction mode work, see the README).
        #[flag(
            help = "Keep prepared statements cached per connection (see the README on PgBouncer).",
            value_name = "BOOL",
        )]
        datastore_prepared_statements: bool = DatastoreConfig::default().prepared_statements,
        /// Bytes of events one watcher may have queued before it is cut off (it lists again).
        #[flag(
            help = "Bytes of events one watcher may have queued before it is cut off.",
            value_name = "BYTES",
        )]
        watch_queue_bytes: usize = DatastoreConfig::default().watch_queue_bytes,
        /// Bytes of events queued for all watchers of this server together.
        #[flag(
            help = "Bytes of events queued for all watchers of this server together.",
            value_name = "BYTES",
        )]
        watch_queue_total_bytes: usize = DatastoreConfig::default().watch_queue_total_bytes,
        /// Shared secret of the cluster: agents and servers join with it.
        #[flag(help = "Shared secret of the cluster.", value_name = "TOKEN")]
        token: String = String::new(),
        /// Address the HTTPS API listens on.
        #[flag(help = "Address the HTTPS API listens on [default: 0.0.0.0].", value_name = "IP")]
        bind_address: IpAddr = IpAddr::from([0, 0, 0, 0]),
        /// Port of the HTTPS API.
        #[flag(help = "Port of the HTTPS API [default: 6443].", value_name = "PORT")]
        https_listen_port: u16 = 6443,
        /// Read-only requests (get, list, discovery) served at once, watches and health checks
        /// excluded; more get 429 with Retry-After (kube-apiserver's flag and default).
        #[flag(
            help = "Read-only requests served at once, watches excluded; more get 429 [default: \
             400].",
            value_name = "N",
        )]
        max_requests_inflight: usize = 400,
        /// Mutating requests (create, update, patch, delete) served at once; more get 429. A
        /// request is counted once its body has arrived, so a slow body holds no slot.
        #[flag(
            help = "Mutating requests served at once, counted once their body arrived; more get \
             429 [default: 200].",
            value_name = "N",
        )]
        max_mutating_requests_inflight: usize = 200,
        /// Seconds a client may take to finish the TLS handshake (0: no limit).
        #[flag(
            help = "Seconds a client may take to finish the TLS handshake, 0 for no limit \
             [default: 10].",
            value_name = "SECONDS",
        )]
        tls_handshake_timeout_seconds: u64 = 10,
        /// Seconds a client may take to send a request's headers, counted from when the
        /// connection waits for them: after the handshake and, on HTTP/1.1, between keep-alive
        /// requests. On HTTP/2 the first request must start within it (0: no limit).
        #[flag(
            help = "Seconds a client may take to send a request's headers (also the HTTP/1.1 wait \
             between requests), 0 for no limit [default: 10].",
            value_name = "SECONDS",
        )]
        request_header_timeout_seconds: u64 = 10,
        /// Seconds a connection may stay open with no request in flight (HTTP/1.1 keep-alive,
        /// HTTP/2 with no open stream) before it is closed; a watch keeps its connection open
        /// (0: no limit).
        #[flag(
            help = "Seconds a connection may stay open with no request in flight, 0 for no limit \
             [default: 90].",
            value_name = "SECONDS",
        )]
        idle_connection_timeout_seconds: u64 = 90,
        /// Seconds a request body may take to arrive; a slower one is answered 408 and its
        /// connection closed (0: no limit).
        #[flag(
            help = "Seconds a request body may take to arrive before 408, 0 for no limit [default: \
             60].",
            value_name = "SECONDS",
        )]
        request_body_timeout_seconds: u64 = 60,
        /// Seconds a request may take to be answered, watches and other long-running requests
        /// excepted (kube-apiserver's `--request-timeout`); a slower one is answered 504 and
        /// its work cancelled. A client's shorter `?timeout=` wins. At least 1.
        #[serde(deserialize_with = "at_least_one_second")]
        #[flag(
            help = "Seconds a request may take before 504, watches excepted; at least 1 [default: 60].",
            value_name = "SECONDS",
        )]
        request_timeout: u64 = 60,
        /// Connections open at once; more are closed as soon as they are accepted. Lowered at
        /// start-up to fit the open-files limit (RLIMIT_NOFILE) with room for the datastore.
        #[flag(
            help = "Connections open at once, lowered to fit the open-files limit [default: 4096].",
            value_name = "N",
        )]
        max_connections: usize = 4096,
        /// Connections open at once from one client IP address (0: no per-client limit). Behind
        /// a TCP load balancer that does not keep client addresses, every client shares the
        /// balancer's address: raise this or set it to 0.
        #[flag(
            help = "Connections open at once from one client IP, 0 for no limit [default: 1024].",
            value_name = "N",
        )]
        max_connections_per_client: usize = 1024,
        /// Concurrent streams (requests and watches) on one HTTP/2 connection.
        #[flag(
            help = "Concurrent streams on one HTTP/2 connection [default: 250].",
            value_name = "N",
        )]
        http2_max_streams_per_connection: u32 = 250,
        /// Agent registrations accepted per second from one source address (IPv6: per /64);
        /// more get 429 with Retry-After. 0 turns the limit off.
        #[flag(
            help = "Agent registrations per second from one source address; 0 turns the limit off \
             [default: 5].",
            value_name = "N",
        )]
        registration_rate: u32 = 5,
        /// Agent registrations one source address may make at once before
        /// `registration-rate` applies.
        #[flag(
            help = "Agent registrations one source address may make at once [default: 20].",
            value_name = "N",
        )]
        registration_burst: u32 = 20,
        /// Address other servers and agents use to reach this server (default: a local address).
        #[flag(
            help = "Address other servers and agents use to reach this server.",
            value_name = "IP",
        )]
        advertise_address: Option<IpAddr> = None,
        /// Extra names and addresses for the serving certificate (repeatable; comma-separated in
        /// the environment).
        #[serde(deserialize_with = "list_or_commas")]
        #[flag(
            help = "Extra name or address for the serving certificate (repeatable).",
            value_name = "NAME", value_delimiter = ',',
        )]
        tls_san: Vec<String> = Vec::new(),
        /// Where to write the admin kubeconfig (default `<data-dir>/server/admin.kubeconfig`).
        #[flag(
            help = "Where to write the admin kubeconfig [default: \
             <data-dir>/server/admin.kubeconfig].",
            value_name = "FILE",
        )]
        write_kubeconfig: Option<PathBuf> = None,
        /// Bundled components not to deploy (repeatable; comma-separated in the environment).
        #[serde(deserialize_with = "list_or_commas")]
        #[flag(
            help = "Bundled component not to deploy (repeatable).",
            value_name = "NAME", value_delimiter = ',',
        )]
        disable: Vec<String> = Vec::new(),
        /// This node's name (default: the host name).
        #[flag(help = "This node's name [default: the host name].", value_name = "NAME")]
        node_name: Option<String> = None,
        /// Pod network, CIDR (comma-separated for dual stack); the same on every server.
        #[flag(
            help = "Pod network, CIDR; the same on every server [default: 10.42.0.0/16].",
            value_name = "CIDR",
        )]
        cluster_cidr: String = "10.42.0.0/16".to_string(),
        /// Service network, CIDR (comma-separated for dual stack); the same on every server.
        #[flag(
            help = "Service network, CIDR; the same on every server [default: 10.43.0.0/16].",
            value_name = "CIDR",
        )]
        service_cidr: String = "10.43.0.0/16".to_string(),
        /// DNS domain of the cluster; the same on every server.
        #[flag(
            help = "DNS domain of the cluster; the same on every server [default: cluster.local].",
            value_name = "DOMAIN",
        )]
        cluster_domain: String = "cluster.local".to_string(),
        /// Seconds without a heartbeat (node Lease renewal) before a node is marked NotReady
        /// and tainted unreachable.
        #[flag(
            help = "Seconds without a node heartbeat before the node is marked NotReady [default: \
             40].",
            value_name = "SECONDS",
        )]
        node_monitor_grace_period: u64 = 40,
        /// `text` or `json`.
        #[flag(help = "Log line format.", value_enum, value_name = "FORMAT")]
        log_format: LogFormat = LogFormat::Text,
        /// A tracing filter such as `info` or `capstan=debug,sqlx=warn` (default: `RUST_LOG`,
        /// else `info`).
        #[flag(
            help = "Tracing filter, e.g. info or capstan=debug [default: RUST_LOG, else info].",
            value_name = "FILTER",
        )]
        log_level: Option<String> = None,
    }
}

impl ServerConfig {
    /// The datastore endpoint to open: the configured one, or the embedded SQLite file under
    /// the data dir when none is configured.
    pub fn effective_datastore_endpoint(&self) -> String {
        let endpoint = self.datastore_endpoint.trim();
        if endpoint.is_empty() {
            format!(
                "sqlite://{}",
                self.data_dir.join("server/db/state.db").display()
            )
        } else {
            endpoint.to_string()
        }
    }

    /// The datastore settings; those the server config does not expose keep the datastore's
    /// defaults.
    pub fn datastore(&self) -> DatastoreConfig {
        DatastoreConfig {
            endpoint: self.effective_datastore_endpoint(),
            cafile: self.datastore_cafile.clone(),
            certfile: self.datastore_certfile.clone(),
            keyfile: self.datastore_keyfile.clone(),
            max_connections: self.datastore_max_connections,
            poll_interval_ms: self.datastore_poll_interval_ms,
            compact_retain_revisions: self.datastore_compact_retain_revisions,
            compact_retain_seconds: self.datastore_compact_retain_seconds,
            compact_interval_seconds: self.datastore_compact_interval_seconds,
            prepared_statements: self.datastore_prepared_statements,
            watch_queue_bytes: self.watch_queue_bytes,
            watch_queue_total_bytes: self.watch_queue_total_bytes,
            ..DatastoreConfig::default()
        }
    }

    /// This node's name: the configured one, else the host name.
    pub fn effective_node_name(&self) -> String {
        match self.node_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => host_name(),
        }
    }

    /// Where the admin kubeconfig goes.
    pub fn effective_write_kubeconfig(&self) -> PathBuf {
        match &self.write_kubeconfig {
            Some(path) if !path.as_os_str().is_empty() => path.clone(),
            _ => self.data_dir.join("server/admin.kubeconfig"),
        }
    }
}

/// A number of seconds that is not 0: `request-timeout` has no "no limit" value.
fn at_least_one_second<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let seconds = u64::deserialize(deserializer)?;
    if seconds == 0 {
        return Err(serde::de::Error::custom(
            "must be at least 1 second: 0 would time out every request at once (kube-apiserver's default is 60)",
        ));
    }
    Ok(seconds)
}

/// The server's loaded configuration.
pub type LoadedConfig = Loaded<ServerConfig>;

impl Settings for ServerConfig {
    const SECRET_KEYS: &'static [&'static str] = &["token"];

    fn derived(&self, key: &str, source: &mut String) -> Option<String> {
        Some(match key {
            "datastore-endpoint" => {
                if self.datastore_endpoint.trim().is_empty() {
                    source.push_str(" (embedded SQLite under data-dir)");
                }
                yaml_scalar(&masked(&self.effective_datastore_endpoint()))
            }
            "node-name" if self.node_name.is_none() => {
                source.push_str(" (host name)");
                yaml_scalar(&self.effective_node_name())
            }
            "write-kubeconfig" if self.write_kubeconfig.is_none() => {
                source.push_str(" (under data-dir)");
                yaml_scalar(&self.effective_write_kubeconfig().display().to_string())
            }
            "log-level" if self.log_level.is_none() => derived_log_level(source),
            _ => return None,
        })
    }
}
/// Loads the configuration from the process environment, the files and `flags`.
pub fn load(flags: &ServerFlags) -> Result<LoadedConfig, ConfigError> {
    load_with(flags, process_env()?, Path::new(DEFAULT_CONFIG_FILE))
}
/// Loads the configuration from `env` (name, value pairs), the files and `flags`;
/// `default_file` is read when `flags.config` is not given and only if it exists.
pub fn load_with(
    flags: &ServerFlags,
    env: impl IntoIterator<Item = (String, String)>,
    default_file: &Path,
) -> Result<LoadedConfig, ConfigError> {
    load_layers(flags.config.as_deref(), flags, env, default_file)
}
/// The server's configuration reference (`capstan server --print-reference`).
pub fn server_reference() -> String {
    use clap::Args as _;
    reference::<ServerConfig>(&ServerFlags::augment_args(clap::Command::new("server")))
}
#[cfg(test)]
mod tests;
