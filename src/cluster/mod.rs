//! HA plumbing over the datastore (ARCHITECTURE.md `cluster/`). So far: the certificates
//! every server presents and accepts (`certs.rs`). Bootstrap storage of the CA in the
//! datastore, membership leases and leader election come with the HA issue.

pub mod agents;
pub mod certs;
pub mod pki;
