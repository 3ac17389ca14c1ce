//! The systemd units in `config/` run the right command with the settings the README's
//! install section promises (K3s-like: Type=exec, Restart=always, KillMode=process, an
//! optional EnvironmentFile, a high LimitNOFILE).

use std::collections::BTreeMap;
use std::path::Path;

/// `section -> key -> values` of a unit file (keys may repeat).
fn unit(name: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("unit file reads");
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: bad line {line}"));
        assert!(!section.is_empty(), "{name}: {line} outside a section");
        sections
            .entry(section.clone())
            .or_default()
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    sections
}

#[test]
fn server_and_agent_units_run_capstan_like_k3s_units() {
    for (file, command) in [
        ("capstan-server.service", "server"),
        ("capstan-agent.service", "agent"),
    ] {
        let unit = unit(file);
        let service = &unit["Service"];
        let one = |key: &str| -> &str {
            let values = service
                .get(key)
                .unwrap_or_else(|| panic!("{file}: no {key}"));
            assert_eq!(values.len(), 1, "{file}: one {key}");
            &values[0]
        };
        assert_eq!(one("Type"), "exec", "{file}: no sd_notify yet");
        assert_eq!(
            one("ExecStart"),
            format!("/usr/local/bin/capstan {command}")
        );
        assert_eq!(one("Restart"), "always");
        assert_eq!(one("KillMode"), "process");
        assert_eq!(
            one("EnvironmentFile"),
            format!("-/etc/default/capstan-{command}")
        );
        assert!(
            one("LimitNOFILE").parse::<u64>().is_ok_and(|n| n >= 65536),
            "{file}"
        );
        assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
        assert_eq!(unit["Unit"]["After"], ["network-online.target"]);
    }
}

#[test]
fn systemd_analyze_verify_finds_nothing_to_say() {
    // The binary the units start must exist for verify; point them at the one cargo built.
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut paths = Vec::new();
    for file in ["capstan-server.service", "capstan-agent.service"] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(file),
        )
        .expect("unit file reads");
        let path = dir.path().join(file);
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/capstan", env!("CARGO_BIN_EXE_capstan")),
        )
        .expect("unit copy writes");
        paths.push(path);
    }
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze runs (part of systemd: apt-get install systemd)");
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );
}
