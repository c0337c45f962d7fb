//! Kafka's SkimpyOffsetMap: the latest offset of each key of the dirty section, in memory the
//! cleaner is given (`log.cleaner.dedupe.buffer.size` over `log.cleaner.threads`). A key is
//! kept as a 128-bit hash, not as itself, so the map's size does not depend on key sizes:
//! 24 bytes a slot, filled to `log.cleaner.io.buffer.load.factor`. The hash is SipHash keyed
//! at random per map, so that a producer cannot choose two keys that collide (a collision
//! would make the cleaner drop the older key's latest value, as an MD5 collision would in
//! Kafka).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

#[derive(Clone, Copy)]
struct Slot {
    /// Two halves, not a u128, so that a slot is 24 bytes (a u128 aligns it to 32).
    hash: [u64; 2],
    /// -1: empty. Offsets of records are never negative.
    offset: i64,
}

const EMPTY: Slot = Slot {
    hash: [0, 0],
    offset: -1,
};
const SLOT_BYTES: usize = std::mem::size_of::<Slot>();
/// The table starts this small and doubles as it fills, up to what the memory allows, so an
/// idle cleaner holds next to nothing.
const INITIAL_SLOTS: usize = 1024;

pub struct OffsetMap {
    slots: Vec<Slot>,
    /// The most slots the memory allows.
    max_slots: usize,
    load_factor: f64,
    entries: usize,
    hashers: (RandomState, RandomState),
    /// The last offset of the last batch mapped: records after it were not looked at.
    latest_offset: i64,
}

impl OffsetMap {
    /// A map of at most `memory` bytes (at least one initial table), filled to `load_factor`.
    pub fn new(memory: usize, load_factor: f64) -> Self {
        // The largest power of two of slots that fits (probing masks with it).
        let fit = (memory / SLOT_BYTES).max(INITIAL_SLOTS);
        let max_slots = if fit.is_power_of_two() {
            fit
        } else {
            fit.next_power_of_two() / 2
        };
        OffsetMap {
            slots: vec![EMPTY; INITIAL_SLOTS.min(max_slots)],
            max_slots,
            load_factor: load_factor.clamp(0.1, 0.99),
            entries: 0,
            hashers: (RandomState::new(), RandomState::new()),
            latest_offset: -1,
        }
    }

    /// Forgets every key, keeping the memory for the next log.
    pub(crate) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = EMPTY);
        self.entries = 0;
        self.latest_offset = -1;
    }

    fn hash(&self, key: &[u8]) -> [u64; 2] {
        [self.hashers.0.hash_one(key), self.hashers.1.hash_one(key)]
    }

    /// The most keys the map takes (Kafka's `slots * loadFactor`).
    pub fn capacity(&self) -> usize {
        (self.max_slots as f64 * self.load_factor) as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    /// Whether a new key could still be added.
    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.capacity()
    }

    fn find(&self, hash: [u64; 2]) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = (hash[1] as usize) & mask;
        loop {
            let s = &self.slots[i];
            if s.offset < 0 || s.hash == hash {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).min(self.max_slots);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        for s in old.into_iter().filter(|s| s.offset >= 0) {
            let i = self.find(s.hash);
            self.slots[i] = s;
        }
    }

    /// Records `offset` as the latest of `key` (and as the latest offset mapped). The caller
    /// checks `is_full` first.
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) {
        self.latest_offset = offset;
        let hash = self.hash(key);
        if (self.entries + 1) as f64 > self.slots.len() as f64 * self.load_factor
            && self.slots.len() < self.max_slots
        {
            self.grow();
        }
        let i = self.find(hash);
        if self.slots[i].offset < 0 {
            self.entries += 1;
        }
        self.slots[i] = Slot { hash, offset };
    }

    /// The latest offset mapped for `key`, or -1.
    pub(crate) fn get(&self, key: &[u8]) -> i64 {
        self.slots[self.find(self.hash(key))].offset
    }

    pub(crate) fn latest_offset(&self) -> i64 {
        self.latest_offset
    }

    pub(crate) fn update_latest_offset(&mut self, offset: i64) {
        self.latest_offset = offset;
    }

    /// Bytes the table holds now.
    pub fn memory(&self) -> usize {
        self.slots.len() * SLOT_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_offset_of_each_key_is_kept() {
        let mut map = OffsetMap::new(1 << 20, 0.9);
        for i in 0..10_000i64 {
            map.put(format!("key-{}", i % 1000).as_bytes(), i);
        }
        assert_eq!(map.len(), 1000);
        for k in 0..1000i64 {
            assert_eq!(map.get(format!("key-{k}").as_bytes()), 9000 + k);
        }
        assert_eq!(map.get(b"absent"), -1);
        map.clear();
        assert_eq!((map.len(), map.get(b"key-1")), (0, -1));
    }

    #[test]
    fn a_slot_is_24_bytes() {
        assert_eq!(SLOT_BYTES, 24);
    }

    #[test]
    fn the_map_stays_within_its_memory() {
        let memory = 64 * 1024;
        let mut map = OffsetMap::new(memory, 0.9);
        let mut i = 0i64;
        while !map.is_full() {
            map.put(&i.to_be_bytes(), i);
            i += 1;
        }
        assert_eq!(map.len(), map.capacity());
        assert!(map.memory() <= memory, "{} > {memory}", map.memory());
        assert!(
            map.capacity() >= memory / SLOT_BYTES / 2,
            "uses at least half of its memory"
        );
        // Every key put is still found.
        for k in 0..i {
            assert_eq!(map.get(&k.to_be_bytes()), k);
        }
    }
}
