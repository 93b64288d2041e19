//! What each stage of a journey holds, built from what intake and delivery already have in
//! hand (nothing is evaluated twice except the trigger explanation, and only for mappings that
//! exist: a few conditions each).
//!
//! Kinds: `received` and `duplicate` (intake: route, which write key by its place in the
//! instance's list — never the key —, size, client library), `attempt` (delivery: each
//! mapping's verdict and the conditions that decided it, the normalised payload, the plan as
//! `dry-run` prints it and as steps, each Close call, the outcome), `replayed` and `dropped`
//! (the dead-letter store, by whom).

use closeflow_close::payload::Payload;
use closeflow_close::run::EventReport;
use closeflow_close_api::calls::Call;
use closeflow_close_tools::plan_view;
use closeflow_mapping::Instance;
use closeflow_queue::journey::{Key, Record, Stage};
use closeflow_queue::{DeadLetter, Delivery, Millis, NewEvent, Outcome, now_ms};
use serde_json::{Map, Value, json};

/// The keys a raw event can be found by before any mapping ran: its User ID and the email its
/// traits or properties carry (a Company ID is known once a mapping ran: see [`attempt`]).
fn raw_keys(event: &Value) -> Vec<Key> {
    let mut keys = Vec::new();
    if let Some(u) = event
        .get("userId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        keys.push(Key::new("user_id", u));
    }
    for p in [
        "/traits/email",
        "/context/traits/email",
        "/properties/email",
    ] {
        if let Some(e) = event
            .pointer(p)
            .and_then(Value::as_str)
            .filter(|s| s.contains('@'))
        {
            let k = Key::new("email", e);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

fn library(event: &Value) -> Option<String> {
    let l = event.pointer("/context/library")?;
    let name = l.get("name").and_then(Value::as_str)?;
    Some(match l.get("version").and_then(Value::as_str) {
        Some(v) => format!("{name} {v}"),
        None => name.to_string(),
    })
}

/// How a request was let in: which of the instance's write keys (1-based, as `write_key:`
/// lists them), and where it travelled.
#[derive(Debug, Clone)]
pub struct Door {
    pub route: String,
    pub key_place: Option<usize>,
    /// `basic` (HTTP Basic auth) or `body` (the batch's `writeKey`).
    pub how: &'static str,
}

/// An event stored by intake (`duplicate`: its `messageId` was already accepted).
pub fn received(instance: &str, e: &NewEvent, door: &Door, duplicate: bool) -> Record {
    let event: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
    let mut data = json!({
        "route": door.route,
        "write_key": match door.key_place {
            Some(n) => format!("write key #{n} of {instance} ({})", door.how),
            None => format!("a write key of {instance} ({})", door.how),
        },
        "bytes": e.body.len(),
        "type": event.get("type").and_then(Value::as_str).unwrap_or_default(),
    });
    if let Some(l) = library(&event) {
        data["library"] = json!(l);
    }
    if !duplicate {
        // The event itself, as stored: what the console's playground and a replay start from.
        data["event"] = event.clone();
    }
    Record {
        keys: raw_keys(&event),
        stage: Stage {
            instance: instance.to_string(),
            message_id: e.message_id.clone(),
            at: if duplicate { now_ms() } else { e.received_at },
            kind: if duplicate { "duplicate" } else { "received" }.into(),
            data,
        },
    }
}

/// A payload as the planner was given it: nulls and empty objects (fields not provided) left
/// out.
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, compact(v)))
                .filter(|(_, v)| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
                .collect::<Map<_, _>>(),
        ),
        other => other,
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
                v["payload"] = match Payload::normalise(raw) {
                    Ok(p) => compact(serde_json::to_value(&p).unwrap_or(Value::Null)),
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
    if let Some(r) = report {
        if let Some(e) = &r.error {
            data["error"] = json!(e);
        }
        data["plan"] = json!(plan_view::event(&plan_view::Style { color: false }, r));
    }
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
    let mut all = event.map(raw_keys).unwrap_or_default();
    for k in found {
        if !all.contains(&k) {
            all.push(k);
        }
    }
    Record {
        keys: all,
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

/// An attempt's stage once its outcome is recorded in the queue.
pub fn settled(mut r: Record, o: &Outcome) -> Record {
    r.stage.data["outcome"] = outcome_json(o);
    r
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
