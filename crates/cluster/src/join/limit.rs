//! The registration rate limit: a token bucket per source address (an IPv6 address counts
//! by its /64, which one host usually owns whole), refilled at `per_second` up to `burst`.
//! Every attempt costs one token before anything is checked, so guessing tokens or
//! passwords, and minting password Secrets under random names, are throttled alike.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] addresses are remembered; when the table is
//! full, buckets that have refilled completely (an address quiet for `burst / per_second`
//! seconds) are forgotten, and if none has, a new address is refused until one does — a
//! flood from many addresses then slows new registrations, it does not grow the server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most source addresses remembered at once.
pub const MAX_TRACKED: usize = 65_536;

/// Per-address registration budgets.
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimit {
    /// `per_second` registrations per address, in bursts of up to `burst` (at least one);
    /// `per_second == 0` turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one registration from `address`'s budget; when it is spent, how long until
    /// the next one is possible.
    pub fn admit(&self, address: IpAddr) -> Result<(), Duration> {
        self.admit_at(address, Instant::now())
    }

    fn admit_at(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let key = source_key(address);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.burst);
            if buckets.len() >= MAX_TRACKED {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = self.refilled(*bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

/// The address a budget belongs to: IPv4 as is (an IPv4-mapped IPv6 address too), IPv6 by
/// its /64.
fn source_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("a valid address")
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limit = RateLimit::new(5, 20);
        let start = Instant::now();
        for attempt in 0..20 {
            assert!(limit.admit_at(ip("10.0.0.1"), start).is_ok(), "{attempt}");
        }
        let wait = limit
            .admit_at(ip("10.0.0.1"), start)
            .expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        // Another address has its own budget.
        assert!(limit.admit_at(ip("10.0.0.2"), start).is_ok());
        // A second later, five more.
        let later = start + Duration::from_secs(1);
        for attempt in 0..5 {
            assert!(limit.admit_at(ip("10.0.0.1"), later).is_ok(), "{attempt}");
        }
        assert!(limit.admit_at(ip("10.0.0.1"), later).is_err());
    }

    #[test]
    fn an_ipv6_host_counts_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        let limit = RateLimit::new(1, 1);
        let now = Instant::now();
        assert!(limit.admit_at(ip("2001:db8::1"), now).is_ok());
        assert!(limit.admit_at(ip("2001:db8::2"), now).is_err());
        assert!(limit.admit_at(ip("2001:db8:0:1::1"), now).is_ok());
        assert!(limit.admit_at(ip("192.0.2.7"), now).is_ok());
        assert!(limit.admit_at(ip("::ffff:192.0.2.7"), now).is_err());
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = RateLimit::new(0, 20);
        let now = Instant::now();
        for _ in 0..1_000 {
            assert!(limit.admit_at(ip("10.0.0.1"), now).is_ok());
        }
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_quiet_addresses() {
        let limit = RateLimit::new(5, 2);
        let start = Instant::now();
        for n in 0..MAX_TRACKED as u32 {
            let address = IpAddr::V4(n.into());
            assert!(limit.admit_at(address, start).is_ok());
        }
        let stranger = ip("255.255.255.255");
        assert!(
            limit.admit_at(stranger, start).is_err(),
            "a full table of busy addresses refuses new ones"
        );
        let later = start + Duration::from_secs(1);
        assert!(
            limit.admit_at(stranger, later).is_ok(),
            "quiet ones make room"
        );
        let buckets = limit.buckets.lock().expect("not poisoned");
        assert!(buckets.len() <= MAX_TRACKED);
    }
}
