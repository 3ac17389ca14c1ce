//! The Kubernetes API over HTTPS.

pub mod protobuf;
