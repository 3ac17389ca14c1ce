//! The agent's local load balancer: local clients (the heartbeats, and later the kubelet)
//! talk to `127.0.0.1:<lb-port>` and never need to know which servers exist. Every peer is
//! health-checked twice a second; when the server in use fails, its proxied connections are
//! closed at once (clients reconnect and land on a healthy one) and a failover is counted.
//!
//! Each agent prefers the server picked by a hash of its node name among the healthy peers,
//! so agents spread over the servers instead of all using the first. The registration
//! addresses stay behind the peers as the last resort, used only while no peer is healthy.
//!
//! Every task the load balancer starts (the health checks, the accept loop, one task per
//! proxied connection) runs on the caller's `TaskTracker` and watches the caller's
//! shutdown token: on shutdown the listener closes, every proxied connection is closed, and
//! the caller's `tasks.wait()` returns once the last one has.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use rustls::ClientConfig;
use sha2::{Digest as _, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls;
use capstan_machinery::join::PING_PATH;

/// How often every backend is checked.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long a health check may take before the backend counts as down.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(800);
/// How long connecting to a backend for a client may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the backend at `host:port` is healthy.
pub type HealthCheck = Arc<dyn Fn(String) -> BoxFuture<'static, bool> + Send + Sync>;

/// `GET /ping` over TLS verified by `tls`, answered 200 within [`CHECK_TIMEOUT`], on a
/// connection kept open per backend.
pub fn https_check(tls: Arc<ClientConfig>) -> HealthCheck {
    type Pingers = HashMap<String, Arc<tokio::sync::Mutex<tls::Pinger>>>;
    let pingers: Arc<Mutex<Pingers>> = Arc::default();
    Arc::new(move |address: String| {
        let pinger = pingers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(address.clone())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(tls::Pinger::new(
                    tls.clone(),
                    &address,
                )))
            })
            .clone();
        Box::pin(async move { pinger.lock().await.ping(PING_PATH, CHECK_TIMEOUT).await })
    })
}

/// A TCP connection accepted within [`CHECK_TIMEOUT`] (for tests and plain backends).
pub fn tcp_check() -> HealthCheck {
    Arc::new(|address: String| {
        Box::pin(async move {
            matches!(
                tokio::time::timeout(CHECK_TIMEOUT, TcpStream::connect(&address)).await,
                Ok(Ok(_))
            )
        })
    })
}

/// What the load balancer does now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbStatus {
    /// The backend new connections go to.
    pub active: Option<String>,
    /// Switches away from a failed backend since start.
    pub failovers: u64,
}

/// A running load balancer (stops with the shutdown token given to [`LoadBalancer::start`],
/// its tasks owned by the tracker given there).
#[derive(Clone)]
pub struct LoadBalancer {
    inner: Arc<Inner>,
    local_addr: SocketAddr,
}

struct Inner {
    node_name: String,
    fallback: Vec<String>,
    check: HealthCheck,
    state: Mutex<State>,
    status: watch::Sender<LbStatus>,
}

#[derive(Default)]
struct State {
    peers: Vec<String>,
    healthy: HashSet<String>,
    active: Option<String>,
    failovers: u64,
    /// Cancelling one closes every proxied connection to that backend.
    connections: HashMap<String, CancellationToken>,
}

impl LoadBalancer {
    /// Listens on `bind`, checks every backend once, and serves until `shutdown`, its tasks
    /// spawned on `tasks`. `fallback` are the registration addresses, `peers` the known
    /// servers (`host:port`).
    pub async fn start(
        bind: SocketAddr,
        node_name: &str,
        fallback: Vec<String>,
        peers: Vec<String>,
        check: HealthCheck,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> std::io::Result<LoadBalancer> {
        let listener = TcpListener::bind(bind).await?;
        let local_addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            node_name: node_name.to_string(),
            fallback,
            check,
            state: Mutex::new(State {
                peers: sorted(peers),
                ..State::default()
            }),
            status: watch::Sender::new(LbStatus::default()),
        });
        inner.check_all().await;
        tasks.spawn(inner.clone().check_loop(shutdown.clone()));
        tasks.spawn(inner.clone().accept_loop(listener, tasks.clone(), shutdown));
        Ok(LoadBalancer { inner, local_addr })
    }

    /// Where local clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the known servers (from the registration connection).
    pub fn set_peers(&self, peers: Vec<String>) {
        let mut state = self.inner.lock();
        state.peers = sorted(peers);
        self.inner.reselect(&mut state, false);
    }

    /// The active backend and failover count, updated as they change.
    pub fn status(&self) -> watch::Receiver<LbStatus> {
        self.inner.status.subscribe()
    }
}

fn sorted(mut peers: Vec<String>) -> Vec<String> {
    peers.sort();
    peers.dedup();
    peers
}

/// A stable number from the node name, to spread agents over servers.
fn spread(node_name: &str) -> u64 {
    let digest = Sha256::digest(node_name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn check_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A round of checks in flight is dropped at shutdown rather than waited for.
        let checks = async {
            loop {
                ticker.tick().await;
                self.check_all().await;
            }
        };
        shutdown.run_until_cancelled(checks).await;
    }

    async fn check_all(&self) {
        let targets: Vec<String> = {
            let state = self.lock();
            let mut all = state.peers.clone();
            all.extend(self.fallback.iter().cloned());
            sorted(all)
        };
        let results = futures::future::join_all(targets.into_iter().map(|target| {
            let check = (self.check)(target.clone());
            async move { (target, check.await) }
        }))
        .await;
        let mut state = self.lock();
        state.healthy = results
            .into_iter()
            .filter_map(|(target, healthy)| healthy.then_some(target))
            .collect();
        self.reselect(&mut state, false);
    }

    /// Chooses the backend for new connections; `failed` says the active one just failed a
    /// connection attempt.
    fn reselect(&self, state: &mut State, failed: bool) {
        if failed && let Some(active) = state.active.clone() {
            state.healthy.remove(&active);
        }
        let healthy_peers: Vec<&String> = state
            .peers
            .iter()
            .filter(|peer| state.healthy.contains(*peer))
            .collect();
        let keep = state.active.as_ref().is_some_and(|active| {
            state.healthy.contains(active)
                && (state.peers.contains(active) || healthy_peers.is_empty())
        });
        let chosen = if keep {
            state.active.clone()
        } else if !healthy_peers.is_empty() {
            let index = spread(&self.node_name) % healthy_peers.len() as u64;
            usize::try_from(index)
                .ok()
                .and_then(|index| healthy_peers.get(index))
                .map(|peer| (*peer).clone())
        } else {
            self.fallback
                .iter()
                .find(|address| state.healthy.contains(*address))
                .cloned()
        };
        if chosen == state.active {
            return;
        }
        if let Some(previous) = state.active.take()
            && !state.healthy.contains(&previous)
        {
            state.failovers += 1;
            if let Some(token) = state.connections.remove(&previous) {
                token.cancel();
            }
            tracing::warn!(
                from = %previous,
                to = chosen.as_deref().unwrap_or("nothing"),
                failovers = state.failovers,
                "load balancer failover: the server in use stopped answering"
            );
        } else {
            tracing::info!(
                to = chosen.as_deref().unwrap_or("nothing"),
                "load balancer now uses this server"
            );
        }
        state.active = chosen;
        self.status.send_replace(LbStatus {
            active: state.active.clone(),
            failovers: state.failovers,
        });
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((client, _)) => {
                    let _ = client.set_nodelay(true);
                    tasks.spawn(self.clone().proxy(client, shutdown.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "load balancer cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Relays `client` to the active backend until either side closes, the backend fails
    /// over, or `shutdown`.
    async fn proxy(self: Arc<Self>, mut client: TcpStream, shutdown: CancellationToken) {
        // At most one try per known backend.
        let attempts = {
            let state = self.lock();
            state.peers.len() + self.fallback.len()
        };
        for _ in 0..attempts.max(1) {
            let Some(target) = self.lock().active.clone() else {
                tracing::debug!("load balancer: no healthy server; closing the connection");
                return;
            };
            let connecting = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target));
            let Some(connected) = shutdown.run_until_cancelled(connecting).await else {
                return;
            };
            match connected {
                Ok(Ok(mut upstream)) => {
                    let _ = upstream.set_nodelay(true);
                    let closed = {
                        let mut state = self.lock();
                        state.connections.entry(target).or_default().clone()
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                        () = closed.cancelled() => {}
                        () = shutdown.cancelled() => {}
                    }
                    return;
                }
                _ => {
                    let mut state = self.lock();
                    if state.active.as_deref() == Some(target.as_str()) {
                        self.reselect(&mut state, true);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::task::JoinHandle;

    /// A backend that greets each connection with its name, then echoes. Aborting the task
    /// closes the listener but leaves accepted connections open, like a hung server: only
    /// the load balancer can close them.
    async fn backend(name: &'static str) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let address = listener.local_addr().expect("address").to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let _ = socket.write_all(name.as_bytes()).await;
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (address, task)
    }

    async fn greeting(lb: SocketAddr) -> (String, TcpStream) {
        let mut socket = TcpStream::connect(lb)
            .await
            .expect("connect to the load balancer");
        let mut buffer = [0u8; 1];
        let mut name = Vec::new();
        // Backend names are one letter.
        tokio::time::timeout(Duration::from_secs(3), socket.read_exact(&mut buffer))
            .await
            .expect("greeting in time")
            .expect("greeting");
        name.extend_from_slice(&buffer);
        (String::from_utf8(name).expect("ascii"), socket)
    }

    async fn start(
        node: &str,
        fallback: Vec<String>,
        peers: Vec<String>,
        shutdown: &CancellationToken,
    ) -> LoadBalancer {
        LoadBalancer::start(
            "127.0.0.1:0".parse().expect("address"),
            node,
            fallback,
            peers,
            tcp_check(),
            &TaskTracker::new(),
            shutdown.clone(),
        )
        .await
        .expect("load balancer starts")
    }

    #[tokio::test]
    async fn shutdown_closes_proxied_connections_and_ends_every_task() {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (a, _a) = backend("a").await;
        let lb = LoadBalancer::start(
            "127.0.0.1:0".parse().expect("address"),
            "node-1",
            vec![],
            vec![a],
            tcp_check(),
            &tasks,
            shutdown.clone(),
        )
        .await
        .expect("load balancer starts");
        let (name, mut held) = greeting(lb.local_addr()).await;
        assert_eq!(name, "a");
        held.write_all(b"x").await.expect("send through the proxy");
        let mut echo = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(3), held.read_exact(&mut echo))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(&echo, b"x", "the connection is proxied");

        shutdown.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(1), tasks.wait())
            .await
            .expect("every load balancer task ends within 1 s of shutdown");
        // The backend keeps its side open: only the load balancer can have closed this.
        let mut buffer = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_millis(100), held.read(&mut buffer))
            .await
            .expect("the proxied connection is closed by the time the tasks ended");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(
            TcpStream::connect(lb.local_addr()).await.is_err(),
            "the listener is closed"
        );
    }

    #[tokio::test]
    async fn fails_over_within_two_seconds_and_closes_connections_to_the_dead_server() {
        let shutdown = CancellationToken::new();
        let (a, a_task) = backend("a").await;
        let (b, b_task) = backend("b").await;
        let lb = start("node-1", vec![], vec![a.clone(), b.clone()], &shutdown).await;
        let (first, mut held) = greeting(lb.local_addr()).await;
        let (dead_task, survivor) = if first == "a" {
            (a_task, "b")
        } else {
            (b_task, "a")
        };
        assert_eq!(lb.status().borrow().failovers, 0);

        let killed = Instant::now();
        dead_task.abort();
        // The held connection is closed by the load balancer, not left hanging.
        let mut buffer = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(2), held.read(&mut buffer))
            .await
            .expect("the proxied connection to the dead server closes within 2 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let (next, _) = greeting(lb.local_addr()).await;
        assert_eq!(next, survivor);
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "{:?}",
            killed.elapsed()
        );
        let status = lb.status().borrow().clone();
        assert_eq!(status.failovers, 1);
        assert_eq!(
            status.active.as_deref(),
            Some(if survivor == "a" {
                a.as_str()
            } else {
                b.as_str()
            })
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn different_nodes_spread_over_the_servers() {
        let shutdown = CancellationToken::new();
        let (a, _a) = backend("a").await;
        let (b, _b) = backend("b").await;
        let (c, _c) = backend("c").await;
        let mut seen = HashSet::new();
        for i in 0..24 {
            let lb = start(
                &format!("sim-{i}"),
                vec![],
                vec![c.clone(), a.clone(), b.clone()],
                &shutdown,
            )
            .await;
            let (name, _) = greeting(lb.local_addr()).await;
            seen.insert(name);
        }
        assert_eq!(seen.len(), 3, "every server gets some agents: {seen:?}");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn registration_address_is_the_last_resort() {
        let shutdown = CancellationToken::new();
        let (registration, _r) = backend("r").await;
        let (peer, peer_task) = backend("p").await;
        let lb = start(
            "node-1",
            vec![registration.clone()],
            vec![peer.clone()],
            &shutdown,
        )
        .await;
        assert_eq!(
            greeting(lb.local_addr()).await.0,
            "p",
            "a healthy peer beats the registration address"
        );
        peer_task.abort();
        let deadline = Instant::now() + Duration::from_secs(2);
        while lb.status().borrow().active.as_deref() != Some(registration.as_str()) {
            assert!(
                Instant::now() < deadline,
                "no fallback to the registration address"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(greeting(lb.local_addr()).await.0, "r");
        // A peer coming back takes over again.
        let (new_peer, _p2) = backend("q").await;
        lb.set_peers(vec![peer, new_peer.clone()]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while lb.status().borrow().active.as_deref() != Some(new_peer.as_str()) {
            assert!(Instant::now() < deadline, "the live peer is not used again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(greeting(lb.local_addr()).await.0, "q");
        shutdown.cancel();
    }
}
