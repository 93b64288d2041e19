//! A seeded workload: new people, repeats and updates across several companies, group calls
//! that change a company's plan, sign-ups, events no mapping wants, and a few poison events
//! that can never succeed. Each event says what it should do, so the expected end state can
//! be computed from the events alone.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// The write key the soak's instance takes events under.
pub const WRITE_KEY: &str = "wk_soak";

/// What an event should do to Close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The person's contact exists under their company's lead with this title.
    Identify { person: usize, title: String },
    /// The person's title becomes "Signed up".
    SignUp { person: usize },
    /// The company's lead has this plan.
    Group { company: usize, plan: String },
    /// No mapping matches: skipped.
    Noise,
    /// The mapped payload is invalid (a title that is an object): dead-lettered at once.
    Poison,
}

#[derive(Debug, Clone)]
pub struct Event {
    /// Events of one lane are sent in order, each after the previous one was acknowledged.
    pub lane: usize,
    pub message_id: String,
    pub body: Value,
    pub effect: Effect,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub user: String,
    pub email: String,
    pub company: usize,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub events: Vec<Event>,
    pub people: Vec<Person>,
    pub companies: usize,
    /// Event indices per lane, in sending order.
    pub lanes: Vec<Vec<usize>>,
}

pub fn company_id(c: usize) -> String {
    format!("c{c}")
}

pub fn company_name(c: usize) -> String {
    format!("Company {c}")
}

const TITLES: &[&str] = &["Engineer", "CTO", "Founder", "Buyer", "Analyst", "VP Sales"];
const PLANS: &[&str] = &["free", "pro", "team", "enterprise"];

fn identify(p: &Person, title: &Value, mid: &str) -> Value {
    json!({"type": "identify", "userId": p.user, "messageId": mid,
           "traits": {"email": p.email, "name": format!("Person {}", p.user), "title": title,
                      "company": {"id": company_id(p.company), "name": company_name(p.company)}}})
}

/// `n` events from `seed`: the same seed gives the same events.
pub fn generate(n: usize, seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let companies = (n / 40).clamp(4, 12);
    let people_max = (n / 5).max(10);
    // Lanes: one per person, one per company (its group calls), one for noise and poison.
    let noise_lane = people_max + companies;
    let mut w = Workload {
        events: Vec::with_capacity(n),
        people: Vec::new(),
        companies,
        lanes: vec![Vec::new(); noise_lane + 1],
    };
    let mut titles: Vec<String> = Vec::new();
    let mut poison = 0usize;
    while w.events.len() < n {
        let i = w.events.len();
        let mid = format!("soak-{seed}-{i}");
        let roll = rng.random_range(0..100);
        let (lane, body, effect) = if roll < 55 || w.people.is_empty() {
            let fresh =
                w.people.len() < people_max && (w.people.is_empty() || rng.random_bool(0.35));
            let person = if fresh {
                let k = w.people.len();
                w.people.push(Person {
                    user: format!("u{k}"),
                    email: format!("person{k}@{}.example", company_id(k % companies)),
                    company: rng.random_range(0..companies),
                });
                titles.push(String::new());
                k
            } else {
                rng.random_range(0..w.people.len())
            };
            // A repeat of the last title (unchanged) or a new one (an update).
            let title = if !titles[person].is_empty() && rng.random_bool(0.3) {
                titles[person].clone()
            } else {
                TITLES[rng.random_range(0..TITLES.len())].to_string()
            };
            titles[person].clone_from(&title);
            let body = identify(&w.people[person], &json!(title), &mid);
            (person, body, Effect::Identify { person, title })
        } else if roll < 67 {
            let person = rng.random_range(0..w.people.len());
            titles[person] = "Signed up".into();
            let body = json!({"type": "track", "event": "Signed Up", "userId": w.people[person].user,
                              "messageId": mid, "properties": {"source": "soak"}});
            (person, body, Effect::SignUp { person })
        } else if roll < 79 {
            let company = rng.random_range(0..companies);
            let plan = PLANS[rng.random_range(0..PLANS.len())].to_string();
            let body = json!({"type": "group", "userId": "u-admin", "groupId": company_id(company),
                              "messageId": mid,
                              "traits": {"name": company_name(company), "plan": plan}});
            (people_max + company, body, Effect::Group { company, plan })
        } else if roll < 98 || poison * 100 >= n {
            let body = json!({"type": "track", "event": "Page Viewed", "userId": format!("u{}", rng.random_range(0..people_max)),
                              "messageId": mid, "properties": {"path": format!("/p/{i}")}});
            (noise_lane, body, Effect::Noise)
        } else {
            poison += 1;
            let p = Person {
                user: format!("poison{poison}"),
                email: format!("poison{poison}@poison.example"),
                company: 0,
            };
            let body = identify(&p, &json!({"not": "a title"}), &mid);
            (noise_lane, body, Effect::Poison)
        };
        w.lanes[lane].push(i);
        w.events.push(Event {
            lane,
            message_id: mid,
            body,
            effect,
        });
    }
    w.lanes.retain(|l| !l.is_empty());
    w
}

/// The soak's instance: identify → contact and lead (title from the traits), group → the
/// company's lead and plan, track "Signed Up" → the contact's title.
pub fn instance_yaml(sim_api: &str) -> String {
    instance("soak", sim_api, &[WRITE_KEY], "test_key", "$.traits.title")
}

/// An instance over `sim`: identify → contact and lead (the action's defaults, title from
/// the traits), group → the account's lead, track "Signed Up" → the contact's title.
pub fn instance(
    name: &str,
    sim_api: &str,
    write_keys: &[&str],
    api_key: &str,
    title: &str,
) -> String {
    format!(
        r#"name: {name}
endpoint: {sim_api}
write_key: [{keys}]
settings:
  api_key: {api_key}
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: People
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
    fields:
      contact_title: {title}
  - name: Accounts
    trigger: type = "group"
    action: create_or_update_contact_and_lead
    fields:
      lead_external_id: $.groupId
      lead_name: $.traits.name
      lead_custom_fields:
        cf_plan: $.traits.plan
      contact_name: null
      contact_email: null
      contact_phone: null
      contact_url: null
      contact_title: null
      contact_external_id: null
  - name: Sign-ups
    trigger: type = "track" and event = "Signed Up"
    action: create_or_update_contact_and_lead
    fields:
      contact_title: Signed up
"#,
        keys = write_keys.join(", ")
    )
}

/// The `n`th request of a well-behaved client: a small identify under [`WRITE_KEY`], its status
/// (0 when no answer came within 30 s) and how long it took. The hostile tests and the flood
/// measure the server by it.
pub async fn good_request(
    http: &reqwest::Client,
    base: &str,
    n: usize,
) -> (u16, std::time::Duration) {
    let ev = json!({"type": "identify", "userId": format!("good{n}"), "messageId": format!("good-{n}"),
                    "traits": {"email": format!("good{n}@x.example")}});
    let t = std::time::Instant::now();
    let st = http
        .post(format!("{base}/v1/identify"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&ev)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (st, t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_events_and_every_kind_appears() {
        let a = generate(600, 7);
        let b = generate(600, 7);
        assert_eq!(a.events.len(), 600);
        assert!(
            a.events
                .iter()
                .zip(&b.events)
                .all(|(x, y)| x.body == y.body && x.lane == y.lane)
        );
        assert_ne!(generate(600, 8).events[5].body, a.events[5].body);
        let has = |f: fn(&Effect) -> bool| a.events.iter().any(|e| f(&e.effect));
        assert!(has(|e| matches!(e, Effect::Identify { .. })));
        assert!(has(|e| matches!(e, Effect::SignUp { .. })));
        assert!(has(|e| matches!(e, Effect::Group { .. })));
        assert!(has(|e| matches!(e, Effect::Noise)));
        assert!(has(|e| matches!(e, Effect::Poison)));
        // A person's events all travel in the person's lane.
        for e in &a.events {
            if let Effect::Identify { person, .. } | Effect::SignUp { person } = e.effect {
                assert_eq!(e.lane, person);
            }
        }
    }
}
