//! The request timeout (issue 14): a server on a Postgres database of its own, with
//! `--request-timeout 3` and two read slots, whose datastore freezes (the Postgres backends
//! serving its database are stopped with SIGSTOP). Every read and write is answered 504
//! with kube-apiserver's `Timeout` Status after about three seconds, more of them in a row
//! than there are slots, so each answered request gave its slot back; a client's shorter
//! `?timeout=` wins. Once the backends run again the server serves at once, with all its
//! slots free, and its metrics counted the 504s.
//!
//! Without the timeout such a request would hang as long as the datastore does, holding its
//! slot: every wait here is bounded, so the test fails instead of hanging.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_datastore::Engine;
use futures::future::join_all;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use common::TestDatabase;
use common::probe::tls_client_config;
use common::process::Server;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Slack for scheduling on a busy test machine (debug build, two cores).
const SLACK: Duration = Duration::from_secs(5);
/// The longest any one request of this test may take before the test fails.
const CLIENT_LIMIT: Duration = Duration::from_secs(20);
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// What a raw request got: the status code and the body (JSON, or a JSON string).
struct Answer {
    code: u16,
    body: Value,
    took: Duration,
}

/// A TLS client authenticated with the admin certificate of the server's kubeconfig.
fn admin_tls(server: &Server) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(server, true)))
}

/// One HTTP/1.1 request on a connection of its own (no client library that could retry a
/// 504 or a 429 on its own), failing the test if it takes longer than [`CLIENT_LIMIT`].
async fn call(server: &Server, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let started = Instant::now();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(server.address())
            .await
            .expect("the server listens");
        let name = ServerName::try_from("localhost").expect("a DNS name");
        let mut tls = admin_tls(server)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes())
            .await
            .expect("request sent");
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    };
    let response = tokio::time::timeout(CLIENT_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within {CLIENT_LIMIT:?}"));
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not an HTTP response: {response:?}"));
    let text = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let body = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
    Answer {
        code,
        body,
        took: started.elapsed(),
    }
}

/// Fails unless `answer` is upstream's timeout Status with `message`, answered after about
/// `timeout`.
fn assert_timed_out(what: &str, answer: &Answer, message: &str, timeout: Duration) {
    assert_eq!(answer.code, 504, "{what}: {}", answer.body);
    assert_eq!(answer.body["kind"], "Status", "{what}: {}", answer.body);
    assert_eq!(answer.body["status"], "Failure", "{what}");
    assert_eq!(answer.body["reason"], "Timeout", "{what}");
    assert_eq!(answer.body["code"], 504, "{what}");
    assert_eq!(answer.body["message"], message, "{what}");
    assert!(
        answer.took >= timeout.saturating_sub(Duration::from_millis(300))
            && answer.took < timeout + SLACK,
        "{what}: answered after {:?}, the timeout is {timeout:?}",
        answer.took
    );
}

/// The Postgres backends serving one database, stopped (SIGSTOP) until this is dropped,
/// which continues them (SIGCONT). A task keeps stopping backends that start meanwhile, so
/// a connection the server opens while frozen is frozen too. Only client backends of that
/// database are touched, never the postmaster or another database's backends.
struct Freeze {
    stopped: Arc<Mutex<BTreeSet<u32>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Freeze {
    /// Stops the backends of `database` (at least one must exist) and keeps stopping new ones.
    async fn start(database: &TestDatabase) -> Freeze {
        let (admin_url, name) = database
            .on_server()
            .expect("the test database is on a server");
        // The watcher's own connection is to the admin database, which stays running.
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("an admin connection to Postgres");
        let stopped = Arc::new(Mutex::new(BTreeSet::new()));
        let first = stop_new_backends(&mut admin, name, &stopped).await;
        assert!(first > 0, "no backend serves {name}: nothing to freeze");
        let task = tokio::spawn({
            let stopped = stopped.clone();
            let name = name.to_string();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    stop_new_backends(&mut admin, &name, &stopped).await;
                }
            }
        });
        Freeze { stopped, task }
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        self.task.abort();
        let stopped = std::mem::take(
            &mut *self
                .stopped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        eprintln!("continuing {} stopped backends: {stopped:?}", stopped.len());
        for pid in stopped {
            signal("-CONT", pid);
        }
    }
}

/// Stops the client backends of database `name` not stopped yet; returns how many it
/// stopped.
async fn stop_new_backends(
    admin: &mut sqlx::PgConnection,
    name: &str,
    stopped: &Mutex<BTreeSet<u32>>,
) -> usize {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(admin)
    .await
    .expect("pg_stat_activity can be read");
    let mut count = 0;
    for pid in pids.into_iter().filter_map(|pid| u32::try_from(pid).ok()) {
        let mut stopped = stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if stopped.contains(&pid) || !is_forked_postgres(pid) {
            continue;
        }
        signal("-STOP", pid);
        stopped.insert(pid);
        count += 1;
    }
    count
}

/// Whether `pid` is a process of this machine named `postgres` whose parent (the
/// postmaster) is too: a backend, not the postmaster itself nor a process of another PID
/// namespace that happens to have the number.
fn is_forked_postgres(pid: u32) -> bool {
    let comm = |pid: &str| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
    let parent = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("PPid:"))
                .map(|ppid| ppid.trim().to_string())
        });
    comm(&pid.to_string()).as_deref().map(str::trim) == Some("postgres")
        && parent
            .and_then(|ppid| comm(&ppid))
            .as_deref()
            .map(str::trim)
            == Some("postgres")
}

fn signal(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    // A backend may have ended by itself since it was listed.
    if !status.success() {
        eprintln!("kill {signal} {pid} failed (the backend may be gone)");
    }
}

/// The value of `capstan_apiserver_requests_total` with `labels` in the server's metrics.
async fn requests_total(server: &Server, labels: &str) -> u64 {
    let answer = call(server, "GET", "/metrics", None).await;
    assert_eq!(answer.code, 200, "/metrics: {}", answer.body);
    let text = answer.body.as_str().unwrap_or_default().to_string();
    text.lines()
        .filter(|line| line.starts_with("capstan_apiserver_requests_total{"))
        .filter(|line| labels.split(',').all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn requests_on_a_frozen_datastore_get_504_and_give_back_their_slots() {
    let database = TestDatabase::create(Engine::Postgres).await;
    let data_dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(
        data_dir.path(),
        "request-timeout",
        &[
            "--datastore-endpoint",
            database.endpoint(),
            // The maintenance and leader locks hold one connection each for as long as
            // they are held: the pool is full (3) from the first query on, so a request
            // while frozen cannot get a fresh, running backend.
            "--datastore-max-connections",
            "3",
            "--request-timeout",
            "3",
            "--max-requests-inflight",
            "2",
            "--max-mutating-requests-inflight",
            "1",
        ],
    );
    let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "before"}, "data": {"a": "1"}});
    let created = call(&server, "POST", CONFIGMAPS, Some(&configmap)).await;
    assert_eq!(created.code, 201, "{}", created.body);
    let one = format!("{CONFIGMAPS}/before");
    assert_eq!(call(&server, "GET", &one, None).await.code, 200);
    let read_message = "Timeout: request did not complete within the allotted timeout";

    let freeze = Freeze::start(&database).await;
    // Three rounds of as many reads as there are slots: a slot kept by a request that timed
    // out would make the next round's request a 429.
    for round in 0..3 {
        let answers = join_all([
            call(&server, "GET", &one, None),
            call(&server, "GET", CONFIGMAPS, None),
        ])
        .await;
        for answer in &answers {
            assert_timed_out(
                &format!("round {round}"),
                answer,
                read_message,
                REQUEST_TIMEOUT,
            );
        }
    }
    // A client's shorter timeout wins.
    let short = call(&server, "GET", &format!("{CONFIGMAPS}?timeout=1s"), None).await;
    assert_timed_out("?timeout=1s", &short, read_message, Duration::from_secs(1));
    // A write gets the message of upstream's write handlers.
    let write = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "during"}});
    let written = call(&server, "POST", CONFIGMAPS, Some(&write)).await;
    assert_timed_out(
        "a create",
        &written,
        "Timeout: request did not complete within requested timeout - context deadline exceeded",
        REQUEST_TIMEOUT,
    );
    drop(freeze);

    // Running again: served at once, and all slots are free (none answers 429).
    common::wait_for(
        "a read after the datastore runs again",
        CLIENT_LIMIT,
        async || (call(&server, "GET", &one, None).await.code == 200).then_some(()),
    )
    .await;
    let answers = join_all([
        call(&server, "GET", &one, None),
        call(&server, "GET", CONFIGMAPS, None),
    ])
    .await;
    for answer in answers {
        assert_eq!(answer.code, 200, "after the freeze: {}", answer.body);
    }
    let list = requests_total(&server, r#"verb="list",resource="configmaps",code="504""#).await;
    let get = requests_total(&server, r#"verb="get",resource="configmaps",code="504""#).await;
    assert!(
        list >= 4 && get >= 3,
        "504s counted: {list} lists, {get} gets"
    );

    drop(server);
    database.cleanup().await;
}
