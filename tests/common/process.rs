//! The `capstan` binary as a child process, for tests that drive it with outside clients
//! (kubectl, the Python client): a throwaway data dir, a free loopback port, and a guard
//! that kills the server when the test ends, passed or failed.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to write its kubeconfig and accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a server start is retried when another process took the port first.
const START_ATTEMPTS: usize = 3;

/// A running `capstan server`, killed when dropped so a failing test leaves nothing behind.
pub struct Server {
    child: Child,
    /// The HTTPS port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
    /// The admin kubeconfig the server wrote.
    pub kubeconfig: PathBuf,
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
    pub fn start(data_dir: &Path, node_name: &str) -> Server {
        Server::start_with(data_dir, node_name, &[])
    }

    /// Starts the server with extra command-line flags.
    pub fn start_with(data_dir: &Path, node_name: &str, flags: &[&str]) -> Server {
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Server::start_once(data_dir, node_name, flags, attempt) {
                Ok(server) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "capstan server did not come up in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n\n")
        );
    }

    fn start_once(
        data_dir: &Path,
        node_name: &str,
        flags: &[&str],
        attempt: usize,
    ) -> Result<Server, String> {
        let port = free_port();
        let log = data_dir.join(format!("server-{attempt}.log"));
        let log_file = File::create(&log).expect("the temporary dir is writable");
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .args(["--bind-address", "127.0.0.1", "--https-listen-port"])
            .arg(port.to_string())
            .args(["--node-name", node_name])
            .args(flags)
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

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|error| format!("(unreadable: {error})"))
    }
}

/// A loopback port nobody listens on right now (the OS picks it for a port-0 bind).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binding 127.0.0.1:0 picks a free port")
        .port()
}

/// Runs `command`, killing it after `timeout`; returns its exit status (None on timeout).
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Option<ExitStatus> {
    let mut child = command.spawn().expect("the command can be started");
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
