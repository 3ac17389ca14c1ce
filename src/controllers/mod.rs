//! Controllers.
pub mod crd;
