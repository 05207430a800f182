//! Onion key epochs, sans-IO: a peer's current X25519 onion key, the previous one during a
//! grace period, and one replay cache per key.
//!
//! Why rotate: a replay cache is bounded, so it cannot remember every packet a key ever
//! processed. Tags are per key, so a cache only needs to cover one key's lifetime: once a key
//! is retired, any packet made for it (a replay included) fails the MAC. Rotation also gives
//! forward secrecy to packets recorded on the wire once the old secret is gone.
//!
//! - The schedule starts at the first `now` the ring sees (the caller's clock, never read
//!   here); the key rotates every [`KeyRingConfig::rotation`], and sooner (but no sooner than
//!   [`MIN_EPOCH`] after the last rotation) when the current key's replay cache fills up.
//! - After a rotation the previous key still opens packets for [`KeyRingConfig::grace`]
//!   (senders that have not yet seen the new key, replies through reply blocks made with it),
//!   then it and its cache are dropped. A key thus lives at most `rotation + grace`.
//! - New keys come from an RNG seeded once from the caller's RNG: a seeded mesh makes the same
//!   keys.
//!
//! ```
//! use ghostmesh::onion::keyring::{KeyRing, KeyRingConfig};
//! use rand::SeedableRng;
//! use std::time::{Duration, Instant};
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(1);
//! let cfg = KeyRingConfig { rotation: Duration::from_secs(600), ..KeyRingConfig::default() };
//! let mut ring = KeyRing::new(&mut rng, cfg);
//! let (t0, first) = (Instant::now(), ring.public());
//! assert!(!ring.tick(t0)); // starts the schedule
//! assert_eq!(ring.poll_timeout(), Some(t0 + Duration::from_secs(600)));
//! assert!(ring.tick(t0 + Duration::from_secs(600))); // rotated: announce ring.public()
//! assert_ne!(ring.public(), first);
//! assert_eq!(ring.previous_public(), Some(first));
//! ```

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::crypto::KEY_LEN;
use super::replay::ReplayCache;
use super::sphinx::{self, NodeKeys, Processed, SphinxError, SphinxParams};

/// The shortest time between two rotations caused by a full replay cache.
pub const MIN_EPOCH: Duration = Duration::from_secs(60);

/// When keys rotate and how much each key's replay cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRingConfig {
    /// A new key this often. Default 30 minutes.
    pub rotation: Duration,
    /// How long the previous key still opens packets. Default 5 minutes: longer than a routed
    /// request's timeout (60 s by default) plus its per-hop delays (at most
    /// [`sphinx::MAX_HOP_DELAY`] each), so replies through reply blocks made just before a
    /// rotation still arrive.
    pub grace: Duration,
    /// Replay tags remembered per key. Default 65,536 (about 4.5 MiB for two keys). Full, the
    /// cache drops new packets (counted) and the key rotates early.
    pub replay_capacity: usize,
}

impl Default for KeyRingConfig {
    fn default() -> Self {
        KeyRingConfig {
            rotation: Duration::from_secs(30 * 60),
            grace: Duration::from_secs(5 * 60),
            replay_capacity: 65_536,
        }
    }
}

struct Epoch {
    keys: NodeKeys,
    replay: ReplayCache,
}

/// A peer's onion keys over time; see the module docs.
pub struct KeyRing {
    cfg: KeyRingConfig,
    rng: StdRng,
    current: Epoch,
    /// When the current key took over (`None` until the first `now`).
    started: Option<Instant>,
    rotate_at: Option<Instant>,
    /// The previous key and when it retires.
    previous: Option<(Epoch, Instant)>,
    rotations: u64,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current.keys)
            .field("rotations", &self.rotations)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// A ring whose first key (and the seed of every later key) comes from `rng`.
    pub fn new<R: Rng + ?Sized>(rng: &mut R, cfg: KeyRingConfig) -> Self {
        let mut own = StdRng::from_rng(rng);
        let current = Self::epoch(&mut own, &cfg);
        KeyRing {
            cfg: KeyRingConfig {
                rotation: cfg.rotation.max(Duration::from_secs(1)),
                ..cfg
            },
            rng: own,
            current,
            started: None,
            rotate_at: None,
            previous: None,
            rotations: 0,
        }
    }

    fn epoch(rng: &mut StdRng, cfg: &KeyRingConfig) -> Epoch {
        Epoch {
            keys: NodeKeys::generate(rng),
            // Tags never expire on their own: the cache goes with its key.
            replay: ReplayCache::new(cfg.replay_capacity, Duration::MAX),
        }
    }

    /// The key to announce (and to put in reply blocks we make).
    pub fn public(&self) -> [u8; KEY_LEN] {
        self.current.keys.public()
    }

    /// The previous key, while it is still accepted.
    pub fn previous_public(&self) -> Option<[u8; KEY_LEN]> {
        self.previous.as_ref().map(|(e, _)| e.keys.public())
    }

    /// Rotations so far.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// When [`KeyRing::tick`] has work: the next rotation or the previous key's retirement.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retire = self.previous.as_ref().map(|(_, at)| *at);
        [self.rotate_at, retire].into_iter().flatten().min()
    }

    fn start(&mut self, now: Instant) {
        if self.started.is_none() {
            self.started = Some(now);
            self.rotate_at = Some(now + self.cfg.rotation);
        }
    }

    fn retire(&mut self, now: Instant) {
        if self.previous.as_ref().is_some_and(|(_, at)| *at <= now) {
            self.previous = None;
        }
    }

    /// Starts the schedule (first call), retires the previous key when its grace is over, and
    /// rotates when due. `true` when the key changed: announce [`KeyRing::public`].
    pub fn tick(&mut self, now: Instant) -> bool {
        self.start(now);
        self.retire(now);
        if self.rotate_at.is_none_or(|at| now < at) {
            return false;
        }
        let next = Self::epoch(&mut self.rng, &self.cfg);
        let old = std::mem::replace(&mut self.current, next);
        // A rotation before the previous key's grace ended (a full cache) retires it now.
        self.previous = Some((old, now + self.cfg.grace));
        self.started = Some(now);
        self.rotate_at = Some(now + self.cfg.rotation);
        self.rotations += 1;
        true
    }

    /// [`sphinx::process`] with the current key, then (for a packet whose MAC fails) the
    /// previous one. A full cache of the current key brings its rotation forward.
    pub fn process(
        &mut self,
        params: &SphinxParams,
        packet: &[u8],
        now: Instant,
    ) -> Result<Processed, SphinxError> {
        self.start(now);
        self.retire(now);
        let current = &mut self.current;
        match sphinx::process(params, &current.keys, packet, &mut current.replay, now) {
            Err(SphinxError::BadMac) => match &mut self.previous {
                Some((prev, _)) => {
                    sphinx::process(params, &prev.keys, packet, &mut prev.replay, now)
                }
                None => Err(SphinxError::BadMac),
            },
            Err(SphinxError::ReplayCacheFull) => {
                if let (Some(started), Some(at)) = (self.started, self.rotate_at) {
                    let earliest = started + MIN_EPOCH.min(self.cfg.rotation);
                    self.rotate_at = Some(at.min(earliest.max(now)));
                }
                Err(SphinxError::ReplayCacheFull)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::onion::sphinx::Hop;

    const PARAMS: SphinxParams = SphinxParams {
        max_hops: 3,
        payload_bytes: 32,
    };

    fn packet(rng: &mut StdRng, public: [u8; KEY_LEN]) -> Vec<u8> {
        let route = [Hop {
            id: "ab".repeat(20),
            public,
        }];
        sphinx::create(rng, &PARAMS, &route, b"p", None).unwrap().1
    }

    fn cfg(capacity: usize) -> KeyRingConfig {
        KeyRingConfig {
            rotation: Duration::from_secs(600),
            grace: Duration::from_secs(60),
            replay_capacity: capacity,
        }
    }

    #[test]
    fn replays_fail_the_mac_once_the_key_retires() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut ring = KeyRing::new(&mut rng, cfg(100));
        let t0 = Instant::now();
        let old = packet(&mut rng, ring.public());
        assert!(ring.process(&PARAMS, &old, t0).is_ok());
        assert_eq!(
            ring.process(&PARAMS, &old, t0).unwrap_err(),
            SphinxError::Replay
        );
        // rotation: the old key still opens packets (and still knows this one) during grace
        let t1 = t0 + Duration::from_secs(600);
        assert_eq!(ring.poll_timeout(), Some(t1));
        assert!(ring.tick(t1));
        assert_eq!(ring.poll_timeout(), Some(t1 + Duration::from_secs(60)));
        assert_eq!(
            ring.process(&PARAMS, &old, t1).unwrap_err(),
            SphinxError::Replay
        );
        let late = packet(&mut rng, ring.previous_public().unwrap());
        assert!(
            ring.process(&PARAMS, &late, t1).is_ok(),
            "a sender that missed the new key"
        );
        let fresh = packet(&mut rng, ring.public());
        assert!(ring.process(&PARAMS, &fresh, t1).is_ok());
        // grace over: the old key and its cache are gone; a replay now fails the MAC
        let t2 = t1 + Duration::from_secs(60);
        assert!(!ring.tick(t2));
        assert_eq!(ring.previous_public(), None);
        for p in [&old, &late] {
            assert_eq!(
                ring.process(&PARAMS, p, t2).unwrap_err(),
                SphinxError::BadMac
            );
        }
        assert_eq!(
            ring.process(&PARAMS, &fresh, t2).unwrap_err(),
            SphinxError::Replay
        );
        assert_eq!(ring.rotations(), 1);
    }

    #[test]
    fn a_full_cache_drops_new_packets_keeps_old_tags_and_rotates_early() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut ring = KeyRing::new(&mut rng, cfg(3));
        let t0 = Instant::now();
        let first = packet(&mut rng, ring.public());
        assert!(ring.process(&PARAMS, &first, t0).is_ok());
        for _ in 0..2 {
            let p = packet(&mut rng, ring.public());
            assert!(ring.process(&PARAMS, &p, t0).is_ok());
        }
        // full: a flood of new packets is refused, and the oldest tag is still there
        for _ in 0..50 {
            let p = packet(&mut rng, ring.public());
            assert_eq!(
                ring.process(&PARAMS, &p, t0).unwrap_err(),
                SphinxError::ReplayCacheFull
            );
        }
        assert_eq!(
            ring.process(&PARAMS, &first, t0).unwrap_err(),
            SphinxError::Replay
        );
        // the key rotates early, but not before MIN_EPOCH
        assert_eq!(ring.poll_timeout(), Some(t0 + MIN_EPOCH));
        assert!(!ring.tick(t0 + MIN_EPOCH - Duration::from_secs(1)));
        assert!(ring.tick(t0 + MIN_EPOCH));
        let p = packet(&mut rng, ring.public());
        assert!(ring.process(&PARAMS, &p, t0 + MIN_EPOCH).is_ok());
        assert_eq!(
            ring.process(&PARAMS, &first, t0 + MIN_EPOCH).unwrap_err(),
            SphinxError::Replay
        );
    }

    #[test]
    fn same_seed_same_keys() {
        let keys = |seed| {
            let mut ring = KeyRing::new(&mut StdRng::seed_from_u64(seed), cfg(1));
            let t = Instant::now();
            ring.tick(t);
            ring.tick(t + Duration::from_secs(600));
            (ring.previous_public(), ring.public())
        };
        assert_eq!(keys(5), keys(5));
        assert_ne!(keys(5), keys(6));
    }
}
