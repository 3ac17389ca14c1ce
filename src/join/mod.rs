//! Registration (ARCHITECTURE.md `join/`): how agents join the cluster through the
//! registration address. `protocol.rs` holds the wire format both sides speak; the server's
//! handlers (token and node password checks, the peer list push, `/cacerts`, `/ping`) live
//! beside it.

pub mod protocol;
