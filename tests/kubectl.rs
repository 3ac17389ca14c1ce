//! Stock kubectl against a real server: the scripted session in `tests/kubectl/session.sh`
//! (create, apply twice with a changed container list, get/-o yaml/-o wide/-w, describe,
//! label, annotate, patch of every type, scale, edit, delete with wait, delete namespace,
//! api-resources, explain), run once per kubectl version users have: the current one on
//! PATH and Debian bookworm's 1.20. `scripts/test` provides both (`scripts/kubectl-versions`
//! exports their paths); without them the test fails and says how to get them.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::process::{Server, run_with_timeout};

const SESSION_TIMEOUT: Duration = Duration::from_secs(300);

fn kubectl(variable: &str) -> PathBuf {
    match std::env::var_os(variable) {
        Some(path) if PathBuf::from(&path).is_file() => PathBuf::from(path),
        _ => panic!(
            "{variable} does not name a kubectl binary; run scripts/test, or \
             `eval \"$(scripts/kubectl-versions)\"` first"
        ),
    }
}

fn run_session(variable: &str) {
    let kubectl = kubectl(variable);
    let data_dir = tempfile::tempdir().expect("a temporary dir can be created");
    let work = tempfile::tempdir().expect("a temporary dir can be created");
    let server = Server::start(data_dir.path(), "kubectl-test");
    let output_path = work.path().join("session.log");
    let output = std::fs::File::create(&output_path).expect("the work dir is writable");
    let mut command = Command::new("bash");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/kubectl/session.sh"
        ))
        .env("KUBECTL", &kubectl)
        .env("KUBECONFIG", &server.kubeconfig)
        .env("WORK", work.path())
        .stdout(output.try_clone().expect("the log can be duplicated"))
        .stderr(output);
    let status = run_with_timeout(command, SESSION_TIMEOUT);
    let transcript = std::fs::read_to_string(&output_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "kubectl session with {} failed ({status:?}):\n{transcript}\nserver log:\n{}",
        kubectl.display(),
        server.log_text()
    );
    assert!(transcript.contains("session passed"), "{transcript}");
}

#[test]
fn the_scripted_session_passes_with_current_kubectl() {
    run_session("CAPSTAN_KUBECTL_CURRENT");
}

#[test]
fn the_scripted_session_passes_with_debian_kubectl_1_20() {
    run_session("CAPSTAN_KUBECTL_120");
}
