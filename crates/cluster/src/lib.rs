//! HA plumbing over the datastore (ARCHITECTURE.md `cluster/`): the shared secrets every
//! server's certificates come from, stored encrypted in the datastore (`bootstrap/`);
//! server membership records (`membership.rs`), leader election for the singletons
//! (`leader.rs`), the agents' records (`agents.rs`) and the registration endpoint agents join
//! through (`join/`).

pub mod agents;
pub mod bootstrap;
pub mod join;
pub mod leader;
pub mod membership;
