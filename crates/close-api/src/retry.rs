//! Which replies to retry (vector's `RetryLogic` idea): one classification, used everywhere.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum RetryAction {
    Successful,
    /// Retry, after at least this long when the reply said so (`Retry-After` / `reset`).
    Retry(Option<Duration>),
    DontRetry,
}

/// The reference framework's retryable set: 408, 423, 429, 500 and 502–511; never 501.
pub fn classify(status: u16, wait: Option<Duration>) -> RetryAction {
    match status {
        200..=299 => RetryAction::Successful,
        408 | 423 | 429 | 500 | 502..=511 => RetryAction::Retry(wait),
        _ => RetryAction::DontRetry,
    }
}

/// Exponential backoff, capped, with half jitter (a delay between half and all of the step).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The wait before attempt `n` (1-based count of failures so far).
    pub fn delay(&self, n: u32, at_least: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << n.min(16)).min(self.cap);
        let jittered = exp.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        at_least.map_or(jittered, |w| w.max(jittered.min(w + self.base)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_matches_the_reference() {
        for s in [408, 423, 429, 500, 502, 503, 504, 511] {
            assert!(matches!(classify(s, None), RetryAction::Retry(_)), "{s}");
        }
        for s in [400, 401, 402, 403, 404, 409, 422, 501] {
            assert_eq!(classify(s, None), RetryAction::DontRetry, "{s}");
        }
        assert_eq!(classify(200, None), RetryAction::Successful);
    }

    #[test]
    fn backoff_honours_reset_and_cap() {
        let b = Backoff::default();
        for n in 1..20 {
            assert!(b.delay(n, None) <= b.cap);
        }
        assert!(b.delay(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }
}
