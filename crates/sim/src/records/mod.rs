//! What the simulated Close does with each call: the route table over records (create, read,
//! update, delete, custom fields, search) and Close's refusals, as data. The HTTP in front of it
//! (auth, rate limits, faults, JSON in and out) is `api`'s; how records are stored and shown is
//! `shape`'s.

mod shape;

use crate::search::{self, Obj};
use crate::store::{Org, new_id, normalise_contact};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use shape::{apply_fields, lead_view, pick};
use std::time::Instant;

/// A call's answer: the reply body, or Close's refusal.
pub(crate) type Reply = Result<Value, Refusal>;

/// A refused call: the status and the error body Close sends with it.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub body: Value,
}

fn ok(v: Value) -> Reply {
    Ok(v)
}

fn err(status: StatusCode, msg: &str) -> Reply {
    Err(Refusal {
        status,
        body: json!({"error": msg}),
    })
}

/// Close's refusal of one field of a body.
fn field_error(field: &str, msg: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        body: json!({"errors": [], "field-errors": {field: msg}}),
    }
}

fn bad_field(field: &str, msg: &str) -> Reply {
    Err(field_error(field, msg))
}

pub(crate) fn call(
    st: &mut Org,
    method: &str,
    path: &str,
    body: &Value,
    query: &Map<String, Value>,
) -> Reply {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["me"]) => {
            ok(json!({"id": "user_sim", "email": "sim@closeflow.invalid", "first_name": "Sim"}))
        }
        ("POST", ["data", "search"]) => search(st, body),
        ("GET", ["lead"]) => {
            let skip = query
                .get("_skip")
                .and_then(|v| v.as_str()?.parse().ok())
                .unwrap_or(0usize);
            let limit = query
                .get("_limit")
                .and_then(|v| v.as_str()?.parse().ok())
                .unwrap_or(100usize);
            let all: Vec<Value> = st.leads.iter().map(|l| lead_view(st, l)).collect();
            let page: Vec<Value> = all.iter().skip(skip).take(limit).cloned().collect();
            ok(
                json!({"data": page, "has_more": skip + limit < all.len(), "total_results": all.len()}),
            )
        }
        ("POST", ["lead"]) => create_lead(st, body),
        ("GET", ["lead", id]) => match st
            .leads
            .iter()
            .find(|l| l.get("id").and_then(Value::as_str) == Some(id))
        {
            Some(l) => ok(pick(
                &lead_view(st, l),
                query.get("_fields").and_then(Value::as_str),
            )),
            None => err(
                StatusCode::NOT_FOUND,
                "Empty query: Lead matching query does not exist.",
            ),
        },
        ("PUT", ["lead", id]) => update(st, "lead", id, body),
        ("DELETE", ["lead", id]) => {
            let before = st.leads.len();
            st.leads
                .retain(|l| l.get("id").and_then(Value::as_str) != Some(id));
            st.contacts
                .retain(|c| c.get("lead_id").and_then(Value::as_str) != Some(id));
            if st.leads.len() == before {
                err(StatusCode::NOT_FOUND, "Not found")
            } else {
                ok(json!({}))
            }
        }
        ("POST", ["contact"]) => create_contact(st, body),
        ("GET", ["contact", id]) => match st
            .contacts
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        {
            Some(c) => ok(Value::Object(c.clone())),
            None => err(
                StatusCode::NOT_FOUND,
                "Empty query: Contact matching query does not exist.",
            ),
        },
        ("PUT", ["contact", id]) => update(st, "contact", id, body),
        ("DELETE", ["contact", id]) => {
            let before = st.contacts.len();
            st.contacts
                .retain(|c| c.get("id").and_then(Value::as_str) != Some(id));
            if st.contacts.len() == before {
                err(StatusCode::NOT_FOUND, "Not found")
            } else {
                ok(json!({}))
            }
        }
        ("GET", ["custom_field", kind]) => {
            // Close lists custom fields by name (recorded).
            let mut data: Vec<Value> = st
                .custom_fields
                .get(*kind)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            data.sort_by_key(|f| {
                f.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            });
            ok(json!({"data": data, "has_more": false}))
        }
        ("POST", ["custom_field", kind]) => {
            let Some(name) = body.get("name").and_then(Value::as_str) else {
                return bad_field("name", "This field is required.");
            };
            let now = st.now();
            let cf = json!({"id": new_id("cf"), "name": name, "type": body.get("type").cloned().unwrap_or(json!("text")),
                            "choices": body.get("choices").cloned().unwrap_or(Value::Null), "accepts_multiple_values": false,
                            "description": null, "date_created": now, "date_updated": now, "editable_with_roles": [],
                            "is_shared": false, "organization_id": "orga_sim", "created_by": "user_sim", "updated_by": "user_sim"});
            let list = st
                .custom_fields
                .entry(kind.to_string())
                .or_insert(json!([]));
            if let Value::Array(a) = list {
                a.push(cf.clone());
            }
            ok(cf)
        }
        ("DELETE", ["custom_field", kind, id]) => {
            if let Some(Value::Array(a)) = st.custom_fields.get_mut(*kind) {
                a.retain(|c| c.get("id").and_then(Value::as_str) != Some(id));
            }
            ok(json!({}))
        }
        ("GET", ["status", "lead"]) => ok(json!({"data": st.lead_statuses, "has_more": false})),
        _ => err(StatusCode::NOT_FOUND, "Not found"),
    }
}

const LEAD_FIELDS: &[&str] = &["name", "description", "url", "status_id"];
const CONTACT_FIELDS: &[&str] = &["name", "title", "emails", "phones", "urls", "lead_id"];

fn check_contact_body(b: &Obj) -> Result<(), Refusal> {
    for (list, key) in [("emails", "email"), ("phones", "phone"), ("urls", "url")] {
        if let Some(v) = b.get(list) {
            let Some(items) = v.as_array() else {
                return Err(field_error(list, "Expected a list of items."));
            };
            if items
                .iter()
                .any(|i| !i.get(key).is_some_and(Value::is_string))
            {
                return Err(field_error(list, &format!("Each item needs a `{key}`.")));
            }
        }
    }
    Ok(())
}

/// A new lead from a create body: the API's defaults, the body's fields, creation dates.
fn new_lead(st: &mut Org, b: &Obj) -> Obj {
    let now = st.now();
    let mut lead = Obj::new();
    lead.insert("id".into(), json!(new_id("lead")));
    lead.insert("name".into(), json!(""));
    lead.insert("description".into(), json!(""));
    lead.insert("status_id".into(), st.default_status());
    let cfs = st.custom_fields.clone();
    apply_fields(&mut lead, b, LEAD_FIELDS, &cfs);
    lead.insert("date_created".into(), json!(now));
    lead.insert("date_updated".into(), json!(now));
    lead
}

/// A new contact under `lead_id` from a create body, with the server's defaults.
fn new_contact(st: &mut Org, lead_id: &str, b: &Obj) -> Obj {
    let now = st.now();
    let mut c = Obj::new();
    let cfs = st.custom_fields.clone();
    apply_fields(&mut c, b, CONTACT_FIELDS, &cfs);
    c.insert("id".into(), json!(new_id("cont")));
    c.insert("lead_id".into(), json!(lead_id));
    c.insert("date_created".into(), json!(now));
    c.insert("date_updated".into(), json!(now));
    normalise_contact(&mut c);
    c
}

fn create_lead(st: &mut Org, body: &Value) -> Reply {
    let Some(b) = body.as_object() else {
        return err(StatusCode::BAD_REQUEST, "Expected a JSON object.");
    };
    let contacts: Vec<&Obj> = match b.get("contacts") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(cs)) => {
            let Some(cs) = cs.iter().map(Value::as_object).collect::<Option<Vec<_>>>() else {
                return bad_field("contacts", "Expected a list of objects.");
            };
            cs
        }
        Some(_) => return bad_field("contacts", "Expected a list of objects."),
    };
    for cb in &contacts {
        check_contact_body(cb)?;
    }
    let lead = new_lead(st, b);
    if let Some(s) = lead.get("status_id").and_then(Value::as_str)
        && st.status_label(s).is_null()
    {
        return bad_field("status_id", "Invalid lead status.");
    }
    let id = lead
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for cb in contacts {
        let c = new_contact(st, &id, cb);
        st.contacts.push(c);
    }
    st.leads.push(lead.clone());
    ok(lead_view(st, &lead))
}

fn create_contact(st: &mut Org, body: &Value) -> Reply {
    let Some(b) = body.as_object() else {
        return err(StatusCode::BAD_REQUEST, "Expected a JSON object.");
    };
    check_contact_body(b)?;
    let lead_id = match b.get("lead_id").and_then(Value::as_str) {
        Some(l)
            if st
                .leads
                .iter()
                .any(|x| x.get("id").and_then(Value::as_str) == Some(l)) =>
        {
            l.to_string()
        }
        Some(_) => return bad_field("lead_id", "Lead matching query does not exist."),
        None => {
            // Without a lead, Close creates one named after the contact.
            let mut named = Obj::new();
            named.insert("name".into(), b.get("name").cloned().unwrap_or(json!("")));
            let lead = new_lead(st, &named);
            let id = lead
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            st.leads.push(lead);
            id
        }
    };
    let c = new_contact(st, &lead_id, b);
    st.contacts.push(c.clone());
    ok(Value::Object(c))
}

fn update(st: &mut Org, kind: &str, id: &str, body: &Value) -> Reply {
    let Some(b) = body.as_object() else {
        return err(StatusCode::BAD_REQUEST, "Expected a JSON object.");
    };
    if kind == "contact" {
        check_contact_body(b)?;
    }
    let now = st.now();
    let cfs = st.custom_fields.clone();
    if kind == "lead" {
        let Some(i) = st
            .leads
            .iter()
            .position(|l| l.get("id").and_then(Value::as_str) == Some(id))
        else {
            return err(
                StatusCode::NOT_FOUND,
                "Empty query: Lead matching query does not exist.",
            );
        };
        let mut l = st.leads[i].clone();
        apply_fields(&mut l, b, LEAD_FIELDS, &cfs);
        l.insert("date_updated".into(), json!(now));
        st.leads[i] = l.clone();
        ok(lead_view(st, &l))
    } else {
        let Some(c) = st
            .contacts
            .iter_mut()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        else {
            return err(
                StatusCode::NOT_FOUND,
                "Empty query: Contact matching query does not exist.",
            );
        };
        // Lists in the body replace the stored lists whole, as Close's PUT does.
        apply_fields(c, b, CONTACT_FIELDS, &cfs);
        c.insert("date_updated".into(), json!(now));
        normalise_contact(c);
        ok(Value::Object(c.clone()))
    }
}

/// Leaf conditions of a query (what a bound on query size counts).
fn conditions(node: &Value) -> u32 {
    match node.get("queries").and_then(Value::as_array) {
        Some(qs) => qs.iter().map(conditions).sum(),
        None => match node.get("type").and_then(Value::as_str) {
            Some("object_type") => 0,
            Some("has_related") => node.get("related_query").map_or(1, conditions).max(1),
            _ => 1,
        },
    }
}

fn search(st: &mut Org, body: &Value) -> Reply {
    let Some(query) = body.get("query") else {
        return bad_field("query", "This field is required.");
    };
    let most = st.limits.search_conditions;
    if most > 0 {
        let n = conditions(query);
        if n > most {
            return err(
                StatusCode::BAD_REQUEST,
                &format!("The query is too complex ({n} conditions; at most {most})."),
            );
        }
    }
    // A cursor continues an earlier result set.
    let page_size = body
        .get("_limit")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .clamp(1, 200) as usize;
    let (rows, offset) = if let Some(cur) = body.get("cursor").and_then(Value::as_str) {
        let (key, off) = cur.rsplit_once(':').unwrap_or((cur, "0"));
        match st.cursors.get(key) {
            Some((rows, made)) if made.elapsed().as_secs() < 30 => {
                (rows.clone(), off.parse().unwrap_or(0))
            }
            _ => return err(StatusCode::BAD_REQUEST, "Cursor expired or invalid."),
        }
    } else {
        let contacts = st.contacts.clone();
        let contacts_of = move |lead: &Obj| -> Vec<Obj> {
            contacts
                .iter()
                .filter(|c| c.get("lead_id") == lead.get("id"))
                .cloned()
                .collect()
        };
        let mut rows: Vec<(String, Obj)> = Vec::new();
        for (kind, objs) in [("lead", &st.leads), ("contact", &st.contacts)] {
            for o in objs.iter() {
                match search::matches(query, kind, o, &contacts_of) {
                    Ok(true) => rows.push((kind.to_string(), o.clone())),
                    Ok(false) => {}
                    Err(e) => return err(StatusCode::BAD_REQUEST, &e),
                }
            }
        }
        if let Some(Value::Array(sort)) = body.get("sort")
            && let Some(s) = sort.first()
        {
            let field = s
                .pointer("/field/field_name")
                .and_then(Value::as_str)
                .unwrap_or("date_created")
                .to_string();
            let desc = s.get("direction").and_then(Value::as_str) == Some("desc");
            rows.sort_by(|a, b| {
                let ka = a.1.get(&field).map(Value::to_string).unwrap_or_default();
                let kb = b.1.get(&field).map(Value::to_string).unwrap_or_default();
                if desc { kb.cmp(&ka) } else { ka.cmp(&kb) }
            });
        }
        let fields = body.get("_fields");
        let shaped: Vec<Value> = rows
            .into_iter()
            .map(|(kind, o)| {
                let wanted: Option<Vec<String>> = fields
                    .and_then(|f| f.get(&kind))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    });
                let mut out = Obj::new();
                out.insert("__object_type".into(), json!(kind));
                out.insert("id".into(), o.get("id").cloned().unwrap_or(Value::Null));
                if kind == "contact" {
                    out.insert(
                        "lead_id".into(),
                        o.get("lead_id").cloned().unwrap_or(Value::Null),
                    );
                }
                if let Some(w) = wanted {
                    for k in w {
                        if let Some(v) = o.get(&k) {
                            out.insert(k, v.clone());
                        }
                    }
                }
                Value::Object(out)
            })
            .collect();
        (shaped, 0usize)
    };
    let page: Vec<Value> = rows.iter().skip(offset).take(page_size).cloned().collect();
    let cursor = if offset + page_size < rows.len() {
        let key = new_id("cur");
        st.cursors
            .insert(key.clone(), (rows.clone(), Instant::now()));
        Value::String(format!("{key}:{}", offset + page_size))
    } else {
        Value::Null
    };
    ok(json!({"data": page, "cursor": cursor}))
}
