//! Close's rate limits: parse `RateLimit` (or the older `x-rate-limit-*`) on every reply and
//! pace each endpoint group so that steady load stays under its budget: each API key's, and the
//! organisation's (3 keys' worth, however many keys there are).

use std::collections::{HashMap, VecDeque};
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

/// The organisation's limit in an endpoint group, in keys' worth: Close documents it as 3× one
/// key's, whatever the number of keys.
pub const ORG_KEYS: f64 = 3.0;

/// Two replies whose windows reset within this of each other tell of one window.
const SAME_WINDOW: Duration = Duration::from_millis(500);

/// How long this client's requests are counted before any reply told the window.
const UNTOLD_WINDOW: Duration = Duration::from_secs(10);

/// One budget as the server last reported it, spent locally as requests go out. Unknown (no
/// reply yet, or its window over) is no limit.
#[derive(Debug, Default, Clone)]
struct Budget {
    remaining: f64,
    reset_at: Option<Instant>,
    /// Requests sent with it and not answered yet: a reply's `remaining` may not count them.
    in_flight: u32,
}

impl Budget {
    /// How long until this budget allows a request (zero: now).
    fn wait(&mut self, now: Instant) -> Duration {
        match self.reset_at {
            Some(at) if at <= now => {
                self.reset_at = None;
                Duration::ZERO
            }
            Some(at) if self.remaining < 1.0 => at - now,
            _ => Duration::ZERO,
        }
    }

    /// What is left to spend before the window resets (unknown: unbounded).
    fn headroom(&self) -> f64 {
        if self.reset_at.is_some() {
            self.remaining
        } else {
            f64::INFINITY
        }
    }

    fn spend(&mut self) {
        self.in_flight += 1;
        if self.reset_at.is_some() {
            self.remaining -= 1.0;
        }
    }

    /// A reply's figures, less what is still in flight (sent, perhaps not yet counted), and
    /// one more in reserve.
    ///
    /// Replies on concurrent connections arrive out of order: one the server counted earlier
    /// may come after a later one, and tell more left than there is. Within one window (the
    /// same reset, give or take [`SAME_WINDOW`]) the least left wins.
    fn set(&mut self, rl: RateLimit, in_flight: u32, now: Instant) {
        let remaining = (rl.remaining - 1.0 - f64::from(in_flight)).max(0.0);
        let at = now + Duration::from_secs_f64(rl.reset.max(0.0));
        match self.reset_at {
            Some(cur) if cur > now && cur.max(at) - cur.min(at) < SAME_WINDOW => {
                self.remaining = self.remaining.min(remaining);
            }
            _ => {
                self.remaining = remaining;
                self.reset_at = Some(at);
            }
        }
    }

    fn block(&mut self, until: Instant) {
        self.remaining = 0.0;
        self.reset_at = Some(until);
    }
}

/// One endpoint group's budget as [`Pacer::budgets`] shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetView {
    pub group: String,
    pub left: Option<f64>,
    pub per_key_limit: Option<f64>,
    pub resets_in: Option<Duration>,
}

/// One endpoint group: a budget per key, and the organisation's.
#[derive(Debug)]
struct GroupState {
    keys: Vec<Budget>,
    /// Where the next choice of a key starts, so that equal keys take turns.
    turn: usize,
    /// The organisation's budget, when a reply told it (a limit above one key's).
    org: Budget,
    /// One key's limit: the smallest `limit` a reply gave.
    key_limit: Option<f64>,
    /// The window: the longest `reset` a served request was given.
    window: Duration,
    /// This client's requests in the group over the last window, every key's: the organisation
    /// allows [`ORG_KEYS`] keys' worth in any window, however the keys' windows fall.
    sent: VecDeque<Instant>,
}

impl GroupState {
    fn new(keys: usize) -> GroupState {
        GroupState {
            keys: vec![Budget::default(); keys],
            turn: 0,
            org: Budget::default(),
            key_limit: None,
            window: Duration::ZERO,
            sent: VecDeque::new(),
        }
    }

    /// Whether a reply's figures are the organisation's (its limit is above one key's).
    fn is_org(&self, rl: &RateLimit) -> bool {
        matches!((rl.limit, self.key_limit), (Some(l), Some(k)) if l > k)
    }

    /// How long until the organisation's budget allows a request, as this client spent it.
    fn org_wait(&mut self, now: Instant) -> Duration {
        let told = self.org.wait(now);
        // A margin for the time between sending and the server counting; until a reply told
        // the window, Close's documented 8 s (with room), so that the count stays bounded.
        let window = if self.window.is_zero() {
            UNTOLD_WINDOW
        } else {
            self.window.mul_f64(1.05) + Duration::from_millis(50)
        };
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.sent.pop_front();
        }
        let Some(limit) = self.key_limit.filter(|_| !self.window.is_zero()) else {
            return told;
        };
        // One request in reserve, as for each key.
        let cap = (ORG_KEYS * limit - 1.0).max(1.0);
        let counted = if (self.sent.len() as f64) < cap {
            Duration::ZERO
        } else {
            self.sent.front().map_or(Duration::ZERO, |t| {
                (*t + window).saturating_duration_since(now)
            })
        };
        told.max(counted)
    }
}

/// Pacing per endpoint group over one organisation's keys: each key within its own budget, all
/// of them within the organisation's; each request goes out with the key whose budget frees up
/// soonest (the one with most left, on a tie; in turn, when nothing is known).
#[derive(Debug)]
pub struct Pacer {
    keys: usize,
    groups: Mutex<HashMap<String, GroupState>>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer::new(1)
    }
}

impl Pacer {
    /// A pacer over `keys` keys (at least one), numbered from 0.
    pub fn new(keys: usize) -> Pacer {
        Pacer {
            keys: keys.max(1),
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// The group's state, under the lock.
    fn with<T>(&self, group: &str, f: impl FnOnce(&mut GroupState) -> T) -> T {
        let mut groups = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keys = self.keys;
        f(groups
            .entry(group.to_string())
            .or_insert_with(|| GroupState::new(keys)))
    }

    /// What is left of each endpoint group's budget as the last replies told it, for people
    /// (the console): every key's left summed (capped by the organisation's when known), and
    /// when the soonest window resets. `left` is `None` while no reply told a budget.
    pub fn budgets(&self) -> Vec<BudgetView> {
        let now = Instant::now();
        let groups = self
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<BudgetView> = groups
            .iter()
            .map(|(name, g)| {
                let live = |b: &Budget| b.reset_at.is_some_and(|at| at > now);
                let told: Vec<&Budget> = g.keys.iter().filter(|b| live(b)).collect();
                let mut left = (!told.is_empty())
                    .then(|| told.iter().map(|b| b.remaining.max(0.0)).sum::<f64>());
                if live(&g.org) {
                    left = Some(left.map_or(g.org.remaining, |l| l.min(g.org.remaining)));
                }
                BudgetView {
                    group: name.clone(),
                    left,
                    per_key_limit: g.key_limit,
                    resets_in: told
                        .iter()
                        .filter_map(|b| b.reset_at)
                        .min()
                        .map(|at| at.saturating_duration_since(now)),
                }
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// The key to send with in `group` now (one unit of its budget spent), or how long to wait
    /// before asking again.
    pub fn reserve(&self, group: &str) -> Result<usize, Duration> {
        self.reserve_among(group, None)
    }

    /// As [`Pacer::reserve`], with key `key` only (a check of that key).
    pub fn reserve_key(&self, group: &str, key: usize) -> Result<usize, Duration> {
        self.reserve_among(group, Some(key % self.keys))
    }

    fn reserve_among(&self, group: &str, only: Option<usize>) -> Result<usize, Duration> {
        let keys = self.keys;
        self.with(group, |g| {
            let now = Instant::now();
            let org = g.org_wait(now);
            let mut best: Option<(usize, Duration, f64)> = None;
            for i in (0..keys)
                .map(|n| (g.turn + n) % keys)
                .filter(|i| only.is_none_or(|k| k == *i))
            {
                let wait = g.keys[i].wait(now);
                let room = g.keys[i].headroom();
                if best.is_none_or(|(_, w, r)| wait < w || wait == w && room > r) {
                    best = Some((i, wait, room));
                }
            }
            let (key, wait, _) = best.unwrap_or((0, Duration::ZERO, 0.0));
            let wait = wait.max(org);
            if !wait.is_zero() {
                return Err(wait);
            }
            g.keys[key].spend();
            g.org.spend();
            g.sent.push_back(now);
            g.turn = (key + 1) % keys;
            Ok(key)
        })
    }

    /// A request [`Pacer::reserve`] let out with `key` is answered, or will never be: call
    /// once per reservation, before [`Pacer::observe`] of its reply.
    pub fn settle(&self, key: usize, group: &str) {
        self.with(group, |g| {
            if let Some(b) = g.keys.get_mut(key) {
                b.in_flight = b.in_flight.saturating_sub(1);
            }
            g.org.in_flight = g.org.in_flight.saturating_sub(1);
        })
    }

    /// A reply's figures to a request sent with `key`: that key's budget, or the
    /// organisation's when the reply tells that one (a limit above one key's). `served`: not a
    /// 429.
    pub fn observe(&self, key: usize, group: &str, rl: RateLimit, served: bool) {
        self.with(group, |g| {
            let now = Instant::now();
            if let Some(l) = rl.limit {
                g.key_limit = Some(g.key_limit.map_or(l, |k| k.min(l)));
            }
            if served {
                g.window = g
                    .window
                    .max(Duration::from_secs_f64(rl.reset.clamp(0.0, 3600.0)));
            }
            if g.is_org(&rl) {
                let in_flight = g.org.in_flight;
                g.org.set(rl, in_flight, now);
            } else if let Some(b) = g.keys.get_mut(key) {
                let in_flight = b.in_flight;
                b.set(rl, in_flight, now);
            }
        })
    }

    /// After a 429 to a request sent with `key`: nothing more with that key in this group
    /// until `wait` has passed, or with any key when the reply said the organisation's budget
    /// is spent.
    pub fn block(&self, key: usize, group: &str, wait: Duration, rl: Option<RateLimit>) {
        self.with(group, |g| {
            let until = Instant::now() + wait;
            if rl.is_some_and(|rl| g.is_org(&rl)) {
                g.org.block(until);
            } else if let Some(b) = g.keys.get_mut(key) {
                b.block(until);
            }
        })
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
        assert_eq!(p.reserve("g"), Ok(0));
        p.observe(0, "g", rl(2.0, 1.0, 5.0), true);
        assert!(p.reserve("g").unwrap_err() > Duration::from_secs(4));
    }

    fn rl(limit: f64, remaining: f64, reset: f64) -> RateLimit {
        RateLimit {
            limit: Some(limit),
            remaining,
            reset,
        }
    }

    #[test]
    fn requests_in_flight_are_counted_against_a_reply() {
        let p = Pacer::default();
        assert_eq!((p.reserve("g"), p.reserve("g")), (Ok(0), Ok(0)));
        // The first reply may not count the second request: 3 left, 1 in flight, 1 in reserve.
        p.settle(0, "g");
        p.observe(0, "g", rl(16.0, 3.0, 5.0), true);
        assert_eq!(p.reserve("g"), Ok(0));
        assert!(p.reserve("g").is_err());
    }

    #[test]
    fn a_reply_overtaken_by_a_later_one_of_its_window_does_not_raise_what_is_left() {
        let p = Pacer::default();
        for _ in 0..3 {
            assert_eq!(p.reserve("g"), Ok(0));
        }
        // All three answered; the third's reply is read first (3 left), the first's last (5
        // left, stale).
        for _ in 0..3 {
            p.settle(0, "g");
        }
        for left in [3.0, 4.0, 5.0] {
            p.observe(0, "g", rl(16.0, left, 5.0), true);
        }
        // 3 left, 1 in reserve: two more, not four.
        assert_eq!((p.reserve("g"), p.reserve("g")), (Ok(0), Ok(0)));
        assert!(p.reserve("g").is_err());
        // A reply of the next window (its reset well after this one's) is taken as it says.
        p.settle(0, "g");
        p.observe(0, "g", rl(16.0, 15.0, 8.0), true);
        assert_eq!(p.reserve("g"), Ok(0));
    }

    #[test]
    fn without_rate_limit_headers_nothing_waits_and_nothing_piles_up() {
        let p = Pacer::new(2);
        for _ in 0..10_000 {
            let k = p.reserve("g").unwrap();
            p.settle(k, "g");
        }
        p.with("g", |g| {
            // Counted for a while, then forgotten.
            assert_eq!(g.sent.len(), 10_000);
            let later = Instant::now() + UNTOLD_WINDOW;
            assert_eq!(g.org_wait(later), Duration::ZERO);
            assert!(g.sent.is_empty());
        });
    }

    #[test]
    fn keys_take_turns_then_the_one_with_most_left() {
        let p = Pacer::new(3);
        let first: Vec<usize> = (0..3).map(|_| p.reserve("g").unwrap()).collect();
        assert_eq!(first, [0, 1, 2]);
        p.observe(0, "g", rl(16.0, 3.0, 5.0), true);
        p.observe(1, "g", rl(16.0, 9.0, 5.0), true);
        p.observe(2, "g", rl(16.0, 5.0, 5.0), true);
        assert_eq!(p.reserve("g"), Ok(1));
        // Another group is paced on its own.
        assert_eq!(p.reserve("h"), Ok(0));
    }

    #[test]
    fn a_spent_key_is_passed_over_and_the_soonest_free_waited_for() {
        let p = Pacer::new(2);
        p.observe(0, "g", rl(16.0, 0.0, 5.0), true);
        assert_eq!(p.reserve("g"), Ok(1));
        assert_eq!(p.reserve("g"), Ok(1));
        p.observe(1, "g", rl(16.0, 0.0, 2.0), true);
        let wait = p.reserve("g").unwrap_err();
        assert!(
            wait <= Duration::from_secs(2) && wait > Duration::from_secs(1),
            "{wait:?}"
        );
        // A 429 blocks the key it came to, not the other.
        let p = Pacer::new(2);
        p.block(0, "g", Duration::from_secs(5), Some(rl(16.0, 0.0, 5.0)));
        assert_eq!(p.reserve("g"), Ok(1));
        assert_eq!(p.reserve("g"), Ok(1));
    }

    #[test]
    fn the_organisation_caps_every_key_together() {
        // Four keys of 4 each: the organisation allows 12 (one kept in reserve) per window.
        let p = Pacer::new(4);
        for k in 0..4 {
            p.observe(k, "g", rl(4.0, 4.0, 60.0), true);
        }
        let mut used = [0; 4];
        while let Ok(k) = p.reserve("g") {
            used[k] += 1;
        }
        assert_eq!(used.iter().sum::<i32>(), 11, "{used:?}");
        assert!(used.iter().all(|n| *n >= 2), "{used:?}");
        // A reply telling the organisation's budget (a limit above one key's) holds every key.
        let p = Pacer::new(2);
        p.observe(0, "g", rl(4.0, 3.0, 60.0), true);
        p.observe(1, "g", rl(12.0, 0.0, 30.0), true);
        let wait = p.reserve("g").unwrap_err();
        assert!(wait > Duration::from_secs(29), "{wait:?}");
        let p = Pacer::new(2);
        p.observe(0, "g", rl(4.0, 3.0, 60.0), true);
        p.block(1, "g", Duration::from_secs(30), Some(rl(12.0, 0.0, 30.0)));
        assert!(p.reserve("g").is_err());
    }
}
