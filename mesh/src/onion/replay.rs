//! The bounded replay cache of the layered packets: every hop remembers the replay tags of the
//! packets it processed (a tag is derived from the packet's shared secret) and drops a packet
//! whose tag it holds.
//!
//! When the cache is full it refuses new tags instead of evicting old ones: evicting would let
//! a flood of fresh packets push a recorded packet's tag out, after which a replay of it passes.
//! Refusing means [`crate::onion::sphinx::process`] drops new packets
//! ([`SphinxError::ReplayCacheFull`](crate::onion::sphinx::SphinxError::ReplayCacheFull))
//! until entries expire or, in the mesh, until the onion key rotates
//! ([`crate::onion::keyring`]): one cache belongs to one key, and is forgotten with it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::crypto::TAG_LEN;

/// Bounded memory of replay tags: at most `capacity` entries, each forgotten after `ttl`.
/// Full, it refuses new entries ([`ReplayCache::insert`] returns `false`, counted in
/// [`ReplayCache::refused`]); nothing is forgotten before its time.
#[derive(Debug)]
pub struct ReplayCache {
    capacity: usize,
    ttl: Duration,
    seen: HashMap<[u8; TAG_LEN], Instant>,
    order: VecDeque<([u8; TAG_LEN], Instant)>,
    refused: u64,
}

impl ReplayCache {
    /// An empty cache (`capacity` is at least 1). `ttl = Duration::MAX`: entries never expire
    /// (the cache lives as long as the key it serves).
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        ReplayCache {
            capacity: capacity.max(1),
            ttl,
            seen: HashMap::new(),
            order: VecDeque::new(),
            refused: 0,
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

    /// Whether a new tag would be refused now.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.expire(now);
        self.order.len() >= self.capacity
    }

    /// Remembers `tag`; `false` (and nothing changes) when the cache is full.
    pub fn insert(&mut self, tag: [u8; TAG_LEN], now: Instant) -> bool {
        self.expire(now);
        if self.seen.contains_key(&tag) {
            return true;
        }
        if self.order.len() >= self.capacity {
            self.refused += 1;
            return false;
        }
        self.seen.insert(tag, now);
        self.order.push_back((tag, now));
        true
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

    /// Tags refused because the cache was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}
