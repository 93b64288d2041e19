//! The one reading of a simulator snapshot (`{"custom_fields", "lead_statuses", "leads": [...]}`),
//! shared by the simulator and by `dry-run --against sim:`: what a short, hand-written snapshot
//! means is decided here once, so that a plan made against a snapshot and the simulator started
//! from it can never disagree about what is in it.
//!
//! It works on JSON values only (no types of the client or the simulator), lead by lead, so a
//! large snapshot can be read without holding it whole. The rules:
//! - every lead and contact has a text `id`; ids are unique (a snapshot without them is
//!   refused: a made-up id could not be the same in two readers);
//! - a contact's `lead_id` is the lead it is nested in;
//! - `name`, `description` (leads), `name`, `title` (contacts) missing or null are `""`;
//! - `status_id` missing or null is the first of `lead_statuses` (Close's default status);
//! - `date_created` missing or null is [`EPOCH`] (older than anything real, so ties fall to the
//!   id);
//! - `emails`, `phones`, `urls` missing or null are `[]`; a plain string entry is the entry
//!   `{"email": …}` (`phone`, `url`); entries get Close's default `type` (`office`, `office`,
//!   `url`);
//! - custom fields are flat `custom.<field id>` keys; a nested `custom` object (the form Close's
//!   replies carry, keyed by field *name*) is translated by name, or by id, against that object
//!   type's `custom_fields`, and a flat key of the same field wins. A key naming no custom field
//!   is refused.

use serde_json::{Map, Value, json};
use std::collections::HashSet;

/// `date_created` of a record that does not say when it was created.
pub const EPOCH: &str = "1970-01-01T00:00:00+00:00";
/// The status a lead gets when the snapshot lists none.
pub const DEFAULT_STATUS: &str = "stat_potential";

/// What the leads of a snapshot are read against: its custom field definitions and statuses.
#[derive(Debug, Clone, Default)]
pub struct Reader {
    lead_fields: Vec<(String, String)>,
    contact_fields: Vec<(String, String)>,
    default_status: Option<String>,
    lead_ids: HashSet<String>,
    contact_ids: HashSet<String>,
}

/// `custom_fields` as a snapshot holds it: `{"lead": [{"id", "name", …}], "contact": [...]}`.
fn names_and_ids(custom_fields: Option<&Value>, kind: &str) -> Vec<(String, String)> {
    custom_fields
        .and_then(|c| c.get(kind))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((
                f.get("name")?.as_str()?.to_string(),
                f.get("id")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

impl Reader {
    /// From the snapshot's top-level `custom_fields` and `lead_statuses` (either may be absent).
    pub fn new(custom_fields: Option<&Value>, lead_statuses: Option<&Value>) -> Reader {
        let mut lead_fields = names_and_ids(custom_fields, "lead");
        // Shared custom fields apply to both object types.
        let shared = names_and_ids(custom_fields, "shared");
        lead_fields.extend(shared.iter().cloned());
        let mut contact_fields = names_and_ids(custom_fields, "contact");
        contact_fields.extend(shared);
        let default_status = lead_statuses
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|s| s.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Reader {
            lead_fields,
            contact_fields,
            default_status,
            ..Reader::default()
        }
    }

    /// Reads a whole snapshot's leads (for small snapshots; large ones go lead by lead).
    pub fn leads(snapshot: &Value) -> Result<Vec<Value>, String> {
        if !snapshot.is_object() {
            return Err("a simulator snapshot is a JSON object".into());
        }
        let mut r = Reader::new(snapshot.get("custom_fields"), snapshot.get("lead_statuses"));
        match snapshot.get("leads") {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(leads)) => leads
                .iter()
                .enumerate()
                .map(|(i, l)| r.lead(i, l))
                .collect(),
            Some(_) => Err("`leads` must be a list".into()),
        }
    }

    /// The canonical form of `leads[index]`, its contacts nested under `contacts`.
    pub fn lead(&mut self, index: usize, lead: &Value) -> Result<Value, String> {
        let at = format!("leads[{index}]");
        let Value::Object(src) = lead else {
            return Err(format!("{at} must be an object"));
        };
        let mut l = src.clone();
        let id = take_id(&l, &at)?;
        if !self.lead_ids.insert(id.clone()) {
            return Err(format!("{at}: the lead id `{id}` appears twice"));
        }
        let contacts = l.remove("contacts");
        for k in ["name", "description"] {
            text_or_empty(&mut l, k, &at)?;
        }
        match l.get("status_id") {
            None | Some(Value::Null) => {
                let st = self.default_status.as_deref().unwrap_or(DEFAULT_STATUS);
                l.insert("status_id".into(), json!(st));
            }
            Some(Value::String(_)) => {}
            Some(_) => return Err(format!("{at}.status_id must be text")),
        }
        date_created(&mut l, &at)?;
        flatten_custom(&mut l, &self.lead_fields, &at)?;
        let mut out = Vec::new();
        match contacts {
            None | Some(Value::Null) => {}
            Some(Value::Array(cs)) => {
                for (j, c) in cs.iter().enumerate() {
                    out.push(self.contact(&format!("{at}.contacts[{j}]"), &id, c)?);
                }
            }
            Some(_) => return Err(format!("{at}.contacts must be a list")),
        }
        l.insert("contacts".into(), Value::Array(out));
        Ok(Value::Object(l))
    }

    fn contact(&mut self, at: &str, lead_id: &str, c: &Value) -> Result<Value, String> {
        let Value::Object(src) = c else {
            return Err(format!("{at} must be an object"));
        };
        let mut c = src.clone();
        let id = take_id(&c, at)?;
        if !self.contact_ids.insert(id.clone()) {
            return Err(format!("{at}: the contact id `{id}` appears twice"));
        }
        c.insert("lead_id".into(), json!(lead_id));
        for k in ["name", "title"] {
            text_or_empty(&mut c, k, at)?;
        }
        date_created(&mut c, at)?;
        for (list, key, default_type) in [
            ("emails", "email", "office"),
            ("phones", "phone", "office"),
            ("urls", "url", "url"),
        ] {
            let entries = match c.remove(list) {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(a)) => a,
                Some(_) => return Err(format!("{at}.{list} must be a list")),
            };
            let mut fixed = Vec::with_capacity(entries.len());
            for (k, e) in entries.into_iter().enumerate() {
                let mut m = match e {
                    Value::String(s) => {
                        let mut m = Map::new();
                        m.insert(key.into(), json!(s));
                        m
                    }
                    Value::Object(m) if m.get(key).is_some_and(Value::is_string) => m,
                    _ => {
                        return Err(format!(
                            "{at}.{list}[{k}] must be text or an object with `{key}` text"
                        ));
                    }
                };
                if !m.get("type").is_some_and(Value::is_string) {
                    m.insert("type".into(), json!(default_type));
                }
                fixed.push(Value::Object(m));
            }
            c.insert(list.into(), Value::Array(fixed));
        }
        flatten_custom(&mut c, &self.contact_fields, at)?;
        Ok(Value::Object(c))
    }
}

fn take_id(m: &Map<String, Value>, at: &str) -> Result<String, String> {
    match m.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(format!(
            "{at} has no `id` (every lead and contact in a snapshot needs one)"
        )),
    }
}

fn text_or_empty(m: &mut Map<String, Value>, k: &str, at: &str) -> Result<(), String> {
    match m.get(k) {
        None | Some(Value::Null) => {
            m.insert(k.into(), json!(""));
            Ok(())
        }
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("{at}.{k} must be text")),
    }
}

fn date_created(m: &mut Map<String, Value>, at: &str) -> Result<(), String> {
    match m.get("date_created") {
        None | Some(Value::Null) => {
            m.insert("date_created".into(), json!(EPOCH));
            Ok(())
        }
        Some(Value::String(_)) => Ok(()),
        Some(_) => Err(format!("{at}.date_created must be text")),
    }
}

fn flatten_custom(
    m: &mut Map<String, Value>,
    fields: &[(String, String)],
    at: &str,
) -> Result<(), String> {
    let nested = match m.remove("custom") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(n)) => n,
        Some(_) => return Err(format!("{at}.custom must be an object")),
    };
    for (k, v) in nested {
        let id = fields
            .iter()
            .find(|(name, _)| *name == k)
            .or_else(|| fields.iter().find(|(_, id)| *id == k))
            .map(|(_, id)| id.clone())
            .ok_or_else(|| {
                format!("{at}.custom: `{k}` is not the name or id of a custom field of this kind")
            })?;
        m.entry(format!("custom.{id}")).or_insert(v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_gaps_the_same_way_for_every_reader() {
        let snap = json!({
            "custom_fields": {"lead": [{"id": "cf_plan", "name": "Plan", "type": "text"}],
                              "contact": [{"id": "cf_user", "name": "User ID", "type": "text"}]},
            "lead_statuses": [{"id": "stat_a", "label": "A"}],
            "leads": [{"id": "lead_1", "custom": {"Plan": "pro"},
                       "contacts": [{"id": "cont_1", "lead_id": "lead_other", "emails": ["ada@acme.com"],
                                     "phones": [{"phone": "555"}], "custom": {"cf_user": "u_1"}}]}]
        });
        let leads = Reader::leads(&snap).unwrap();
        assert_eq!(
            leads[0],
            json!({"id": "lead_1", "name": "", "description": "", "status_id": "stat_a",
                   "date_created": EPOCH, "custom.cf_plan": "pro",
                   "contacts": [{"id": "cont_1", "lead_id": "lead_1", "name": "", "title": "",
                                 "date_created": EPOCH,
                                 "emails": [{"email": "ada@acme.com", "type": "office"}],
                                 "phones": [{"phone": "555", "type": "office"}], "urls": [],
                                 "custom.cf_user": "u_1"}]})
        );
    }

    #[test]
    fn flat_custom_keys_win_and_statuses_default() {
        let snap = json!({"custom_fields": {"lead": [{"id": "cf_x", "name": "X", "type": "number"}]},
                          "leads": [{"id": "l", "custom.cf_x": 1, "custom": {"X": 2}}]});
        let l = &Reader::leads(&snap).unwrap()[0];
        assert_eq!(l["custom.cf_x"], 1);
        assert_eq!(l["status_id"], DEFAULT_STATUS);
    }

    #[test]
    fn refuses_what_it_cannot_read_one_way() {
        for (snap, why) in [
            (json!({"leads": [{"name": "no id"}]}), "has no `id`"),
            (
                json!({"leads": [{"id": "l"}, {"id": "l"}]}),
                "appears twice",
            ),
            (
                json!({"leads": [{"id": "l", "contacts": [{"id": "c"}, {"id": "c"}]}]}),
                "appears twice",
            ),
            (
                json!({"leads": [{"id": "l", "custom": {"Nope": 1}}]}),
                "not the name or id",
            ),
            (
                json!({"leads": [{"id": "l", "contacts": [{"id": "c", "emails": [{"type": "x"}]}]}]}),
                "emails[0]",
            ),
            (
                json!({"leads": [{"id": "l", "date_created": 5}]}),
                "date_created",
            ),
            (json!({"leads": {}}), "must be a list"),
        ] {
            let e = Reader::leads(&snap).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
