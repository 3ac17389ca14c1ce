//! What every Capstan crate shares about Kubernetes objects and the wire, with no I/O: typed
//! views of object metadata, label and field selectors, Kubernetes time formats, kubeconfig
//! files, and the join protocol agents and servers speak.

pub mod join;
pub mod kubeconfig;
pub mod meta;
pub mod selector;
pub mod time;

pub use meta::{Meta, MetaMut, OwnerRef, meta, meta_mut};
