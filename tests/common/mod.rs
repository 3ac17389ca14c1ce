//! Shared fixtures of the integration tests: a throwaway database per test on any engine
//! (the datastore crate's own fixture, shared with its conformance suite), waits on watches
//! that fail instead of hanging, a real server in this process or as a child process, and
//! HTTP probes.

#![allow(dead_code)]

pub mod probe;
pub mod process;
pub mod proxy;
pub mod server;

#[path = "../../crates/datastore/tests/conformance/database.rs"]
mod database;

use std::time::Duration;

pub use database::*;

/// Polls `probe` every 200 ms until it finds something, failing the test after `timeout`.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
