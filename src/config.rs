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

/// Everything `capstan server` can be told. Each field is a key of the config file, a flag
/// (`--<key>`) and an environment variable (`CAPSTAN_<KEY>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// Folder for this server's state: the embedded SQLite database, generated files and the
    /// admin kubeconfig.
    pub data_dir: PathBuf,
    /// `sqlite://PATH`, `postgres://USER[:PASS]@HOST[:PORT]/DB` or
    /// `mysql://USER[:PASS]@HOST[:PORT]/DB`. Empty means the embedded SQLite file
    /// `<data-dir>/server/db/state.db`. The database is created if missing.
    pub datastore_endpoint: String,
    /// CA bundle that verifies the database server's certificate (turns on verified TLS).
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for TLS to the database.
    pub datastore_certfile: Option<PathBuf>,
    /// Client key for TLS to the database.
    pub datastore_keyfile: Option<PathBuf>,
    /// Most connections this server opens to the database; further requests wait.
    pub datastore_max_connections: u32,
    /// Longest pause between change-feed polls while nothing changes, in milliseconds
    /// (on Postgres LISTEN/NOTIFY wakes the feed at once and this is only the fallback).
    pub datastore_poll_interval_ms: u64,
    /// Keep at least this many revisions of history.
    pub datastore_compact_retain_revisions: i64,
    /// Keep history younger than this many seconds.
    pub datastore_compact_retain_seconds: u64,
    /// Seconds between compaction rounds.
    pub datastore_compact_interval_seconds: u64,
    /// Keep prepared statements cached per connection (false prepares each query afresh;
    /// it does not make PgBouncer's transaction mode work, see the README).
    pub datastore_prepared_statements: bool,
    /// Bytes of events one watcher may have queued before it is cut off (it lists again).
    pub watch_queue_bytes: usize,
    /// Bytes of events queued for all watchers of this server together.
    pub watch_queue_total_bytes: usize,
    /// Shared secret of the cluster: agents and servers join with it.
    pub token: String,
    /// Address the HTTPS API listens on.
    pub bind_address: IpAddr,
    /// Port of the HTTPS API.
    pub https_listen_port: u16,
    /// Read-only requests (get, list, discovery) served at once, watches and health checks
    /// excluded; more get 429 with Retry-After (kube-apiserver's flag and default).
    pub max_requests_inflight: usize,
    /// Mutating requests (create, update, patch, delete) served at once; more get 429. A
    /// request is counted once its body has arrived, so a slow body holds no slot.
    pub max_mutating_requests_inflight: usize,
    /// Seconds a client may take to finish the TLS handshake (0: no limit).
    pub tls_handshake_timeout_seconds: u64,
    /// Seconds a client may take to send a request's headers, counted from when the
    /// connection waits for them: after the handshake and, on HTTP/1.1, between keep-alive
    /// requests. On HTTP/2 the first request must start within it (0: no limit).
    pub request_header_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request in flight (HTTP/1.1 keep-alive,
    /// HTTP/2 with no open stream) before it is closed; a watch keeps its connection open
    /// (0: no limit).
    pub idle_connection_timeout_seconds: u64,
    /// Seconds a request body may take to arrive; a slower one is answered 408 and its
    /// connection closed (0: no limit).
    pub request_body_timeout_seconds: u64,
    /// Seconds a request may take to be answered, watches and other long-running requests
    /// excepted (kube-apiserver's `--request-timeout`); a slower one is answered 504 and
    /// its work cancelled. A client's shorter `?timeout=` wins. At least 1.
    #[serde(deserialize_with = "at_least_one_second")]
    pub request_timeout: u64,
    /// Connections open at once; more are closed as soon as they are accepted. Lowered at
    /// start-up to fit the open-files limit (RLIMIT_NOFILE) with room for the datastore.
    pub max_connections: usize,
    /// Connections open at once from one client IP address (0: no per-client limit). Behind
    /// a TCP load balancer that does not keep client addresses, every client shares the
    /// balancer's address: raise this or set it to 0.
    pub max_connections_per_client: usize,
    /// Concurrent streams (requests and watches) on one HTTP/2 connection.
    pub http2_max_streams_per_connection: u32,
    /// Agent registrations accepted per second from one source address (IPv6: per /64);
    /// more get 429 with Retry-After. 0 turns the limit off.
    pub registration_rate: u32,
    /// Agent registrations one source address may make at once before
    /// `registration-rate` applies.
    pub registration_burst: u32,
    /// Address other servers and agents use to reach this server (default: a local address).
    pub advertise_address: Option<IpAddr>,
    /// Extra names and addresses for the serving certificate (repeatable; comma-separated in
    /// the environment).
    #[serde(deserialize_with = "list_or_commas")]
    pub tls_san: Vec<String>,
    /// Where to write the admin kubeconfig (default `<data-dir>/server/admin.kubeconfig`).
    pub write_kubeconfig: Option<PathBuf>,
    /// Bundled components not to deploy (repeatable; comma-separated in the environment).
    #[serde(deserialize_with = "list_or_commas")]
    pub disable: Vec<String>,
    /// This node's name (default: the host name).
    pub node_name: Option<String>,
    /// Pod network, CIDR (comma-separated for dual stack); the same on every server.
    pub cluster_cidr: String,
    /// Service network, CIDR (comma-separated for dual stack); the same on every server.
    pub service_cidr: String,
    /// DNS domain of the cluster; the same on every server.
    pub cluster_domain: String,
    /// Seconds without a heartbeat (node Lease renewal) before a node is marked NotReady
    /// and tainted unreachable.
    pub node_monitor_grace_period: u64,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `capstan=debug,sqlx=warn` (default: `RUST_LOG`,
    /// else `info`).
    pub log_level: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let datastore = DatastoreConfig::default();
        ServerConfig {
            data_dir: PathBuf::from("/var/lib/capstan"),
            datastore_endpoint: String::new(),
            datastore_cafile: None,
            datastore_certfile: None,
            datastore_keyfile: None,
            datastore_max_connections: datastore.max_connections,
            datastore_poll_interval_ms: datastore.poll_interval_ms,
            datastore_compact_retain_revisions: datastore.compact_retain_revisions,
            datastore_compact_retain_seconds: datastore.compact_retain_seconds,
            datastore_compact_interval_seconds: datastore.compact_interval_seconds,
            datastore_prepared_statements: datastore.prepared_statements,
            watch_queue_bytes: datastore.watch_queue_bytes,
            watch_queue_total_bytes: datastore.watch_queue_total_bytes,
            token: String::new(),
            bind_address: IpAddr::from([0, 0, 0, 0]),
            https_listen_port: 6443,
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            tls_handshake_timeout_seconds: 10,
            request_header_timeout_seconds: 10,
            idle_connection_timeout_seconds: 90,
            request_body_timeout_seconds: 60,
            request_timeout: 60,
            max_connections: 4096,
            max_connections_per_client: 1024,
            http2_max_streams_per_connection: 250,
            registration_rate: 5,
            registration_burst: 20,
            advertise_address: None,
            tls_san: Vec::new(),
            write_kubeconfig: None,
            disable: Vec::new(),
            node_name: None,
            cluster_cidr: "10.42.0.0/16".to_string(),
            service_cidr: "10.43.0.0/16".to_string(),
            cluster_domain: "cluster.local".to_string(),
            node_monitor_grace_period: 40,
            log_format: LogFormat::Text,
            log_level: None,
        }
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

    /// Folder for this server's state [default: /var/lib/capstan].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH, postgres://USER[:PASS]@HOST[:PORT]/DB or mysql://… [default: SQLite under data-dir].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_endpoint: Option<String>,
    /// CA bundle verifying the database server's certificate.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for TLS to the database.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_certfile: Option<PathBuf>,
    /// Client key for TLS to the database.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_keyfile: Option<PathBuf>,
    /// Most connections to the database.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_max_connections: Option<u32>,
    /// Longest pause between change-feed polls, in milliseconds.
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_poll_interval_ms: Option<u64>,
    /// Keep at least this many revisions of history.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_compact_retain_revisions: Option<i64>,
    /// Keep history younger than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_compact_retain_seconds: Option<u64>,
    /// Seconds between compaction rounds.
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_compact_interval_seconds: Option<u64>,
    /// Keep prepared statements cached per connection (see the README on PgBouncer).
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datastore_prepared_statements: Option<bool>,
    /// Bytes of events one watcher may have queued before it is cut off.
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_queue_bytes: Option<usize>,
    /// Bytes of events queued for all watchers of this server together.
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_queue_total_bytes: Option<usize>,
    /// Shared secret of the cluster.
    #[arg(long, value_name = "TOKEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Address the HTTPS API listens on [default: 0.0.0.0].
    #[arg(long, value_name = "IP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<IpAddr>,
    /// Port of the HTTPS API [default: 6443].
    #[arg(long, value_name = "PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_listen_port: Option<u16>,
    /// Read-only requests served at once, watches excluded; more get 429 [default: 400].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_requests_inflight: Option<usize>,
    /// Mutating requests served at once, counted once their body arrived; more get 429
    /// [default: 200].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_mutating_requests_inflight: Option<usize>,
    /// Seconds a client may take to finish the TLS handshake, 0 for no limit [default: 10].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_handshake_timeout_seconds: Option<u64>,
    /// Seconds a client may take to send a request's headers (also the HTTP/1.1 wait
    /// between requests), 0 for no limit [default: 10].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_header_timeout_seconds: Option<u64>,
    /// Seconds a connection may stay open with no request in flight, 0 for no limit
    /// [default: 90].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_connection_timeout_seconds: Option<u64>,
    /// Seconds a request body may take to arrive before 408, 0 for no limit [default: 60].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body_timeout_seconds: Option<u64>,
    /// Seconds a request may take before 504, watches excepted; at least 1 [default: 60].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<u64>,
    /// Connections open at once, lowered to fit the open-files limit [default: 4096].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections open at once from one client IP, 0 for no limit [default: 1024].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<usize>,
    /// Concurrent streams on one HTTP/2 connection [default: 250].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http2_max_streams_per_connection: Option<u32>,
    /// Agent registrations per second from one source address; 0 turns the limit off
    /// [default: 5].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_rate: Option<u32>,
    /// Agent registrations one source address may make at once [default: 20].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_burst: Option<u32>,
    /// Address other servers and agents use to reach this server.
    #[arg(long, value_name = "IP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<IpAddr>,
    /// Extra name or address for the serving certificate (repeatable).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls_san: Vec<String>,
    /// Where to write the admin kubeconfig [default: <data-dir>/server/admin.kubeconfig].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_kubeconfig: Option<PathBuf>,
    /// Bundled component not to deploy (repeatable).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<String>,
    /// This node's name [default: the host name].
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Pod network, CIDR; the same on every server [default: 10.42.0.0/16].
    #[arg(long, value_name = "CIDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<String>,
    /// Service network, CIDR; the same on every server [default: 10.43.0.0/16].
    #[arg(long, value_name = "CIDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<String>,
    /// DNS domain of the cluster; the same on every server [default: cluster.local].
    #[arg(long, value_name = "DOMAIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_domain: Option<String>,
    /// Seconds without a node heartbeat before the node is marked NotReady [default: 40].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_monitor_grace_period: Option<u64>,
    /// Log line format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Tracing filter, e.g. info or capstan=debug [default: RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
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
#[path = "config_tests.rs"]
mod tests;
