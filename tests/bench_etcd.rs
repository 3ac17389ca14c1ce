//! `capstan bench etcd` against a real etcd 3.4 (Debian's `etcd-server`, which scripts/test
//! installs): its raw gRPC puts all land, etcd's revision advances by exactly their count,
//! and a paced run stays near the rate it was offered. Without an `etcd` binary (on PATH, or
//! named by `CAPSTAN_TEST_ETCD`) the test fails rather than skips.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan::bench::etcd::{EtcdBenchArgs, EtcdClient, measure};
use common::process::{free_port, terminate};

/// A private single-member etcd on loopback, stopped and deleted on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let binary = std::env::var_os("CAPSTAN_TEST_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("etcd"));
        let dir = tempfile::tempdir().expect("a temporary directory for etcd's data");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd's log file");
        let child = Command::new(&binary)
            .args(["--name", "bench"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            // etcd 3.4 refuses to start on architectures other than amd64/ppc64le unless
            // told this one is meant (it ignores the variable where it is supported).
            .env("ETCD_UNSUPPORTED_ARCH", go_arch())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {} ({error}): install Debian's etcd-server (scripts/test does) \
                     or set CAPSTAN_TEST_ETCD",
                    binary.display()
                )
            });
        Etcd {
            child,
            endpoint,
            _dir: dir,
        }
    }

    /// A client once etcd answers puts (it takes a moment to elect itself leader).
    async fn client(&self) -> EtcdClient {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = match EtcdClient::connect(&self.endpoint).await {
                Ok(client) => client.put(b"/bench-test/ready", b"1").await.map(|_| client),
                Err(error) => Err(error),
            };
            match attempt {
                Ok(client) => return client,
                Err(error) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self._dir.path().join("etcd.log"))
                        .unwrap_or_default();
                    panic!("etcd did not answer within 30 s: {error:#}\n{log}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if terminate(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn args(endpoint: &str, rate: f64) -> EtcdBenchArgs {
    EtcdBenchArgs {
        endpoint: endpoint.to_string(),
        clients: 4,
        duration: 2.0,
        value_bytes: 256,
        rate,
        clients_per_connection: 2,
        prefix: "/registry/configmaps/bench".to_string(),
        json: false,
    }
}

async fn revision(client: &EtcdClient) -> i64 {
    client
        .put(b"/bench-test/marker", b"x")
        .await
        .expect("a marker put succeeds")
        .header
        .expect("etcd's answer has a header")
        .revision
}

#[tokio::test(flavor = "multi_thread")]
async fn every_put_lands_and_advances_etcds_revision_by_one() {
    let etcd = Etcd::start();
    let client = etcd.client().await;

    let before = revision(&client).await;
    let report = measure(&args(&etcd.endpoint, 0.0))
        .await
        .expect("the bench runs against etcd");
    let after = revision(&client).await;

    let create = &report.verbs["create"];
    assert!(report.writes > 0, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(create.count, report.writes, "{report:?}");
    assert_eq!(report.connections, 2, "{report:?}");
    assert_eq!(report.workload, "create");
    assert!(
        create.p50_ms > 0.0 && create.p50_ms <= create.p99_ms,
        "{report:?}"
    );
    // Each put makes one revision; the second marker put makes one more.
    assert_eq!(
        after - before,
        report.writes as i64 + 1,
        "etcd's revision moved by the puts: {report:?}"
    );

    // The report has the shape of `capstan bench api --json`.
    let json = serde_json::to_value(&report).expect("the report serializes");
    for field in [
        "writes_per_sec",
        "rate_offered",
        "verbs",
        "watch",
        "events_missed",
    ] {
        assert!(json.get(field).is_some(), "no {field} in {json}");
    }
    assert!(json["verbs"]["create"]["p99_ms"].is_number(), "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paced_run_stays_near_its_offered_rate() {
    let etcd = Etcd::start();
    let client = etcd.client().await;
    let before = revision(&client).await;
    let report = measure(&args(&etcd.endpoint, 50.0))
        .await
        .expect("the bench runs against etcd");
    let after = revision(&client).await;
    // 50/s for 2 s over 4 clients is at most 26 ticks each; far fewer would mean pacing
    // (not etcd) held the clients back.
    assert_eq!(report.errors, 0, "{report:?}");
    assert!(
        (20..=104).contains(&report.writes),
        "about 100 puts: {report:?}"
    );
    assert_eq!(report.rate_offered, Some(50.0));
    assert_eq!(after - before, report.writes as i64 + 1, "{report:?}");
}
