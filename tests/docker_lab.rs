//! The Docker lab (`docker/compose.yaml`) is valid compose syntax (must-show 6) and has the
//! topology the README walks through. Images cannot be pulled or run on the build machines,
//! so this checks the file: `docker-compose config -q` (Debian's docker-compose validates
//! without a daemon; scripts/test installs it) and the structure read as YAML.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(docker_dir().join("compose.yaml")).expect("compose.yaml");
    serde_saphyr::from_str(&text).expect("compose.yaml is YAML")
}

/// `docker compose` (v2 plugin) when the docker CLI has it, else `docker-compose`.
fn compose_command() -> Command {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if plugin {
        let mut command = Command::new("docker");
        command.arg("compose");
        command
    } else {
        Command::new("docker-compose")
    }
}

#[test]
fn compose_config_accepts_the_lab() {
    let output = compose_command()
        .args(["-f", "docker/compose.yaml", "config", "-q"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect(
            "`docker compose` or `docker-compose` runs (apt-get install docker-compose; scripts/test does)",
        );
    assert!(
        output.status.success(),
        "compose rejects docker/compose.yaml: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_lab_has_postgres_two_servers_haproxy_and_two_agents() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "postgres", "server-1", "server-2", "haproxy", "agent-1", "agent-2"
        ])
    );
    let declared_volumes = compose["volumes"].as_object().expect("top-level volumes");
    for (name, service) in services {
        assert!(
            service["image"].is_string() || service["build"].is_object(),
            "{name} has an image or a build"
        );
        if let Some(depends) = service["depends_on"].as_object() {
            for target in depends.keys() {
                assert!(
                    services.contains_key(target),
                    "{name} depends on unknown {target}"
                );
            }
        }
        if let Some(depends) = service["depends_on"].as_array() {
            for target in depends.iter().filter_map(Value::as_str) {
                assert!(
                    services.contains_key(target),
                    "{name} depends on unknown {target}"
                );
            }
        }
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let source = volume
                .as_str()
                .expect("short volume syntax")
                .split(':')
                .next();
            let source = source.unwrap_or_default();
            if source.starts_with('.') {
                assert!(
                    docker_dir().join(source).exists(),
                    "{name}: {source} exists"
                );
            } else {
                assert!(
                    declared_volumes.contains_key(source),
                    "{name}: volume {source} declared"
                );
            }
        }
        if let Some(env_file) = service["env_file"].as_str() {
            assert!(
                docker_dir().join(env_file).is_file(),
                "{name}: {env_file} exists"
            );
        }
    }

    let command = |name: &str| -> Vec<String> {
        services[name]["command"]
            .as_array()
            .expect("command list")
            .iter()
            .map(|word| word.as_str().expect("string").to_string())
            .collect()
    };
    let mut advertised = BTreeSet::new();
    for server in ["server-1", "server-2"] {
        let args = command(server);
        assert_eq!(args[0], "server");
        let at = args
            .iter()
            .position(|a| a == "--advertise-address")
            .expect("advertise");
        advertised.insert(args[at + 1].clone());
        let env = &services[server]["environment"];
        assert!(
            env["CAPSTAN_DATASTORE_ENDPOINT"]
                .as_str()
                .is_some_and(|e| e.contains("@postgres:5432/"))
        );
        assert!(
            env["CAPSTAN_TLS_SAN"]
                .as_str()
                .is_some_and(|s| s.contains("haproxy"))
        );
        assert_eq!(services[server]["env_file"], "lab.env", "the shared token");
    }
    assert_eq!(
        advertised.len(),
        2,
        "each server advertises its own address"
    );
    for agent in ["agent-1", "agent-2"] {
        assert_eq!(command(agent)[0], "agent");
        assert_eq!(
            services[agent]["environment"]["CAPSTAN_URL"],
            "https://haproxy:6443"
        );
        assert_eq!(services[agent]["env_file"], "lab.env");
    }
    assert_eq!(services["haproxy"]["ports"][0], "6443:6443");

    let haproxy = std::fs::read_to_string(docker_dir().join("haproxy.cfg")).expect("haproxy.cfg");
    assert!(haproxy.contains("mode tcp"));
    assert!(haproxy.contains("option httpchk GET /ping"));
    for server in ["server-1:6443", "server-2:6443"] {
        assert!(haproxy.contains(server), "haproxy balances over {server}");
    }
    let env = std::fs::read_to_string(docker_dir().join("lab.env")).expect("lab.env");
    assert!(env.lines().any(|line| line.starts_with("CAPSTAN_TOKEN=")));
}

#[test]
fn the_dockerfile_is_multi_stage_and_static() {
    let text = std::fs::read_to_string(docker_dir().join("Dockerfile")).expect("Dockerfile");
    let stages: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(text.contains("--target x86_64-unknown-linux-musl"));
    assert!(stages[1].contains("distroless/static"));
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/capstan\"]"));
    // Every COPY source of the build stage exists in the repository.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(root.join(source).exists(), "COPY source {source} exists");
        }
    }
}
