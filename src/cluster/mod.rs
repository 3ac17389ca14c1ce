//! HA plumbing over the datastore (ARCHITECTURE.md `cluster/`): the certificates every
//! server presents and accepts (`certs.rs`, `pki.rs`) and the shared secrets they come from,
//! stored encrypted in the datastore (`bootstrap.rs`). Membership leases and leader election
//! come with the HA issue.

pub mod bootstrap;
pub mod certs;
pub mod pki;
