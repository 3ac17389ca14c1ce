//! Why a write attempt of a chaos run was not acknowledged. A run's failure rate says
//! little on its own: conflicts are the compare-and-swap workload working as meant, while
//! unavailable servers and timeouts are the faults (or an overload) showing. Every write
//! that is not acknowledged gets one cause, from its HTTP status and the `reason` of the
//! Kubernetes Status it carries, or from what kept it from being answered.

use serde::Serialize;

/// Why a write was refused or left without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// 409: a stale resourceVersion or an existing name.
    Conflict,
    /// 503, or a connection refused, reset or cut: no server (or datastore) to serve it.
    Unavailable,
    /// 504, or no answer within the client's timeout.
    Timeout,
    /// Anything else (another 4xx or 5xx, a malformed exchange).
    Other,
}

impl Cause {
    /// Every cause, in report order.
    pub const ALL: [Cause; 4] = [
        Cause::Conflict,
        Cause::Unavailable,
        Cause::Timeout,
        Cause::Other,
    ];

    /// Its place in [`Cause::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Conflict => "conflict",
            Cause::Unavailable => "unavailable",
            Cause::Timeout => "timeout",
            Cause::Other => "other",
        }
    }

    /// The cause of an answer that is not a success: its status, else the `reason` of the
    /// Status in `body` (a server behind a proxy may map reasons to other codes).
    pub fn of_answer(status: u16, body: &[u8]) -> Cause {
        match status {
            409 => return Cause::Conflict,
            503 => return Cause::Unavailable,
            504 => return Cause::Timeout,
            _ => {}
        }
        let reason = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|status| status["reason"].as_str().map(str::to_string));
        match reason.as_deref() {
            Some("Conflict" | "AlreadyExists") => Cause::Conflict,
            Some("ServiceUnavailable") => Cause::Unavailable,
            Some("Timeout" | "ServerTimeout") => Cause::Timeout,
            _ => Cause::Other,
        }
    }

    /// The cause of a connection or request that failed before an answer.
    pub fn of_error(error: &anyhow::Error) -> Cause {
        use std::io::ErrorKind;
        for cause in error.chain() {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof => return Cause::Unavailable,
                    ErrorKind::TimedOut => return Cause::Timeout,
                    _ => {}
                }
            }
            if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
                if hyper.is_timeout() {
                    return Cause::Timeout;
                }
                // The connection closed under the request (a killed server, a GOAWAY).
                if hyper.is_closed() || hyper.is_canceled() || hyper.is_incomplete_message() {
                    return Cause::Unavailable;
                }
            }
        }
        Cause::Other
    }
}

/// Write attempts by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CauseCounts {
    /// See [`Cause::Conflict`].
    pub conflict: u64,
    /// See [`Cause::Unavailable`].
    pub unavailable: u64,
    /// See [`Cause::Timeout`].
    pub timeout: u64,
    /// See [`Cause::Other`].
    pub other: u64,
}

impl CauseCounts {
    /// The counts `count` gives for each cause.
    pub fn from_fn(count: impl Fn(Cause) -> u64) -> CauseCounts {
        CauseCounts {
            conflict: count(Cause::Conflict),
            unavailable: count(Cause::Unavailable),
            timeout: count(Cause::Timeout),
            other: count(Cause::Other),
        }
    }

    /// Counts one more of `cause`.
    pub fn add(&mut self, cause: Cause) {
        *self.of_mut(cause) += 1;
    }

    /// How many of `cause`.
    pub fn of(&self, cause: Cause) -> u64 {
        match cause {
            Cause::Conflict => self.conflict,
            Cause::Unavailable => self.unavailable,
            Cause::Timeout => self.timeout,
            Cause::Other => self.other,
        }
    }

    fn of_mut(&mut self, cause: Cause) -> &mut u64 {
        match cause {
            Cause::Conflict => &mut self.conflict,
            Cause::Unavailable => &mut self.unavailable,
            Cause::Timeout => &mut self.timeout,
            Cause::Other => &mut self.other,
        }
    }

    /// All of them.
    pub fn total(&self) -> u64 {
        Cause::ALL.iter().map(|cause| self.of(*cause)).sum()
    }

    /// `conflict 3, unavailable 1, timeout 0, other 0`.
    pub fn describe(&self) -> String {
        Cause::ALL
            .iter()
            .map(|cause| format!("{} {}", cause.name(), self.of(*cause)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str) -> Vec<u8> {
        serde_json::json!({"kind": "Status", "status": "Failure", "reason": reason, "code": code})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn answers_are_classified_by_status_then_by_reason() {
        assert_eq!(
            Cause::of_answer(409, &status(409, "Conflict")),
            Cause::Conflict
        );
        assert_eq!(Cause::of_answer(409, b""), Cause::Conflict);
        assert_eq!(Cause::of_answer(503, b"no body"), Cause::Unavailable);
        assert_eq!(Cause::of_answer(504, b""), Cause::Timeout);
        assert_eq!(
            Cause::of_answer(500, &status(500, "ServerTimeout")),
            Cause::Timeout
        );
        assert_eq!(
            Cause::of_answer(500, &status(500, "ServiceUnavailable")),
            Cause::Unavailable
        );
        assert_eq!(
            Cause::of_answer(500, &status(500, "InternalError")),
            Cause::Other
        );
        assert_eq!(
            Cause::of_answer(429, &status(429, "TooManyRequests")),
            Cause::Other
        );
        assert_eq!(
            Cause::of_answer(404, &status(404, "NotFound")),
            Cause::Other
        );
    }

    #[test]
    fn refused_and_reset_connections_are_unavailable_and_timeouts_timeouts() {
        let refused =
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                .context("cannot connect to https://127.0.0.2:6443");
        assert_eq!(Cause::of_error(&refused), Cause::Unavailable);
        let reset = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(Cause::of_error(&reset), Cause::Unavailable);
        let timed_out = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(Cause::of_error(&timed_out), Cause::Timeout);
        assert_eq!(
            Cause::of_error(&anyhow::anyhow!("did not agree to HTTP/2")),
            Cause::Other
        );
    }

    #[test]
    fn counts_add_up_and_read_in_report_order() {
        let mut counts = CauseCounts::default();
        for cause in [
            Cause::Conflict,
            Cause::Conflict,
            Cause::Timeout,
            Cause::Other,
        ] {
            counts.add(cause);
        }
        assert_eq!(counts.total(), 4);
        assert_eq!(CauseCounts::from_fn(|cause| counts.of(cause)), counts);
        for (index, cause) in Cause::ALL.iter().enumerate() {
            assert_eq!(cause.index(), index);
        }
        assert_eq!(
            counts.describe(),
            "conflict 2, unavailable 0, timeout 1, other 1"
        );
        assert_eq!(
            serde_json::to_value(counts).expect("serializes"),
            serde_json::json!({"conflict": 2, "unavailable": 0, "timeout": 1, "other": 1})
        );
    }
}
