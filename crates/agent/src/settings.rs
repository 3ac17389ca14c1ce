//! The agent's configuration keys, [`AgentSettings`], read through the same layered loader as
//! the server's (defaults < `--config` file < its drop-ins < `CAPSTAN_*` < flags), so an agent
//! can be run from `/etc/capstan/agent.yaml` like a server from `config.yaml`, and its
//! reference is generated from the same definitions. (The loader is the `capstan-config` crate,
//! a leaf the agent may use; the agent imports nothing of the server.)

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use capstan_config::{ConfigError, Loaded, Settings, derived_log_level, list_or_commas};

/// Where the agent's config file is read from when `--config` is not given.
pub const DEFAULT_AGENT_CONFIG_FILE: &str = "/etc/capstan/agent.yaml";

capstan_config::declare_settings! {
    /// Everything `capstan agent` can be told. Each field is a key of the config file, a flag
    /// (`--<key>`) and an environment variable (`CAPSTAN_<KEY>`; `CAPSTAN_URL` for `server`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    pub struct AgentSettings;

    /// Flags of `capstan agent`: every key of [`AgentSettings`] as an optional flag, plus the
    /// flags that choose and show the configuration. They are the top layer over defaults, the
    /// config file (`--config`, default `/etc/capstan/agent.yaml`), its drop-ins and `CAPSTAN_*`
    /// variables, loaded by the same loader as the server's ([`capstan_config::load_layers`]).
    #[derive(Debug, Default, Clone, Args, Serialize)]
    #[serde(rename_all = "kebab-case")]
    pub struct AgentFlags {
        /// Config file (YAML) [default: /etc/capstan/agent.yaml, if it exists]. Its drop-ins
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
        /// Registration addresses, `https://host[:port]`.
        #[serde(deserialize_with = "list_or_commas")]
        #[flag(
            help = "A registration address, https://host[:port] (repeatable, or comma-separated).",
            value_name = "URL", value_delimiter = ',',
        )]
        server: Vec<String> = Vec::new(),
        /// The cluster token.
        #[flag(
            help = "The cluster token: K10<ca hash>::server:<secret> from <data-dir>/server/token, \
             or the bare secret (the CA is then trusted on first use).",
            value_name = "TOKEN",
        )]
        token: String = String::new(),
        /// The node's name (default: the host name).
        #[flag(help = "The node's name [default: the host name].", value_name = "NAME")]
        node_name: Option<String> = None,
        /// Whether to append the stored random suffix to the node name.
        #[flag(
            help = "Append a random suffix -<8 hex> to the node name, kept in <data-dir>/node/id.",
            value_name = "BOOL", num_args = 0..=1, default_missing_value = "true",
        )]
        with_node_id: bool = false,
        /// The agent's state folder.
        #[flag(
            help = "Where the agent keeps its password, certificates, kubeconfig and server list \
             [default: /var/lib/capstan].",
            value_name = "DIR",
        )]
        data_dir: PathBuf = PathBuf::from("/var/lib/capstan"),
        /// The local load balancer's port on 127.0.0.1.
        #[flag(
            help = "The local load balancer's port on 127.0.0.1; 0 picks a free one [default: \
             6444].",
            value_name = "PORT",
        )]
        lb_server_port: u16 = 6444,
        /// A tracing filter (default: `RUST_LOG`, else `info`).
        #[flag(
            help = "Tracing filter, e.g. info or capstan=debug [default: RUST_LOG, else info].",
            value_name = "FILTER",
        )]
        log_level: Option<String> = None,
    }
}

impl Settings for AgentSettings {
    const SECRET_KEYS: &'static [&'static str] = &["token"];
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[("CAPSTAN_URL", "server")];

    fn derived(&self, key: &str, source: &mut String) -> Option<String> {
        match key {
            "node-name" if self.node_name.is_none() => {
                source.push_str(" (host name)");
                Some(capstan_config::yaml_scalar(&super::host_name()))
            }
            "log-level" if self.log_level.is_none() => Some(derived_log_level(source)),
            _ => None,
        }
    }
}

/// Loads the agent's configuration from the process environment, the files and `flags`.
pub fn load(flags: &AgentFlags) -> Result<Loaded<AgentSettings>, ConfigError> {
    capstan_config::load_settings(
        flags.config.as_deref(),
        flags,
        Path::new(DEFAULT_AGENT_CONFIG_FILE),
    )
}

/// The agent's configuration reference (`capstan agent --print-reference`).
pub fn reference() -> String {
    capstan_config::reference::<AgentSettings>(&AgentFlags::augment_args(clap::Command::new(
        "agent",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use std::collections::BTreeSet;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: AgentFlags,
    }

    fn flags(args: &[&str]) -> AgentFlags {
        let args = std::iter::once("agent").chain(args.iter().copied());
        Cli::try_parse_from(args).expect("test flags parse").flags
    }

    fn load_here(
        flags: &AgentFlags,
        env: &[(&str, &str)],
        default_file: &Path,
    ) -> Result<Loaded<AgentSettings>, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        capstan_config::load_layers(flags.config.as_deref(), flags, env, default_file)
    }

    #[test]
    fn file_then_dropins_then_env_then_flags() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let main = dir.path().join("agent.yaml");
        std::fs::write(
            &main,
            "server: [https://file:6443]\ntoken: file-token\nlb-server-port: 7000\nnode-name: file\n",
        )
        .expect("write");
        std::fs::create_dir(dir.path().join("agent.yaml.d")).expect("mkdir");
        let dropin = dir.path().join("agent.yaml.d/10-port.yaml");
        std::fs::write(&dropin, "lb-server-port: 7001\nwith-node-id: true\n").expect("write");
        let env = [
            ("CAPSTAN_URL", "https://env-a:6443,https://env-b"),
            ("CAPSTAN_NODE_NAME", "env-node"),
        ];
        let loaded =
            load_here(&flags(&["--node-name", "flag-node"]), &env, &main).expect("layers load");
        let settings = &loaded.config;
        assert_eq!(settings.server, ["https://env-a:6443", "https://env-b"]);
        assert_eq!(settings.token, "file-token");
        assert_eq!(settings.lb_server_port, 7001);
        assert!(settings.with_node_id);
        assert_eq!(settings.node_name.as_deref(), Some("flag-node"));
        assert_eq!(loaded.source_of("server"), "env CAPSTAN_URL");
        assert_eq!(loaded.source_of("token"), main.display().to_string());
        assert_eq!(
            loaded.source_of("lb-server-port"),
            dropin.display().to_string()
        );
        assert_eq!(loaded.source_of("node-name"), "flag --node-name");
        assert_eq!(loaded.source_of("data-dir"), "default");

        let text = loaded.render();
        assert!(text.contains("token: \"***\"  # "), "{text}");
        assert!(!text.contains("file-token"), "{text}");

        let config = super::super::AgentConfig::from_settings(settings).expect("valid");
        assert_eq!(config.servers, ["env-a:6443", "env-b:6443"]);
        assert_eq!(config.lb_bind.port(), 7001);
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let main = dir.path().join("agent.yaml");
        std::fs::write(&main, "servers: [https://a:6443]\n").expect("write");
        let message = load_here(&AgentFlags::default(), &[], &main)
            .err()
            .expect("unknown key fails")
            .to_string();
        assert!(message.contains("`servers`"), "{message}");
        assert!(message.contains(&main.display().to_string()), "{message}");
        assert!(message.contains("did you mean `server`"), "{message}");
    }

    #[test]
    fn missing_server_or_token_is_explained() {
        let settings = AgentSettings {
            token: "t".into(),
            ..AgentSettings::default()
        };
        let error =
            super::super::AgentConfig::from_settings(&settings).expect_err("no server fails");
        assert!(error.to_string().contains("CAPSTAN_URL"), "{error}");
        let settings = AgentSettings {
            server: vec!["https://a:6443".into()],
            ..AgentSettings::default()
        };
        let error =
            super::super::AgentConfig::from_settings(&settings).expect_err("no token fails");
        assert!(error.to_string().contains("CAPSTAN_TOKEN"), "{error}");
    }

    #[test]
    fn every_key_is_a_flag_and_every_flag_a_key() {
        let Ok(figment::value::Value::Dict(_, keys)) =
            figment::value::Value::serialize(AgentSettings::default())
        else {
            panic!("settings serialize to a mapping");
        };
        let keys: BTreeSet<String> = keys.keys().cloned().collect();
        let flags: BTreeSet<String> = Cli::command()
            .get_arguments()
            .filter_map(|arg| arg.get_long().map(str::to_string))
            .filter(|long| !["config", "print-config", "print-reference"].contains(&long.as_str()))
            .collect();
        assert_eq!(keys, flags);
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/agent.yaml");
        let flags = AgentFlags {
            config: Some(path.clone()),
            ..AgentFlags::default()
        };
        let loaded = load_here(&flags, &[], Path::new("/nonexistent/agent.yaml"))
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_ne!(
            loaded.config,
            AgentSettings::default(),
            "agent.yaml sets something"
        );
        super::super::AgentConfig::from_settings(&loaded.config).expect("agent.yaml is valid");
    }
}
