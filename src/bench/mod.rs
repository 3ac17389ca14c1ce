//! `capstan bench`: load generators that ship with the product, so users can measure their
//! own datastore and cluster.

pub mod api;
pub mod chaos;
pub mod client;
pub mod datastore;
pub mod etcd;
pub mod join;
pub mod plot;
mod report;
pub mod watches;

pub use report::DatastoreBenchReport;
