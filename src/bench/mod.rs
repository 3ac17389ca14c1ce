//! `capstan bench`: load generators that ship with the product, so users can measure their
//! own datastore and cluster.

pub mod chaos;
pub mod client;
pub mod datastore;
pub mod join;
mod report;
pub mod watches;

pub use report::DatastoreBenchReport;
