//! What every Capstan crate shares about Kubernetes objects and the wire, with no I/O: label
//! and field selectors, Kubernetes time formats, kubeconfig files, and the join protocol
//! agents and servers speak.

pub mod join;
pub mod kubeconfig;
pub mod selector;
pub mod time;
