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

fn text(field: &str, label: &str, v: &Value) -> Result<Option<String>, PayloadError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
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

impl Payload {
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
        Ok(p)
    }
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
}
