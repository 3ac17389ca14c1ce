//! The Kubernetes API over HTTPS.

pub mod selector;
pub mod table;
