//! The server configuration's layers, keys and reference.

use std::collections::BTreeSet;

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
    fn load(&self, flags: &ServerFlags, env: &[(&str, &str)]) -> Result<LoadedConfig, ConfigError> {
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
    let defaults = serde_json::to_value(ServerConfig::default()).expect("serializes");
    let keys: BTreeSet<String> = defaults
        .as_object()
        .expect("a map")
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
    assert!(
        text.contains(
            "datastore-endpoint: postgres://capstan:***@db:5432/k  # env CAPSTAN_DATASTORE_ENDPOINT"
        ),
        "{text}"
    );
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

#[test]
fn a_request_timeout_of_zero_is_refused_naming_the_key_and_its_source() {
    let files = Files::new();
    for (flags, env, source) in [
        (
            flags(&["--request-timeout", "0"]),
            vec![],
            "--request-timeout",
        ),
        (
            ServerFlags::default(),
            vec![("CAPSTAN_REQUEST_TIMEOUT", "0")],
            "CAPSTAN_REQUEST_TIMEOUT",
        ),
    ] {
        let message = files
            .load(&flags, &env)
            .err()
            .expect("a request timeout of 0 fails")
            .to_string();
        assert!(message.contains("request-timeout"), "{message}");
        assert!(message.contains(source), "{message}");
        assert!(message.contains("at least 1 second"), "{message}");
    }
    let loaded = files
        .load(&flags(&["--request-timeout", "3"]), &[])
        .expect("a request timeout of 3 loads");
    assert_eq!(loaded.config.request_timeout, 3);
}
