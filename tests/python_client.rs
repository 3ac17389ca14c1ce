//! The official Python `kubernetes` client against a real server.
//!
//! Starts the `capstan` binary on a free loopback port with a throwaway data dir, waits for
//! its admin kubeconfig and its HTTPS port, then runs `tests/python/test_client.py` with
//! `KUBECONFIG` pointing at it. The script does the checking (typed models, patches, label
//! selectors, a watch, a 404); this test only hosts it and fails with its output.
//!
//! The Python package is a prerequisite that `scripts/test` installs. Without it the test
//! fails and says so: a client conformance test that quietly skips is worse than none.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to write its kubeconfig and accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the whole Python script may run before it is killed.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// How many times a server start is retried when another process took the port first.
const START_ATTEMPTS: usize = 3;

/// A running `capstan server`, killed when dropped so a failing test leaves nothing behind.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the server in `data_dir` and waits until it serves; retries on another free
    /// port when the one picked was taken between choosing it and the server binding it.
    fn start(data_dir: &Path) -> Server {
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Server::start_once(data_dir, attempt) {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "capstan server did not come up in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n\n")
        );
    }

    fn start_once(data_dir: &Path, attempt: usize) -> Result<Server, String> {
        let port = free_port();
        let log = data_dir.join(format!("server-{attempt}.log"));
        let log_file = File::create(&log).expect("the temporary dir is writable");
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args(["--bind-address", "127.0.0.1", "--https-listen-port"])
            .arg(port.to_string())
            .args(["--node-name", "python-client-test"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .expect("the log file can be duplicated"),
            )
            .stderr(log_file)
            .spawn()
            .expect("the capstan binary cargo built can be started");
        let mut server = Server {
            child,
            port,
            log,
            kubeconfig: data_dir.join("server").join("admin.kubeconfig"),
        };
        match server.wait_until_serving() {
            Ok(()) => Ok(server),
            Err(why) => Err(format!(
                "attempt {attempt} on port {port}: {why}\nserver log:\n{}",
                server.log_text()
            )),
        }
    }

    /// Waits for the kubeconfig file and for the HTTPS port to accept a TCP connection.
    fn wait_until_serving(&mut self) -> Result<(), String> {
        let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited with {status}"));
            }
            if self.kubeconfig.is_file()
                && TcpStream::connect_timeout(&address.into(), Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "no kubeconfig at {} and connection on {address} within {STARTUP_TIMEOUT:?}",
            self.kubeconfig.display()
        ))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|error| format!("(unreadable: {error})"))
    }
}

/// A loopback port nobody listens on right now (the OS picks it for a port-0 bind).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 picks a free port")
        .port()
}

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

/// Runs `command`, killing it after `timeout`; returns its exit status (None on timeout).
fn run_with_timeout(mut command: Command, timeout: Duration) -> Option<ExitStatus> {
    let mut child = command.spawn().expect("python3 can be started");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("the script's status can be read") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn python_kubernetes_client_works_against_the_server() {
    require_python_client();
    let data_dir = tempfile::tempdir().expect("a temporary dir can be created");
    let server = Server::start(data_dir.path());

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
