//! Registration metrics, registered next to the code they measure (Prometheus default
//! registry, served at `/metrics`). Label values come from [`Outcome`], never from names.
//!
//! `capstan_agent_lb_failovers_total` is a counter fed from the agents' reports: each agent
//! reports the failovers of its load balancer since it started, and the server adds the
//! increase since the previous report it received from that node (a smaller number means
//! the agent restarted and counts from zero). The first report a server gets from a node
//! counts in full, so summed over servers an agent that comes back to a server it left may
//! be counted twice; it never misses a failover.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use prometheus::{register_int_counter, register_int_counter_vec, register_int_gauge};

/// How a registration attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Token and node password accepted; the websocket was opened.
    Accepted,
    /// The cluster token was missing or wrong (401).
    BadToken,
    /// The node password did not match the stored hash (403).
    BadPassword,
    /// The node name or password header was missing or malformed (400).
    InvalidRequest,
    /// Over the per-address registration rate (429).
    Throttled,
    /// This server's token was rotated away since it started (503).
    StaleToken,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::BadToken => "bad_token",
            Outcome::BadPassword => "bad_password",
            Outcome::InvalidRequest => "invalid_request",
            Outcome::Throttled => "throttled",
            Outcome::StaleToken => "stale_token",
        }
    }
}

static REGISTRATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "capstan_join_registrations_total",
        "Agent registrations on this server, by result.",
        &["result"]
    )
    .expect("join metric names are registered once")
});

/// Agents whose registration websocket is open on this server.
pub static AGENTS_CONNECTED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "capstan_join_agents_connected",
        "Agents connected to this server's registration websocket."
    )
    .expect("join metric names are registered once")
});

/// Load-balancer failovers reported by agents (see the module doc for how they add up).
pub static LB_FAILOVERS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "capstan_agent_lb_failovers_total",
        "Load balancer failovers reported by the agents connected to this server."
    )
    .expect("join metric names are registered once")
});

/// Counts one registration attempt.
pub fn registration(outcome: Outcome) {
    REGISTRATIONS.with_label_values(&[outcome.label()]).inc();
}

/// Makes every series visible at zero before the first event, so dashboards and alerts
/// see the metric exists.
pub fn touch() {
    for outcome in [
        Outcome::Accepted,
        Outcome::BadToken,
        Outcome::BadPassword,
        Outcome::InvalidRequest,
        Outcome::Throttled,
        Outcome::StaleToken,
    ] {
        REGISTRATIONS.with_label_values(&[outcome.label()]);
    }
    LazyLock::force(&AGENTS_CONNECTED);
    LazyLock::force(&LB_FAILOVERS);
}
