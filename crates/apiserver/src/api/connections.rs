//! Connection-level limits of the HTTPS listener (`tls.rs`): how many connections may be
//! open at once, in total and per client address; the timeouts a connection lives under;
//! and the back-off on failed accepts.
//!
//! A connection over a limit is closed as soon as it is accepted: that costs one file
//! descriptor for a moment and no TLS work, so a flood of connections cannot starve the
//! clients already served, nor the admin and health checks that arrive next. The total cap
//! stays below the process's open-files limit (RLIMIT_NOFILE) with room for the datastore
//! and files, so `accept` does not start failing with "Too many open files"; when it fails
//! anyway, the loop backs off and logs once per interval with a count, not once per try.
//!
//! Metrics (registered here, served at `/metrics`): `capstan_api_open_connections`, and
//! `capstan_api_connections_rejected_total{reason}` with `reason` one of `total_limit`,
//! `client_limit`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGauge, register_int_counter_vec, register_int_gauge};

static OPEN_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "capstan_api_open_connections",
        "Connections open on the HTTPS listener (TLS handshakes in progress included)."
    )
    .expect("connection metric names are registered once")
});

static REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "capstan_api_connections_rejected_total",
        "Connections closed as soon as accepted because a limit was reached, by reason (total_limit, client_limit).",
        &["reason"]
    )
    .expect("connection metric names are registered once")
});

/// Registers the connection metrics so `/metrics` shows them before the first connection.
pub fn touch() {
    LazyLock::force(&OPEN_CONNECTIONS);
    for reason in [Rejected::TotalLimit, Rejected::ClientLimit] {
        REJECTED.with_label_values(&[reason.label()]);
    }
}

/// File descriptors kept free beside the connection cap: datastore pool, SQLite files, the
/// manifests directory, log files, the agent's sockets when it runs in this process.
const DESCRIPTOR_HEADROOM: usize = 256;

/// The fewest connections the cap is lowered to, however low the open-files limit.
const MIN_CONNECTIONS: usize = 16;

/// How the listener treats connections (the server flags of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `--tls-handshake-timeout-seconds`; `None` for no limit.
    pub handshake_timeout: Option<Duration>,
    /// `--request-header-timeout-seconds`; `None` for no limit.
    pub header_timeout: Option<Duration>,
    /// `--idle-connection-timeout-seconds`; `None` for no limit.
    pub idle_timeout: Option<Duration>,
    /// `--max-connections` (after [`fit_open_files_limit`]).
    pub max_connections: usize,
    /// `--max-connections-per-client`; 0 for no per-client limit.
    pub max_connections_per_client: usize,
    /// `--http2-max-streams-per-connection`.
    pub http2_max_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: Some(Duration::from_secs(10)),
            header_timeout: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(90)),
            max_connections: 4096,
            max_connections_per_client: 1024,
            http2_max_streams: 250,
        }
    }
}

/// A timeout flag in seconds: 0 means no limit.
pub fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

/// `configured`, lowered (with a warning) so it leaves [`DESCRIPTOR_HEADROOM`] descriptors
/// free under `open_files` (the soft RLIMIT_NOFILE; `None` when it cannot be read).
pub fn fit_open_files_limit(configured: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return configured.max(1);
    };
    let room = usize::try_from(open_files)
        .unwrap_or(usize::MAX)
        .saturating_sub(DESCRIPTOR_HEADROOM)
        .max(MIN_CONNECTIONS);
    if configured > room {
        tracing::warn!(
            max_connections = configured,
            open_files_limit = open_files,
            lowered_to = room,
            "--max-connections does not fit the open-files limit; lowering it (raise the limit with LimitNOFILE= in the systemd unit or `ulimit -n`)"
        );
        room
    } else {
        configured.max(1)
    }
}

/// This process's soft open-files limit, from `/proc/self/limits` (Linux); `None` when it
/// cannot be read or is unlimited.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// `--max-connections` connections are open.
    TotalLimit,
    /// `--max-connections-per-client` connections from this address are open.
    ClientLimit,
}

impl Rejected {
    fn label(self) -> &'static str {
        match self {
            Rejected::TotalLimit => "total_limit",
            Rejected::ClientLimit => "client_limit",
        }
    }
}

/// The connections open now, in total and by client address.
#[derive(Debug)]
pub struct ConnectionTable {
    max_total: usize,
    max_per_client: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl ConnectionTable {
    /// A table enforcing `limits`' caps.
    pub fn new(limits: &ConnectionLimits) -> Arc<ConnectionTable> {
        touch();
        Arc::new(ConnectionTable {
            max_total: limits.max_connections.max(1),
            max_per_client: limits.max_connections_per_client,
            open: Mutex::new(Open::default()),
        })
    }

    /// Counts a connection from `client` as open until the returned slot is dropped, or
    /// refuses it (counted in the rejected metric) when a cap is reached.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<ConnectionSlot, Rejected> {
        let client = client.to_canonical();
        let admitted = {
            let mut open = self.lock();
            let from_client = open.by_client.get(&client).copied().unwrap_or(0);
            if open.total >= self.max_total {
                Err(Rejected::TotalLimit)
            } else if self.max_per_client > 0 && from_client >= self.max_per_client {
                Err(Rejected::ClientLimit)
            } else {
                open.total += 1;
                open.by_client.insert(client, from_client + 1);
                Ok(())
            }
        };
        match admitted {
            Ok(()) => {
                OPEN_CONNECTIONS.inc();
                Ok(ConnectionSlot {
                    table: self.clone(),
                    client,
                })
            }
            Err(reason) => {
                REJECTED.with_label_values(&[reason.label()]).inc();
                Err(reason)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent under a panic elsewhere: every update is one step.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    table: Arc<ConnectionTable>,
    client: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
        OPEN_CONNECTIONS.dec();
    }
}

/// Back-off and quiet logging for failed accepts (out of file descriptors and the like):
/// each failure in a row doubles the pause, from [`AcceptErrors::FIRST_PAUSE`] up to
/// [`AcceptErrors::MAX_PAUSE`]; a line is logged at most once per
/// [`AcceptErrors::LOG_INTERVAL`], counting the failures it stands for.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    in_a_row: u32,
    unreported: u64,
    last_report: Option<Instant>,
}

impl AcceptErrors {
    /// The pause after the first failure.
    pub const FIRST_PAUSE: Duration = Duration::from_millis(5);
    /// The longest pause.
    pub const MAX_PAUSE: Duration = Duration::from_secs(1);
    /// At most one log line per this interval.
    pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

    /// Records a failed accept at `now`; returns how long to pause before the next one.
    pub fn failed(&mut self, error: &std::io::Error, now: Instant) -> Duration {
        self.unreported += 1;
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= Self::LOG_INTERVAL);
        if due {
            tracing::warn!(%error, failures = self.unreported, "accepting connections failed (further failures within 10s are counted, not logged)");
            self.unreported = 0;
            self.last_report = Some(now);
        }
        let pause = Self::FIRST_PAUSE
            .saturating_mul(1u32 << self.in_a_row.min(16))
            .min(Self::MAX_PAUSE);
        self.in_a_row = self.in_a_row.saturating_add(1);
        pause
    }

    /// Records a successful accept: the next failure pauses briefly again.
    pub fn succeeded(&mut self) {
        self.in_a_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_client: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_connections_per_client: per_client,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn a_client_over_its_cap_is_refused_while_others_are_admitted() {
        let table = ConnectionTable::new(&limits(10, 2));
        let one = IpAddr::from([10, 0, 0, 1]);
        let other = IpAddr::from([10, 0, 0, 2]);
        let first = table.admit(one).expect("below the cap");
        let _second = table.admit(one).expect("at the cap");
        assert_eq!(table.admit(one).err(), Some(Rejected::ClientLimit));
        let _elsewhere = table.admit(other).expect("another client has its own cap");
        drop(first);
        assert!(
            table.admit(one).is_ok(),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn the_total_cap_holds_across_clients_and_ipv4_mapped_addresses_count_as_ipv4() {
        let table = ConnectionTable::new(&limits(2, 0));
        let v4 = IpAddr::from([10, 0, 0, 1]);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("an address");
        let _a = table.admit(v4).expect("first");
        let _b = table.admit(mapped).expect("second");
        assert_eq!(
            table.admit(IpAddr::from([10, 0, 0, 9])).err(),
            Some(Rejected::TotalLimit)
        );
        assert_eq!(table.lock().by_client.get(&v4), Some(&2));
    }

    #[test]
    fn the_cap_leaves_room_under_the_open_files_limit() {
        assert_eq!(fit_open_files_limit(4096, Some(1_048_576)), 4096);
        assert_eq!(fit_open_files_limit(4096, Some(1024)), 1024 - 256);
        assert_eq!(fit_open_files_limit(4096, Some(100)), MIN_CONNECTIONS);
        assert_eq!(fit_open_files_limit(4096, None), 4096);
    }

    #[test]
    fn accept_failures_back_off_up_to_a_second_and_log_once_per_interval() {
        let mut errors = AcceptErrors::default();
        let error = std::io::Error::other("Too many open files");
        let start = Instant::now();
        let pauses: Vec<Duration> = (0..12).map(|_| errors.failed(&error, start)).collect();
        assert_eq!(pauses[0], AcceptErrors::FIRST_PAUSE);
        assert_eq!(pauses[1], AcceptErrors::FIRST_PAUSE * 2);
        assert_eq!(pauses[11], AcceptErrors::MAX_PAUSE);
        assert_eq!(errors.unreported, 11, "only the first failure was logged");
        errors.failed(&error, start + AcceptErrors::LOG_INTERVAL);
        assert_eq!(errors.unreported, 0, "the next interval logs the count");
        errors.succeeded();
        assert_eq!(errors.failed(&error, start), AcceptErrors::FIRST_PAUSE);
    }
}
