//! Server membership: which servers are alive, and where they can be reached.
//!
//! Each server keeps one record under `/capstan/servers/<server-id>` in the datastore and
//! rewrites it every few seconds, with a TTL so the datastore's own expiry removes the record
//! of a server that crashed. Every server watches the prefix, so a join or a clean leave
//! reaches every other server as fast as the change feed delivers it. Expiry runs on one
//! elected server and may lag, so readers also age records by their `renewedAt` wall-clock
//! time: a record not renewed for [`RECORD_TTL`] counts as gone even while it still exists.
//! Clocks of servers must roughly agree (seconds) for that; they already must for
//! Kubernetes leases.
//!
//! A server that stops cleanly deletes its record at once, so agents and the
//! `default/kubernetes` endpoints stop pointing at it without waiting for the TTL.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use prometheus::{IntCounter, IntGauge, register_int_counter, register_int_gauge};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use capstan_datastore::{EventKind, KeyRange, ListRequest, Store, WriteOp, WriteOutcome};

/// Where the records live; the server id follows.
pub const SERVERS_PREFIX: &str = "/capstan/servers/";
/// A record not renewed for this long belongs to a server that is gone.
pub const RECORD_TTL: Duration = Duration::from_secs(15);
/// How often a server rewrites its record.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(4);
/// How often records are aged even when nothing changes.
const AGE_CHECK: Duration = Duration::from_secs(1);

static SERVERS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "capstan_cluster_servers",
        "Live servers in the cluster, as this server sees them."
    )
    .expect("cluster metric names are registered once")
});

static MEMBERSHIP_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "capstan_cluster_membership_changes_total",
        "Times the set of live servers (or their addresses or leader) changed, as this server saw it."
    )
    .expect("cluster metric names are registered once")
});

/// One server's membership record, as stored (JSON, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRecord {
    /// Unique per server process (node name and a random suffix).
    pub id: String,
    /// The node name the server runs as.
    pub node_name: String,
    /// `ip:port` other servers and agents use to reach this server's API.
    pub address: String,
    /// When the server process started (RFC 3339).
    pub started_at: String,
    /// When the record was last written (RFC 3339 with milliseconds).
    pub renewed_at: String,
    /// Whether this server holds the cluster leader lock.
    pub leader: bool,
}

impl ServerRecord {
    /// A fresh record for this server, started and renewed now.
    pub fn new(id: &str, node_name: &str, address: std::net::SocketAddr) -> ServerRecord {
        let now = format_time(SystemTime::now());
        ServerRecord {
            id: id.to_string(),
            node_name: node_name.to_string(),
            address: address.to_string(),
            started_at: now.clone(),
            renewed_at: now,
            leader: false,
        }
    }

    /// How long ago the record was renewed (zero if its time lies in the future, `None` if
    /// it cannot be read).
    pub fn age(&self, now: SystemTime) -> Option<Duration> {
        let renewed = parse_time(&self.renewed_at)?;
        Some(now.duration_since(renewed).unwrap_or(Duration::ZERO))
    }

    /// Whether the server counts as alive at `now`.
    pub fn is_live(&self, now: SystemTime) -> bool {
        self.age(now).is_some_and(|age| age < RECORD_TTL)
    }

    /// The datastore key of the record.
    pub fn key(&self) -> String {
        format!("{SERVERS_PREFIX}{}", self.id)
    }

    /// What subscribers care about: everything but the renewal time.
    fn identity(&self) -> (&str, &str, &str, bool) {
        (&self.id, &self.node_name, &self.address, self.leader)
    }
}

/// Now, as records write times (RFC 3339, UTC, milliseconds).
pub fn format_time(now: SystemTime) -> String {
    let now = time::OffsetDateTime::from(now);
    let millis = now.millisecond();
    let now = now
        .replace_nanosecond(u32::from(millis) * 1_000_000)
        .unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// Reads an RFC 3339 time (as records and Kubernetes objects write them).
pub fn parse_time(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// The live records among `records` at `now`, sorted by id (one per id).
pub fn live_servers<'a>(
    records: impl IntoIterator<Item = &'a ServerRecord>,
    now: SystemTime,
) -> Vec<ServerRecord> {
    let mut live: Vec<ServerRecord> = records
        .into_iter()
        .filter(|record| record.is_live(now))
        .cloned()
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    live.dedup_by(|a, b| a.id == b.id);
    live
}

/// The address this server advertises: `--advertise-address`, else a specific
/// `--bind-address`, else the first non-loopback IPv4 address of this host's interfaces
/// (read from the kernel's table, nothing is sent), else 127.0.0.1 with a warning.
pub fn advertise_ip(advertise: Option<IpAddr>, bind: IpAddr) -> IpAddr {
    if let Some(address) = advertise {
        return address;
    }
    if !bind.is_unspecified() {
        return bind;
    }
    let table = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    match local_ipv4_addresses(&table)
        .into_iter()
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
    {
        Some(ip) => IpAddr::V4(ip),
        None => {
            tracing::warn!(
                "no non-loopback IPv4 address found on this host; advertising 127.0.0.1 (pass --advertise-address so other servers and agents can reach this one)"
            );
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    }
}

/// The host's own IPv4 addresses from Linux's `/proc/net/fib_trie` (the entries marked
/// `/32 host LOCAL`), in table order without duplicates.
fn local_ipv4_addresses(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(address) = line.strip_prefix("|-- ") {
            last = address.trim().parse().ok();
        } else if line == "/32 host LOCAL"
            && let Some(address) = last
            && !found.contains(&address)
        {
            found.push(address);
        }
    }
    found
}

/// This server's membership: keeps its own record alive and follows everyone's.
#[derive(Clone)]
pub struct Membership {
    servers: watch::Receiver<Vec<ServerRecord>>,
    id: String,
}

impl Membership {
    /// Writes `own` and keeps it renewed, follows every server's record, and on `shutdown`
    /// deletes `own` (the task runs on `tasks`, so wait for them before closing the store).
    /// `leader` says whether this server leads; it is copied into the record at once.
    pub fn start(
        store: Store,
        own: ServerRecord,
        leader: watch::Receiver<bool>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Membership {
        let (publish, servers) = watch::channel(Vec::new());
        // Registered now, so the metrics exist before the first change.
        LazyLock::force(&SERVERS);
        LazyLock::force(&MEMBERSHIP_CHANGES);
        let id = own.id.clone();
        tasks.spawn(run(store, own, leader, publish, shutdown));
        Membership { servers, id }
    }

    /// The live servers, sorted by id; changes when a server joins, leaves, changes its
    /// address or its leader flag (not on every renewal).
    pub fn subscribe(&self) -> watch::Receiver<Vec<ServerRecord>> {
        self.servers.clone()
    }

    /// This server's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The records seen so far, by key, and what was last published.
struct View {
    records: BTreeMap<String, ServerRecord>,
    publish: watch::Sender<Vec<ServerRecord>>,
}

impl View {
    fn apply(&mut self, key: String, value: Option<&[u8]>) {
        match value.map(serde_json::from_slice::<ServerRecord>) {
            Some(Ok(record)) => {
                self.records.insert(key, record);
            }
            Some(Err(error)) => {
                tracing::warn!(%key, %error, "ignoring an unreadable server record");
                self.records.remove(&key);
            }
            None => {
                self.records.remove(&key);
            }
        }
    }

    /// Drops aged records and tells subscribers when the live set changed.
    fn refresh(&mut self) {
        let now = SystemTime::now();
        self.records.retain(|_, record| record.is_live(now));
        let live = live_servers(self.records.values(), now);
        SERVERS.set(live.len() as i64);
        self.publish.send_if_modified(|current| {
            let changed = current.len() != live.len()
                || current
                    .iter()
                    .zip(&live)
                    .any(|(a, b)| a.identity() != b.identity());
            *current = live;
            if changed {
                MEMBERSHIP_CHANGES.inc();
            }
            changed
        });
    }
}

async fn run(
    store: Store,
    mut own: ServerRecord,
    mut leader: watch::Receiver<bool>,
    publish: watch::Sender<Vec<ServerRecord>>,
    shutdown: CancellationToken,
) {
    let mut view = View {
        records: BTreeMap::new(),
        publish,
    };
    let key = own.key();
    own.leader = *leader.borrow_and_update();
    renew(&store, &mut own).await;
    let mut leader_open = true;
    'follow: while !shutdown.is_cancelled() {
        let page = match store
            .list(&ListRequest {
                range: KeyRange::prefix(SERVERS_PREFIX),
                revision: None,
                limit: 0,
            })
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "cannot list server records; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break 'follow,
                    _ = tokio::time::sleep(AGE_CHECK) => continue 'follow,
                }
            }
        };
        view.records.clear();
        for item in page.items {
            view.apply(item.key, Some(&item.value));
        }
        view.refresh();
        let mut watch = store
            .watch(KeyRange::prefix(SERVERS_PREFIX), Some(page.revision))
            .await;
        let mut renewal = tokio::time::interval(RENEW_INTERVAL);
        renewal.tick().await;
        let mut ageing = tokio::time::interval(AGE_CHECK);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break 'follow,
                event = watch.next() => match event {
                    Some(Ok(event)) => {
                        let value = (event.kind == EventKind::Put).then_some(&event.value[..]);
                        view.apply(event.key, value);
                        view.refresh();
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "server record watch ended; listing again");
                        continue 'follow;
                    }
                    None => continue 'follow,
                },
                changed = leader.changed(), if leader_open => {
                    if changed.is_err() {
                        leader_open = false;
                    }
                    own.leader = leader_open && *leader.borrow_and_update();
                    renew(&store, &mut own).await;
                }
                _ = renewal.tick() => renew(&store, &mut own).await,
                _ = ageing.tick() => view.refresh(),
            }
        }
    }
    match store.delete(&key, None).await {
        Ok(_) => tracing::info!(id = %own.id, "left the cluster (server record deleted)"),
        Err(error) => {
            tracing::warn!(id = %own.id, %error, "could not delete this server's record; it expires on its own")
        }
    }
    SERVERS.set(0);
}

/// Rewrites this server's record with a fresh `renewedAt` and TTL (creating it if it expired
/// or was deleted). A failure is logged; the next renewal tries again.
async fn renew(store: &Store, own: &mut ServerRecord) {
    own.renewed_at = format_time(SystemTime::now());
    let key = own.key();
    let value = match serde_json::to_vec(own) {
        Ok(value) => bytes::Bytes::from(value),
        Err(error) => {
            tracing::error!(%error, "cannot encode this server's record");
            return;
        }
    };
    for _ in 0..3 {
        let op = match store.get(&key).await {
            Ok(Some(current)) => WriteOp::Update {
                key: key.clone(),
                value: value.clone(),
                expected_revision: current.mod_revision,
                ttl: Some(RECORD_TTL),
            },
            Ok(None) => WriteOp::Create {
                key: key.clone(),
                value: value.clone(),
                ttl: Some(RECORD_TTL),
            },
            Err(error) => {
                tracing::warn!(%error, "cannot renew this server's membership record; will retry");
                return;
            }
        };
        match store.write(op).await {
            Ok(committed) => match committed.outcome {
                WriteOutcome::Applied { .. } => return,
                WriteOutcome::Conflict { .. } => continue,
            },
            Err(error) => {
                tracing::warn!(%error, "cannot renew this server's membership record; will retry");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, renewed: SystemTime) -> ServerRecord {
        ServerRecord {
            id: id.to_string(),
            node_name: "node".to_string(),
            address: "127.0.0.2:6443".to_string(),
            started_at: format_time(renewed),
            renewed_at: format_time(renewed),
            leader: false,
        }
    }

    #[test]
    fn a_record_lives_for_the_ttl_after_its_renewal() {
        let renewed = SystemTime::now();
        let record = record("a", renewed);
        assert!(record.is_live(renewed));
        assert!(record.is_live(renewed + Duration::from_secs(14)));
        assert!(!record.is_live(renewed + Duration::from_secs(15)));
        assert!(!record.is_live(renewed + Duration::from_secs(60)));
    }

    #[test]
    fn a_renewal_from_a_clock_slightly_ahead_counts_as_fresh() {
        let now = SystemTime::now();
        let record = record("a", now + Duration::from_secs(2));
        assert_eq!(record.age(now), Some(Duration::ZERO));
        assert!(record.is_live(now));
    }

    #[test]
    fn an_unreadable_renewal_time_is_not_live() {
        let mut record = record("a", SystemTime::now());
        record.renewed_at = "yesterday".to_string();
        assert!(!record.is_live(SystemTime::now()));
    }

    #[test]
    fn live_servers_drops_aged_records_and_sorts_by_id() {
        let now = SystemTime::now();
        let records = [
            record("c", now - Duration::from_secs(1)),
            record("a", now - Duration::from_secs(20)),
            record("b", now - Duration::from_secs(5)),
        ];
        let live = live_servers(&records, now);
        let ids: Vec<&str> = live.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
    }

    #[test]
    fn records_round_trip_as_camel_case_json() {
        let record = record("a", SystemTime::now());
        let json = serde_json::to_value(&record).expect("a record encodes");
        for field in [
            "id",
            "nodeName",
            "address",
            "startedAt",
            "renewedAt",
            "leader",
        ] {
            assert!(json.get(field).is_some(), "{field} missing in {json}");
        }
        let back: ServerRecord = serde_json::from_value(json).expect("a record decodes");
        assert_eq!(back, record);
    }

    #[test]
    fn times_keep_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let text = format_time(now);
        assert!(text.contains(".123"), "{text}");
        assert_eq!(parse_time(&text), Some(now));
    }

    #[test]
    fn the_advertised_address_prefers_the_flag_then_the_bind_address() {
        let flag: IpAddr = "10.0.0.5".parse().expect("an address");
        let bind: IpAddr = "127.0.0.3".parse().expect("an address");
        let any: IpAddr = "0.0.0.0".parse().expect("an address");
        assert_eq!(advertise_ip(Some(flag), bind), flag);
        assert_eq!(advertise_ip(None, bind), bind);
        let guessed = advertise_ip(None, any);
        assert!(guessed.is_ipv4() && !guessed.is_unspecified(), "{guessed}");
    }

    #[test]
    fn local_addresses_come_from_the_kernel_table() {
        let table = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n        |-- 10.1.2.3\n           /32 host LOCAL\n        |-- 10.1.2.255\n           /32 link BROADCAST\nLocal:\n        |-- 10.1.2.3\n           /32 host LOCAL\n";
        let expected: Vec<Ipv4Addr> = vec![
            "127.0.0.1".parse().expect("an address"),
            "10.1.2.3".parse().expect("an address"),
        ];
        assert_eq!(local_ipv4_addresses(table), expected);
    }
}
