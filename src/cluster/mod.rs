//! HA plumbing over the datastore (ARCHITECTURE.md `cluster/`): the certificates every server
//! presents and accepts (`certs.rs`, `pki.rs`) and the shared secrets they come from, stored
//! encrypted in the datastore (`bootstrap.rs`); server membership records (`membership.rs`),
//! leader election for the singletons (`leader.rs`) and what `capstan status` shows
//! (`status.rs`).

pub mod agents;
pub mod bootstrap;
pub mod certs;
pub mod leader;
pub mod membership;
pub mod pki;
pub mod status;
