//! The layered configuration loader behind `capstan server` and `capstan agent`.
//!
//! Layers, later ones winning key by key (the contract in ARCHITECTURE.md):
//!
//! 1. defaults (the settings struct's `Default`);
//! 2. the config file, `--config FILE` (a default path may be absent, a file named
//!    explicitly must exist);
//! 3. its drop-ins, `FILE.d/*.yaml` in alphabetical order;
//! 4. environment variables `CAPSTAN_<KEY>` (upper snake case, e.g. `CAPSTAN_DATA_DIR`);
//! 5. command-line flags, only those given.
//!
//! Keys are the flag names (`data-dir`, `datastore-endpoint`). Figment merges the layers;
//! every layer is its own provider with its own metadata so `--print-config` can say where
//! each effective value came from. YAML is read through serde-saphyr (figment's own `yaml`
//! feature pulls the archived serde_yaml). Unknown keys in a file are an error naming the
//! key and the file, because a misspelt key silently ignored is a setting silently lost.

mod declare;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::providers::{Data, Format};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// Prefix of the environment variables that set configuration keys.
pub const ENV_PREFIX: &str = "CAPSTAN_";

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
pub fn list_or_commas<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
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

/// The log filter used when `log-level` is unset: `RUST_LOG`, else `info`.
pub fn derived_log_level(source: &mut String) -> String {
    match std::env::var("RUST_LOG") {
        Ok(filter) if !filter.trim().is_empty() => {
            *source = "env RUST_LOG".to_string();
            yaml_scalar(&filter)
        }
        _ => "info".to_string(),
    }
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
pub fn yaml_scalar(text: &str) -> String {
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
