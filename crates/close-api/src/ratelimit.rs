//! Close's rate limits: parse `RateLimit` (or the older `x-rate-limit-*`) on every reply and
//! pace each endpoint group so that steady load stays under its budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub limit: Option<f64>,
    pub remaining: f64,
    /// Seconds until the window resets (may be fractional).
    pub reset: f64,
}

/// Parses `limit=240, remaining=239, reset=7.12` (`,` or `;` between parts).
pub fn parse_header(v: &str) -> Option<RateLimit> {
    let mut limit = None;
    let mut remaining = None;
    let mut reset = None;
    for part in v.split([',', ';']) {
        let Some((k, val)) = part.split_once('=') else {
            continue;
        };
        let val: f64 = val.trim().trim_matches('"').parse().ok()?;
        match k.trim().to_ascii_lowercase().as_str() {
            "limit" => limit = Some(val),
            "remaining" => remaining = Some(val),
            "reset" => reset = Some(val),
            _ => {}
        }
    }
    Some(RateLimit {
        limit,
        remaining: remaining?,
        reset: reset?,
    })
}

pub fn from_headers(h: &reqwest::header::HeaderMap) -> Option<RateLimit> {
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok());
    if let Some(r) = get("ratelimit").and_then(parse_header) {
        return Some(r);
    }
    let num = |k: &str| get(k).and_then(|v| v.trim().parse::<f64>().ok());
    Some(RateLimit {
        limit: num("x-rate-limit-limit"),
        remaining: num("x-rate-limit-remaining")?,
        reset: num("x-rate-limit-reset")?,
    })
}

/// The endpoint group of a request: limits are per path family and method.
pub fn group(method: &str, path: &str) -> String {
    let p = path.trim_start_matches('/').trim_start_matches("api/v1/");
    let family = p.split('/').next().unwrap_or_default();
    if family == "data" {
        return "POST /data/search/".into();
    }
    if method == "DELETE" {
        return format!("DELETE /{family}/");
    }
    "GET/POST/PUT".into()
}

#[derive(Debug, Default)]
struct GroupState {
    remaining: f64,
    reset_at: Option<Instant>,
}

/// Per-group budget as the server last reported it, spent locally as requests go out.
#[derive(Debug, Default)]
pub struct Pacer {
    groups: Mutex<HashMap<String, GroupState>>,
}

impl Pacer {
    /// How long to wait before sending in `group` (zero when there is budget); spends one unit.
    pub fn reserve(&self, group: &str) -> Duration {
        let mut g = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(st) = g.get_mut(group) else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        match st.reset_at {
            Some(at) if at <= now => {
                st.reset_at = None;
                Duration::ZERO
            }
            Some(at) if st.remaining < 1.0 => at - now,
            _ => {
                st.remaining -= 1.0;
                Duration::ZERO
            }
        }
    }

    pub fn observe(&self, group: &str, rl: RateLimit) {
        let mut g = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = g.entry(group.to_string()).or_default();
        // Keep one request in reserve for requests already in flight.
        st.remaining = (rl.remaining - 1.0).max(0.0);
        st.reset_at = Some(Instant::now() + Duration::from_secs_f64(rl.reset.max(0.0)));
    }

    /// After a 429: nothing more in this group until `wait` has passed.
    pub fn block(&self, group: &str, wait: Duration) {
        let mut g = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let st = g.entry(group.to_string()).or_default();
        st.remaining = 0.0;
        st.reset_at = Some(Instant::now() + wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_fractions() {
        let r = parse_header("limit=240, remaining=239, reset=7.12").unwrap();
        assert_eq!((r.limit, r.remaining, r.reset), (Some(240.0), 239.0, 7.12));
        let r = parse_header("limit=16; remaining=0; reset=0.5").unwrap();
        assert_eq!((r.remaining, r.reset), (0.0, 0.5));
        assert!(parse_header("nonsense").is_none());
    }

    #[test]
    fn old_headers_are_read() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-rate-limit-limit", "16".parse().unwrap());
        h.insert("x-rate-limit-remaining", "15".parse().unwrap());
        h.insert("x-rate-limit-reset", "7.835674".parse().unwrap());
        let r = from_headers(&h).unwrap();
        assert_eq!((r.remaining, r.reset), (15.0, 7.835674));
    }

    #[test]
    fn groups() {
        assert_eq!(group("POST", "/api/v1/data/search/"), "POST /data/search/");
        assert_eq!(group("PUT", "/api/v1/lead/lead_1/"), "GET/POST/PUT");
        assert_eq!(group("DELETE", "/api/v1/lead/lead_1/"), "DELETE /lead/");
    }

    #[test]
    fn pacer_waits_when_spent() {
        let p = Pacer::default();
        assert_eq!(p.reserve("g"), Duration::ZERO);
        p.observe(
            "g",
            RateLimit {
                limit: Some(2.0),
                remaining: 1.0,
                reset: 5.0,
            },
        );
        assert!(p.reserve("g") > Duration::from_secs(4));
    }
}
