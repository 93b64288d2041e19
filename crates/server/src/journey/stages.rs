//! What each stage of a journey holds, built from what intake and delivery already have in
//! hand (nothing is evaluated twice except the trigger explanation, and only for mappings that
//! exist: a few conditions each).
//!
//! Kinds: `received` and `duplicate` (intake: route, which write key by its place in the
//! instance's list — never the key —, size, client library), `attempt` (delivery: each
//! mapping's verdict and the conditions that decided it, the normalised payload, the plan as
//! `dry-run` prints it and as steps, each Close call, the outcome), `replayed` and `dropped`
//! (the dead-letter store, by whom).

use closeflow_close::payload::{self, Payload};
use closeflow_close::run::EventReport;
use closeflow_close_api::calls::Call;
use closeflow_close_tools::plan_view;
use closeflow_mapping::Instance;
use closeflow_queue::journey::{Key, Record, Stage};
use closeflow_queue::{DeadLetter, Delivery, Millis, Outcome, now_ms};
use serde_json::{Value, json};

/// What an arriving event's journey is found by and says about its sender, read at intake
/// while the event is still a tree: its type, User ID, the emails its traits or properties
/// carry, its client library. (A Company ID is known once a mapping ran: see [`attempt`].)
#[derive(Debug, Clone, Default)]
pub struct Hints {
    pub kind: Option<String>,
    user_id: Option<String>,
    emails: Vec<String>,
    library: Option<String>,
}

impl Hints {
    pub fn of(event: &Value) -> Hints {
        let text = |p: &str| {
            event
                .pointer(p)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let mut emails: Vec<String> = Vec::new();
        for p in [
            "/traits/email",
            "/context/traits/email",
            "/properties/email",
        ] {
            if let Some(e) = text(p).filter(|s| s.contains('@'))
                && !emails.iter().any(|x| x.eq_ignore_ascii_case(e))
            {
                emails.push(e.to_string());
            }
        }
        Hints {
            kind: text("/type").map(str::to_string),
            user_id: text("/userId").map(str::to_string),
            emails,
            library: text("/context/library/name").map(|n| {
                match text("/context/library/version") {
                    Some(v) => format!("{n} {v}"),
                    None => n.to_string(),
                }
            }),
        }
    }
}

/// How a request was let in: which of the instance's write keys (1-based, as `write_key:`
/// lists them), and where it travelled.
#[derive(Debug, Clone)]
pub struct Door {
    pub route: &'static str,
    pub key_place: Option<usize>,
    /// `basic` (HTTP Basic auth) or `body` (the batch's `writeKey`).
    pub how: &'static str,
}

/// How an event arrived: what its received stage says, kept with the event in the queue
/// ([`closeflow_queue::NewEvent::meta`]) so that intake writes nothing more than the event
/// itself, and its stage is written by delivery with the first attempt's.
pub fn meta(instance: &str, bytes: usize, door: &Door, hints: &Hints) -> String {
    let mut m = json!({
        "route": door.route,
        "write_key": match door.key_place {
            Some(n) => format!("write key #{n} of {instance} ({})", door.how),
            None => format!("a write key of {instance} ({})", door.how),
        },
        "bytes": bytes,
        "type": hints.kind.as_deref().unwrap_or_default(),
    });
    if let Some(l) = &hints.library {
        m["library"] = json!(l);
    }
    if let Some(u) = &hints.user_id {
        m["user_id"] = json!(u);
    }
    if !hints.emails.is_empty() {
        m["emails"] = json!(hints.emails);
    }
    m.to_string()
}

/// The received stage of a delivered event, from what intake stored with it (`None`: it has
/// none, e.g. a replay, which has its own stage).
pub fn arrived(d: &Delivery) -> Option<Record> {
    let data: Value = serde_json::from_str(d.meta.as_deref()?).ok()?;
    let mut keys = Vec::new();
    if let Some(u) = data.get("user_id").and_then(Value::as_str) {
        keys.push(Key::new("user_id", u));
    }
    for e in data["emails"].as_array().into_iter().flatten() {
        if let Some(e) = e.as_str() {
            keys.push(Key::new("email", e));
        }
    }
    Some(Record {
        keys,
        stage: Stage {
            instance: d.instance.clone(),
            message_id: d.message_id.clone(),
            at: d.received_at,
            kind: "received".into(),
            data,
        },
    })
}

/// A request intake answered as a duplicate of an event it already holds: the duplicate's
/// stage (rare: written on its own).
pub fn duplicate(instance: &str, message_id: &str, meta: &str) -> Record {
    Record {
        keys: vec![],
        stage: Stage {
            instance: instance.to_string(),
            message_id: message_id.to_string(),
            at: now_ms(),
            kind: "duplicate".into(),
            data: serde_json::from_str(meta).unwrap_or(Value::Null),
        },
    }
}

/// One delivery attempt, without its outcome (added by [`settled`] once it is recorded in the
/// queue). `keys` are the lock names the scheduler computed (`user:…`, `email:…`,
/// `company:…`).
pub fn attempt(
    inst: &Instance,
    d: &Delivery,
    event: Option<&Value>,
    report: Option<&EventReport>,
    calls: Vec<Call>,
    keys: &[String],
    started: Millis,
) -> Record {
    let mut mappings = Vec::new();
    if let (Some(r), Some(ev)) = (report, event) {
        for m in &r.mappings {
            let mut v = json!({"name": m.name, "verdict": if m.matched { "fires" } else { "does not fire" }});
            if let Some(def) = inst.mappings.iter().find(|x| x.name == m.name) {
                v["trigger"] = json!(def.trigger.to_string());
                v["decided_by"] = Value::Array(
                    def.trigger
                        .deciding(ev)
                        .into_iter()
                        .map(|c| match (c.missing, c.actual) {
                            (Some(true), _) | (_, None) => {
                                json!({"condition": c.text, "holds": c.result, "missing": true})
                            }
                            (_, Some(a)) => {
                                json!({"condition": c.text, "holds": c.result, "value": a})
                            }
                        })
                        .collect(),
                );
            }
            if let Some(raw) = &m.payload {
                // As `explain` shows it.
                v["payload"] = match Payload::normalise(raw) {
                    Ok(p) => Value::Object(payload::normalised_view(raw, &p).0),
                    Err(_) => Value::Object(raw.clone()),
                };
            }
            if let Some(e) = &m.error {
                v["error"] = json!(e);
            }
            if !m.steps.is_empty() {
                v["steps"] = serde_json::to_value(&m.steps).unwrap_or(Value::Null);
            }
            mappings.push(v);
        }
    }
    let mut data = json!({
        "attempt": d.attempts + 1,
        "ms": (now_ms() - started).max(0),
        "mappings": mappings,
        "calls": calls,
    });
    // The event as delivery read it from the queue, once: on its first attempt.
    if d.attempts == 0
        && let Some(ev) = event
    {
        data["event"] = ev.clone();
    }
    if let Some(r) = report {
        if let Some(e) = &r.error {
            data["error"] = json!(e);
        }
        data["plan"] = json!(plan_view::event(&plan_view::Style { color: false }, r));
    }
    // The keys as the mappings made them (the Company ID first of all); the raw ones are
    // the received stage's.
    let found: Vec<Key> = keys
        .iter()
        .filter_map(|k| {
            let (kind, v) = k.split_once(':')?;
            let kind = match kind {
                "user" => "user_id",
                "email" => "email",
                "company" => "company_id",
                _ => return None,
            };
            Some(Key::new(kind, v))
        })
        .collect();
    Record {
        keys: found,
        stage: Stage {
            instance: d.instance.clone(),
            message_id: d.message_id.clone(),
            at: started,
            kind: "attempt".into(),
            data,
        },
    }
}

/// What an outcome says in a journey.
pub fn outcome_json(o: &Outcome) -> Value {
    match o {
        Outcome::Applied => json!({"kind": "applied"}),
        Outcome::Skipped { reason } => json!({"kind": "skipped", "reason": reason}),
        Outcome::Retry {
            not_before,
            reason,
            error,
        } => json!({"kind": "retry", "reason": reason, "error": error, "not_before": not_before}),
        Outcome::Dead {
            reason,
            error,
            last_reply,
        } => {
            json!({"kind": "dead_lettered", "reason": reason, "error": error, "last_reply": last_reply})
        }
    }
}

/// An attempt's stages (its event's received stage first, on its first attempt) once its
/// outcome is recorded in the queue: the outcome goes into the attempt's.
pub fn settled(mut rs: Vec<Record>, o: &Outcome) -> Vec<Record> {
    if let Some(r) = rs.last_mut() {
        r.stage.data["outcome"] = outcome_json(o);
    }
    rs
}

/// A dead letter queued again (`by`: `admin`, `console`, `cli`).
pub fn replayed(d: &DeadLetter, by: &str) -> Record {
    Record {
        keys: vec![],
        stage: Stage {
            instance: d.instance.clone(),
            message_id: d.message_id.clone(),
            at: now_ms(),
            kind: "replayed".into(),
            data: json!({"by": by, "was": d.reason}),
        },
    }
}

/// A dead letter deleted for good.
pub fn dropped(d: &DeadLetter, by: &str) -> Record {
    Record {
        keys: vec![],
        stage: Stage {
            instance: d.instance.clone(),
            message_id: d.message_id.clone(),
            at: now_ms(),
            kind: "dropped".into(),
            data: json!({"by": by, "was": d.reason}),
        },
    }
}
