//! Record numbers by a key's hash, for the snapshot's and the overlay's lookups. Keys are not
//! stored: a lookup filters the records it reads exactly, so a hash collision costs one more
//! parse, never a wrong match. Most keys name one record, so that case is stored without a list.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

pub(crate) type Index = HashMap<u64, Slots>;

#[derive(Debug, Clone)]
pub(crate) enum Slots {
    One(u32),
    Many(Vec<u32>),
}

pub(crate) fn hash(key: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // A fixed seed: the index lives as long as the process and is never exposed.
    let mut h =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .build_hasher();
    h.write(key.as_bytes());
    h.finish()
}

/// Adds record `i` under `key`, once. `ascending`: records are added in increasing order (a
/// snapshot read front to back), so only the last one needs comparing.
pub(crate) fn add(index: &mut Index, key: &str, i: u32, ascending: bool) {
    match index.entry(hash(key)) {
        Entry::Vacant(v) => {
            v.insert(Slots::One(i));
        }
        Entry::Occupied(mut o) => match o.get_mut() {
            Slots::One(j) if *j == i => {}
            Slots::One(j) => {
                let j = *j;
                o.insert(Slots::Many(vec![j, i]));
            }
            Slots::Many(v) => {
                let known = if ascending {
                    v.last() == Some(&i)
                } else {
                    v.contains(&i)
                };
                if !known {
                    v.push(i);
                }
            }
        },
    }
}

/// Takes record `i` out from under `key`.
pub(crate) fn remove(index: &mut Index, key: &str, i: u32) {
    let h = hash(key);
    let empty = match index.get_mut(&h) {
        Some(Slots::One(j)) => *j == i,
        Some(Slots::Many(v)) => {
            v.retain(|x| *x != i);
            v.is_empty()
        }
        None => false,
    };
    if empty {
        index.remove(&h);
    }
}

/// The records under `key` (and under any key that shares its hash).
pub(crate) fn get(index: &Index, key: &str) -> Vec<u32> {
    match index.get(&hash(key)) {
        Some(Slots::One(i)) => vec![*i],
        Some(Slots::Many(v)) => v.clone(),
        None => vec![],
    }
}
