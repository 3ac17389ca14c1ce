//! The certificates of a Capstan cluster: its certificate authorities, the certificates they
//! issue and the identities those carry (`certs`), and the files a server keeps them in
//! (`files`).

pub mod certs;
pub mod files;
