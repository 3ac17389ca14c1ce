//! Server membership, leader election and what hangs off them, on Postgres: servers see each
//! other, `default/kubernetes` points at the live ones, a stopped or killed server leaves, the
//! leader role moves to a survivor, stale nodes are marked NotReady, and `capstan status`
//! shows it all.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use capstan_cluster::leader;
use capstan_cluster::membership::{Membership, ServerRecord, format_time};
use capstan_datastore::{Engine, Store};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use common::TestDatabase;
use common::server::TestServer;

/// Polls `check` every 100 ms until it returns `Some`, or fails naming `what`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One in-process member: its store, leader election and membership.
struct Member {
    store: Store,
    membership: Membership,
    leading: watch::Receiver<bool>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Member {
    async fn start(database: &TestDatabase, id: &str, address: &str) -> Member {
        let store = database.open().await;
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let leading = leader::start(store.clone(), id.to_string(), &tasks, shutdown.clone());
        let own = ServerRecord::new(id, id, address.parse().expect("a socket address"));
        let membership = Membership::start(
            store.clone(),
            own,
            leading.clone(),
            &tasks,
            shutdown.clone(),
        );
        Member {
            store,
            membership,
            leading,
            tasks,
            shutdown,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .expect("membership and election stop within 10 s");
        self.store.close().await;
    }
}

fn ids(servers: &[ServerRecord]) -> Vec<&str> {
    servers.iter().map(|server| server.id.as_str()).collect()
}

#[tokio::test]
async fn members_see_each_other_and_a_clean_stop_leaves_at_once_on_postgres() {
    members_see_each_other_and_a_clean_stop_leaves_at_once(Engine::Postgres).await;
}

#[tokio::test]
async fn members_see_each_other_and_a_clean_stop_leaves_at_once_on_mysql() {
    members_see_each_other_and_a_clean_stop_leaves_at_once(Engine::MySql).await;
}

async fn members_see_each_other_and_a_clean_stop_leaves_at_once(engine: Engine) {
    let database = TestDatabase::create(engine).await;
    let a = Member::start(&database, "server-a", "127.0.0.2:6443").await;
    let b = Member::start(&database, "server-b", "127.0.0.3:6443").await;

    for member in [&a, &b] {
        let mut servers = member.membership.subscribe();
        let both = eventually(
            "both servers, one of them leader",
            Duration::from_secs(15),
            || {
                let current = servers.borrow_and_update().clone();
                async move {
                    let leaders = current.iter().filter(|s| s.leader).count();
                    (current.len() == 2 && leaders == 1).then_some(current)
                }
            },
        )
        .await;
        assert_eq!(ids(&both), ["server-a", "server-b"]);
        assert_eq!(both[0].address, "127.0.0.2:6443");
        assert_eq!(both[1].address, "127.0.0.3:6443");
    }
    assert!(
        *a.leading.borrow() ^ *b.leading.borrow(),
        "exactly one member leads"
    );
    let metrics: Vec<String> = prometheus::gather()
        .iter()
        .map(|family| family.name().to_string())
        .collect();
    for name in [
        "capstan_cluster_servers",
        "capstan_cluster_membership_changes_total",
        "capstan_cluster_leader",
    ] {
        assert!(
            metrics.iter().any(|m| m == name),
            "{name} missing in {metrics:?}"
        );
    }

    let (leaving, staying) = if *a.leading.borrow() { (a, b) } else { (b, a) };
    let mut servers = staying.membership.subscribe();
    let stopped_at = Instant::now();
    leaving.stop().await;
    let left = eventually(
        "the stopped server to leave",
        Duration::from_secs(2),
        || {
            let current = servers.borrow_and_update().clone();
            async move { (current.len() == 1).then_some(current) }
        },
    )
    .await;
    assert!(stopped_at.elapsed() < Duration::from_secs(2));
    assert_eq!(ids(&left), [staying.membership.id()]);

    let mut leading = staying.leading.clone();
    eventually(
        "the survivor to take over leadership",
        Duration::from_secs(10),
        || {
            let now = *leading.borrow_and_update();
            async move { now.then_some(()) }
        },
    )
    .await;
    eventually(
        "the survivor's record to say it leads",
        Duration::from_secs(5),
        || {
            let current = servers.borrow_and_update().clone();
            async move { current.first().is_some_and(|s| s.leader).then_some(()) }
        },
    )
    .await;
    staying.stop().await;
    database.cleanup().await;
}

/// A `capstan server` child process on its own loopback address.
struct ServerProcess {
    child: Child,
    ip: Ipv4Addr,
    log: PathBuf,
    _data_dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    fn start(endpoint: &str, ip: Ipv4Addr, port: u16, name: &str) -> ServerProcess {
        let data_dir = tempfile::tempdir().expect("a temporary dir");
        let log = data_dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).expect("the temporary dir is writable");
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--datastore-endpoint", endpoint])
            .args(["--bind-address", &ip.to_string()])
            .args(["--https-listen-port", &port.to_string()])
            .args(["--node-name", name, "--token", "membership-test-token"])
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .expect("the log file can be duplicated"),
            )
            .stderr(log_file)
            .spawn()
            .expect("the capstan binary starts");
        let mut server = ServerProcess {
            child,
            ip,
            log,
            _data_dir: data_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = SocketAddrV4::new(ip, port);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server {name} exited with {status}:\n{}", server.log_text());
            }
            if TcpStream::connect_timeout(&address.into(), Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "server {name} did not listen on {address}:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: a clean stop.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM succeeded");
    }

    /// SIGKILL: a crash.
    fn kill(&mut self) {
        self.child.kill().expect("the server can be killed");
        self.child.wait().expect("the killed server is reaped");
    }
}

/// A port free on every loopback address the test uses.
fn shared_port() -> u16 {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let free =
            (2..=4).all(|last| TcpListener::bind((Ipv4Addr::new(127, 0, 0, last), port)).is_ok());
        if free {
            return port;
        }
    }
}

/// `capstan status --output json` against `endpoint`.
fn status_json(endpoint: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args([
            "status",
            "--output",
            "json",
            "--datastore-endpoint",
            endpoint,
        ])
        .output()
        .expect("capstan status runs");
    assert!(
        output.status.success(),
        "capstan status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("capstan status --output json prints JSON")
}

fn server_addresses(status: &Value) -> Vec<String> {
    let mut addresses: Vec<String> = status["servers"]
        .as_array()
        .expect("a servers array")
        .iter()
        .filter_map(|server| server["address"].as_str().map(str::to_string))
        .collect();
    addresses.sort();
    addresses
}

fn leader_address(status: &Value) -> Option<String> {
    let servers = status["servers"].as_array()?;
    let leaders: Vec<&Value> = servers.iter().filter(|s| s["leader"] == true).collect();
    match leaders.as_slice() {
        [leader] => leader["address"].as_str().map(str::to_string),
        _ => None,
    }
}

/// The IPs `default/kubernetes` Endpoints lists, read straight from the datastore.
async fn endpoint_ips(store: &Store, key: &str, path: &[&str]) -> Vec<String> {
    let Ok(Some(found)) = store.get(key).await else {
        return Vec::new();
    };
    let object: Value = serde_json::from_slice(&found.value).expect("a stored object is JSON");
    let mut ips = Vec::new();
    let groups = object[path[0]].as_array().cloned().unwrap_or_default();
    for group in groups {
        for address in group[path[1]].as_array().cloned().unwrap_or_default() {
            let ip = if path.len() > 2 {
                address[path[2]].clone()
            } else {
                address.clone()
            };
            if let Some(ip) = ip.as_str() {
                ips.push(ip.to_string());
            } else if let Some(list) = ip.as_array() {
                ips.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
            }
        }
    }
    ips.sort();
    ips
}

async fn endpoints_ips(store: &Store) -> Vec<String> {
    endpoint_ips(
        store,
        "/registry/core/endpoints/default/kubernetes",
        &["subsets", "addresses", "ip"],
    )
    .await
}

async fn slice_ips(store: &Store) -> Vec<String> {
    endpoint_ips(
        store,
        "/registry/discovery.k8s.io/endpointslices/default/kubernetes",
        &["endpoints", "addresses"],
    )
    .await
}

#[tokio::test]
async fn servers_on_one_postgres_form_one_cluster_and_survive_a_crash() {
    let database = TestDatabase::create(Engine::Postgres).await;
    let endpoint = database.endpoint().to_string();
    let store = database.open().await;
    let port = shared_port();
    let a = ServerProcess::start(&endpoint, Ipv4Addr::new(127, 0, 0, 2), port, "server-a");
    let b = ServerProcess::start(&endpoint, Ipv4Addr::new(127, 0, 0, 3), port, "server-b");
    let address = |ip: Ipv4Addr| format!("{ip}:{port}");
    let both = vec![address(a.ip), address(b.ip)];

    // Both servers appear in `capstan status`, exactly one of them leads.
    let status = eventually(
        "both servers in capstan status",
        Duration::from_secs(20),
        || {
            let status = status_json(&endpoint);
            let wanted = both.clone();
            async move {
                (server_addresses(&status) == wanted && leader_address(&status).is_some())
                    .then_some(status)
            }
        },
    )
    .await;
    assert_eq!(status["datastore"]["engine"], "postgres");
    assert!(
        status["datastore"]["revision"]
            .as_i64()
            .is_some_and(|r| r > 0)
    );
    assert!(status["datastore"]["compactionLag"].as_i64().is_some());

    // default/kubernetes points at both.
    let both_ips = vec!["127.0.0.2".to_string(), "127.0.0.3".to_string()];
    eventually(
        "Endpoints default/kubernetes with both servers",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            let wanted = both_ips.clone();
            async move { (endpoints_ips(&store).await == wanted).then_some(()) }
        },
    )
    .await;
    eventually(
        "EndpointSlice default/kubernetes with both servers",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            let wanted = both_ips.clone();
            async move { (slice_ips(&store).await == wanted).then_some(()) }
        },
    )
    .await;
    let service = store
        .get("/registry/core/services/default/kubernetes")
        .await
        .expect("the datastore answers")
        .expect("Service default/kubernetes exists");
    let service: Value = serde_json::from_slice(&service.value).expect("JSON");
    assert_eq!(service["spec"]["clusterIP"], "10.43.0.1");
    assert_eq!(service["spec"]["ports"][0]["port"], 443);

    // kill -9 the leader: the other leaves no doubt within 15 s and takes over.
    let leader = leader_address(&status).expect("a leader");
    let (mut crashed, survivor) = if leader == address(a.ip) {
        (a, b)
    } else {
        (b, a)
    };
    let killed_at = Instant::now();
    crashed.kill();
    let survivor_address = address(survivor.ip);
    eventually(
        "the killed leader to leave and the survivor to lead",
        Duration::from_secs(20),
        || {
            let status = status_json(&endpoint);
            let wanted = vec![survivor_address.clone()];
            let survivor_address = survivor_address.clone();
            async move {
                (server_addresses(&status) == wanted
                    && leader_address(&status) == Some(survivor_address))
                .then_some(())
            }
        },
    )
    .await;
    assert!(
        killed_at.elapsed() <= Duration::from_secs(16),
        "the crashed server left after {:?}",
        killed_at.elapsed()
    );
    let survivor_ip = vec![survivor.ip.to_string()];
    eventually(
        "Endpoints default/kubernetes with the survivor only",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            let wanted = survivor_ip.clone();
            async move { (endpoints_ips(&store).await == wanted).then_some(()) }
        },
    )
    .await;

    // A third server joins, then stops cleanly: it leaves at once.
    let mut c = ServerProcess::start(&endpoint, Ipv4Addr::new(127, 0, 0, 4), port, "server-c");
    let two = {
        let mut two = vec![survivor_address.clone(), address(c.ip)];
        two.sort();
        two
    };
    eventually(
        "the third server in capstan status",
        Duration::from_secs(20),
        || {
            let status = status_json(&endpoint);
            let wanted = two.clone();
            async move { (server_addresses(&status) == wanted).then_some(()) }
        },
    )
    .await;
    let stopped_at = Instant::now();
    c.terminate();
    eventually(
        "the stopped server to leave",
        Duration::from_secs(2),
        || {
            let status = status_json(&endpoint);
            let wanted = vec![survivor_address.clone()];
            async move { (server_addresses(&status) == wanted).then_some(()) }
        },
    )
    .await;
    assert!(stopped_at.elapsed() < Duration::from_secs(2));
    let exited = c.child.wait().expect("the stopped server exits");
    assert!(exited.success(), "a clean stop exits 0:\n{}", c.log_text());

    // The text form shows the same.
    let output = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["status", "--datastore-endpoint", &endpoint])
        .output()
        .expect("capstan status runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("SERVERS") && text.contains(&survivor_address),
        "{text}"
    );
    assert!(text.contains("✓"), "the leader is marked: {text}");
    assert!(text.contains("compaction lag"), "{text}");

    drop(survivor);
    drop(crashed);
    store.close().await;
    database.cleanup().await;
}

fn node_ready(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "Ready")
        .map(|condition| condition.status.clone())
}

fn unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_some_and(|taints| {
            taints.iter().any(|taint| {
                taint.key == "node.kubernetes.io/unreachable" && taint.effect == "NoSchedule"
            })
        })
}

async fn post_ready(nodes: &Api<Node>, name: &str) {
    let now = format_time(SystemTime::now());
    let status = json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "agent is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the node's status can be patched");
}

async fn renew_lease(leases: &Api<Lease>, name: &str) {
    let renewal = json!({"spec": {"renewTime": format_time(SystemTime::now())}});
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&renewal))
        .await
        .expect("the lease can be renewed");
}

#[tokio::test]
async fn a_node_whose_lease_lapses_becomes_not_ready_and_recovers() {
    let server = TestServer::start_with(Engine::Postgres, |config| {
        config.node_monitor_grace_period = 3;
    })
    .await;
    let nodes: Api<Node> = Api::all(server.client.clone());
    let leases: Api<Lease> = Api::namespaced(server.client.clone(), "kube-node-lease");
    let name = "worker-1";
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
    }))
    .expect("a node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("the node is created");
    post_ready(&nodes, name).await;
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": format_time(SystemTime::now())},
    }))
    .expect("a lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("the lease is created");

    // Heart-beating for a while keeps it Ready.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        renew_lease(&leases, name).await;
    }
    let current = nodes.get(name).await.expect("the node exists");
    assert_eq!(node_ready(&current).as_deref(), Some("True"));
    assert!(!unreachable_taint(&current));

    // Silence: NotReady (Unknown) and tainted after the 3 s grace period.
    let silent_at = Instant::now();
    let marked = eventually(
        "the silent node to be marked unreachable",
        Duration::from_secs(10),
        || {
            let nodes = nodes.clone();
            async move {
                let node = nodes.get(name).await.ok()?;
                (node_ready(&node).as_deref() == Some("Unknown") && unreachable_taint(&node))
                    .then_some(node)
            }
        },
    )
    .await;
    assert!(
        silent_at.elapsed() >= Duration::from_secs(2),
        "not before the grace period"
    );
    let ready = marked
        .status
        .and_then(|status| status.conditions)
        .and_then(|conditions| conditions.into_iter().find(|c| c.type_ == "Ready"))
        .expect("a Ready condition");
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));

    // The agent returns: lease renewed, Ready posted, the taint goes.
    renew_lease(&leases, name).await;
    post_ready(&nodes, name).await;
    eventually(
        "the returning node to lose the taint",
        Duration::from_secs(10),
        || {
            let nodes = nodes.clone();
            async move {
                let node = nodes.get(name).await.ok()?;
                (node_ready(&node).as_deref() == Some("True") && !unreachable_taint(&node))
                    .then_some(())
            }
        },
    )
    .await;
    server.stop().await;
}
