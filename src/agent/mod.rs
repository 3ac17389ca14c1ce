//! `capstan agent` (ARCHITECTURE.md `agent/`): joins through the registration address,
//! keeps the list of servers, and serves a local load balancer over them. It imports only
//! `join::protocol` from the server side.
