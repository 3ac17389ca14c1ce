//! Capstan: a Kubernetes control plane in one binary, highly available on an external SQL
//! datastore. See ARCHITECTURE.md for the map; each module below is one box of it.

pub mod agent;
pub mod api;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod controllers;
pub mod datastore;
pub mod join;
pub mod patch;
pub mod registry;
pub mod server;
pub mod storage;
