//! The simulator's state: records in the API's own JSON shapes.

use rand::Rng;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Requests per window, per endpoint group and key. The default is the recorded profile. The
/// organisation (every key of the snapshot together) may send [`ORG_KEYS`] keys' worth.
///
/// In a snapshot: `"limits": {"search": 16, "other": 240, "delete_lead": 80, "window_secs": 8.0,
/// "search_conditions": 0}`, any subset of the five (the others keep the recorded values); saved
/// back when not the default.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub search: u32,
    pub other: u32,
    pub delete_lead: u32,
    pub window_secs: f64,
    /// Conditions one search query may hold (0: no limit); more is answered 400, as a
    /// service bounding its query size would (Close documents no number).
    pub search_conditions: u32,
}

/// The organisation's limit in each endpoint group, in keys' worth: Close documents it as 3×
/// one key's, however many keys the organisation has (a 4th key adds nothing).
pub const ORG_KEYS: u32 = 3;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            search: 16,
            other: 240,
            delete_lead: 80,
            window_secs: 8.0,
            search_conditions: 0,
        }
    }
}

/// Requests served and refused with 429, per endpoint group (`GET /_sim/stats`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GroupStats {
    pub requests: u64,
    pub throttled: u64,
}

/// Fault injection, settable at start or at run time (`POST /_sim/faults`).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Faults {
    /// Share of requests answered 503 (0.0–1.0).
    pub error_rate: f64,
    /// The next this-many requests are answered 429.
    pub storm: u32,
    /// Added to every reply.
    pub latency_ms: u64,
    /// Share of requests whose connection is cut before a reply (nothing is processed).
    pub drop_rate: f64,
    /// Share of requests processed whose reply is then lost (the write happened).
    pub lost_reply_rate: f64,
    /// Requests, as `"METHOD path-prefix"` (e.g. `"POST contact/"`), whose next occurrence is
    /// processed and its reply lost, each once: a deterministic "it happened but nobody heard".
    pub lose_reply_to: Vec<String>,
    /// After each reply lost by `lose_reply_to`, the next this-many requests are answered 503
    /// (nothing processed): the write happened, and nobody can find out for a while.
    pub unavailable_after_lost_reply: u32,
    /// 503s still owed by `unavailable_after_lost_reply` (run-time state, not a setting).
    #[serde(skip)]
    pub unavailable_left: u32,
}

pub(crate) struct Window {
    pub started: Instant,
    pub count: u32,
}

impl Window {
    pub fn new(now: Instant) -> Window {
        Window {
            started: now,
            count: 0,
        }
    }

    /// Starts a new window when this one is over; the count so far.
    pub fn roll(&mut self, window: Duration, now: Instant) -> u32 {
        if now.duration_since(self.started) >= window {
            self.started = now;
            self.count = 0;
        }
        self.count
    }

    /// Seconds until the window resets.
    pub fn reset(&self, window: Duration, now: Instant) -> f64 {
        window
            .saturating_sub(now.duration_since(self.started))
            .as_secs_f64()
    }
}

pub(crate) struct Org {
    pub api_keys: Vec<String>,
    pub custom_fields: Map<String, Value>,
    pub lead_statuses: Vec<Value>,
    pub leads: Vec<Map<String, Value>>,
    pub contacts: Vec<Map<String, Value>>,
    pub limits: Limits,
    pub faults: Faults,
    pub windows: HashMap<(String, String), Window>,
    /// The organisation's windows, per endpoint group: every key's requests count here too.
    pub org_windows: HashMap<String, Window>,
    pub clock_us: i64,
    pub cursors: HashMap<String, (Vec<Value>, Instant)>,
    pub stats: std::collections::BTreeMap<String, GroupStats>,
}

/// A running simulator's shared state.
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<Mutex<Org>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sim")
    }
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(crate) fn new_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..43)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

impl Org {
    /// A strictly increasing timestamp, so `date_created` orders records by creation.
    pub fn now(&mut self) -> String {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        self.clock_us = (self.clock_us + 1).max(wall);
        let secs = self.clock_us.div_euclid(1_000_000);
        let micros = self.clock_us.rem_euclid(1_000_000);
        format_rfc3339(secs, micros)
    }
    pub fn status_label(&self, id: &str) -> Value {
        self.lead_statuses
            .iter()
            .find(|s| s.get("id").and_then(Value::as_str) == Some(id))
            .and_then(|s| s.get("label").cloned())
            .unwrap_or(Value::Null)
    }
    pub fn default_status(&self) -> Value {
        self.lead_statuses
            .first()
            .and_then(|s| s.get("id").cloned())
            .unwrap_or(Value::Null)
    }
}

/// Days since 1970-01-01 of a civil date (days-from-civil).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` from Unix seconds (civil-from-days, no time crate needed).
pub(crate) fn format_rfc3339(secs: i64, micros: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{micros:06}+00:00")
}

impl Sim {
    /// Starts from a snapshot (`None`: empty, one key `test_key`, one status "Potential").
    /// Missing optional keys take the API's defaults, so a hand-written snapshot can be short.
    pub fn from_snapshot(snap: Option<&Value>) -> Result<Sim, String> {
        let empty = json!({});
        let s = snap.unwrap_or(&empty);
        if !s.is_object() {
            return Err("a simulator snapshot is a JSON object".into());
        }
        let api_keys: Vec<String> = match s.get("api_keys") {
            Some(Value::Array(k)) => k
                .iter()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
            _ => vec!["test_key".into()],
        };
        let custom_fields = match s.get("custom_fields") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let lead_statuses = match s.get("lead_statuses") {
            Some(Value::Array(a)) if !a.is_empty() => a.clone(),
            _ => vec![json!({"id": "stat_potential", "label": "Potential"})],
        };
        let limits = match s.get("limits") {
            None | Some(Value::Null) => Limits::default(),
            Some(l) => {
                let limits: Limits = serde_json::from_value(l.clone()).map_err(|e| {
                    format!("`limits`: {e} (keys: search, other, delete_lead, window_secs, search_conditions)")
                })?;
                if !(limits.window_secs > 0.0 && limits.window_secs.is_finite()) {
                    return Err("`limits.window_secs` must be a positive number of seconds".into());
                }
                limits
            }
        };
        let mut inner = Org {
            api_keys,
            custom_fields,
            lead_statuses,
            leads: vec![],
            contacts: vec![],
            limits,
            faults: s
                .get("faults")
                .and_then(|f| serde_json::from_value(f.clone()).ok())
                .unwrap_or_default(),
            windows: HashMap::new(),
            org_windows: HashMap::new(),
            clock_us: 0,
            cursors: HashMap::new(),
            stats: Default::default(),
        };
        // The one reading of a snapshot, shared with `dry-run --against sim:`; only the
        // server's cosmetic defaults are added here.
        for lead in closeflow_snapshot::Reader::leads(s)? {
            let Value::Object(mut lead) = lead else {
                continue;
            };
            let contacts = lead.remove("contacts");
            let created = lead.get("date_created").cloned().unwrap_or(Value::Null);
            lead.entry("date_updated").or_insert(created);
            for c in contacts
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Value::Object(c) = c else { continue };
                let mut c = c.clone();
                let cd = c.get("date_created").cloned().unwrap_or(Value::Null);
                c.entry("date_updated").or_insert(cd);
                normalise_contact(&mut c);
                inner.contacts.push(c);
            }
            inner.leads.push(lead);
        }
        Ok(Sim {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Org> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state in the snapshot format (leads with their contacts nested).
    pub fn snapshot(&self) -> Value {
        let st = self.lock();
        let leads: Vec<Value> = st
            .leads
            .iter()
            .map(|l| {
                let mut l = l.clone();
                let id = l.get("id").cloned().unwrap_or(Value::Null);
                let cs: Vec<Value> = st
                    .contacts
                    .iter()
                    .filter(|c| c.get("lead_id") == Some(&id))
                    .map(|c| Value::Object(c.clone()))
                    .collect();
                l.insert("contacts".into(), Value::Array(cs));
                Value::Object(l)
            })
            .collect();
        let mut snap = json!({
            "api_keys": st.api_keys,
            "custom_fields": st.custom_fields,
            "lead_statuses": st.lead_statuses,
            "leads": leads,
        });
        // Configured limits are part of the state a run depends on; the recorded profile is
        // the default and is left out, so that hand-written snapshots stay short.
        if st.limits != Limits::default() {
            snap["limits"] = json!(st.limits);
        }
        snap
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }
    pub fn set_limits(&self, l: Limits) {
        let mut st = self.lock();
        st.limits = l;
        st.windows.clear();
        st.org_windows.clear();
    }
    /// The keys it accepts, for the start-up line (these are test keys, not secrets).
    pub fn key_hint(&self) -> String {
        self.lock().api_keys.join(", ")
    }
    pub(crate) fn roll(&self, p: f64) -> bool {
        p > 0.0 && rand::rng().random::<f64>() < p
    }
    pub(crate) fn window(&self) -> Duration {
        Duration::from_secs_f64(self.lock().limits.window_secs.max(0.001))
    }
}

/// Server defaults on a contact: list entry types, `phone_formatted`, `""` for null text.
pub(crate) fn normalise_contact(c: &mut Map<String, Value>) {
    for k in ["name", "title"] {
        if !matches!(c.get(k), Some(Value::String(_))) {
            c.insert(k.into(), json!(""));
        }
    }
    let fix = |c: &mut Map<String, Value>,
               key: &str,
               default_type: &str,
               f: &dyn Fn(&mut Map<String, Value>)| {
        let list = match c.get(key) {
            Some(Value::Array(a)) => a.clone(),
            _ => vec![],
        };
        let fixed: Vec<Value> = list
            .into_iter()
            .filter_map(|e| match e {
                Value::Object(mut m) => {
                    m.entry("type").or_insert(json!(default_type));
                    f(&mut m);
                    Some(Value::Object(m))
                }
                _ => None,
            })
            .collect();
        c.insert(key.into(), Value::Array(fixed));
    };
    fix(c, "emails", "office", &|_| {});
    fix(c, "phones", "office", &|m| {
        let p = m.get("phone").cloned().unwrap_or(Value::Null);
        m.entry("phone_formatted").or_insert(p);
        m.entry("country").or_insert(Value::Null);
    });
    fix(c, "urls", "url", &|_| {});
    let display = match c.get("name").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => c
            .get("emails")
            .and_then(|e| e.get(0))
            .and_then(|e| e.get("email"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    c.insert("display_name".into(), json!(display));
    c.entry("organization_id").or_insert(json!("orga_sim"));
    for k in ["created_by", "updated_by"] {
        c.entry(k).or_insert(json!("user_sim"));
    }
    c.entry("integration_links").or_insert(json!([]));
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn limits_may_be_partial_and_are_saved() {
        let sim = Sim::from_snapshot(Some(&json!({"limits": {"search": 2}}))).unwrap();
        let limits = sim.lock().limits;
        assert_eq!(
            limits,
            Limits {
                search: 2,
                ..Limits::default()
            }
        );
        let saved = sim.snapshot();
        assert_eq!(saved["limits"]["search"], 2);
        assert_eq!(saved["limits"]["other"], 240);
        let again = Sim::from_snapshot(Some(&saved)).unwrap();
        assert_eq!(again.lock().limits, limits);
        assert!(
            Sim::from_snapshot(None)
                .unwrap()
                .snapshot()
                .get("limits")
                .is_none()
        );
        for bad in [
            json!({"serch": 2}),
            json!({"search": -1}),
            json!({"window_secs": 0}),
        ] {
            let e = Sim::from_snapshot(Some(&json!({"limits": bad}))).unwrap_err();
            assert!(e.contains("limits"), "{e}");
        }
    }

    #[test]
    fn civil_days_round_trip() {
        for days in [-1000, 0, 1, 59, 365, 20_000, 2_932_896] {
            let text = format_rfc3339(days * 86_400, 0);
            let (y, m, d) = (
                text[0..4].parse().unwrap(),
                text[5..7].parse().unwrap(),
                text[8..10].parse().unwrap(),
            );
            assert_eq!(days_from_civil(y, m, d), days, "{text}");
        }
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(format_rfc3339(0, 5), "1970-01-01T00:00:00.000005+00:00");
        assert_eq!(
            format_rfc3339(1_700_000_000, 0),
            "2023-11-14T22:13:20.000000+00:00"
        );
    }
}
