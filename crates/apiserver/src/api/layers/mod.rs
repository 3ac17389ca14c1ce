//! The cross-cutting HTTP concerns of the API, each a tower layer of its own around the
//! dispatcher, composed in `api::router`. Outermost first:
//!
//! 1. `request_info`: classify the request once (route, verb, long-running);
//! 2. `trace`: one span per request;
//! 3. authentication (`auth.rs`), then authorization (`authz.rs`): 401 and 403;
//! 4. `measure`: the request metrics;
//! 5. `read_body`: a mutating request's body arrives in full before it takes a slot
//!    (408, 413);
//! 6. `max_in_flight`: the read-only and mutating budgets (429 with Retry-After);
//! 7. `timeout`: `--request-timeout` (504).
//!
//! kube-apiserver's chain runs, outermost first, request info, tracing, the request
//! deadline and timeout, authentication, max-in-flight, authorization. Tracing is outside
//! authentication here too, so refused requests have spans. Two things differ, on purpose:
//! authorization stays right after authentication, so a refused request never takes a
//! slot; and the timeout is the innermost layer. In Go the timeout filter cannot stop the
//! handler's goroutine, which keeps its slot until it returns; here the timeout drops the
//! handler's future, and with it the slot held around it, at once. Inside the body layer,
//! it does not count the time a body takes to arrive, which has its own timeout. The
//! metrics sit outside the limits so that their 408, 413, 429 and 504 answers are counted
//! (upstream records those with `RecordRequestTermination` from inside each filter).
//!
//! Connection-level limits (caps, handshake, header and idle timeouts) are the listener's
//! (`connections.rs`).

pub mod max_in_flight;
pub mod measure;
pub mod read_body;
pub mod request_info;
pub mod timeout;
pub mod trace;

#[cfg(test)]
mod tests;
