//! A Close organisation's lead statuses and custom fields, read from Close (read-only) or from
//! a simulator snapshot: what `closeflow validate --against` checks an instance file against
//! (the check itself is `closeflow-close-tools`' `org_check`).

use crate::client::{CloseError, Reader};
use serde_json::Value;

/// A Close organisation's lead statuses and custom fields.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    /// Where it was read from, for messages ("the simulator snapshot s.json", a URL).
    pub source: String,
    pub statuses: Vec<Status>,
    pub lead_fields: Vec<CustomField>,
    pub contact_fields: Vec<CustomField>,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub id: String,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct CustomField {
    pub id: String,
    pub name: String,
    /// `text`, `number`, `date`, `datetime`, `choices`, `user`, `contact`, `custom_object`, `hidden`.
    pub kind: String,
    pub choices: Vec<String>,
    pub multiple: bool,
}

impl CustomField {
    fn from_api(v: &Value) -> Option<CustomField> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(CustomField {
            id: text("id")?,
            name: text("name").unwrap_or_default(),
            kind: text("type").unwrap_or_else(|| "text".into()),
            choices: v
                .get("choices")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            multiple: v.get("accepts_multiple_values") == Some(&Value::Bool(true)),
        })
    }
}

fn statuses(list: &[Value]) -> Vec<Status> {
    list.iter()
        .filter_map(|s| {
            Some(Status {
                id: s.get("id")?.as_str()?.to_string(),
                label: s
                    .get("label")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            })
        })
        .collect()
}

fn fields(list: &[Value]) -> Vec<CustomField> {
    list.iter().filter_map(CustomField::from_api).collect()
}

impl Metadata {
    /// From a simulator snapshot (`custom_fields: {lead: […], contact: […]}`, `lead_statuses`).
    /// Shared custom fields (`shared`) count for both.
    pub fn from_snapshot(source: &str, snap: &Value) -> Metadata {
        let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
        let cf = snap.get("custom_fields");
        let shared = fields(&list(cf.and_then(|c| c.get("shared"))));
        let mut m = Metadata {
            source: source.to_string(),
            statuses: statuses(&list(snap.get("lead_statuses"))),
            lead_fields: fields(&list(cf.and_then(|c| c.get("lead")))),
            contact_fields: fields(&list(cf.and_then(|c| c.get("contact")))),
        };
        m.lead_fields.extend(shared.iter().cloned());
        m.contact_fields.extend(shared);
        m
    }

    /// From Close (or a running simulator), read-only.
    pub async fn fetch(reader: &Reader, source: &str) -> Result<Metadata, CloseError> {
        let shared = fields(
            &reader
                .list("custom_field/shared/")
                .await
                .unwrap_or_default(),
        );
        let mut m = Metadata {
            source: source.to_string(),
            statuses: statuses(&reader.list("status/lead/").await?),
            lead_fields: fields(&reader.list("custom_field/lead/").await?),
            contact_fields: fields(&reader.list("custom_field/contact/").await?),
        };
        m.lead_fields.extend(shared.iter().cloned());
        m.contact_fields.extend(shared);
        Ok(m)
    }
}
