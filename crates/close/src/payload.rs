//! The action's payload, normalised as the reference product's schema validation does.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flags {
    pub allow_creating_new_leads: bool,
    pub allow_updating_existing_leads: bool,
    pub allow_creating_new_contacts: bool,
    pub allow_updating_existing_contacts: bool,
    pub allow_creating_duplicate_contacts: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            allow_creating_new_leads: true,
            allow_updating_existing_leads: true,
            allow_creating_new_contacts: true,
            allow_updating_existing_contacts: true,
            allow_creating_duplicate_contacts: true,
        }
    }
}

impl Flags {
    pub const NAMES: [&'static str; 5] = [
        "allow_creating_new_leads",
        "allow_updating_existing_leads",
        "allow_creating_new_contacts",
        "allow_updating_existing_contacts",
        "allow_creating_duplicate_contacts",
    ];
    /// All 32 combinations, for tests.
    pub fn from_bits(bits: u8) -> Flags {
        Flags {
            allow_creating_new_leads: bits & 1 != 0,
            allow_updating_existing_leads: bits & 2 != 0,
            allow_creating_new_contacts: bits & 4 != 0,
            allow_updating_existing_contacts: bits & 8 != 0,
            allow_creating_duplicate_contacts: bits & 16 != 0,
        }
    }
    fn slot(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "allow_creating_new_leads" => &mut self.allow_creating_new_leads,
            "allow_updating_existing_leads" => &mut self.allow_updating_existing_leads,
            "allow_creating_new_contacts" => &mut self.allow_creating_new_contacts,
            "allow_updating_existing_contacts" => &mut self.allow_updating_existing_contacts,
            "allow_creating_duplicate_contacts" => &mut self.allow_creating_duplicate_contacts,
            _ => return None,
        })
    }
}

/// A normalised payload: `None` means "not provided".
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Payload {
    pub lead_name: Option<String>,
    pub lead_external_id: Option<String>,
    pub lead_description: Option<String>,
    pub lead_status_id: Option<String>,
    /// `null` clears the custom field, `""` sets it empty; absent keys are left alone.
    pub lead_custom_fields: Map<String, Value>,
    pub contact_name: Option<String>,
    pub contact_email: Option<String>,
    pub contact_phone: Option<String>,
    pub contact_url: Option<String>,
    pub contact_title: Option<String>,
    pub contact_external_id: Option<String>,
    pub contact_custom_fields: Map<String, Value>,
    pub flags: Flags,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PayloadError {
    pub field: String,
    pub message: String,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A top-level text field: `null`, `""` and whitespace-only text are "not provided" (a template
/// over an event without the values renders `" "`); other text is trimmed.
fn text(field: &str, label: &str, v: &Value) -> Result<Option<String>, PayloadError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.trim().to_string())),
        Value::Number(n) => Ok(Some(closeflow_mapping::js::to_js_string(&Value::Number(
            n.clone(),
        )))),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Array(items) if items.len() == 1 && !items[0].is_array() => {
            text(field, label, &items[0])
        }
        other => Err(PayloadError {
            field: field.to_string(),
            message: format!("{label} must be a string but it was {}.", kind(other)),
        }),
    }
}

/// How a `*_custom_fields` key writes its field: `cf_x` sets it, `cf_x.add` / `cf_x.remove` add
/// a value to / remove one from a multi-value field (Close's own suffixes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomOp {
    Set,
    Add,
    Remove,
}

/// Splits a custom-field key into the field id and what it does. A key with whitespace (a
/// field's name, not its id) or another dotted suffix is refused.
pub fn custom_key(k: &str) -> Result<(&str, CustomOp), String> {
    if k.chars().any(char::is_whitespace) {
        return Err("a custom field id has no spaces (is this the field's name?)".into());
    }
    let (id, op) = match k.split_once('.') {
        None => (k, CustomOp::Set),
        Some((id, "add")) => (id, CustomOp::Add),
        Some((id, "remove")) => (id, CustomOp::Remove),
        Some((_, other)) => {
            return Err(format!(
                "`.{other}` is not a custom field suffix (only `.add` and `.remove` are)"
            ));
        }
    };
    if id.is_empty() {
        return Err("the custom field id is empty".into());
    }
    Ok((id, op))
}

/// An address Close's word search can find again: one `@`, with a letter or digit on each side.
fn looks_like_email(e: &str) -> bool {
    let mut parts = e.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let wordy = |s: &str| s.chars().any(char::is_alphanumeric);
    wordy(local) && wordy(domain)
}

impl Payload {
    /// Refuses custom-field keys that set a lookup-key field (the settings' ids): those fields
    /// are owned by `lead_external_id` / `contact_external_id`, and writing them another way
    /// would move the record out of its own lookup.
    pub fn check_keys(&self, cfg: &crate::model::KeyConfig) -> Result<(), PayloadError> {
        let reserved = [&cfg.company_field, &cfg.user_field];
        for (field, map) in [
            ("lead_custom_fields", &self.lead_custom_fields),
            ("contact_custom_fields", &self.contact_custom_fields),
        ] {
            for k in map.keys() {
                let id = custom_key(k).map_or(k.as_str(), |(id, _)| id);
                if reserved.iter().any(|r| r.as_deref() == Some(id)) {
                    return Err(PayloadError {
                        field: field.to_string(),
                        message: format!(
                            "{field} may not set {id}: it holds the lookup key (set it with lead_external_id or contact_external_id)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// A text field's label (as error messages name it) and where its value goes.
    fn text_slot(&mut self, name: &str) -> Option<(&'static str, &mut Option<String>)> {
        Some(match name {
            "lead_name" => ("Lead Name", &mut self.lead_name),
            "lead_external_id" => ("Lead Company ID", &mut self.lead_external_id),
            "lead_description" => ("Lead Description", &mut self.lead_description),
            "lead_status_id" => ("Lead Status ID", &mut self.lead_status_id),
            "contact_name" => ("Contact Name", &mut self.contact_name),
            "contact_email" => ("Contact Email", &mut self.contact_email),
            "contact_phone" => ("Contact Phone", &mut self.contact_phone),
            "contact_url" => ("Contact URL", &mut self.contact_url),
            "contact_title" => ("Contact Title", &mut self.contact_title),
            "contact_external_id" => ("Contact User ID", &mut self.contact_external_id),
            _ => return None,
        })
    }

    /// Normalises a mapped payload. Unknown keys are refused (validation catches them earlier).
    pub fn normalise(map: &Map<String, Value>) -> Result<Payload, PayloadError> {
        let mut p = Payload::default();
        for (k, v) in map {
            if let Some((label, slot)) = p.text_slot(k) {
                *slot = text(k, label, v)?;
            } else if k == "lead_custom_fields" || k == "contact_custom_fields" {
                let label = if k == "lead_custom_fields" {
                    "Lead Custom Fields"
                } else {
                    "Contact Custom Fields"
                };
                let m = match v {
                    Value::Null => Map::new(),
                    Value::Object(m) => m.clone(),
                    other => {
                        return Err(PayloadError {
                            field: k.clone(),
                            message: format!(
                                "{label} must be an object but it was {}.",
                                kind(other)
                            ),
                        });
                    }
                };
                for key in m.keys() {
                    custom_key(key).map_err(|why| PayloadError {
                        field: k.clone(),
                        message: format!("{label} key \"{key}\": {why}"),
                    })?;
                }
                if k == "lead_custom_fields" {
                    p.lead_custom_fields = m;
                } else {
                    p.contact_custom_fields = m;
                }
            } else if let Some(slot) = p.flags.slot(k) {
                match v {
                    Value::Null => {}
                    Value::Bool(b) => *slot = *b,
                    Value::String(s) if s == "true" => *slot = true,
                    Value::String(s) if s == "false" => *slot = false,
                    Value::String(s) if s.is_empty() => {}
                    other => {
                        return Err(PayloadError {
                            field: k.clone(),
                            message: format!("{k} must be a boolean but it was {}.", kind(other)),
                        });
                    }
                }
            } else {
                return Err(PayloadError {
                    field: k.clone(),
                    message: format!("{k} is not a field of this action."),
                });
            }
        }
        if let Some(e) = &p.contact_email
            && !looks_like_email(e)
        {
            let shown: String = e.chars().take(80).collect();
            return Err(PayloadError {
                field: "contact_email".into(),
                message: format!(
                    "Contact Email must be an email address (one @ with text on both sides), but it was \"{shown}\"."
                ),
            });
        }
        Ok(p)
    }
}

/// The normalised payload as people read it (`explain`, journeys): fields as the planner is
/// given them ( fields not provided are left
/// out, flags shown when the mapping set them or they are off), and what normalisation changed
/// from the mapped payload, field by field.
pub fn normalised_view(raw: &Map<String, Value>, p: &Payload) -> (Map<String, Value>, Vec<Value>) {
    let mut all = match serde_json::to_value(p) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Some(Value::Object(flags)) = all.remove("flags") {
        for (f, on) in flags {
            if raw.contains_key(&f) || on == Value::Bool(false) {
                all.insert(f, on);
            }
        }
    }
    let provided = |k: &str, v: &Value| match v {
        Value::Null => false,
        Value::Object(m) if m.is_empty() => raw.contains_key(k),
        _ => true,
    };
    let mut view = Map::new();
    // The mapping's order first, then anything normalisation added.
    for k in raw
        .keys()
        .chain(all.keys().filter(|k| !raw.contains_key(*k)))
    {
        if let Some(v) = all.get(k).filter(|v| provided(k, v)) {
            view.insert(k.clone(), v.clone());
        }
    }
    let mut changes = Vec::new();
    for (k, before) in raw {
        match view.get(k) {
            None => changes.push(serde_json::json!({"field": k, "before": before})),
            Some(after) if after != before => {
                changes.push(serde_json::json!({"field": k, "before": before, "after": after}));
            }
            Some(_) => {}
        }
    }
    (view, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(v: Value) -> Result<Payload, PayloadError> {
        Payload::normalise(v.as_object().unwrap())
    }

    #[test]
    fn coerces_like_the_reference() {
        let p = norm(
            json!({"contact_phone": 5551234, "contact_name": ["Ada"], "lead_name": "",
                            "contact_title": null, "allow_creating_new_leads": "false",
                            "lead_custom_fields": {"cf_a": null, "cf_b": ""}}),
        )
        .unwrap();
        assert_eq!(p.contact_phone.as_deref(), Some("5551234"));
        assert_eq!(p.contact_name.as_deref(), Some("Ada"));
        assert_eq!(p.lead_name, None);
        assert_eq!(p.contact_title, None);
        assert!(!p.flags.allow_creating_new_leads);
        assert!(p.flags.allow_updating_existing_leads);
        assert_eq!(
            p.lead_custom_fields,
            json!({"cf_a": null, "cf_b": ""})
                .as_object()
                .unwrap()
                .clone()
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = norm(json!({"contact_name": {"first": "Ada"}})).unwrap_err();
        assert_eq!(
            e.message,
            "Contact Name must be a string but it was an object."
        );
        assert_eq!(e.field, "contact_name");
        assert!(norm(json!({"contact_email": ["a", "b"]})).is_err());
        assert!(norm(json!({"allow_creating_new_leads": "yes"})).is_err());
        assert!(norm(json!({"nope": 1})).is_err());
    }

    #[test]
    fn whitespace_text_is_not_provided_and_text_is_trimmed() {
        let p = norm(
            json!({"contact_name": " ", "contact_title": "  CTO \n", "lead_name": "\t",
                            "contact_email": "  ada@acme.com "}),
        )
        .unwrap();
        assert_eq!(p.contact_name, None);
        assert_eq!(p.lead_name, None);
        assert_eq!(p.contact_title.as_deref(), Some("CTO"));
        assert_eq!(p.contact_email.as_deref(), Some("ada@acme.com"));
        // Custom field values are not top-level text: kept as given.
        let p = norm(json!({"lead_custom_fields": {"cf_a": " "}})).unwrap();
        assert_eq!(p.lead_custom_fields["cf_a"], " ");
    }

    #[test]
    fn contact_email_must_look_like_an_address() {
        for bad in [
            "-",
            "ada",
            "@acme.com",
            "ada@",
            "a@b@c",
            "-@-",
            "ada acme.com",
        ] {
            let e = norm(json!({"contact_email": bad})).unwrap_err();
            assert_eq!(e.field, "contact_email", "{bad}");
            assert!(
                e.message
                    .starts_with("Contact Email must be an email address"),
                "{}",
                e.message
            );
        }
        for good in ["ada@acme.com", "x@y", "ADA+tag@acme.co.uk"] {
            assert!(norm(json!({"contact_email": good})).is_ok(), "{good}");
        }
        // Whitespace only is not provided, not an error.
        assert_eq!(
            norm(json!({"contact_email": "  "})).unwrap().contact_email,
            None
        );
    }

    #[test]
    fn custom_field_keys_are_ids_with_optional_add_or_remove() {
        assert_eq!(custom_key("cf_a"), Ok(("cf_a", CustomOp::Set)));
        assert_eq!(custom_key("lf_size.add"), Ok(("lf_size", CustomOp::Add)));
        assert_eq!(custom_key("cf_a.remove"), Ok(("cf_a", CustomOp::Remove)));
        for bad in [
            "cf_a.set",
            "Company Size",
            "cf_a .add",
            ".add",
            "cf_a.add.remove",
        ] {
            assert!(custom_key(bad).is_err(), "{bad}");
        }
        let e = norm(json!({"contact_custom_fields": {"Plan Name": "x"}})).unwrap_err();
        assert_eq!(e.field, "contact_custom_fields");
        assert!(e.message.contains("Plan Name"), "{}", e.message);
    }

    #[test]
    fn lookup_key_fields_may_not_be_set_through_custom_fields() {
        let cfg = crate::model::KeyConfig {
            company_field: Some("cf_company".into()),
            user_field: Some("cf_user".into()),
        };
        for (field, key) in [
            ("lead_custom_fields", "cf_company"),
            ("contact_custom_fields", "cf_user"),
            ("contact_custom_fields", "cf_user.add"),
        ] {
            let p = norm(json!({ field: { key: "x" } })).unwrap();
            let e = p.check_keys(&cfg).unwrap_err();
            assert_eq!(e.field, field);
        }
        let p = norm(json!({"lead_custom_fields": {"cf_plan": "x"}})).unwrap();
        assert!(p.check_keys(&cfg).is_ok());
    }
}
