//! Which contacts are this event's: by User ID, else by email (never another person who shares
//! the address), oldest first. Kept apart from the planner so the matching rule reads on its own.

use super::{MAX_CONTACTS, Plan};
use crate::lookup::Keys;
use crate::model::{Contact, KeyConfig, by_age};

pub(super) struct Matcher<'a> {
    pub(super) cfg: &'a KeyConfig,
    pub(super) keys: &'a Keys,
}

impl Matcher<'_> {
    fn by_user(&self, c: &Contact) -> bool {
        match (&self.keys.user, &self.cfg.user_field) {
            (Some(u), Some(f)) => c.custom_text(f).as_deref() == Some(u.as_str()),
            _ => false,
        }
    }
    /// By email, excluding contacts that carry a different, non-empty User ID (another person
    /// sharing the address) when a User ID was given.
    fn by_email(&self, c: &Contact) -> bool {
        let Some(e) = &self.keys.email else {
            return false;
        };
        if !c.has_email(e) {
            return false;
        }
        match (&self.keys.user, &self.cfg.user_field) {
            (Some(u), Some(f)) => c.custom_text(f).is_none_or(|theirs| &theirs == u),
            _ => true,
        }
    }
    pub(super) fn matches(&self, c: &Contact) -> bool {
        self.by_user(c) || self.by_email(c)
    }
    /// Matches by User ID, else by email; oldest first, each once.
    pub(super) fn select<'c>(&self, pool: &[&'c Contact]) -> Vec<&'c Contact> {
        let mut m: Vec<&Contact> = pool.iter().copied().filter(|c| self.by_user(c)).collect();
        if m.is_empty() {
            m = pool.iter().copied().filter(|c| self.by_email(c)).collect();
        }
        by_age(&mut m, |c| (&c.date_created, &c.id));
        m.dedup_by(|a, b| a.id == b.id);
        m
    }
    pub(super) fn record(&self, out: &mut Plan, matched: &[&Contact]) {
        out.contacts_matched = matched.len();
        out.contacts_left = matched.len().saturating_sub(MAX_CONTACTS);
    }
}
