//! The properties the action's rules require of the planner, over generated Close states,
//! payloads and all 32 flag combinations.

use closeflow_close::lookup;
use closeflow_close::model::{Contact, KeyConfig, Lead, norm_email};
use closeflow_close::payload::{Flags, Payload};
use closeflow_close::plan::{Object, Plan, StepKind, plan};
use closeflow_close::state::State;
use proptest::prelude::*;
use serde_json::{Value, json};

const DATES: [&str; 4] = [
    "2024-01-01T00:00:00+00:00",
    "2024-06-01T00:00:00+00:00",
    "2025-01-01T00:00:00.5+00:00",
    "2025-01-01T00:00:00+00:00",
];

fn opt<T: Clone + std::fmt::Debug + 'static>(
    items: &'static [T],
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![Just(None), proptest::sample::select(items).prop_map(Some)]
}

fn state_strategy() -> impl Strategy<Value = State> {
    let leads = proptest::collection::vec(
        (opt(&["c1", "c2", ""]), 0..4usize, opt(&["Acme", "Beta"])),
        0..5,
    );
    let contacts = proptest::collection::vec(
        (
            0..5usize,
            0..4usize,
            proptest::collection::vec(
                proptest::sample::select(&["a@x.com", "A@X.com ", "b@x.com", "c@x.com"][..]),
                0..3,
            ),
            opt(&["u1", "u2", ""]),
            opt(&["Ada", "Bob"]),
            opt(&["+1 555 0100", "5550100"]),
        ),
        0..16,
    );
    (leads, contacts).prop_map(|(leads, contacts)| {
        let leads: Vec<Lead> = leads
            .into_iter()
            .enumerate()
            .map(|(i, (company, d, name))| {
                let mut custom = closeflow_close::model::Customs::default();
                if let Some(c) = company {
                    custom.insert("cf_company".to_string(), json!(c));
                }
                Lead {
                    id: format!("lead_{i}"),
                    name: name.unwrap_or_default().to_string(),
                    description: String::new(),
                    status_id: None,
                    date_created: DATES[d].to_string(),
                    custom,
                }
            })
            .collect();
        let contacts: Vec<Contact> = if leads.is_empty() {
            vec![]
        } else {
            contacts
                .into_iter()
                .enumerate()
                .map(|(i, (l, d, emails, user, name, phone))| {
                    let mut custom = closeflow_close::model::Customs::default();
                    if let Some(u) = user {
                        custom.insert("cf_user".to_string(), json!(u));
                    }
                    Contact {
                        id: format!("cont_{i:02}"),
                        lead_id: leads[l % leads.len()].id.clone(),
                        name: name.unwrap_or_default().to_string(),
                        title: String::new(),
                        date_created: DATES[d].to_string(),
                        emails: emails
                            .into_iter()
                            .map(|e| json!({"email": e, "type": "office"}))
                            .collect(),
                        phones: phone
                            .into_iter()
                            .map(|p| json!({"phone": p, "type": "office"}))
                            .collect(),
                        urls: vec![],
                        custom,
                    }
                })
                .collect()
        };
        State::new(leads, contacts)
    })
}

fn payload_strategy() -> impl Strategy<Value = Payload> {
    (
        opt(&["c1", "c2", "c3"]),
        opt(&["u1", "u2", "u3"]),
        opt(&["a@x.com", "b@x.com", "d@x.com", " B@X.COM"]),
        opt(&["Ada", "Grace"]),
        opt(&["+1 (555) 0100", "5550199"]),
        opt(&["Acme", "Gamma"]),
        opt(&["CTO"]),
        0u8..32,
        any::<bool>(),
    )
        .prop_map(
            |(company, user, email, name, phone, lead_name, title, bits, customs)| {
                let mut p = Payload {
                    lead_external_id: company.map(str::to_string),
                    contact_external_id: user.map(str::to_string),
                    contact_email: email.map(str::to_string),
                    contact_name: name.map(str::to_string),
                    contact_phone: phone.map(str::to_string),
                    lead_name: lead_name.map(str::to_string),
                    contact_title: title.map(str::to_string),
                    flags: Flags::from_bits(bits),
                    ..Payload::default()
                };
                if customs {
                    p.lead_custom_fields.insert("cf_plan".into(), json!("pro"));
                    p.contact_custom_fields
                        .insert("cf_role".into(), Value::Null);
                }
                p
            },
        )
}

fn cfg_strategy() -> impl Strategy<Value = KeyConfig> {
    (any::<bool>(), any::<bool>(), 0..4u8).prop_map(|(c, u, _)| KeyConfig {
        company_field: (c || u).then(|| "cf_company".to_string()),
        user_field: u.then(|| "cf_user".to_string()),
    })
}

fn plan_on(state: &State, cfg: &KeyConfig, p: &Payload) -> Plan {
    plan(cfg, p, &state.lookup(&lookup::requests(cfg, p)))
}

/// The spec's matching rule, restated for the tests: by user id, else by email without a
/// different non-empty user id.
fn matches_in<'a>(
    pool: impl Iterator<Item = &'a Contact> + Clone,
    cfg: &KeyConfig,
    p: &Payload,
) -> Vec<&'a Contact> {
    let (keys, _) = lookup::keys(cfg, p);
    let uid = |c: &Contact| c.custom_text("cf_user");
    let by_user: Vec<&Contact> = match &keys.user {
        Some(u) => pool
            .clone()
            .filter(|c| uid(c).as_deref() == Some(u.as_str()))
            .collect(),
        None => vec![],
    };
    if !by_user.is_empty() {
        return by_user;
    }
    match &keys.email {
        Some(e) => pool
            .filter(|c| {
                c.email_texts()
                    .iter()
                    .any(|x| norm_email(x) == norm_email(e))
            })
            .filter(|c| {
                keys.user.is_none() || uid(c).is_none_or(|x| Some(&x) == keys.user.as_ref())
            })
            .collect(),
        None => vec![],
    }
}

fn company_lead<'a>(state: &'a State, cfg: &KeyConfig, p: &Payload) -> Option<&'a Lead> {
    let (keys, _) = lookup::keys(cfg, p);
    let company = keys.company?;
    state
        .leads()
        .iter()
        .filter(|l| l.custom_text("cf_company").as_deref() == Some(company.as_str()))
        .min_by(|a, b| (&a.date_created, &a.id).cmp(&(&b.date_created, &b.id)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_step_without_its_flag(state in state_strategy(), cfg in cfg_strategy(), p in payload_strategy()) {
        let plan = plan_on(&state, &cfg, &p);
        let f = p.flags;
        let (keys, _) = lookup::keys(&cfg, &p);
        for s in &plan.steps {
            match s.kind {
                StepKind::CreateLead => prop_assert!(f.allow_creating_new_leads),
                StepKind::UpdateLead => prop_assert!(f.allow_updating_existing_leads),
                StepKind::CreateContact => {
                    prop_assert!(f.allow_creating_new_contacts);
                    let target = s.lead_id.clone();
                    let dup = state.contacts().iter().any(|c| Some(&c.lead_id) != target.as_ref()
                        && matches_in(std::iter::once(c), &cfg, &p).len() == 1);
                    if dup && (keys.user.is_some() || keys.email.is_some()) {
                        prop_assert!(f.allow_creating_duplicate_contacts, "duplicate created: {:?}", s);
                    }
                }
                StepKind::UpdateContact => prop_assert!(f.allow_updating_existing_contacts),
                StepKind::Skipped => prop_assert!(s.reason.is_some()),
                StepKind::Unchanged => prop_assert!(s.changes.is_empty()),
            }
        }
    }

    #[test]
    fn at_most_ten_contacts_and_the_oldest(state in state_strategy(), cfg in cfg_strategy(), p in payload_strategy()) {
        let plan = plan_on(&state, &cfg, &p);
        let touched: Vec<&str> = plan.steps.iter()
            .filter(|s| s.object == Object::Contact && s.id.is_some())
            .filter_map(|s| s.id.as_deref()).collect();
        prop_assert!(touched.len() <= 10);
        if touched.is_empty() { return Ok(()); }
        let pool: Vec<&Contact> = match company_lead(&state, &cfg, &p) {
            Some(l) => matches_in(state.contacts().iter().filter(|c| c.lead_id == l.id), &cfg, &p),
            None => matches_in(state.contacts().iter(), &cfg, &p),
        };
        let age = |id: &str| state.contacts().iter().find(|c| c.id == id).map(|c| (c.date_created.clone(), c.id.clone())).unwrap();
        let youngest_touched = touched.iter().map(|id| age(id)).max().unwrap();
        for c in &pool {
            prop_assert!(touched.contains(&c.id.as_str()) || (c.date_created.clone(), c.id.clone()) > youngest_touched,
                "{} is older than a touched contact but was left out", c.id);
        }
        prop_assert_eq!(plan.contacts_left, pool.len().saturating_sub(10));
    }

    #[test]
    fn no_lead_created_when_the_company_matches(state in state_strategy(), cfg in cfg_strategy(), p in payload_strategy()) {
        let plan = plan_on(&state, &cfg, &p);
        if company_lead(&state, &cfg, &p).is_some() {
            prop_assert!(plan.steps.iter().all(|s| s.kind != StepKind::CreateLead));
        }
    }

    #[test]
    fn lists_are_append_only(state in state_strategy(), cfg in cfg_strategy(), p in payload_strategy()) {
        let plan = plan_on(&state, &cfg, &p);
        let mut after = state.clone();
        after.apply(&plan);
        for before in state.contacts() {
            let now = after.contacts().iter().find(|c| c.id == before.id).unwrap();
            for e in before.email_texts() { prop_assert!(now.email_texts().contains(&e)); }
            for ph in before.phone_texts() { prop_assert!(now.phone_texts().contains(&ph)); }
            for u in before.url_texts() { prop_assert!(now.url_texts().contains(&u)); }
            if plan.steps.iter().any(|s| s.kind == StepKind::UpdateContact && s.id.as_deref() == Some(before.id.as_str()))
                && let Some(e) = &p.contact_email {
                    prop_assert!(now.has_email(e));
                }
        }
    }

    #[test]
    fn convergence(state in state_strategy(), cfg in cfg_strategy(), p in payload_strategy()) {
        let first = plan_on(&state, &cfg, &p);
        let mut s = state.clone();
        s.apply(&first);
        let again = plan_on(&s, &cfg, &p);
        let writes: Vec<_> = again.writes().collect();
        prop_assert!(writes.is_empty(), "second plan still writes: {:?}\nfirst: {:?}", writes, first.steps);
    }

    #[test]
    fn locality(state in state_strategy(), cfg in cfg_strategy(), p in payload_strategy()) {
        let plan = plan_on(&state, &cfg, &p);
        let (keys, _) = lookup::keys(&cfg, &p);
        // A contact's keys match when its User ID or (absent a different User ID) its email does.
        let matched: Vec<&Contact> = state.contacts().iter()
            .filter(|c| !matches_in(std::iter::once(*c), &cfg, &p).is_empty()
                || keys.user.as_ref().is_some_and(|u| c.custom_text("cf_user").as_ref() == Some(u)))
            .collect();
        for s in plan.steps.iter().filter(|s| s.is_write() && s.id.is_some()) {
            let id = s.id.as_deref().unwrap();
            match s.object {
                Object::Contact => prop_assert!(matched.iter().any(|c| c.id == id), "contact {} does not match the event", id),
                Object::Lead => {
                    let by_company = keys.company.is_some() && state.leads().iter().any(|l| l.id == id
                        && l.custom_text("cf_company") == keys.company);
                    let of_match = matched.iter().any(|c| c.lead_id == id);
                    prop_assert!(by_company || of_match, "lead {} is unrelated to the event", id);
                }
            }
        }
    }

    #[test]
    fn indexed_lookups_find_what_a_scan_finds(state in state_strategy(), cfg in cfg_strategy(), p in payload_strategy(), q in payload_strategy()) {
        // The same records, whatever order they come in.
        let sorted = |mut f: lookup::LookupResults| {
            f.contacts.sort_by(|a, b| a.id.cmp(&b.id));
            f.leads.sort_by(|a, b| a.id.cmp(&b.id));
            f.leads_by_company.sort_by(|a, b| a.id.cmp(&b.id));
            f
        };
        let mut scanned = state.clone();
        let mut indexed = state.clone();
        indexed.track_keys(&cfg);
        // Before and after a plan is applied (the index follows every change).
        for payload in [&p, &q] {
            let reqs = lookup::requests(&cfg, payload);
            prop_assert_eq!(sorted(scanned.lookup(&reqs)), sorted(indexed.lookup(&reqs)));
            let plan = plan(&cfg, payload, &scanned.lookup(&reqs));
            scanned.apply(&plan);
            indexed.apply(&plan);
        }
        for payload in [&p, &q] {
            let reqs = lookup::requests(&cfg, payload);
            prop_assert_eq!(sorted(scanned.lookup(&reqs)), sorted(indexed.lookup(&reqs)));
        }
    }

    #[test]
    fn determinism(state in state_strategy(), cfg in cfg_strategy(), p in payload_strategy()) {
        let reqs = lookup::requests(&cfg, &p);
        let found = state.lookup(&reqs);
        let a = plan(&cfg, &p, &found);
        prop_assert_eq!(&a, &plan(&cfg, &p, &found));
        let mut reversed = found.clone();
        reversed.contacts.reverse();
        reversed.leads_by_company.reverse();
        reversed.leads.reverse();
        prop_assert_eq!(&a, &plan(&cfg, &p, &reversed), "the order lookups return records in must not matter");
    }
}
