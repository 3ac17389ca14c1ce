//! Capstan: a Kubernetes control plane in one binary, highly available on an external SQL
//! datastore. This crate is the binary's own layer (docs/architecture.md): the server's
//! configuration, the wiring that starts a server, the small commands (`token`, `status`)
//! and the load generators of `capstan bench`; every other box of the map is a crate under
//! `crates/`.

pub mod bench;
pub mod config;
pub mod server;
pub mod status;
pub mod token;
