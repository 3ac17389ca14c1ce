//! The Kubernetes API over HTTPS.

pub mod discovery;
pub mod openapi;
