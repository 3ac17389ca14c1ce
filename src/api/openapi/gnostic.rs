//! gnostic
