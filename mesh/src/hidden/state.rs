//! Bounded tables of the hidden-service roles, on injected time: the master's replay cache
//! and the entry's in-flight requests.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Why a table refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Seen before (replay) or in flight (duplicate).
    Seen,
    /// The table is full of live entries.
    Full,
}

/// Bodies a master has served within `window`. Full means refuse, never evict a live
/// entry: evicting would let the evicted packet be replayed.
#[derive(Debug)]
pub struct ReplayCache {
    window: Duration,
    capacity: usize,
    seen: HashMap<[u8; 32], Instant>,
    order: VecDeque<([u8; 32], Instant)>,
}

impl ReplayCache {
    /// Remembers bodies for `window`, at most `capacity` at once.
    pub fn new(window: Duration, capacity: usize) -> Self {
        ReplayCache {
            window,
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `key` at `now`, or says why not.
    pub fn insert(&mut self, key: [u8; 32], now: Instant) -> Result<(), Refused> {
        while let Some((k, at)) = self.order.front().copied() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&at) {
                self.seen.remove(&k);
            }
        }
        if self.seen.contains_key(&key) {
            return Err(Refused::Seen);
        }
        if self.seen.len() >= self.capacity {
            return Err(Refused::Full);
        }
        self.seen.insert(key, now);
        self.order.push_back((key, now));
        Ok(())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// An entry's requests in flight (`service:requestId:nonce`, GhostMesh's dedupe key), each
/// expiring after `timeout`.
#[derive(Debug)]
pub struct InFlight {
    timeout: Duration,
    capacity: usize,
    live: HashMap<String, Instant>,
}

impl InFlight {
    /// Entries expire after `timeout`; at most `capacity` at once.
    pub fn new(timeout: Duration, capacity: usize) -> Self {
        InFlight {
            timeout,
            capacity,
            live: HashMap::new(),
        }
    }

    /// Starts `key` at `now`, or says why not.
    pub fn start(&mut self, key: &str, now: Instant) -> Result<(), Refused> {
        let timeout = self.timeout;
        self.live
            .retain(|_, at| now.saturating_duration_since(*at) < timeout);
        if self.live.contains_key(key) {
            return Err(Refused::Seen);
        }
        if self.live.len() >= self.capacity {
            return Err(Refused::Full);
        }
        self.live.insert(key.to_owned(), now);
        Ok(())
    }

    /// The request finished.
    pub fn finish(&mut self, key: &str) {
        self.live.remove(key);
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_refuses_replays_and_never_evicts_live_entries() {
        let t0 = Instant::now();
        let mut c = ReplayCache::new(Duration::from_secs(60), 3);
        for i in 0..3u8 {
            assert_eq!(c.insert([i; 32], t0), Ok(()));
        }
        assert_eq!(c.insert([0; 32], t0), Err(Refused::Seen));
        // Full of live entries: a new one is refused, the old ones stay.
        assert_eq!(
            c.insert([9; 32], t0 + Duration::from_secs(30)),
            Err(Refused::Full)
        );
        assert_eq!(
            c.insert([1; 32], t0 + Duration::from_secs(30)),
            Err(Refused::Seen)
        );
        assert_eq!(c.len(), 3);
        // After the window they expire and room returns.
        assert_eq!(c.insert([9; 32], t0 + Duration::from_secs(61)), Ok(()));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn in_flight_dedupes_bounds_and_expires() {
        let t0 = Instant::now();
        let mut f = InFlight::new(Duration::from_secs(10), 2);
        assert_eq!(f.start("s:a:1", t0), Ok(()));
        assert_eq!(f.start("s:a:1", t0), Err(Refused::Seen));
        assert_eq!(f.start("s:b:1", t0), Ok(()));
        assert_eq!(f.start("s:c:1", t0), Err(Refused::Full));
        f.finish("s:a:1");
        assert_eq!(f.start("s:c:1", t0), Ok(()));
        assert_eq!(f.start("s:d:1", t0 + Duration::from_secs(11)), Ok(()));
        assert_eq!(f.len(), 1);
    }
}
