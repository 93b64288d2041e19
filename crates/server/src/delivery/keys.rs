//! The lookup keys of a queued event: what delivery serialises on.
//!
//! Two events that share any key (Company ID, User ID or email, after the mapping ran) are
//! never in flight together, so two events for one new person cannot both decide to create it.

use closeflow_close::model::norm_email;
use closeflow_close::payload::Payload;
use closeflow_close::{lookup, run};
use closeflow_mapping::Instance;
use closeflow_mapping::events::Entry;
use serde_json::Value;

/// A lookup key, namespaced by kind so that a User ID never collides with a Company ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Company(String),
    User(String),
    /// Normalised by [`norm_email`], as the planner compares emails.
    Email(String),
    /// A Close record (lead or contact) an event's lookups matched: orders two events about
    /// one person that name it by different keys. Never a lock name (see [`Key::lock_name`]).
    Record(String),
}

impl Key {
    /// The key as text, kind first (`company:…`, `user:…`, `email:…`): what locks and
    /// partitions are named by.
    pub fn lock_name(&self) -> String {
        match self {
            Key::Company(v) => format!("company:{v}"),
            Key::User(v) => format!("user:{v}"),
            Key::Email(v) => format!("email:{v}"),
            Key::Record(v) => format!("record:{v}"),
        }
    }
}

/// The keys of every payload the event's matching mappings produce (empty when none match
/// or a payload is invalid: such an event is settled without a lookup), and the payloads.
pub fn of(inst: &Instance, event: &Value) -> (Vec<Key>, Vec<Payload>) {
    let cfg = run::key_config(inst);
    let (_, payloads) = run::prepare(inst, 0, &Entry::Event(event.clone()));
    let payloads: Vec<Payload> = payloads.into_iter().map(|(_, p)| p).collect();
    let mut out = Vec::new();
    for p in &payloads {
        let (k, _) = lookup::keys(&cfg, p);
        out.extend(k.company.map(Key::Company));
        out.extend(k.user.map(Key::User));
        out.extend(k.email.map(|e| Key::Email(norm_email(&e))));
    }
    out.sort();
    out.dedup();
    (out, payloads)
}

/// The key an event's cluster partition is chosen by: the person it is about (its User ID, else
/// its email), the company only when it names no person. By the company first, an identify with
/// a company and one without (a browser before the company trait exists) would go to two
/// partitions, two nodes could apply them out of order, and the action's own rules would then
/// create the person twice. Locks still order what people share (a company's lead).
pub fn partition(keys: &[Key]) -> Option<&Key> {
    let person = |k: &&Key| matches!(k, Key::User(_));
    keys.iter()
        .find(person)
        .or_else(|| keys.iter().find(|k| matches!(k, Key::Email(_))))
        .or_else(|| keys.iter().find(|k| matches!(k, Key::Company(_))))
}

#[cfg(test)]
mod tests {
    use super::{Key, partition};

    #[test]
    fn a_person_is_partitioned_by_user_id_else_email_never_by_company() {
        let c = Key::Company("acme".into());
        let u = Key::User("u1".into());
        let e = Key::Email("a@x.io".into());
        assert_eq!(partition(&[c.clone(), u.clone(), e.clone()]), Some(&u));
        assert_eq!(partition(std::slice::from_ref(&u)), Some(&u));
        assert_eq!(partition(&[c.clone(), e.clone()]), Some(&e));
        assert_eq!(partition(std::slice::from_ref(&c)), Some(&c));
        assert_eq!(partition(&[Key::Record("lead_1".into())]), None);
        assert_eq!(partition(&[]), None);
    }
}
