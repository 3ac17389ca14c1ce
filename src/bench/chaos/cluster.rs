//! The processes a chaos run breaks on purpose: `capstan server` children on loopback
//! addresses of their own (127.0.0.2, .3, …) over one datastore, and optionally a private
//! Postgres or MariaDB instance the run starts, restarts and removes itself (never the
//! machine's shared one).

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::http::{Method, StatusCode};
use sqlx::Connection as _;

use crate::bench::client::{Target, connect, request, send};

/// One `capstan server` child process.
pub struct ServerProcess {
    /// 0-based index; the server listens on 127.0.0.(index+2).
    pub index: usize,
    /// Its API address.
    pub ip: Ipv4Addr,
    /// Its HTTPS port (kept across restarts).
    pub port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
    starts: usize,
}

/// What every server of the run shares.
#[derive(Clone)]
pub struct ServerSpec {
    /// The binary to run (`capstan`).
    pub binary: PathBuf,
    /// The datastore endpoint.
    pub endpoint: String,
    /// The cluster token (the servers' `--token`).
    pub token: String,
    /// Parent of the servers' data dirs.
    pub work_dir: PathBuf,
}

impl ServerProcess {
    /// Starts server `index` (does not wait for it).
    pub fn start(spec: &ServerSpec, index: usize) -> anyhow::Result<ServerProcess> {
        let ip = Ipv4Addr::new(
            127,
            0,
            0,
            u8::try_from(index + 2).context("too many servers")?,
        );
        let port = TcpListener::bind((ip, 0))
            .and_then(|listener| listener.local_addr())
            .with_context(|| format!("cannot bind {ip}: is 127.0.0.0/8 routed to lo?"))?
            .port();
        let data_dir = spec.work_dir.join(format!("server-{}", index + 1));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let mut server = ServerProcess {
            index,
            ip,
            port,
            data_dir,
            child: None,
            starts: 0,
        };
        server.spawn(spec)?;
        Ok(server)
    }

    /// Starts the process again (after it was killed), same address and data dir.
    pub fn spawn(&mut self, spec: &ServerSpec) -> anyhow::Result<()> {
        self.starts += 1;
        let log = self.data_dir.join(format!("server-{}.log", self.starts));
        let log = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&spec.binary)
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--bind-address", &self.ip.to_string()])
            .args(["--https-listen-port", &self.port.to_string()])
            .args(["--node-name", &format!("chaos-server-{}", self.index + 1)])
            .args(["--datastore-endpoint", &spec.endpoint])
            .args(["--token", &spec.token])
            .env("NO_COLOR", "1")
            .env_remove("CAPSTAN_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", spec.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9 and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies of SIGKILL too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process exited on its own (it is then reaped and forgotten).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    /// The URL of its API.
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.ip, self.port)
    }

    /// Its data dir (logs are there).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
        self.kill();
    }
}

/// Sends `kill -<name>` to `pid`.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits until the server answers /readyz with 200.
pub async fn wait_ready(target: &Arc<Target>, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let attempt = async {
            let sender = connect(target).await?;
            let (status, body) = send(
                &sender,
                request(target, Method::GET, "/readyz", None, None)?,
            )
            .await?;
            anyhow::Ok((status, body))
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok((StatusCode::OK, _))) => return Ok(()),
            Ok(Ok((status, body))) => {
                last = format!("HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            Ok(Err(error)) => last = format!("{error:#}"),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("{} not ready within {timeout:?}: {last}", target.uri)
}

/// Which engine a private database instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrivateEngine {
    /// PostgreSQL (`initdb` + `pg_ctl`).
    Postgres,
    /// MariaDB (`mariadb-install-db` + `mariadbd`).
    Mariadb,
}

/// A database instance of the run's own, in its work dir, on a free loopback port.
pub struct PrivateDatabase {
    engine: PrivateEngine,
    dir: PathBuf,
    port: u16,
    pg_bin: PathBuf,
    mariadbd: Option<Child>,
    restarts: usize,
}

impl PrivateDatabase {
    /// Creates and starts the instance, and a database `chaos` in it.
    pub async fn start(
        engine: PrivateEngine,
        dir: &Path,
        pg_bin: &Path,
    ) -> anyhow::Result<PrivateDatabase> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let mut db = PrivateDatabase {
            engine,
            dir: dir.to_path_buf(),
            port,
            pg_bin: pg_bin.to_path_buf(),
            mariadbd: None,
            restarts: 0,
        };
        match engine {
            PrivateEngine::Postgres => {
                if running_as_root() {
                    run(Command::new("chown").args(["-R", "postgres"]).arg(dir))?;
                }
                run(db
                    .as_postgres(pg_bin.join("initdb"))
                    .arg("-D")
                    .arg(dir.join("data"))
                    .args(["-A", "trust", "-U", "postgres", "--no-sync"]))?;
            }
            PrivateEngine::Mariadb => {
                run(Command::new("mariadb-install-db")
                    .arg("--no-defaults")
                    .arg(format!("--datadir={}", dir.join("data").display()))
                    .args([
                        "--user=root",
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                    ]))?;
            }
        }
        db.launch()?;
        db.wait_up(Duration::from_secs(60)).await?;
        let admin = match engine {
            PrivateEngine::Postgres => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            PrivateEngine::Mariadb => format!("mysql://root@127.0.0.1:{port}/mysql"),
        };
        execute(&admin, "CREATE DATABASE chaos").await?;
        Ok(db)
    }

    /// The endpoint of the `chaos` database.
    pub fn endpoint(&self) -> String {
        match self.engine {
            PrivateEngine::Postgres => format!("postgres://postgres@127.0.0.1:{}/chaos", self.port),
            PrivateEngine::Mariadb => format!("mysql://root@127.0.0.1:{}/chaos", self.port),
        }
    }

    fn as_postgres(&self, program: PathBuf) -> Command {
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        match self.engine {
            PrivateEngine::Postgres => run(self
                .as_postgres(self.pg_bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("postgres.log"))
                .arg("-o")
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=300 -c fsync=off",
                    self.port,
                    self.dir.display()
                ))
                .args(["-w", "start"])),
            PrivateEngine::Mariadb => {
                let log = File::create(self.dir.join(format!("mariadb-{}.log", self.restarts)))?;
                let child = Command::new("mariadbd")
                    .arg("--no-defaults")
                    .arg(format!("--datadir={}", self.dir.join("data").display()))
                    .arg(format!("--port={}", self.port))
                    .arg(format!(
                        "--socket={}",
                        self.dir.join("mysqld.sock").display()
                    ))
                    .args([
                        "--bind-address=127.0.0.1",
                        "--user=root",
                        "--max-connections=500",
                        "--innodb-flush-log-at-trx-commit=2",
                    ])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("cannot start mariadbd")?;
                self.mariadbd = Some(child);
                Ok(())
            }
        }
    }

    /// Crashes the instance (Postgres: immediate stop; MariaDB: kill -9) and starts it
    /// again; returns once it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restarts += 1;
        match self.engine {
            PrivateEngine::Postgres => run(self
                .as_postgres(self.pg_bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"]))?,
            PrivateEngine::Mariadb => {
                if let Some(mut child) = self.mariadbd.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        self.launch()?;
        self.wait_up(Duration::from_secs(60)).await
    }

    async fn wait_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let url = match self.engine {
            PrivateEngine::Postgres => {
                format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
            }
            PrivateEngine::Mariadb => format!("mysql://root@127.0.0.1:{}/mysql", self.port),
        };
        let deadline = Instant::now() + timeout;
        loop {
            match execute(&url, "SELECT 1").await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context("the private database did not come up"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for PrivateDatabase {
    fn drop(&mut self) {
        match self.engine {
            PrivateEngine::Postgres => {
                let _ = self
                    .as_postgres(self.pg_bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(self.dir.join("data"))
                    .args(["-m", "immediate", "-w", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            PrivateEngine::Mariadb => {
                if let Some(mut child) = self.mariadbd.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

async fn execute(url: &str, sql: &'static str) -> anyhow::Result<()> {
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(sql).execute(&mut conn).await?;
        let _ = conn.close().await;
    } else {
        let mut conn = sqlx::MySqlConnection::connect(url).await?;
        sqlx::raw_sql(sql).execute(&mut conn).await?;
        let _ = conn.close().await;
    }
    Ok(())
}

/// Cuts every connection the servers hold to the datastore's database (not this one's
/// own); returns how many were cut.
pub async fn drop_connections(endpoint: &str) -> anyhow::Result<u64> {
    if endpoint.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(endpoint).await?;
        let cut: Vec<(Option<bool>,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(cut.iter().filter(|(done,)| *done == Some(true)).count() as u64)
    } else if endpoint.starts_with("mysql") || endpoint.starts_with("mariadb") {
        let mut conn = sqlx::MySqlConnection::connect(endpoint).await?;
        let ids: Vec<(u64,)> = sqlx::query_as(
            "SELECT CAST(id AS UNSIGNED) FROM information_schema.processlist \
             WHERE db = DATABASE() AND id <> CONNECTION_ID()",
        )
        .fetch_all(&mut conn)
        .await?;
        let mut cut = 0;
        for (id,) in ids {
            // The connection may have gone meanwhile.
            if sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
                .execute(&mut conn)
                .await
                .is_ok()
            {
                cut += 1;
            }
        }
        let _ = conn.close().await;
        Ok(cut)
    } else {
        bail!("dropping connections needs a Postgres or MySQL endpoint, not {endpoint}")
    }
}
