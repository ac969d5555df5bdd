//! A hash map of bounded capacity that makes room by evicting its least recently used entry, as
//! a BPF LRU hash does when it is full.
//!
//! The kernel's LRU is approximate (per-CPU free lists, a reference bit rather than an order), so
//! which entry goes first under pressure is not predictable from outside: the differential test
//! keeps its tables far below capacity and evicts on both sides explicitly. The capacity here
//! bounds the model's memory the way the map's bounds the kernel's.
use std::{collections::HashMap, hash::Hash};

#[derive(Clone, Debug)]
pub struct Lru<K, V> {
    capacity: usize,
    /// Use stamp of the latest lookup or insert.
    clock: u64,
    entries: HashMap<K, (u64, V)>,
}

impl<K: Hash + Eq + Copy, V> Lru<K, V> {
    /// An empty table holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The entry of `key` without marking it used (what user space's reads do).
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    /// The entry of `key`, marked used (a lookup by the program).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let stamp = self.tick();
        self.entries.get_mut(key).map(|(used, v)| {
            *used = stamp;
            v
        })
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Inserts or replaces `key`'s entry; when that takes the table past its capacity, the least
    /// recently used other entry is evicted and returned.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        let stamp = self.tick();
        let mut evicted = None;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                evicted = self.entries.remove(&oldest).map(|(_, v)| (oldest, v));
            }
        }
        self.entries.insert(key, (stamp, value));
        evicted
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, (_, v))| (k, v))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries.retain(|k, (_, v)| keep(k, v));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        assert_eq!(lru.insert(1, 'a'), None);
        assert_eq!(lru.insert(2, 'b'), None);
        lru.get_mut(&1);
        assert_eq!(lru.insert(3, 'c'), Some((2, 'b')));
        assert_eq!(lru.peek(&1), Some(&'a'));
        // Replacing an entry evicts nothing.
        assert_eq!(lru.insert(3, 'd'), None);
        assert_eq!(lru.len(), 2);
        // A peek does not count as a use.
        lru.peek(&1);
        lru.get_mut(&3);
        assert_eq!(lru.insert(4, 'e'), Some((1, 'a')));
    }
}
