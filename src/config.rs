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

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Data, Format};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::datastore::{DatastoreConfig, masked};

/// Where the config file is read from when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/capstan/config.yaml";

/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "CAPSTAN_";

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

/// The host name, lower-cased; `capstan` if it cannot be found.
pub fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_lowercase())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "capstan".to_string())
}

/// Accepts a YAML list or one comma-separated string (the form environment variables give).
pub(crate) fn list_or_commas<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        One(String),
    }
    Ok(match ListOrString::deserialize(deserializer)? {
        ListOrString::List(items) => items,
        ListOrString::One(joined) => split_commas(&joined),
    })
}

fn split_commas(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file named by `--config` or `CAPSTAN_CONFIG` does not exist.
    #[error("config file {}: does not exist (given by --config or CAPSTAN_CONFIG)", path.display())]
    MissingFile {
        /// The file.
        path: PathBuf,
    },
    /// A file or the drop-in folder could not be read or parsed.
    #[error("config file {}: {message}", path.display())]
    File {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A file sets a key that does not exist.
    #[error("config file {}: unknown key `{key}`{hint}", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// A suggestion, or the list of known keys.
        hint: String,
    },
    /// An environment variable's value does not fit its key.
    #[error("environment variable {var}={value:?}: expected {expected}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
    /// A value has the wrong type or form.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A configuration struct the layered loader fills (the server's and the agent's): its keys
/// are its kebab-case field names, its defaults its `Default`.
pub trait Settings: Serialize + DeserializeOwned + Default {
    /// Keys whose values `--print-config` masks when set.
    const SECRET_KEYS: &'static [&'static str];
    /// Environment variables that set a key although they are not named `CAPSTAN_<KEY>`,
    /// as `(variable, key)`.
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[];

    /// How `--print-config` shows `key` when its value is derived rather than set (the
    /// derived value; `source` may be amended to say how). `None` shows the value as is.
    fn derived(&self, key: &str, source: &mut String) -> Option<String> {
        let _ = (key, source);
        None
    }
}

/// A loaded configuration, with the figment it came from so each value's source is known.
pub struct Loaded<C> {
    /// The effective configuration.
    pub config: C,
    figment: Figment,
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

/// The log filter used when `log-level` is unset: `RUST_LOG`, else `info`.
pub(crate) fn derived_log_level(source: &mut String) -> String {
    match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.trim().is_empty() => {
            *source = "env RUST_LOG".to_string();
            yaml_scalar(&filter)
        }
        _ => "info".to_string(),
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

/// YAML for figment, read with serde-saphyr.
struct Yaml;

impl Format for Yaml {
    type Error = serde_saphyr::Error;

    const NAME: &'static str = "YAML";

    fn from_str<T: DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        match serde_saphyr::from_str(string) {
            // A file of only comments (a drop-in switched off) is an empty mapping.
            Err(_) if is_blank_yaml(string) => serde_saphyr::from_str("{}"),
            parsed => parsed,
        }
    }
}

fn is_blank_yaml(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|line| line.is_empty() || line.starts_with('#') || line == "---")
}

/// One layer of configuration: a dictionary with the metadata `--print-config` shows.
struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Layer {
    fn new(name: String, dict: Dict) -> Layer {
        Layer {
            metadata: Metadata::named(name),
            dict,
        }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Loads the configuration from the process environment, the files and `flags`.
pub fn load(flags: &ServerFlags) -> Result<LoadedConfig, ConfigError> {
    load_with(flags, process_env()?, Path::new(DEFAULT_CONFIG_FILE))
}

/// Loads any [`Settings`] from the process environment, the files (`config_file`, else
/// `default_file` if it exists, then the drop-ins) and the flag layer `flags` (a struct
/// serializing only the flags given, under their key names).
pub fn load_settings<C: Settings>(
    config_file: Option<&Path>,
    flags: &impl Serialize,
    default_file: &Path,
) -> Result<Loaded<C>, ConfigError> {
    load_layers(config_file, flags, process_env()?, default_file)
}

/// The `CAPSTAN_*` variables of this process (others are of no interest).
pub fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|name| name.starts_with(ENV_PREFIX)) else {
            continue;
        };
        let value = value.into_string().map_err(|value| ConfigError::Env {
            var: name.to_string(),
            value: value.to_string_lossy().into_owned(),
            expected: "valid UTF-8",
        })?;
        vars.push((name.to_string(), value));
    }
    Ok(vars)
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

/// The layered loader behind [`load_with`] and [`load_settings`], for any [`Settings`].
pub fn load_layers<C: Settings>(
    config_file: Option<&Path>,
    flags: &impl Serialize,
    env: impl IntoIterator<Item = (String, String)>,
    default_file: &Path,
) -> Result<Loaded<C>, ConfigError> {
    let defaults = to_dict(&C::default())?;
    let known: BTreeSet<String> = defaults.keys().cloned().collect();
    let mut figment = Figment::new().merge(Layer::new("default".into(), defaults.clone()));

    for file in config_files(config_file, default_file)? {
        let provider = Data::<Yaml>::file_exact(&file);
        let data = provider.data().map_err(|error| ConfigError::File {
            path: file.clone(),
            message: error.to_string(),
        })?;
        for dict in data.values() {
            if let Some(key) = dict.keys().find(|key| !known.contains(*key)) {
                return Err(ConfigError::UnknownKey {
                    path: file,
                    key: key.clone(),
                    hint: suggest(key, &known),
                });
            }
        }
        figment = figment.merge(provider);
    }

    let mut env: Vec<(String, String)> = env.into_iter().collect();
    env.sort();
    for (var, raw) in env {
        let alias = C::ENV_ALIASES
            .iter()
            .find(|(alias, _)| *alias == var)
            .map(|(_, key)| key.to_string());
        let Some(key) = alias
            .or_else(|| env_key(&var))
            .filter(|key| known.contains(key))
        else {
            continue;
        };
        // An empty variable is unset, as in container templates that always define it.
        if raw.trim().is_empty() {
            continue;
        }
        let value = typed_env_value(&var, &raw, &defaults[&key])?;
        figment = figment.merge(Layer::new(format!("env {var}"), Dict::from([(key, value)])));
    }

    for (key, value) in to_dict(flags)? {
        figment = figment.merge(Layer::new(
            format!("flag --{key}"),
            Dict::from([(key, value)]),
        ));
    }

    let config = figment
        .extract::<C>()
        .map_err(|error| ConfigError::Invalid(describe(&figment, error)))?;
    Ok(Loaded { config, figment })
}

/// The config file (if it is to be read) and its drop-ins, in reading order.
fn config_files(explicit: Option<&Path>, default_file: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let main = explicit.unwrap_or(default_file);
    let mut files = Vec::new();
    if main.is_file() {
        files.push(main.to_path_buf());
    } else if explicit.is_some() {
        return Err(ConfigError::MissingFile {
            path: main.to_path_buf(),
        });
    }
    let mut dropins_dir = main.as_os_str().to_owned();
    dropins_dir.push(".d");
    let dropins_dir = PathBuf::from(dropins_dir);
    if dropins_dir.is_dir() {
        let entries = std::fs::read_dir(&dropins_dir).map_err(|error| ConfigError::File {
            path: dropins_dir.clone(),
            message: error.to_string(),
        })?;
        let mut dropins = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|error| ConfigError::File {
                    path: dropins_dir.clone(),
                    message: error.to_string(),
                })?
                .path();
            if path.extension().is_some_and(|ext| ext == "yaml") && path.is_file() {
                dropins.push(path);
            }
        }
        dropins.sort();
        files.extend(dropins);
    }
    Ok(files)
}

/// `CAPSTAN_DATA_DIR` → `data-dir`.
fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    Some(rest.to_ascii_lowercase().replace('_', "-"))
}

/// Environment values are text; give each the type its key has, so `CAPSTAN_TOKEN=1234`
/// stays a string and `CAPSTAN_HTTPS_LISTEN_PORT=7443` becomes a number.
fn typed_env_value(var: &str, raw: &str, default: &Value) -> Result<Value, ConfigError> {
    let error = |expected| ConfigError::Env {
        var: var.to_string(),
        value: raw.to_string(),
        expected,
    };
    Ok(match default {
        Value::Num(..) => match raw.trim().parse::<Value>() {
            Ok(value @ Value::Num(..)) => value,
            _ => return Err(error("a number")),
        },
        Value::Bool(..) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::from(true),
            "false" | "0" | "no" => Value::from(false),
            _ => return Err(error("true or false")),
        },
        Value::Array(..) => Value::from(split_commas(raw)),
        _ => Value::from(raw.to_string()),
    })
}

fn to_dict<T: Serialize>(value: &T) -> Result<Dict, ConfigError> {
    match Value::serialize(value) {
        Ok(Value::Dict(_, dict)) => Ok(dict),
        Ok(_) => Err(ConfigError::Invalid(
            "configuration does not serialize to a mapping".into(),
        )),
        Err(error) => Err(ConfigError::Invalid(error.to_string())),
    }
}

/// One line per problem: the key, what is wrong and which layer set it.
fn describe(figment: &Figment, error: figment::Error) -> String {
    error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".");
            let source = error.metadata.as_ref().map(source_name).or_else(|| {
                let metadata = figment.find_metadata(&key)?;
                Some(source_name(metadata))
            });
            match source {
                Some(source) if !key.is_empty() => {
                    format!("key `{key}` (from {source}): {}", error.kind)
                }
                _ if !key.is_empty() => format!("key `{key}`: {}", error.kind),
                _ => error.kind.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn source_name(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(Source::File(path)) => path.display().to_string(),
        _ => metadata.name.to_string(),
    }
}

/// "did you mean …" for a misspelt key, else the list of keys.
fn suggest(key: &str, known: &BTreeSet<String>) -> String {
    let normalized = key.to_ascii_lowercase().replace('_', "-");
    let closest = known
        .iter()
        .map(|candidate| (edit_distance(&normalized, candidate), candidate))
        .min();
    match closest {
        Some((distance, candidate)) if distance <= 3 => format!(" (did you mean `{candidate}`?)"),
        _ => format!(
            " (known keys: {})",
            known.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

impl<C: Settings> Loaded<C> {
    /// Where the effective value of `key` came from: `default`, a file path, `env VAR` or
    /// `flag --key`.
    pub fn source_of(&self, key: &str) -> String {
        self.figment
            .find_metadata(key)
            .map(source_name)
            .unwrap_or_else(|| "default".to_string())
    }

    /// The effective configuration as `key: value  # source` lines, secrets masked; values
    /// left to be derived (endpoint, node name, kubeconfig path, log level) are shown
    /// derived.
    pub fn render(&self) -> String {
        let Ok(values) = to_dict(&self.config) else {
            return String::new();
        };
        let mut out = String::new();
        for (key, value) in values {
            let mut source = self.source_of(&key);
            let secret_set = C::SECRET_KEYS.contains(&key.as_str())
                && !matches!(&value, Value::String(_, text) if text.is_empty())
                && !matches!(value, Value::Empty(..));
            let shown = if secret_set {
                "\"***\"".to_string()
            } else {
                self.config
                    .derived(&key, &mut source)
                    .unwrap_or_else(|| yaml_value(&value))
            };
            out.push_str(&format!("{key}: {shown}  # {source}\n"));
        }
        out
    }
}

/// The reference of every key of `C`, in Markdown, from the same definitions the binary
/// parses: the flag's help text and value name from `command` (the clap definition of the
/// flags), the default from `C::default()`, the variables from the key and
/// [`Settings::ENV_ALIASES`]. Flags that are not keys (`--config`, `--print-*`) are left out.
pub fn reference<C: Settings>(command: &clap::Command) -> String {
    let Ok(defaults) = to_dict(&C::default()) else {
        return String::new();
    };
    let mut out = String::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let Some(default) = defaults.get(long) else {
            continue;
        };
        let mut env = format!(
            "`{ENV_PREFIX}{}`",
            long.to_ascii_uppercase().replace('-', "_")
        );
        for (alias, _) in C::ENV_ALIASES.iter().filter(|(_, key)| *key == long) {
            env.push_str(&format!(", `{alias}`"));
        }
        let value_name = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map(|name| name.to_string());
        let kind = match default {
            Value::Num(..) => "integer",
            Value::Bool(..) => "boolean",
            Value::Array(..) => "list of strings (YAML list; repeat the flag; commas in env)",
            _ => "string",
        };
        let kind = match &value_name {
            Some(name) if !matches!(default, Value::Bool(..)) => format!("{kind} ({name})"),
            _ => kind.to_string(),
        };
        let shown_default = match default {
            Value::Empty(..) => "unset".to_string(),
            Value::String(_, text) if text.is_empty() => "unset".to_string(),
            Value::Array(_, items) if items.is_empty() => "empty".to_string(),
            other => format!("`{}`", yaml_value(other)),
        };
        let flag = match &value_name {
            Some(name) if !matches!(default, Value::Bool(..)) => format!("--{long} {name}"),
            _ => format!("--{long}"),
        };
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|help| help.to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "### `{long}`\n\n{help}\n\n- type: {kind}\n- default: {shown_default}\n- flag: `{flag}`; environment: {env}\n\n"
        ));
    }
    out
}

/// The server's configuration reference (`capstan server --print-reference`).
pub fn server_reference() -> String {
    use clap::Args as _;
    reference::<ServerConfig>(&ServerFlags::augment_args(clap::Command::new("server")))
}

fn yaml_value(value: &Value) -> String {
    match value {
        Value::String(_, text) => yaml_scalar(text),
        Value::Empty(..) => "~".to_string(),
        Value::Array(_, items) => format!(
            "[{}]",
            items.iter().map(yaml_value).collect::<Vec<_>>().join(", ")
        ),
        other => serde_json::to_string(other).unwrap_or_else(|_| "?".to_string()),
    }
}

/// A string as a plain YAML scalar when that reads back as the same string, else quoted.
pub(crate) fn yaml_scalar(text: &str) -> String {
    let plain = text.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '/' || c == '.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:@*+=,".contains(c))
        && !text.contains(": ")
        && text
            .parse::<Value>()
            .is_ok_and(|value| matches!(value, Value::String(..)))
        && !matches!(text, "~" | "null" | "true" | "false" | "yes" | "no");
    if plain {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// A scratch folder with `config.yaml` and drop-ins.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files {
                dir: tempfile::tempdir().expect("a temporary folder can be created"),
            }
        }

        fn main_file(&self) -> PathBuf {
            self.dir.path().join("config.yaml")
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("folder can be created");
            }
            std::fs::write(&path, text).expect("file can be written");
            path
        }

        /// Loads with `config.yaml` here as the default file, like `/etc/capstan/config.yaml`.
        fn load(
            &self,
            flags: &ServerFlags,
            env: &[(&str, &str)],
        ) -> Result<LoadedConfig, ConfigError> {
            let env = env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()));
            load_with(flags, env, &self.main_file())
        }
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: ServerFlags,
    }

    fn flags(args: &[&str]) -> ServerFlags {
        let args = std::iter::once("capstan").chain(args.iter().copied());
        Cli::try_parse_from(args).expect("test flags parse").flags
    }

    #[test]
    fn without_any_layer_the_defaults_apply() {
        let files = Files::new();
        let loaded = files
            .load(&ServerFlags::default(), &[])
            .expect("defaults load");
        assert_eq!(loaded.config, ServerConfig::default());
        assert_eq!(loaded.source_of("data-dir"), "default");
        assert_eq!(
            loaded.config.effective_datastore_endpoint(),
            "sqlite:///var/lib/capstan/server/db/state.db"
        );
    }

    #[test]
    fn file_then_dropins_then_env_then_flags() {
        let files = Files::new();
        let main = files.write(
            "config.yaml",
            "data-dir: /from/file\ntoken: file-token\nhttps-listen-port: 7000\nnode-name: file-node\nlog-level: debug\n",
        );
        let first = files.write(
            "config.yaml.d/10-first.yaml",
            "token: dropin-token\nhttps-listen-port: 7001\n",
        );
        let second = files.write(
            "config.yaml.d/20-second.yaml",
            "https-listen-port: 7002\nnode-name: dropin-node\n",
        );
        files.write("config.yaml.d/30-ignored.yml", "https-listen-port: 9999\n");
        let env = [
            ("CAPSTAN_NODE_NAME", "env-node"),
            ("CAPSTAN_LOG_LEVEL", "warn"),
        ];
        let loaded = files
            .load(&flags(&["--log-level", "trace"]), &env)
            .expect("layers load");

        let config = &loaded.config;
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.token, "dropin-token");
        assert_eq!(
            config.https_listen_port, 7002,
            "the later drop-in wins; .yml files are not read"
        );
        assert_eq!(config.node_name.as_deref(), Some("env-node"));
        assert_eq!(config.log_level.as_deref(), Some("trace"));

        assert_eq!(loaded.source_of("data-dir"), main.display().to_string());
        assert_eq!(loaded.source_of("token"), first.display().to_string());
        assert_eq!(
            loaded.source_of("https-listen-port"),
            second.display().to_string()
        );
        assert_eq!(loaded.source_of("node-name"), "env CAPSTAN_NODE_NAME");
        assert_eq!(loaded.source_of("log-level"), "flag --log-level");
        assert_eq!(loaded.source_of("bind-address"), "default");
    }

    #[test]
    fn an_explicit_config_file_replaces_the_default_one() {
        let files = Files::new();
        files.write("config.yaml", "token: default-file\n");
        let other = files.write("other.yaml", "token: other-file\n");
        files.write("other.yaml.d/a.yaml", "node-name: other-dropin\n");
        let flags = ServerFlags {
            config: Some(other),
            ..ServerFlags::default()
        };
        let loaded = files.load(&flags, &[]).expect("explicit file loads");
        assert_eq!(loaded.config.token, "other-file");
        assert_eq!(loaded.config.node_name.as_deref(), Some("other-dropin"));
    }

    #[test]
    fn dropins_are_read_even_without_the_main_file() {
        let files = Files::new();
        files.write("config.yaml.d/a.yaml", "token: from-dropin\n");
        let loaded = files
            .load(&ServerFlags::default(), &[])
            .expect("drop-in loads");
        assert_eq!(loaded.config.token, "from-dropin");
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let files = Files::new();
        let missing = files.dir.path().join("nope.yaml");
        let flags = ServerFlags {
            config: Some(missing.clone()),
            ..ServerFlags::default()
        };
        let error = files
            .load(&flags, &[])
            .err()
            .expect("missing explicit file fails");
        assert!(matches!(error, ConfigError::MissingFile { .. }), "{error}");
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_file() {
        let files = Files::new();
        files.write("config.yaml", "token: t\n");
        let dropin = files.write(
            "config.yaml.d/50-typo.yaml",
            "datastore-endpiont: postgres://db/k\n",
        );
        let error = files
            .load(&ServerFlags::default(), &[])
            .err()
            .expect("unknown key fails");
        let message = error.to_string();
        assert!(message.contains("datastore-endpiont"), "{message}");
        assert!(message.contains(&dropin.display().to_string()), "{message}");
        assert!(
            message.contains("did you mean `datastore-endpoint`"),
            "{message}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key_and_its_source() {
        let files = Files::new();
        let main = files.write("config.yaml", "https-listen-port: lots\n");
        let message = files
            .load(&ServerFlags::default(), &[])
            .err()
            .expect("bad port fails")
            .to_string();
        assert!(message.contains("https-listen-port"), "{message}");
        assert!(message.contains(&main.display().to_string()), "{message}");
    }

    #[test]
    fn unreadable_yaml_names_the_file() {
        let files = Files::new();
        let main = files.write("config.yaml", "token: [unclosed\n");
        let message = files
            .load(&ServerFlags::default(), &[])
            .err()
            .expect("bad YAML fails")
            .to_string();
        assert!(message.contains(&main.display().to_string()), "{message}");
    }

    #[test]
    fn a_comment_only_dropin_is_empty() {
        let files = Files::new();
        files.write("config.yaml.d/00-off.yaml", "# token: disabled\n");
        let loaded = files
            .load(&ServerFlags::default(), &[])
            .expect("comment-only drop-in loads");
        assert_eq!(loaded.config, ServerConfig::default());
    }

    #[test]
    fn env_values_take_the_type_of_their_key() {
        let files = Files::new();
        let env = [
            ("CAPSTAN_TOKEN", "12345"),
            ("CAPSTAN_HTTPS_LISTEN_PORT", "7443"),
            ("CAPSTAN_DATASTORE_PREPARED_STATEMENTS", "false"),
            ("CAPSTAN_TLS_SAN", "a.example, 10.0.0.1"),
            ("CAPSTAN_DATASTORE_ENDPOINT", "postgres://u:pw@db:5432/k"),
            ("CAPSTAN_ADVERTISE_ADDRESS", ""),
            // Not configuration keys: other tools' variables share the prefix.
            (
                "CAPSTAN_TEST_POSTGRES",
                "postgres://postgres@127.0.0.1/postgres",
            ),
            ("CAPSTAN_URL", "https://somewhere:6443"),
        ];
        let loaded = files
            .load(&ServerFlags::default(), &env)
            .expect("env loads");
        let config = &loaded.config;
        assert_eq!(config.token, "12345");
        assert_eq!(config.https_listen_port, 7443);
        assert!(!config.datastore_prepared_statements);
        assert_eq!(config.tls_san, ["a.example", "10.0.0.1"]);
        assert_eq!(config.advertise_address, None, "an empty variable is unset");
        assert_eq!(
            loaded.source_of("datastore-endpoint"),
            "env CAPSTAN_DATASTORE_ENDPOINT"
        );
    }

    #[test]
    fn a_malformed_env_value_names_the_variable() {
        let files = Files::new();
        let error = files
            .load(
                &ServerFlags::default(),
                &[("CAPSTAN_HTTPS_LISTEN_PORT", "high")],
            )
            .err();
        let message = error.expect("bad env fails").to_string();
        assert!(message.contains("CAPSTAN_HTTPS_LISTEN_PORT"), "{message}");
    }

    #[test]
    fn only_flags_that_are_given_override() {
        let files = Files::new();
        files.write("config.yaml", "data-dir: /from/file\ntls-san: [one, two]\n");
        let loaded = files
            .load(&flags(&["--token", "t", "--disable", "a,b"]), &[])
            .expect("flags load");
        assert_eq!(loaded.config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(loaded.config.tls_san, ["one", "two"]);
        assert_eq!(loaded.config.disable, ["a", "b"]);
        assert_eq!(loaded.source_of("disable"), "flag --disable");
    }

    #[test]
    fn datastore_keys_map_onto_the_datastore_config() {
        let files = Files::new();
        files.write(
            "config.yaml",
            "data-dir: /srv/c\ndatastore-max-connections: 7\ndatastore-poll-interval-ms: 250\n\
             datastore-compact-retain-revisions: 99\ndatastore-compact-retain-seconds: 60\n\
             datastore-compact-interval-seconds: 3\ndatastore-prepared-statements: false\n\
             datastore-cafile: /ca.pem\n",
        );
        let datastore = files
            .load(&ServerFlags::default(), &[])
            .expect("loads")
            .config
            .datastore();
        let defaults = DatastoreConfig::default();
        assert_eq!(datastore.endpoint, "sqlite:///srv/c/server/db/state.db");
        assert_eq!(datastore.max_connections, 7);
        assert_eq!(datastore.poll_interval_ms, 250);
        assert_eq!(datastore.compact_retain_revisions, 99);
        assert_eq!(datastore.compact_retain_seconds, 60);
        assert_eq!(datastore.compact_interval_seconds, 3);
        assert!(!datastore.prepared_statements);
        assert_eq!(datastore.cafile, Some(PathBuf::from("/ca.pem")));
        assert_eq!(datastore.write_batch_max, defaults.write_batch_max);
        assert_eq!(datastore.acquire_timeout_ms, defaults.acquire_timeout_ms);
    }

    #[test]
    fn every_key_is_a_flag_and_every_flag_a_key() {
        let keys: BTreeSet<String> = to_dict(&ServerConfig::default())
            .expect("serializes")
            .keys()
            .cloned()
            .collect();
        let flags: BTreeSet<String> = Cli::command()
            .get_arguments()
            .filter_map(|arg| arg.get_long().map(str::to_string))
            .filter(|long| !["config", "print-config", "print-reference"].contains(&long.as_str()))
            .collect();
        assert_eq!(keys, flags);
    }

    #[test]
    fn print_config_masks_secrets_and_names_sources() {
        let files = Files::new();
        let env = [(
            "CAPSTAN_DATASTORE_ENDPOINT",
            "postgres://capstan:hunter2@db:5432/k",
        )];
        let loaded = files
            .load(&flags(&["--token", "s3cret"]), &env)
            .expect("loads");
        let text = loaded.render();
        assert!(
            !text.contains("hunter2") && !text.contains("s3cret"),
            "{text}"
        );
        assert!(text.contains("datastore-endpoint: postgres://capstan:***@db:5432/k  # env CAPSTAN_DATASTORE_ENDPOINT"), "{text}");
        assert!(text.contains("token: \"***\"  # flag --token"), "{text}");
        assert!(
            text.contains("https-listen-port: 6443  # default"),
            "{text}"
        );
    }

    #[test]
    fn the_shipped_example_configs_load() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in [
            "server-sqlite.yaml",
            "server-postgres.yaml",
            "server-mysql.yaml",
        ] {
            let path = examples.join(name);
            let flags = ServerFlags {
                config: Some(path.clone()),
                ..ServerFlags::default()
            };
            let loaded = load_with(&flags, Vec::new(), Path::new("/nonexistent/config.yaml"));
            let loaded = loaded.unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            assert_ne!(
                loaded.config,
                ServerConfig::default(),
                "{name} sets something"
            );
        }
    }

    #[test]
    fn yaml_scalars_round_trip() {
        assert_eq!(yaml_scalar("/var/lib/capstan"), "/var/lib/capstan");
        assert_eq!(yaml_scalar(""), "\"\"");
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar("6443"), "\"6443\"");
        assert_eq!(yaml_scalar("*"), "\"*\"");
    }
}
