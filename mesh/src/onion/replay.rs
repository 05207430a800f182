//! The bounded replay cache of the layered packets: every hop remembers the replay tags of the
//! packets it processed (a tag is derived from the packet's shared secret) and drops a packet
//! whose tag it holds.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::crypto::TAG_LEN;

/// Bounded memory of replay tags: at most `capacity` entries, each forgotten after `ttl`.
/// When full, the oldest entry is evicted (counted in [`ReplayCache::evicted`]); size the
/// capacity for the packets one key handles within `ttl`, and rotate keys every `ttl`.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    ttl: Duration,
    seen: HashMap<[u8; TAG_LEN], Instant>,
    order: VecDeque<([u8; TAG_LEN], Instant)>,
    evicted: u64,
}

impl ReplayCache {
    /// An empty cache (`capacity` is at least 1).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ReplayCache {
            capacity: capacity.max(1),
            ttl,
            seen: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(tag, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&tag) == Some(&at) {
                self.seen.remove(&tag);
            }
        }
    }

    /// Whether `tag` was inserted less than `ttl` ago.
    pub fn contains(&mut self, tag: &[u8; TAG_LEN], now: Instant) -> bool {
        self.expire(now);
        self.seen.contains_key(tag)
    }

    /// Remembers `tag`, evicting the oldest entry when full.
    pub fn insert(&mut self, tag: [u8; TAG_LEN], now: Instant) {
        self.expire(now);
        if self.seen.contains_key(&tag) {
            return;
        }
        while self.order.len() >= self.capacity {
            if let Some((old, at)) = self.order.pop_front() {
                if self.seen.get(&old) == Some(&at) {
                    self.seen.remove(&old);
                }
                self.evicted += 1;
            }
        }
        self.seen.insert(tag, now);
        self.order.push_back((tag, now));
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most entries it will hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries in the lookup map (tests check it stays bounded too).
    #[cfg(test)]
    pub(crate) fn map_len(&self) -> usize {
        self.seen.len()
    }

    /// Entries evicted before their time because the cache was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}
