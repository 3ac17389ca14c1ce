//! HA plumbing over the datastore (ARCHITECTURE.md `cluster/`): the certificates every server
//! presents and accepts (`certs.rs`, `pki.rs`), server membership records (`membership.rs`),
//! leader election for the singletons (`leader.rs`) and what `capstan status` shows
//! (`status.rs`).

pub mod certs;
pub mod leader;
pub mod membership;
pub mod pki;
pub mod status;
