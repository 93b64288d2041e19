//! Close records as the planner sees them, read from and written in the API's own shapes
//! (flat `custom.cf_…` keys, `emails: [{email, type}]`).

use serde_json::{Map, Value};

/// Which custom fields hold the lookup keys (the instance's two optional settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyConfig {
    pub company_field: Option<String>,
    pub user_field: Option<String>,
}

/// A record's custom field values by field id: a small sorted list. Records carry a few custom
/// fields each, and an ordered map's node would cost about a kilobyte per record.
#[derive(Clone, Default, PartialEq)]
pub struct Customs(Vec<(String, Value)>);

impl Customs {
    fn at(&self, k: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(x, _)| x.as_str().cmp(k))
    }
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.at(k).ok().map(|i| &self.0[i].1)
    }
    pub fn insert(&mut self, k: String, v: Value) {
        match self.at(&k) {
            Ok(i) => self.0[i].1 = v,
            Err(i) => self.0.insert(i, (k, v)),
        }
    }
    pub fn remove(&mut self, k: &str) -> Option<Value> {
        self.at(k).ok().map(|i| self.0.remove(i).1)
    }
    pub fn contains_key(&self, k: &str) -> bool {
        self.at(k).is_ok()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Customs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Later entries win, as map inserts do.
impl FromIterator<(String, Value)> for Customs {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(items: I) -> Customs {
        let mut c = Customs::default();
        for (k, v) in items {
            c.insert(k, v);
        }
        c.0.shrink_to_fit();
        c
    }
}

impl<'a> IntoIterator for &'a Customs {
    type Item = (&'a String, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, Value)>,
        fn(&'a (String, Value)) -> (&'a String, &'a Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub id: String,
    pub name: String,
    pub description: String,
    pub status_id: Option<String>,
    pub date_created: String,
    pub custom: Customs,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: String,
    pub lead_id: String,
    pub name: String,
    pub title: String,
    pub date_created: String,
    /// The API's list entries as they are (`{email, type, …}`), so a merged list written back
    /// keeps what Close stored.
    pub emails: Vec<Value>,
    pub phones: Vec<Value>,
    pub urls: Vec<Value>,
    pub custom: Customs,
}

fn text(m: &Map<String, Value>, k: &str) -> String {
    m.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The flat `custom.cf_…` keys. Replies also carry a `custom` object keyed by field *name* (a
/// legacy form): it says nothing the flat keys do not, and names are not ids, so it is ignored.
fn customs(m: &Map<String, Value>) -> Customs {
    m.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("custom.")?.to_string(), v.clone())))
        .collect()
}

fn list(m: &Map<String, Value>, k: &str) -> Vec<Value> {
    m.get(k)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

impl Lead {
    pub fn from_api(v: &Value) -> Option<Lead> {
        let m = v.as_object()?;
        Some(Lead {
            id: m.get("id")?.as_str()?.to_string(),
            name: text(m, "name"),
            description: text(m, "description"),
            status_id: m
                .get("status_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            date_created: text(m, "date_created"),
            custom: customs(m),
        })
    }
    pub fn custom_text(&self, field: &str) -> Option<String> {
        custom_text(&self.custom, field)
    }
}

impl Contact {
    pub fn from_api(v: &Value) -> Option<Contact> {
        let m = v.as_object()?;
        Some(Contact {
            id: m.get("id")?.as_str()?.to_string(),
            lead_id: text(m, "lead_id"),
            name: text(m, "name"),
            title: text(m, "title"),
            date_created: text(m, "date_created"),
            emails: list(m, "emails"),
            phones: list(m, "phones"),
            urls: list(m, "urls"),
            custom: customs(m),
        })
    }
    pub fn custom_text(&self, field: &str) -> Option<String> {
        custom_text(&self.custom, field)
    }
    pub fn email_texts(&self) -> Vec<String> {
        entry_texts(&self.emails, "email")
    }
    pub fn phone_texts(&self) -> Vec<String> {
        entry_texts(&self.phones, "phone")
    }
    pub fn url_texts(&self) -> Vec<String> {
        entry_texts(&self.urls, "url")
    }
    pub fn has_email(&self, email: &str) -> bool {
        let want = norm_email(email);
        self.email_texts().iter().any(|e| norm_email(e) == want)
    }
    pub fn label(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        self.email_texts().into_iter().next().unwrap_or_default()
    }
}

/// A custom field's value as text (a number stored by Close compares by its text); empty is none.
pub fn custom_text_of(custom: &Customs, field: &str) -> Option<String> {
    custom_text(custom, field)
}

fn custom_text(custom: &Customs, field: &str) -> Option<String> {
    match custom.get(field)? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

pub fn entry_texts(list: &[Value], key: &str) -> Vec<String> {
    list.iter()
        .filter_map(|e| match e {
            Value::Object(m) => m.get(key).and_then(Value::as_str).map(str::to_string),
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Emails compare trimmed and case-insensitively.
pub fn norm_email(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Phones compare by their digits and a leading `+`.
pub fn norm_phone(s: &str) -> String {
    let t = s.trim();
    let mut out = String::new();
    if t.starts_with('+') {
        out.push('+');
    }
    out.extend(t.chars().filter(char::is_ascii_digit));
    out
}

/// URLs compare exactly after trimming.
pub fn norm_url(s: &str) -> String {
    s.trim().to_string()
}

/// Oldest first, comparing `date_created` as instants (`…+05:00` and `…Z` are ordered by time,
/// not text; a missing or unreadable date sorts first); the id breaks ties so that the order
/// never depends on how results arrived.
pub fn by_age<T>(items: &mut [T], key: impl Fn(&T) -> (&str, &str)) {
    items.sort_by_cached_key(|x| {
        let (date, id) = key(x);
        (crate::stored::instant(date), id.to_string())
    });
}
