//! The organisation the delivery benchmark starts from and the event mixes it sends: people
//! as the snapshot and an unchanged identify say them alike, so a repeated identify is truly
//! unchanged and a change truly changes one field.

use serde_json::{Value, json};

/// Leads in the organisation; it holds `LEADS * 3 / 2` contacts.
pub const LEADS: usize = 1_000;

/// The instance every run uses (`send`, `serve`, `dry-run` alike): identify → contact and lead.
pub const INSTANCE: &str = r#"name: bench
endpoint: URL
write_key: wk_bench
settings:
  api_key: key_1
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: Identify → contact and lead
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
"#;

/// The instance file's text for a Close at `url`.
pub fn instance(url: &str) -> String {
    instance_with_keys(url, 1)
}

/// The instance over the first `keys` API keys of the organisation (`key_1`, `key_2`, …).
pub fn instance_with_keys(url: &str, keys: usize) -> String {
    let list: Vec<String> = (1..=keys.max(1)).map(|k| format!("key_{k}")).collect();
    INSTANCE
        .replace("URL", url)
        .replace("api_key: key_1", &format!("api_key: [{}]", list.join(", ")))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One person: who they are, as the snapshot and an unchanged identify say it alike.
#[derive(Clone)]
struct Person {
    user: String,
    email: String,
    name: String,
    title: String,
    company: usize,
}

fn company_id(c: usize) -> String {
    format!("c_{c:04}")
}

fn identify(p: &Person, message_id: &str) -> Value {
    json!({"type": "identify", "messageId": message_id, "userId": p.user,
           "traits": {"email": p.email, "name": p.name, "title": p.title,
                      "company": {"id": company_id(p.company), "name": format!("Company {}", p.company)}}})
}

/// Events that match no mapping (a `track`; the instance maps identifies only): they cost no
/// Close call, and `send` records them in its resume file like any other.
pub fn padding(tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"type": "track", "event": "bench padding", "userId": "pad", "messageId": format!("pad_{tag}_{i}")}))
        .collect()
}

/// The people of one run, as its events have left them, and the stream's randomness: mixes
/// drawn one after another continue the same story (who was seen, what changed).
pub struct World {
    base: Vec<Person>,
    people: Vec<Person>,
    /// People an event of this stream was about (a repeated identify picks among them).
    seen: Vec<usize>,
    /// People of the organisation no event of this stream touched yet.
    untouched: Vec<usize>,
    rng: Rng,
    n: usize,
}

impl World {
    /// The organisation's 1,500 people over 1,000 leads; `seed` picks titles and every draw.
    pub fn new(seed: u64) -> World {
        let mut rng = Rng(seed.max(1) ^ 0x9e37_79b9);
        let base: Vec<Person> = (0..LEADS * 3 / 2)
            .map(|i| Person {
                user: format!("u_{i:05}"),
                email: format!("person{i}@company{}.com", i % LEADS),
                name: format!("Person {i}"),
                title: ["Engineer", "CTO", "Sales", "Founder"][rng.below(4)].to_string(),
                company: i % LEADS,
            })
            .collect();
        let mut untouched: Vec<usize> = (0..base.len()).collect();
        for i in (1..untouched.len()).rev() {
            let j = rng.below(i + 1);
            untouched.swap(i, j);
        }
        World {
            people: base.clone(),
            base,
            seen: Vec::new(),
            untouched,
            rng: Rng(seed.max(1)),
            n: 0,
        }
    }

    /// The organisation in the simulator's snapshot format, before any event, with `keys`.
    pub fn org(&self, keys: &[&str]) -> Value {
        let leads: Vec<Value> = (0..LEADS)
            .map(|c| {
                let contacts: Vec<Value> = self.base
                    .iter()
                    .filter(|p| p.company == c)
                    .map(|p| {
                        json!({"id": format!("cont_{}", p.user), "lead_id": format!("lead_{c:04}"), "name": p.name, "title": p.title,
                               "date_created": "2026-01-01T00:00:00+00:00",
                               "emails": [{"email": p.email, "type": "office"}], "custom.cf_user": p.user})
                    })
                    .collect();
                json!({"id": format!("lead_{c:04}"), "name": format!("Company {c}"), "status_id": "stat_potential",
                       "date_created": "2026-01-01T00:00:00+00:00", "custom.cf_company": company_id(c), "contacts": contacts})
            })
            .collect();
        json!({"api_keys": keys,
               "custom_fields": {"lead": [{"id": "cf_company", "name": "Company ID", "type": "text"}],
                                 "contact": [{"id": "cf_user", "name": "User ID", "type": "text"}]},
               "lead_statuses": [{"id": "stat_potential", "label": "Potential"}],
               "leads": leads})
    }

    fn message_id(&mut self) -> String {
        self.n += 1;
        format!("m{}", self.n)
    }

    fn emit(&mut self, k: usize) -> Value {
        let id = self.message_id();
        self.seen.push(k);
        identify(&self.people[k], &id)
    }

    /// An identify that changes person `k`'s title.
    fn change(&mut self, k: usize) -> Value {
        self.people[k].title = format!("Title {}", self.n + 1);
        self.emit(k)
    }

    /// An identify of someone new, at a company of the organisation (10 in 11) or a new one.
    fn newcomer(&mut self) -> Value {
        let i = self.n + 1;
        let company = self.rng.below(LEADS + LEADS / 10);
        self.people.push(Person {
            user: format!("new_{i}"),
            email: format!("new{i}@example.com"),
            name: format!("New Person {i}"),
            title: "Newcomer".into(),
            company,
        });
        self.emit(self.people.len() - 1)
    }

    /// An identify of someone seen earlier in the stream, as they are now: nothing changes.
    fn repeat(&mut self) -> Value {
        let k = self.seen[self.rng.below(self.seen.len())];
        let id = self.message_id();
        identify(&self.people[k], &id)
    }

    /// The standard mix: 70% repeated unchanged identifies (of people seen earlier in the
    /// stream), 20% identifies of a random person of the organisation with a new title, 10%
    /// new people.
    pub fn standard(&mut self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|_| {
                let roll = self.rng.below(100);
                if roll < 70 && !self.seen.is_empty() {
                    self.repeat()
                } else if roll < 90 {
                    let k = self.rng.below(self.base.len());
                    self.change(k)
                } else {
                    self.newcomer()
                }
            })
            .collect()
    }

    /// Half new people: each event at random either an identify of a person of the
    /// organisation not touched before in the stream, with a new title, or a new person.
    pub fn half_new(&mut self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|_| match self.untouched.pop() {
                Some(k) if self.rng.below(2) == 0 => self.change(k),
                Some(k) => {
                    self.untouched.push(k);
                    self.newcomer()
                }
                None => self.newcomer(),
            })
            .collect()
    }

    /// A backfill: `n` new people.
    pub fn backfill(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.newcomer()).collect()
    }

    /// `n` repeated unchanged identifies of people seen earlier in the stream.
    pub fn repeated(&mut self, n: usize) -> Vec<Value> {
        (0..n).map(|_| self.repeat()).collect()
    }
}

/// Which events of `events` are repeated unchanged identifies (the same user with the same
/// traits as the last identify of that user before it).
pub fn unchanged_repeats(events: &[Value]) -> usize {
    let mut last: std::collections::HashMap<&str, &Value> = Default::default();
    let mut n = 0;
    for e in events {
        let Some(user) = e["userId"].as_str() else {
            continue;
        };
        if last.get(user).is_some_and(|t| **t == e["traits"]) {
            n += 1;
        }
        last.insert(user, &e["traits"]);
    }
    n
}
