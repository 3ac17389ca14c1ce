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
    /// The loopback address the server binds (127.0.0.1 unless started with `start_at`).
    pub ip: Ipv4Addr,
    /// The HTTPS port.
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
        Server::start_at(Ipv4Addr::LOCALHOST, data_dir, node_name, flags)
    }

    /// Starts the server bound to `ip` (a loopback address standing for a host of its own)
    /// with extra command-line flags.
    pub fn start_at(ip: Ipv4Addr, data_dir: &Path, node_name: &str, flags: &[&str]) -> Server {
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Server::start_once(ip, data_dir, node_name, flags, attempt) {
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
        ip: Ipv4Addr,
        data_dir: &Path,
        node_name: &str,
        flags: &[&str],
        attempt: usize,
    ) -> Result<Server, String> {
        let port = free_port_on(ip);
        let log = data_dir.join(format!("server-{attempt}.log"));
        let log_file = File::create(&log).expect("the temporary dir is writable");
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["server", "--data-dir"])
            .arg(data_dir)
            .arg("--bind-address")
            .arg(ip.to_string())
            .arg("--https-listen-port")
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
            ip,
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
        let address = SocketAddrV4::new(self.ip, self.port);
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

    /// `ip:port` of its API.
    pub fn address(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// kill -9: the server gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit; returns its status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        terminate(&mut self.child, timeout)
    }

    /// Whether the process has exited, and how.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|error| format!("(unreadable: {error})"))
    }
}

/// A loopback port nobody listens on right now (the OS picks it for a port-0 bind).
pub fn free_port() -> u16 {
    free_port_on(Ipv4Addr::LOCALHOST)
}

/// A port nobody listens on right now on `ip` (a loopback address).
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|listener| listener.local_addr())
        .expect("binding a loopback address with port 0 picks a free port")
        .port()
}

/// Sends SIGTERM to `child` and waits up to `timeout` for it to exit.
pub fn terminate(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
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

/// How long an agent may take to join and write its kubeconfig.
const AGENT_JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `capstan agent`, killed when dropped.
pub struct Agent {
    child: Child,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The port of its local load balancer on 127.0.0.1.
    pub lb_port: u16,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// The command line of an agent in `data_dir` joining through `server` (a URL) with
    /// `token`, its load balancer on `lb_port`.
    pub fn command(
        data_dir: &Path,
        server: &str,
        token: &str,
        node_name: &str,
        lb_port: u16,
        flags: &[&str],
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_capstan"));
        command
            .args(["agent", "--server", server, "--token", token])
            .args(["--node-name", node_name, "--data-dir"])
            .arg(data_dir)
            .arg("--lb-server-port")
            .arg(lb_port.to_string())
            .args(flags)
            .env("NO_COLOR", "1")
            .env_remove("CAPSTAN_TOKEN")
            .env_remove("CAPSTAN_URL")
            .stdin(Stdio::null());
        command
    }

    /// Starts an agent and waits until it joined (its kubeconfig exists and its load
    /// balancer accepts connections).
    pub fn start(
        data_dir: &Path,
        server: &str,
        token: &str,
        node_name: &str,
        flags: &[&str],
    ) -> Agent {
        let agent = Agent::spawn(data_dir, server, token, node_name, free_port(), flags);
        agent.wait_until_joined();
        agent
    }

    /// Starts an agent without waiting for it to join.
    pub fn spawn(
        data_dir: &Path,
        server: &str,
        token: &str,
        node_name: &str,
        lb_port: u16,
        flags: &[&str],
    ) -> Agent {
        std::fs::create_dir_all(data_dir).expect("the agent's data dir can be created");
        let log = data_dir.join(format!(
            "agent-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let log_file = File::create(&log).expect("the temporary dir is writable");
        let child = Agent::command(data_dir, server, token, node_name, lb_port, flags)
            .stdout(log_file.try_clone().expect("the log can be duplicated"))
            .stderr(log_file)
            .spawn()
            .expect("the capstan binary cargo built can be started");
        Agent {
            child,
            data_dir: data_dir.to_path_buf(),
            lb_port,
            log,
        }
    }

    /// Waits for the kubeconfig and the load balancer, failing with the agent's log.
    pub fn wait_until_joined(&self) {
        let deadline = Instant::now() + AGENT_JOIN_TIMEOUT;
        let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.lb_port);
        while Instant::now() < deadline {
            if self.kubeconfig().is_file()
                && TcpStream::connect_timeout(&address.into(), Duration::from_millis(200)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the agent did not join within {AGENT_JOIN_TIMEOUT:?}; its log:\n{}",
            self.log_text()
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The kubeconfig the agent writes for local clients (through its load balancer).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("agent").join("kubeconfig")
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process has exited, and how.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the agent logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|error| format!("(unreadable: {error})"))
    }
}
