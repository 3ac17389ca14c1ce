//! The official Python `kubernetes` client against a real server.
//!
//! Starts the `capstan` binary on a free loopback port with a throwaway data dir, waits for
//! its admin kubeconfig and its HTTPS port, then runs `tests/python/test_client.py` with
//! `KUBECONFIG` pointing at it. The script does the checking (typed models, patches, label
//! selectors, a watch, a 404); this test only hosts it and fails with its output.
//!
//! The Python package is a prerequisite that `scripts/test` installs. Without it the test
//! fails and says so: a client conformance test that quietly skips is worse than none.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{Server, run_with_timeout};

/// How long the whole Python script may run before it is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Fails the test unless `python3` can import the `kubernetes` package.
fn require_python_client() {
    let check = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output();
    match check {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "python3 cannot import the kubernetes package (run scripts/test, which installs it, \
             or `python3 -m pip install 'kubernetes>=31'`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!(
            "python3 cannot be run ({error}); install Python 3 and run scripts/test, which \
             installs the kubernetes package"
        ),
    }
}

#[test]
fn python_kubernetes_client_works_against_the_server() {
    require_python_client();
    let data_dir = tempfile::tempdir().expect("a temporary dir can be created");
    let server = Server::start(data_dir.path(), "python-client-test");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_client.py");
    let stdout_path = data_dir.path().join("script.stdout");
    let stderr_path = data_dir.path().join("script.stderr");
    let mut command = Command::new("python3");
    command
        .arg("-u")
        .arg(&script)
        .env("KUBECONFIG", &server.kubeconfig)
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("the temporary dir is writable"))
        .stderr(File::create(&stderr_path).expect("the temporary dir is writable"));
    let status = run_with_timeout(command, SCRIPT_TIMEOUT);

    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let outcome = match status {
        Some(status) if status.success() => return,
        Some(status) => format!("{} exited with {status}", script.display()),
        None => format!("{} ran longer than {SCRIPT_TIMEOUT:?}", script.display()),
    };
    panic!(
        "{outcome}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- server log ---\n{}",
        read(&stdout_path),
        read(&stderr_path),
        server.log_text()
    );
}
