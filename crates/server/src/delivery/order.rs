//! Which waiting events may start now: the ordering rule as a pure function, so that it can be
//! stated as properties without a clock, a queue or Close.

use super::keys::Key;
use closeflow_queue::Millis;
use std::collections::HashSet;

/// What is known of whom an event is about, beyond its lookup keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Its keys' lookups are known: `keys` holds the records they matched too.
    Known,
    /// Its lookups are under way or due: it may not start, and neither may anything behind it
    /// (a later event might be about the same records under other keys).
    Unknown,
    /// It cannot be looked up ahead (no cache, or Close refused its search): it starts only as
    /// the oldest unfinished event, and holds back everything behind it until it finishes.
    Opaque,
}

/// What the rule needs to know of one fetched event, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending<'a> {
    /// Its lookup keys, and for a known event the records they matched.
    pub keys: &'a [Key],
    pub who: Who,
    pub in_flight: bool,
    /// Not to start before this time (a retry's backoff).
    pub not_before: Millis,
}

/// What may happen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Indexes of the events to start now, in order.
    pub start: Vec<usize>,
    /// When the next event waiting out a backoff is due.
    pub next: Option<Millis>,
    /// Events that cannot start whatever the workers: behind an unfinished event with a shared
    /// key or record, or backing off. The scheduler does not count them against its window, so
    /// a key that keeps failing cannot fill the window and stall every other key.
    pub held_back: usize,
    /// The events next in line, in order, that did not start now: unknown ones (whatever holds
    /// them) and the others not held back. What the read-ahead looks up.
    pub upcoming: Vec<usize>,
}

/// The indexes of the events to start now, and when the next waiting one is due.
///
/// Walking oldest first, an event starts when it is known, not in flight, not backing off, no
/// event before it that has not finished shares one of its keys or records, nothing before it
/// is unknown or opaque and unfinished, and a worker is free. Whatever has not finished — in
/// flight, backing off, or blocked itself — holds its keys and records for everything behind it,
/// so events about one person run one at a time and in queue order, even when they name the
/// person differently (one by User ID, a later one by email).
pub fn ready(pending: &[Pending<'_>], now: Millis, in_flight: usize, capacity: usize) -> Decision {
    let mut busy: HashSet<&Key> = HashSet::new();
    let mut d = Decision {
        start: Vec::new(),
        next: None,
        held_back: 0,
        upcoming: Vec::new(),
    };
    let mut running = in_flight;
    // Something unfinished before this point whose records are not known.
    let mut fenced = false;
    // Something unfinished before this point at all.
    let mut unfinished = false;
    for (i, p) in pending.iter().enumerate() {
        let blocked = p.keys.iter().any(|k| busy.contains(k));
        let waiting = p.not_before > now;
        if p.in_flight {
            fenced |= p.who != Who::Known;
        } else if blocked || waiting {
            if waiting && !blocked && !fenced {
                d.next = Some(d.next.map_or(p.not_before, |n| n.min(p.not_before)));
            }
            d.held_back += 1;
            if p.who == Who::Unknown {
                d.upcoming.push(i);
            }
            fenced |= p.who != Who::Known;
        } else if p.who == Who::Unknown {
            d.upcoming.push(i);
            fenced = true;
        } else if fenced || (p.who == Who::Opaque && unfinished) {
            if p.who == Who::Known {
                d.upcoming.push(i);
            }
            fenced = true;
        } else if running >= capacity {
            if p.who == Who::Known {
                d.upcoming.push(i);
            }
            fenced |= p.who == Who::Opaque;
        } else {
            d.start.push(i);
            running += 1;
            fenced |= p.who == Who::Opaque;
        }
        unfinished = true;
        busy.extend(p.keys);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn k(s: &str) -> Key {
        Key::Email(s.into())
    }

    #[test]
    fn a_backing_off_key_holds_back_only_its_own_later_events() {
        let (a, b) = ([k("a")], [k("b")]);
        let p = [
            Pending {
                who: Who::Known,
                keys: &a,
                in_flight: false,
                not_before: 500,
            },
            Pending {
                who: Who::Known,
                keys: &a,
                in_flight: false,
                not_before: 0,
            },
            Pending {
                who: Who::Known,
                keys: &b,
                in_flight: false,
                not_before: 0,
            },
        ];
        let d = ready(&p, 100, 0, 8);
        assert_eq!(d.start, [2], "b goes; the second a waits behind the first");
        assert_eq!(d.next, Some(500));
        assert_eq!(
            d.held_back, 2,
            "both a's are held back, whatever the workers"
        );
        let d = ready(&p, 600, 0, 8);
        assert_eq!(
            d.start,
            [0, 2],
            "once due, the first a goes; the second still waits"
        );
        assert_eq!(d.held_back, 1);
    }

    #[test]
    fn capacity_bounds_what_starts_and_keyless_events_are_free() {
        let none: [Key; 0] = [];
        let p = vec![
            Pending {
                who: Who::Known,
                keys: &none,
                in_flight: false,
                not_before: 0
            };
            5
        ];
        assert_eq!(ready(&p, 0, 3, 4).start, [0]);
        assert_eq!(
            ready(&p, 0, 3, 4).held_back,
            0,
            "waiting for a worker is not held back"
        );
        assert_eq!(ready(&p, 0, 0, 10).start, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn an_unknown_event_holds_back_everything_behind_it_and_an_opaque_one_runs_alone() {
        let (a, b, c) = ([k("a")], [k("b")], [k("c")]);
        let p = |keys, who| Pending {
            keys,
            who,
            in_flight: false,
            not_before: 0,
        };
        let d = ready(
            &[p(&a, Who::Known), p(&b, Who::Unknown), p(&c, Who::Known)],
            0,
            0,
            8,
        );
        assert_eq!(
            d.start,
            [0],
            "c may be about b's person: it waits for b's lookup"
        );
        assert_eq!(d.upcoming, [1, 2]);
        assert_eq!(d.held_back, 0, "a lookup under way is not a stall");
        let d = ready(&[p(&a, Who::Opaque), p(&b, Who::Known)], 0, 0, 8);
        assert_eq!(d.start, [0], "the opaque event goes first, alone");
        let d = ready(&[p(&a, Who::Known), p(&b, Who::Opaque)], 0, 0, 8);
        assert_eq!(d.start, [0], "an opaque event waits to be the oldest");
    }

    #[test]
    fn a_shared_record_orders_events_that_share_no_key() {
        // One person, by User ID then by email: both matched contact cont_1.
        let first = [Key::User("u1".into()), Key::Record("cont_1".into())];
        let second = [Key::Email("p@x.io".into()), Key::Record("cont_1".into())];
        let p = |keys, in_flight| Pending {
            keys,
            who: Who::Known,
            in_flight,
            not_before: 0,
        };
        assert_eq!(
            ready(&[p(&first, true), p(&second, false)], 0, 1, 8).start,
            [] as [usize; 0]
        );
        assert_eq!(
            ready(&[p(&first, false), p(&second, false)], 0, 0, 8).start,
            [0]
        );
    }

    fn arb_pending() -> impl Strategy<Value = Vec<(Vec<u8>, bool, bool, u8)>> {
        // (keys drawn from a small pool so they collide, in flight, backing off, who)
        prop::collection::vec(
            (
                prop::collection::vec(0u8..5, 0..3),
                any::<bool>(),
                prop::bool::weighted(0.2),
                prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            ),
            0..30,
        )
    }

    fn who(n: u8) -> Who {
        [Who::Known, Who::Unknown, Who::Opaque][n as usize]
    }

    proptest! {
        /// No two unfinished events sharing a key or record are ever in flight together,
        /// nothing starts while an earlier unfinished event shares one of them or is not known,
        /// and an opaque event starts only as the oldest unfinished one.
        #[test]
        fn serial_per_key_and_in_order(spec in arb_pending(), capacity in 1usize..10) {
            let keys: Vec<Vec<Key>> = spec.iter().map(|(ks, ..)| ks.iter().map(|n| k(&n.to_string())).collect()).collect();
            let pending: Vec<Pending<'_>> = spec.iter().zip(&keys).map(|((_, fl, wait, w), ks)| Pending {
                keys: ks, who: who(*w), in_flight: *fl, not_before: if *wait { 10 } else { 0 },
            }).collect();
            let in_flight = pending.iter().filter(|p| p.in_flight).count();
            let d = ready(&pending, 5, in_flight, capacity);
            let (start, next) = (&d.start, d.next);
            for &i in start {
                let p = &pending[i];
                prop_assert!(!p.in_flight && p.not_before <= 5 && p.who != Who::Unknown);
                prop_assert!(p.who == Who::Known || i == 0, "an opaque event started behind another");
                for earlier in &pending[..i] {
                    prop_assert!(!earlier.keys.iter().any(|x| p.keys.contains(x)),
                        "event {i} overtakes or runs beside an earlier event with a shared key");
                    prop_assert!(earlier.who == Who::Known, "event {i} started behind an event not known");
                }
            }
            prop_assert!(start.len() <= capacity.saturating_sub(in_flight));
            prop_assert!(start.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(d.upcoming.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(d.upcoming.iter().all(|i| !start.contains(i) && !pending[*i].in_flight));
            prop_assert!(pending.iter().enumerate().all(|(i, p)| p.in_flight || p.who != Who::Unknown || d.upcoming.contains(&i)),
                "every unknown event waiting is looked up ahead");
            prop_assert_eq!(next.is_some(), pending.iter().enumerate().any(|(i, p)| p.not_before > 5 && !p.in_flight
                && !pending[..i].iter().any(|e| e.who != Who::Known || e.keys.iter().any(|x| p.keys.contains(x)))));
        }
    }
}
