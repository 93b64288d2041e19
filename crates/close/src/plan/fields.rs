//! Field values for the steps: how one field's before/after becomes a change and a body entry,
//! custom fields (`cf_x`, `.add`, `.remove`) compared in Close's stored form, and a contact's
//! lists (emails, phones, urls). Both the update and the create steps write fields through here,
//! so a value is formed the same way whichever step sends it.

use super::Change;
use crate::model::{norm_email, norm_phone, norm_url};
use crate::payload::{CustomOp, custom_key};
use crate::stored::{self, FieldTypes};
use serde_json::{Map, Value, json};

pub(super) fn set(
    changes: &mut Vec<Change>,
    body: &mut Map<String, Value>,
    field: &str,
    before: Value,
    after: Value,
) {
    if before != after {
        body.insert(field.to_string(), after.clone());
        changes.push(Change {
            field: field.to_string(),
            before,
            after,
        });
    }
}

pub(super) fn text_or_null(s: &str) -> Value {
    Value::String(s.to_string())
}

/// The payload's custom fields against a record's: `cf_x` sets a value, `cf_x.add` /
/// `cf_x.remove` edit a multi-value field's list (sent as the whole resulting list, as lists
/// are). Values compare in Close's stored form, so a value Close stores differently but means
/// the same is unchanged.
pub(super) fn customs(
    changes: &mut Vec<Change>,
    body: &mut Map<String, Value>,
    current: &crate::model::Customs,
    given: &Map<String, Value>,
    types: &FieldTypes,
) {
    // Field id → (value after every key of the payload, whether any key changed it).
    let mut edits: Vec<(&str, Value, bool)> = Vec::new();
    for (k, v) in given {
        // Normalisation refused any other key.
        let Ok((id, op)) = custom_key(k) else {
            continue;
        };
        let t = types.get(id);
        let slot = match edits.iter().position(|(x, ..)| *x == id) {
            Some(i) => i,
            None => {
                let now = current.get(id).cloned().unwrap_or(Value::Null);
                edits.push((id, now, false));
                edits.len() - 1
            }
        };
        let (_, now, changed) = &mut edits[slot];
        match op {
            CustomOp::Set => {
                if !stored::same(t, now, v) {
                    *now = v.clone();
                    *changed = true;
                }
            }
            CustomOp::Add => {
                let mut list = stored::as_list(now);
                for x in stored::as_list(v) {
                    if !list.iter().any(|y| stored::same(t, y, &x)) {
                        list.push(x);
                        *changed = true;
                    }
                }
                if *changed {
                    *now = Value::Array(list);
                }
            }
            CustomOp::Remove => {
                let gone = stored::as_list(v);
                let list = stored::as_list(now);
                let kept: Vec<Value> = list
                    .iter()
                    .filter(|y| !gone.iter().any(|x| stored::same(t, y, x)))
                    .cloned()
                    .collect();
                if kept.len() != list.len() {
                    *now = Value::Array(kept);
                    *changed = true;
                }
            }
        }
    }
    for (id, after, changed) in edits {
        if changed {
            let before = current.get(id).cloned().unwrap_or(Value::Null);
            let field = format!("custom.{id}");
            body.insert(field.clone(), after.clone());
            changes.push(Change {
                field,
                before,
                after,
            });
        }
    }
}

/// One of a contact's lists: its field, the entry key, the type new entries get, and how
/// entries compare.
pub(super) struct ListSpec {
    field: &'static str,
    key: &'static str,
    entry_type: &'static str,
    norm: fn(&str) -> String,
}

pub(super) const EMAILS: ListSpec = ListSpec {
    field: "emails",
    key: "email",
    entry_type: "office",
    norm: norm_email,
};
pub(super) const PHONES: ListSpec = ListSpec {
    field: "phones",
    key: "phone",
    entry_type: "office",
    norm: norm_phone,
};
pub(super) const URLS: ListSpec = ListSpec {
    field: "urls",
    key: "url",
    entry_type: "url",
    norm: norm_url,
};

/// Appends `value` to a contact list when no entry compares equal (Close's `PUT` replaces the
/// whole list, so the merged list is sent).
pub(super) fn append(
    changes: &mut Vec<Change>,
    body: &mut Map<String, Value>,
    spec: &ListSpec,
    current: &[Value],
    value: &str,
) {
    let texts = crate::model::entry_texts(current, spec.key);
    if texts.iter().any(|t| (spec.norm)(t) == (spec.norm)(value)) {
        return;
    }
    let mut merged = current.to_vec();
    merged.push(json!({ spec.key: value, "type": spec.entry_type }));
    let mut after = texts.clone();
    after.push(value.to_string());
    body.insert(spec.field.to_string(), Value::Array(merged));
    changes.push(Change {
        field: spec.field.to_string(),
        before: json!(texts),
        after: json!(after),
    });
}

/// The body of a create and its field-level changes (everything is new, so `before` is null).
#[derive(Default)]
pub(super) struct Created {
    pub(super) body: Map<String, Value>,
    pub(super) changes: Vec<Change>,
}

impl Created {
    pub(super) fn put(&mut self, field: &str, sent: Value, shown: Value) {
        self.body.insert(field.to_string(), sent);
        self.changes.push(Change {
            field: field.to_string(),
            before: Value::Null,
            after: shown,
        });
    }
    pub(super) fn text(&mut self, field: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.put(field, json!(v), json!(v));
        }
    }
    pub(super) fn list(&mut self, spec: &ListSpec, v: &Option<String>) {
        if let Some(v) = v {
            let v = v.trim();
            self.put(
                spec.field,
                json!([{ spec.key: v, "type": spec.entry_type }]),
                json!([v]),
            );
        }
    }
    /// Custom fields (null ones are simply not set; `.add` sets the list of its values,
    /// `.remove` has nothing to remove), then the lookup key's field: the key wins over a custom
    /// field of the same id.
    pub(super) fn customs(&mut self, given: &Map<String, Value>, key: Option<(&String, &String)>) {
        let mut lists: Vec<(&str, Vec<Value>)> = Vec::new();
        for (k, v) in given {
            let Ok((id, op)) = custom_key(k) else {
                continue;
            };
            if key.is_some_and(|(_, field)| field == id) {
                continue;
            }
            match op {
                CustomOp::Set if !v.is_null() => {
                    self.put(&format!("custom.{id}"), v.clone(), v.clone());
                }
                CustomOp::Add => match lists.iter_mut().find(|(x, _)| *x == id) {
                    Some((_, l)) => l.extend(stored::as_list(v)),
                    None => lists.push((id, stored::as_list(v))),
                },
                _ => {}
            }
        }
        for (id, mut list) in lists {
            list.dedup();
            if !list.is_empty() {
                let v = Value::Array(list);
                self.put(&format!("custom.{id}"), v.clone(), v);
            }
        }
        if let Some((value, field)) = key {
            self.put(&format!("custom.{field}"), json!(value), json!(value));
        }
    }
}
