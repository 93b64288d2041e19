//! Which waiting events may start now: the per-key ordering rule as a pure function, so that it
//! can be stated as properties without a clock, a queue or Close.

use super::keys::Key;
use closeflow_queue::Millis;
use std::collections::HashSet;

/// What the rule needs to know of one fetched event, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending<'a> {
    pub keys: &'a [Key],
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
    /// key, or backing off. The scheduler does not count them against its window, so a key
    /// that keeps failing cannot fill the window and stall every other key.
    pub held_back: usize,
}

/// The indexes of the events to start now, and when the next waiting one is due.
///
/// Walking oldest first, an event starts when it is not in flight, not backing off, no event
/// before it that has not finished shares one of its keys, and a worker is free. Whatever has not
/// finished — in flight, backing off, or blocked itself — holds its keys for everything behind it,
/// so events sharing a key run one at a time and in queue order.
pub fn ready(pending: &[Pending<'_>], now: Millis, in_flight: usize, capacity: usize) -> Decision {
    let mut busy: HashSet<&Key> = HashSet::new();
    let mut d = Decision {
        start: Vec::new(),
        next: None,
        held_back: 0,
    };
    let mut running = in_flight;
    for (i, p) in pending.iter().enumerate() {
        let blocked = p.keys.iter().any(|k| busy.contains(k));
        let waiting = p.not_before > now;
        if waiting && !p.in_flight && !blocked {
            d.next = Some(d.next.map_or(p.not_before, |n| n.min(p.not_before)));
        }
        if !p.in_flight && (blocked || waiting) {
            d.held_back += 1;
        } else if !(p.in_flight || running >= capacity) {
            d.start.push(i);
            running += 1;
        }
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
                keys: &a,
                in_flight: false,
                not_before: 500,
            },
            Pending {
                keys: &a,
                in_flight: false,
                not_before: 0,
            },
            Pending {
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

    fn arb_pending() -> impl Strategy<Value = Vec<(Vec<u8>, bool, bool)>> {
        // (keys drawn from a small pool so they collide, in flight, backing off)
        prop::collection::vec(
            (
                prop::collection::vec(0u8..5, 0..3),
                any::<bool>(),
                prop::bool::weighted(0.2),
            ),
            0..30,
        )
    }

    proptest! {
        /// No two unfinished events sharing a key are ever in flight together, and nothing
        /// starts while an earlier unfinished event shares one of its keys.
        #[test]
        fn serial_per_key_and_in_order(spec in arb_pending(), capacity in 1usize..10) {
            let keys: Vec<Vec<Key>> = spec.iter().map(|(ks, _, _)| ks.iter().map(|n| k(&n.to_string())).collect()).collect();
            let pending: Vec<Pending<'_>> = spec.iter().zip(&keys).map(|((_, fl, wait), ks)| Pending {
                keys: ks, in_flight: *fl, not_before: if *wait { 10 } else { 0 },
            }).collect();
            let in_flight = pending.iter().filter(|p| p.in_flight).count();
            let d = ready(&pending, 5, in_flight, capacity);
            let (start, next) = (d.start, d.next);
            for &i in &start {
                let p = &pending[i];
                prop_assert!(!p.in_flight && p.not_before <= 5);
                for earlier in &pending[..i] {
                    prop_assert!(!earlier.keys.iter().any(|x| p.keys.contains(x)),
                        "event {i} overtakes or runs beside an earlier event with a shared key");
                }
            }
            prop_assert!(start.len() <= capacity.saturating_sub(in_flight));
            prop_assert!(start.windows(2).all(|w| w[0] < w[1]));
            prop_assert_eq!(next.is_some(), pending.iter().enumerate().any(|(i, p)| p.not_before > 5 && !p.in_flight
                && !pending[..i].iter().any(|e| e.keys.iter().any(|x| p.keys.contains(x)))));
        }
    }
}
