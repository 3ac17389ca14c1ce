//! Shared bootstrap state and the cluster token (issue 4): servers on one datastore share
//! one CA, a server with another token or other cluster settings refuses to start and says
//! why, and `capstan token` prints and rotates the token.
//!
//! Most tests run the `capstan` binary as users do; the lock and race tests call
//! `cluster::bootstrap` directly on several stores of one database, where the timing can be
//! controlled.

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use capstan_cluster::bootstrap::{self, BootstrapError, ClusterSettings, LOCK_KEY};
use capstan_datastore::{Engine, WriteOp, WriteOutcome};
use common::TestDatabase;
use common::process::{Server, free_port};

/// How long a refusing server may take to exit (debug build, shared machine).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Small pools: several servers per test, tests in parallel, one shared Postgres.
fn flags<'a>(endpoint: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec![
        "--datastore-endpoint",
        endpoint,
        "--datastore-max-connections",
        "4",
    ];
    flags.extend_from_slice(extra);
    flags
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn ca_of(data_dir: &Path) -> String {
    read(&data_dir.join("server/tls/server-ca.crt"))
}

fn token_of(data_dir: &Path) -> String {
    read(&data_dir.join("server/token")).trim().to_string()
}

/// What a finished `capstan` run left behind.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `capstan <args>` to completion (killed after `timeout`, failing the test).
fn run_capstan(args: &[&str], timeout: Duration) -> Finished {
    let dir = tempfile::tempdir().expect("a temporary folder for the output");
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("CAPSTAN_TOKEN")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("the capstan binary starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child's status can be read") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "capstan {args:?} still running after {timeout:?}; stderr:\n{}",
                read(&stderr_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Finished {
        status,
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
        took: started.elapsed(),
    }
}

/// Runs `capstan server` expecting it to refuse to start; its stderr.
fn refused_server(data_dir: &Path, endpoint: &str, extra: &[&str]) -> String {
    let port = free_port().to_string();
    let data_dir = data_dir.to_str().expect("temporary paths are UTF-8");
    let mut args = vec![
        "server",
        "--data-dir",
        data_dir,
        "--bind-address",
        "127.0.0.1",
        "--https-listen-port",
        &port,
        "--node-name",
        "refused",
    ];
    args.extend(flags(endpoint, extra));
    let finished = run_capstan(&args, REFUSAL_TIMEOUT);
    assert!(
        !finished.status.success(),
        "the server must exit non-zero; stderr:\n{}",
        finished.stderr
    );
    assert!(
        finished.took < Duration::from_secs(15),
        "the refusal took {:?}",
        finished.took
    );
    assert!(
        !Path::new(data_dir).join("server/admin.kubeconfig").exists(),
        "a refused server writes no kubeconfig"
    );
    finished.stderr
}

/// `/api` through `kubeconfig`'s credentials, sent to `port` on 127.0.0.1.
async fn api_versions_via(kubeconfig: &Path, port: u16) -> Result<Vec<String>, String> {
    let loaded = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let mut config = kube::Config::from_custom_kubeconfig(loaded, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    config.cluster_url = format!("https://127.0.0.1:{port}")
        .parse()
        .expect("a valid URL");
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let versions = client
        .list_core_api_versions()
        .await
        .map_err(|e| e.to_string())?;
    Ok(versions.versions)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_started_at_once_on_an_empty_datastore_share_one_ca() {
    common::install_crypto_provider();
    let database = TestDatabase::create(Engine::Postgres).await;
    let endpoint = database.endpoint().to_string();
    let dir_a = tempfile::tempdir().expect("data dir");
    let dir_b = tempfile::tempdir().expect("data dir");

    let (a, b) = std::thread::scope(|scope| {
        let start = |dir: &Path, name: &'static str| {
            let endpoint = endpoint.clone();
            let dir = dir.to_path_buf();
            scope.spawn(move || {
                Server::start_with(&dir, name, &flags(&endpoint, &["--token", "shared-secret"]))
            })
        };
        let a = start(dir_a.path(), "server-a");
        let b = start(dir_b.path(), "server-b");
        (
            a.join().expect("server a starts"),
            b.join().expect("server b starts"),
        )
    });

    let ca = ca_of(dir_a.path());
    assert_eq!(ca, ca_of(dir_b.path()), "both servers present one CA");
    let token = token_of(dir_a.path());
    assert!(
        token.starts_with("K10") && token.ends_with("::server:shared-secret"),
        "{token}"
    );
    assert_eq!(token, token_of(dir_b.path()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir_a.path().join("server/token"))
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }

    for (kubeconfig, port) in [(&a.kubeconfig, b.port), (&b.kubeconfig, a.port)] {
        let versions = api_versions_via(kubeconfig, port)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "{} against port {port}: {error}\nlog a:\n{}\nlog b:\n{}",
                    kubeconfig.display(),
                    a.log_text(),
                    b.log_text()
                )
            });
        assert_eq!(versions, ["v1"]);
    }
    drop((a, b));
    database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_the_ca_and_the_written_token_starts_another_server() {
    common::install_crypto_provider();
    let database = TestDatabase::create(Engine::Postgres).await;
    let endpoint = database.endpoint();
    let dir_a = tempfile::tempdir().expect("data dir");
    let first = Server::start_with(dir_a.path(), "server-a", &flags(endpoint, &[]));
    let ca = ca_of(dir_a.path());
    let token = token_of(dir_a.path());
    assert!(token.starts_with("K10"), "a full token is written: {token}");
    let old_kubeconfig = read(&first.kubeconfig);
    drop(first);

    // No --token: the data dir's token file is used.
    let again = Server::start_with(dir_a.path(), "server-a", &flags(endpoint, &[]));
    assert_eq!(ca_of(dir_a.path()), ca, "a restart keeps the CA");
    assert_eq!(token_of(dir_a.path()), token);
    let saved = dir_a.path().join("old.kubeconfig");
    std::fs::write(&saved, old_kubeconfig).expect("kubeconfig copy");
    api_versions_via(&saved, again.port)
        .await
        .expect("the kubeconfig written before the restart still works");

    let dir_b = tempfile::tempdir().expect("data dir");
    let second = Server::start_with(
        dir_b.path(),
        "server-b",
        &flags(endpoint, &["--token", &token]),
    );
    assert_eq!(
        ca_of(dir_b.path()),
        ca,
        "the full token joins the same cluster"
    );
    api_versions_via(&second.kubeconfig, again.port)
        .await
        .expect("the new server's admin is accepted by the first");
    drop((again, second));
    database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_another_token_exits_naming_the_token_mismatch() {
    common::install_crypto_provider();
    let database = TestDatabase::create(Engine::Postgres).await;
    let endpoint = database.endpoint();
    let dir_a = tempfile::tempdir().expect("data dir");
    let first = Server::start_with(
        dir_a.path(),
        "server-a",
        &flags(endpoint, &["--token", "ours"]),
    );

    let other = tempfile::tempdir().expect("data dir");
    let stderr = refused_server(other.path(), endpoint, &["--token", "theirs"]);
    assert!(stderr.contains("token mismatch"), "{stderr}");
    assert!(
        stderr.contains("bootstrapped with a different token"),
        "{stderr}"
    );

    // A full token of another cluster (right secret, another CA hash) is refused too.
    let foreign = format!("K10{}::server:ours", "ab".repeat(32));
    let stderr = refused_server(other.path(), endpoint, &["--token", &foreign]);
    assert!(stderr.contains("token mismatch"), "{stderr}");
    assert!(stderr.contains(&"ab".repeat(32)), "{stderr}");

    let stderr = refused_server(other.path(), endpoint, &[]);
    assert!(stderr.contains("pass --token"), "{stderr}");

    api_versions_via(&first.kubeconfig, first.port)
        .await
        .expect("the cluster's own server keeps serving");
    drop(first);
    database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn different_cluster_settings_are_refused_naming_each_setting() {
    common::install_crypto_provider();
    let database = TestDatabase::create(Engine::Postgres).await;
    let endpoint = database.endpoint();
    let dir_a = tempfile::tempdir().expect("data dir");
    let first = Server::start_with(
        dir_a.path(),
        "server-a",
        &flags(
            endpoint,
            &["--token", "t", "--cluster-domain", "corp.example"],
        ),
    );

    let other = tempfile::tempdir().expect("data dir");
    let stderr = refused_server(
        other.path(),
        endpoint,
        &[
            "--token",
            "t",
            "--cluster-domain",
            "corp.example",
            "--service-cidr",
            "10.99.0.0/16",
        ],
    );
    assert!(stderr.contains("--service-cidr"), "{stderr}");
    assert!(
        stderr.contains("10.99.0.0/16") && stderr.contains("10.43.0.0/16"),
        "both values are named: {stderr}"
    );
    assert!(!stderr.contains("--cluster-domain"), "{stderr}");

    let stderr = refused_server(other.path(), endpoint, &["--token", "t"]);
    assert!(stderr.contains("--cluster-domain"), "{stderr}");
    assert!(stderr.contains("corp.example"), "{stderr}");
    drop(first);
    database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn capstan_token_prints_and_rotates_the_token() {
    common::install_crypto_provider();
    let database = TestDatabase::create(Engine::Postgres).await;
    let endpoint = database.endpoint();
    let dir_a = tempfile::tempdir().expect("data dir");
    let data_dir = dir_a.path().to_str().expect("UTF-8 path");
    let first = Server::start_with(
        dir_a.path(),
        "server-a",
        &flags(endpoint, &["--token", "old"]),
    );
    let ca = ca_of(dir_a.path());
    drop(first);

    let printed = run_capstan(&["token", "--data-dir", data_dir], REFUSAL_TIMEOUT);
    assert!(printed.status.success(), "{}", printed.stderr);
    let old_full = token_of(dir_a.path());
    assert_eq!(printed.stdout.trim(), old_full);
    assert!(old_full.ends_with("::server:old"), "{old_full}");

    let rotated = run_capstan(
        &[
            "token",
            "rotate",
            "--new-token",
            "new",
            "--data-dir",
            data_dir,
            "--datastore-endpoint",
            endpoint,
        ],
        REFUSAL_TIMEOUT,
    );
    assert!(rotated.status.success(), "{}", rotated.stderr);
    let new_full = rotated.stdout.trim().to_string();
    assert!(new_full.ends_with("::server:new"), "{new_full}");
    assert_eq!(token_of(dir_a.path()), new_full, "written to the data dir");
    assert!(
        rotated.stderr.contains("restart every server and agent"),
        "{}",
        rotated.stderr
    );

    let other = tempfile::tempdir().expect("data dir");
    let stderr = refused_server(other.path(), endpoint, &["--token", "old"]);
    assert!(stderr.contains("token mismatch"), "{stderr}");
    // Rotating again with the old token fails the same way.
    let again = run_capstan(
        &[
            "token",
            "rotate",
            "--new-token",
            "newer",
            "--token",
            "old",
            "--data-dir",
            other.path().to_str().expect("UTF-8 path"),
            "--datastore-endpoint",
            endpoint,
        ],
        REFUSAL_TIMEOUT,
    );
    assert!(!again.status.success());
    assert!(again.stderr.contains("token mismatch"), "{}", again.stderr);

    let restarted = Server::start_with(dir_a.path(), "server-a", &flags(endpoint, &[]));
    assert_eq!(ca_of(dir_a.path()), ca, "rotation keeps the CA");
    let joined = tempfile::tempdir().expect("data dir");
    let second = Server::start_with(
        joined.path(),
        "server-b",
        &flags(endpoint, &["--token", "new"]),
    );
    assert_eq!(ca_of(joined.path()), ca);
    drop((restarted, second));
    database.cleanup().await;
}

#[test]
fn a_server_upgraded_from_a_per_data_dir_ca_keeps_it() {
    // What servers before shared bootstrap left in their data dir.
    let legacy =
        capstan_pki::certs::CertificateAuthority::generate("capstan-server-ca@1").expect("a CA");
    let dir = tempfile::tempdir().expect("data dir");
    let tls = dir.path().join("server/tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    std::fs::write(tls.join("server-ca.crt"), legacy.cert_pem()).expect("cert");
    std::fs::write(tls.join("server-ca.key"), legacy.key_pem()).expect("key");

    let server = Server::start(dir.path(), "upgraded");
    assert_eq!(
        ca_of(dir.path()),
        legacy.cert_pem(),
        "the data dir's CA is adopted"
    );
    drop(server);
}

// Store-level: the lock and the compare-and-swap, timed by the test.

#[tokio::test(flavor = "multi_thread")]
async fn servers_racing_on_an_empty_postgres_agree_on_one_set() {
    servers_racing_agree_on_one_set(Engine::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_racing_on_an_empty_mysql_agree_on_one_set() {
    servers_racing_agree_on_one_set(Engine::MySql).await;
}

async fn servers_racing_agree_on_one_set(engine: Engine) {
    let database = TestDatabase::create(engine).await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(
            database
                .open_with(|config| config.max_connections = 3)
                .await,
        );
    }
    let settings = ClusterSettings::default();
    let racers = stores.iter().enumerate().map(|(index, store)| {
        let settings = settings.clone();
        async move {
            bootstrap::load_or_create(store, "s3cret", &settings, &format!("racer-{index}")).await
        }
    });
    let states = futures::future::join_all(racers).await;
    let first = states[0].as_ref().expect("bootstrap succeeds");
    for state in &states {
        assert_eq!(state.as_ref().expect("bootstrap succeeds"), first);
    }
    assert!(
        stores[0].get(LOCK_KEY).await.expect("get").is_none(),
        "the lock is released"
    );
    let error = bootstrap::load_or_create(&stores[1], "wrong", &settings, "late")
        .await
        .expect_err("another secret");
    assert!(matches!(error, BootstrapError::TokenMismatch), "{error}");
    database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_lock_is_waited_for_and_a_stale_one_taken_over() {
    let database = TestDatabase::create(Engine::Postgres).await;
    let store = database.open().await;
    let settings = ClusterSettings::default();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64;

    let live = serde_json::json!({"holder": "busy-server", "sinceMs": now_ms});
    let created = store
        .write(WriteOp::Create {
            key: LOCK_KEY.to_string(),
            value: serde_json::to_vec(&live).expect("json").into(),
            ttl: None,
        })
        .await
        .expect("lock written");
    let WriteOutcome::Applied { revision } = created.outcome else {
        panic!("the lock key was free");
    };
    let waited = tokio::time::timeout(
        Duration::from_secs(2),
        bootstrap::load_or_create(&store, "s3cret", &settings, "waiter"),
    )
    .await;
    assert!(
        waited.is_err(),
        "a fresh lock held by another server is waited for"
    );
    assert!(!bootstrap::is_bootstrapped(&store).await.expect("get"));

    // Its holder died 40 s ago (no TTL, so nothing else would ever remove it).
    let stale = serde_json::json!({"holder": "dead-server", "sinceMs": now_ms - 40_000});
    let outcome = store
        .update(
            LOCK_KEY,
            serde_json::to_vec(&stale).expect("json"),
            revision,
        )
        .await
        .expect("lock aged");
    assert!(matches!(outcome, WriteOutcome::Applied { .. }));
    let started = Instant::now();
    let state = tokio::time::timeout(
        Duration::from_secs(20),
        bootstrap::load_or_create(&store, "s3cret", &settings, "rescuer"),
    )
    .await
    .expect("a stale lock does not block bootstrap")
    .expect("bootstrap succeeds");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(state.ca().is_ok());
    assert!(bootstrap::is_bootstrapped(&store).await.expect("get"));
    database.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disable_changes_on_a_restart_but_not_beside_a_running_server() {
    common::install_crypto_provider();
    let database = TestDatabase::create(Engine::Postgres).await;
    let endpoint = database.endpoint();
    let dir = tempfile::tempdir().expect("data dir");
    let mut first = Server::start_with(dir.path(), "server-a", &flags(endpoint, &["--token", "t"]));
    // While it runs, another server may not bring another --disable list.
    let other = tempfile::tempdir().expect("data dir");
    let stderr = refused_server(
        other.path(),
        endpoint,
        &["--token", "t", "--disable", "priority-classes"],
    );
    assert!(stderr.contains("--disable"), "{stderr}");

    // Stopped cleanly, the only server may come back with a new list (as K3s users do).
    assert!(
        first
            .terminate(Duration::from_secs(30))
            .is_some_and(|status| status.success()),
        "the first server stops cleanly"
    );
    let again = Server::start_with(
        dir.path(),
        "server-a",
        &flags(endpoint, &["--token", "t", "--disable", "priority-classes"]),
    );
    // And the new list is now the cluster's: the old one is refused beside it.
    let stderr = refused_server(other.path(), endpoint, &["--token", "t"]);
    assert!(stderr.contains("--disable"), "{stderr}");
    drop(again);
    database.cleanup().await;
}
