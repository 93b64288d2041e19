//! What a delivery attempt's result means for the event (vector's `RetryLogic` idea, at the
//! event level): applied, skipped, retried later, or dead-lettered now.

use crate::config::defaults;
use closeflow_close::plan::StepKind;
use closeflow_close::port::{PortError, PortErrorKind};
use closeflow_close::run::EventReport;
use closeflow_close_api::retry::Backoff;
use closeflow_queue::{Millis, Outcome};
use std::time::Duration;

/// When an event is given up: after `max_attempts` failed attempts **and** `max_age` since it
/// was accepted (both), so neither a burst of quick failures nor one slow outage alone ends it.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub max_age: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: defaults::RETRY_ATTEMPTS,
            max_age: defaults::RETRY_MAX_AGE,
            backoff_base: defaults::RETRY_BACKOFF,
            backoff_cap: defaults::RETRY_BACKOFF_CAP,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with jitter (half fixed, half random) before attempt `n + 1`: the
    /// Close client's [`Backoff`], shifted one step so that the first retry waits about `base`.
    pub fn backoff(&self, failures: u32) -> Duration {
        Backoff {
            base: self.backoff_base,
            cap: self.backoff_cap,
        }
        .delay(failures.saturating_sub(1), None)
    }
}

/// Why an attempt failed, before the policy decides between retrying and giving up.
enum Failure {
    /// Can never succeed as it is: dead-letter at once.
    Permanent {
        reason: &'static str,
        error: String,
        reply: Option<String>,
    },
    /// May succeed later (Close down, throttled, a lost reply).
    Transient { reason: &'static str, error: String },
}

fn failure_of(e: &PortError) -> Failure {
    let error = e.to_string();
    match e.kind {
        PortErrorKind::Unauthorized => Failure::Permanent {
            reason: "unauthorized",
            error,
            reply: e.last_reply.clone(),
        },
        // Gone between the lookup and the write: planning again decides afresh.
        PortErrorKind::Rejected { status: 404 } => Failure::Transient {
            reason: "not_found",
            error,
        },
        PortErrorKind::Rejected { .. } => Failure::Permanent {
            reason: "rejected",
            error,
            reply: e.last_reply.clone(),
        },
        PortErrorKind::Unavailable => Failure::Transient {
            reason: "close_unavailable",
            error,
        },
        PortErrorKind::Interrupted => Failure::Transient {
            reason: "interrupted",
            error,
        },
        PortErrorKind::BadReply => Failure::Transient {
            reason: "bad_reply",
            error,
        },
        // The instance's endpoint is not a usable URL: no retry can fix it.
        PortErrorKind::BadUrl => Failure::Permanent {
            reason: "bad_url",
            error,
            reply: None,
        },
        // Nothing listened (after the client's own retries): Close may come back.
        PortErrorKind::Unreachable => Failure::Transient {
            reason: "close_unreachable",
            error,
        },
    }
}

/// The event's fate after one attempt. `attempts` failed before; `received_at` is when it
/// was accepted.
pub fn classify(
    report: &EventReport,
    err: Option<&PortError>,
    attempts: u32,
    received_at: Millis,
    now: Millis,
    policy: &RetryPolicy,
) -> Outcome {
    let failure = if let Some(e) = err {
        Some(failure_of(e))
    } else if let Some(m) = &report.error {
        Some(Failure::Permanent {
            reason: "invalid_event",
            error: m.clone(),
            reply: None,
        })
    } else {
        report
            .mappings
            .iter()
            .find_map(|m| m.error.as_ref().map(|e| (m, e)))
            .map(|(m, e)| Failure::Permanent {
                reason: "invalid_payload",
                error: format!("mapping \"{}\": {e}", m.name),
                reply: None,
            })
    };
    match failure {
        Some(Failure::Permanent {
            reason,
            error,
            reply,
        }) => Outcome::Dead {
            reason: reason.into(),
            error,
            last_reply: reply,
        },
        Some(Failure::Transient { reason, error }) => {
            let failures = attempts + 1;
            let age = Duration::from_millis((now - received_at).max(0) as u64);
            if failures >= policy.max_attempts && age >= policy.max_age {
                Outcome::Dead {
                    reason: "retries_exhausted".into(),
                    error: format!("gave up after {failures} attempts: {error}"),
                    last_reply: Some(reason.to_string()),
                }
            } else {
                Outcome::Retry {
                    not_before: now + policy.backoff(failures).as_millis() as Millis,
                    reason: reason.into(),
                    error,
                }
            }
        }
        None => success(report),
    }
}

/// Applied when the plan wrote or confirmed something; skipped (with the reason) when no
/// mapping matched or every step was skipped by a flag or rule.
fn success(report: &EventReport) -> Outcome {
    if !report.mappings.iter().any(|m| m.matched) {
        return Outcome::Skipped {
            reason: "not_matched".into(),
        };
    }
    let steps: Vec<_> = report.mappings.iter().flat_map(|m| &m.steps).collect();
    if !steps.is_empty() && steps.iter().all(|s| s.kind == StepKind::Skipped) {
        let reason = steps[0].reason.clone().unwrap_or_else(|| "skipped".into());
        return Outcome::Skipped { reason };
    }
    Outcome::Applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use closeflow_close_api::client::CloseError;

    fn report() -> EventReport {
        EventReport {
            index: 0,
            message_id: Some("m".into()),
            error: None,
            mappings: vec![],
            kind: "identify".into(),
            about: String::new(),
        }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            max_age: Duration::from_secs(60),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(1),
        }
    }

    #[test]
    fn transient_failures_retry_until_both_attempts_and_age_are_spent() {
        let e = PortError::from(CloseError::Exhausted {
            method: "POST".into(),
            path: "lead/".into(),
            attempts: 3,
            last: "HTTP 503".into(),
        });
        let p = quick();
        // Many attempts, young event: retry.
        assert!(matches!(
            classify(&report(), Some(&e), 10, 0, 1_000, &p),
            Outcome::Retry { .. }
        ));
        // Old event, few attempts: retry.
        assert!(matches!(
            classify(&report(), Some(&e), 0, 0, 3_600_000, &p),
            Outcome::Retry { .. }
        ));
        // Both spent: dead, with the last error kept.
        match classify(&report(), Some(&e), 2, 0, 61_000, &p) {
            Outcome::Dead { reason, error, .. } => {
                assert_eq!(reason, "retries_exhausted");
                assert!(error.contains("HTTP 503"), "{error}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_4xx_that_cannot_succeed_is_dead_at_once() {
        let e = PortError::from(CloseError::Rejected {
            method: "POST".into(),
            path: "lead/".into(),
            status: 400,
            message: "field errors".into(),
        });
        match classify(&report(), Some(&e), 0, 0, 0, &quick()) {
            Outcome::Dead {
                reason, last_reply, ..
            } => {
                assert_eq!(reason, "rejected");
                assert_eq!(last_reply.as_deref(), Some("HTTP 400: field errors"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(
                &report(),
                Some(&PortError::from(CloseError::Unauthorized {
                    status: 401,
                    key: "the API key".into(),
                })),
                0,
                0,
                0,
                &quick()
            ),
            Outcome::Dead { .. }
        ));
    }

    #[test]
    fn no_matching_mapping_is_skipped() {
        assert_eq!(
            classify(&report(), None, 0, 0, 0, &quick()),
            Outcome::Skipped {
                reason: "not_matched".into()
            }
        );
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let p = quick();
        assert!(p.backoff(1) <= Duration::from_millis(100));
        assert!(p.backoff(3) >= Duration::from_millis(200));
        for n in 1..40 {
            assert!(p.backoff(n) <= p.backoff_cap);
        }
    }
}
