//! The Kubernetes API of a Capstan server, layer by layer (ARCHITECTURE.md): `storage` is the
//! Kubernetes storage interface over the datastore's keys, `registry` holds one entry per
//! served kind and the object store with Kubernetes semantics (admission, defaulting,
//! validation, the patch engines), and `api` is the HTTP server in front of them
//! (authentication, authorization, discovery, OpenAPI, REST verbs, watch, Table, Status).

pub mod api;
pub mod registry;
pub mod storage;
