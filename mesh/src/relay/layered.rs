//! Layered (encrypted) routing between Rust peers: the shell side of [`crate::onion::sphinx`].
//!
//! - Capability: when a link opens, each Rust peer sends a binary *hello* frame (`\0GMH` +
//!   JSON `{"v":2,"caps":["onion-layered/2"],"key":<hex X25519 public key>,"hops":9,
//!   "sizes":[4096,32768,245760]}`). JavaScript peers ignore binary frames that are not P2PT
//!   envelopes, so they never see it, and never get layered packets: a route uses layered
//!   packets only when every hop sent a hello with our geometry ([`LAYERED_MAX_HOPS`],
//!   [`PAYLOAD_CLASSES`]). The onion key rotates ([`crate::onion::keyring`]); each rotation
//!   sends a new hello to the peers that speak layered onion.
//! - Geometry is a protocol constant, not configuration: every packet has room for
//!   [`LAYERED_MAX_HOPS`] hops (8 relays and the target) whatever
//!   [`RelayConfig::max_hops`](super::RelayConfig::max_hops) says (that bounds the routes a
//!   peer builds and accepts), so peers with different settings route for each other.
//! - Size classes: a packet carries up to 4 KiB, 32 KiB or 240 KiB of body; the sender picks
//!   the smallest class that fits, and the length stays the same at every hop (a relay learns
//!   the class, not the position, the route or the exact size). A reply block works with any
//!   class, so a small request can get a large answer. Bodies over the largest class are an
//!   error in layered and automatic mode (never a silent switch to the readable format).
//! - Packets travel as binary frames `\0GMO` + the Sphinx packet. Inside, the plaintext is
//!   JSON: `{"t":"m","msg"[,"o"]}` (one-way), `{"t":"q","id","msg"[,"o"]}` (a request, with a
//!   reply block attached), `{"t":"r","id","msg"[,"o"]}` (its response, sent through the reply
//!   block: the target never learns who asked).
//! - Relays: per-hop delays up to [`RelayConfig::max_delay`](super::RelayConfig::max_delay)
//!   are honoured through a delay queue bounded in packets and bytes; longer delays, next hop
//!   not linked, next hop is us, queue full and every Sphinx error are counted drops.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Map, Value, json};

use super::packet::{msg_fields, msg_payload};
use super::{RelayConfig, RelayStats, RoutedReply};
use crate::mesh::PeerId;
use crate::onion::keyring::{KeyRing, KeyRingConfig};
use crate::onion::sphinx::{self, Hop, Processed, ReplyBlock, ReplyKeys, SphinxParams};
use crate::wire::Payload;

/// First bytes of a hello frame.
pub const HELLO_MAGIC: [u8; 4] = [0, b'G', b'M', b'H'];
/// First bytes of a layered onion frame.
pub const ONION_MAGIC: [u8; 4] = [0, b'G', b'M', b'O'];
/// The capability a hello announces (version 2: fixed geometry with size classes).
pub const CAPABILITY: &str = "onion-layered/2";
/// Hops every layered packet has room for: 8 relays and the target (the default
/// [`RelayConfig::max_hops`](super::RelayConfig::max_hops)). A protocol constant.
pub const LAYERED_MAX_HOPS: usize = 9;
/// Payload capacity of each packet size class, smallest first. The largest class keeps a
/// frame (4 + 1,209 + 245,760 bytes) under the 256 KiB message size of memory and WebRTC links.
pub const PAYLOAD_CLASSES: [usize; 3] = [4096, 32 * 1024, 240 * 1024];
/// The geometry of each size class ([`sphinx::packet_len`]: 5,305, 33,977 and 246,969 bytes).
pub const PACKET_CLASSES: [SphinxParams; 3] = [
    SphinxParams {
        max_hops: LAYERED_MAX_HOPS,
        payload_bytes: PAYLOAD_CLASSES[0],
    },
    SphinxParams {
        max_hops: LAYERED_MAX_HOPS,
        payload_bytes: PAYLOAD_CLASSES[1],
    },
    SphinxParams {
        max_hops: LAYERED_MAX_HOPS,
        payload_bytes: PAYLOAD_CLASSES[2],
    },
];

/// The smallest class whose payload capacity holds `len` bytes.
pub fn class_for_payload(len: usize) -> Option<SphinxParams> {
    PACKET_CLASSES.into_iter().find(|p| p.payload_bytes >= len)
}

/// The class of a packet of `len` bytes (without the frame magic), if any.
pub fn class_of_packet(len: usize) -> Option<SphinxParams> {
    PACKET_CLASSES
        .into_iter()
        .find(|p| sphinx::packet_len(p) == len)
}

fn class_of_body(len: usize) -> Option<SphinxParams> {
    PACKET_CLASSES
        .into_iter()
        .find(|p| sphinx::body_len(p) == len)
}

/// Why a route cannot go layered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfit {
    /// A hop never announced the capability: GhostMesh's format is the only way to reach it.
    NoCapability(String),
    /// Every hop speaks layered onion, but this route or payload does not fit a layered packet.
    Impossible(String),
}

/// The bounds of [`RelayConfig`] the layered side enforces.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_delay: Duration,
    max_delayed: usize,
    max_delayed_bytes: usize,
}

/// What the core must do after a layered packet.
#[derive(Debug)]
pub(crate) enum LayeredAction {
    /// Send this binary frame to the peer.
    Send(PeerId, Vec<u8>),
    /// Deliver to the application: payload, reply (for requests).
    Deliver(Payload, Option<RoutedReply>),
    /// A response to our request `id` arrived.
    Response(String, Payload),
}

/// A packet held for its per-hop delay: (due, order, next hop, frame).
type Delayed = (Instant, u64, PeerId, Vec<u8>);

/// A bounded set that forgets its oldest entries first.
#[derive(Debug)]
pub(crate) struct Recent<T> {
    cap: usize,
    order: VecDeque<T>,
    set: HashSet<T>,
}

impl<T: Eq + Hash + Clone> Recent<T> {
    pub(crate) fn new(cap: usize) -> Self {
        Recent {
            cap,
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    pub(crate) fn insert(&mut self, item: T) {
        if self.cap == 0 || self.set.contains(&item) {
            return;
        }
        while self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(item.clone());
        self.order.push_back(item);
    }

    pub(crate) fn contains(&self, item: &T) -> bool {
        self.set.contains(item)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// The keys of our pending layered requests' reply blocks, oldest first.
#[derive(Debug)]
struct Replies {
    open: HashMap<[u8; 16], (u64, String, ReplyKeys)>,
    order: BTreeMap<u64, [u8; 16]>,
    by_request: HashMap<String, [u8; 16]>,
    /// Blocks of requests that timed out (or were evicted): a reply through one is late.
    expired: Recent<[u8; 16]>,
    seq: u64,
}

impl Replies {
    fn new(max_pending: usize) -> Self {
        Replies {
            open: HashMap::new(),
            order: BTreeMap::new(),
            by_request: HashMap::new(),
            expired: Recent::new(max_pending),
            seq: 0,
        }
    }

    fn insert(&mut self, request_id: &str, keys: ReplyKeys) {
        self.expire_request(request_id);
        self.seq += 1;
        let id = keys.id();
        self.order.insert(self.seq, id);
        self.by_request.insert(request_id.to_owned(), id);
        self.open
            .insert(id, (self.seq, request_id.to_owned(), keys));
    }

    fn remove(&mut self, id: &[u8; 16]) -> Option<ReplyKeys> {
        let (seq, request_id, keys) = self.open.remove(id)?;
        self.order.remove(&seq);
        self.by_request.remove(&request_id);
        Some(keys)
    }

    /// Forgets the keys of `request_id` (it timed out); `true` if there were any.
    fn expire_request(&mut self, request_id: &str) -> bool {
        let Some(id) = self.by_request.get(request_id).copied() else {
            return false;
        };
        self.remove(&id);
        self.expired.insert(id);
        true
    }

    fn retain(&mut self, max: usize) {
        while self.open.len() > max {
            let Some((_, id)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, request_id, _)) = self.open.remove(&id) {
                self.by_request.remove(&request_id);
            }
            self.expired.insert(id);
        }
    }
}

pub(crate) struct Layered {
    limits: Limits,
    ring: KeyRing,
    peer_keys: HashMap<PeerId, [u8; 32]>,
    replies: Replies,
    delayed: BinaryHeap<Reverse<Delayed>>,
    delayed_bytes: usize,
    seq: u64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn frame(packet: Vec<u8>) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + packet.len());
    f.extend_from_slice(&ONION_MAGIC);
    f.extend_from_slice(&packet);
    f
}

fn count(stats: &mut RelayStats, reason: &str) {
    *stats.layered_dropped.entry(reason.to_owned()).or_insert(0) += 1;
}

impl Layered {
    pub(crate) fn new<R: Rng + ?Sized>(rng: &mut R, cfg: &RelayConfig) -> Self {
        let ring = KeyRing::new(
            rng,
            KeyRingConfig {
                rotation: cfg.key_rotation,
                grace: cfg.key_grace,
                replay_capacity: cfg.replay_capacity,
            },
        );
        Layered {
            limits: Limits {
                max_delay: cfg.max_delay,
                max_delayed: cfg.max_delayed,
                max_delayed_bytes: cfg.max_delayed_bytes,
            },
            ring,
            peer_keys: HashMap::new(),
            replies: Replies::new(cfg.max_pending),
            delayed: BinaryHeap::new(),
            delayed_bytes: 0,
            seq: 0,
        }
    }

    /// The hello frame for a new link (and after every key rotation).
    pub(crate) fn hello(&self) -> Vec<u8> {
        let body = json!({
            "v": 2,
            "caps": [CAPABILITY],
            "key": hex(&self.ring.public()),
            "hops": LAYERED_MAX_HOPS,
            "sizes": PAYLOAD_CLASSES,
        });
        let mut f = HELLO_MAGIC.to_vec();
        f.extend_from_slice(body.to_string().as_bytes());
        f
    }

    /// A hello from `peer`: remember its onion key if it speaks our layered geometry (a later
    /// hello replaces the key: rotation). `Err` for a malformed hello.
    pub(crate) fn on_hello(&mut self, peer: &PeerId, frame: &[u8]) -> Result<(), String> {
        let body = frame.strip_prefix(&HELLO_MAGIC).unwrap_or_default();
        if body.len() > 4096 {
            return Err("hello over 4096 bytes".into());
        }
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("bad hello: {e}"))?;
        let layered = v["caps"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == CAPABILITY));
        if !layered {
            self.peer_keys.remove(peer);
            return Ok(());
        }
        let key = v["key"]
            .as_str()
            .and_then(unhex32)
            .ok_or("hello without a valid key")?;
        let same_geometry = v["hops"].as_u64() == Some(LAYERED_MAX_HOPS as u64)
            && v["sizes"].as_array().is_some_and(|s| {
                s.len() == PAYLOAD_CLASSES.len()
                    && s.iter()
                        .zip(PAYLOAD_CLASSES)
                        .all(|(a, b)| a.as_u64() == Some(b as u64))
            });
        if same_geometry {
            self.peer_keys.insert(peer.clone(), key);
        } else {
            self.peer_keys.remove(peer);
        }
        Ok(())
    }

    /// The peer's links all closed.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.peer_keys.remove(peer);
    }

    /// Whether `peer` said it speaks layered onion.
    pub(crate) fn knows(&self, peer: &str) -> bool {
        self.peer_keys.contains_key(peer)
    }

    /// The body of a request carrying `payload` (ids are 16 characters): the most a layered
    /// packet for it must carry.
    fn body_estimate(payload: &Payload) -> usize {
        Self::body("q", Some("0123456789abcdef"), payload).len()
    }

    /// Why `route` cannot go layered, if it cannot.
    pub(crate) fn unfit(&self, route: &[PeerId], payload: &Payload) -> Option<Unfit> {
        if let Some(p) = route.iter().find(|p| !self.knows(p)) {
            return Some(Unfit::NoCapability(format!(
                "{p} does not speak layered onion (a JavaScript peer?)"
            )));
        }
        if route.len() > LAYERED_MAX_HOPS {
            return Some(Unfit::Impossible(format!(
                "{} hops, layered packets carry {LAYERED_MAX_HOPS}",
                route.len()
            )));
        }
        let len = Self::body_estimate(payload);
        let max = PAYLOAD_CLASSES[PAYLOAD_CLASSES.len() - 1];
        (len > max).then(|| {
            Unfit::Impossible(format!(
                "payload of ~{len} bytes exceeds the largest layered packet ({max} bytes)"
            ))
        })
    }

    fn hops(&self, route: &[PeerId]) -> Vec<Hop> {
        route
            .iter()
            .filter_map(|p| {
                self.peer_keys.get(p).map(|k| Hop {
                    id: p.clone(),
                    public: *k,
                })
            })
            .collect()
    }

    fn body(kind: &str, id: Option<&str>, payload: &Payload) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("t".into(), kind.into());
        if let Some(id) = id {
            m.insert("id".into(), id.into());
        }
        msg_fields(&mut m, payload);
        Value::Object(m).to_string().into_bytes()
    }

    fn class(body: &[u8]) -> Result<SphinxParams, String> {
        class_for_payload(body.len()).ok_or_else(|| {
            format!(
                "payload of {} bytes exceeds the largest layered packet ({} bytes)",
                body.len(),
                PAYLOAD_CLASSES[PAYLOAD_CLASSES.len() - 1]
            )
        })
    }

    /// A one-way layered packet along `route` (relays, then the target).
    pub(crate) fn onion<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        route: &[PeerId],
        payload: &Payload,
        delay: Option<Duration>,
    ) -> Result<(PeerId, Vec<u8>), String> {
        let body = Self::body("m", None, payload);
        let params = Self::class(&body)?;
        let (first, packet) = sphinx::create(rng, &params, &self.hops(route), &body, delay)
            .map_err(|e| e.to_string())?;
        Ok((first, frame(packet)))
    }

    /// A layered request along `route` with a reply block for the way back (`me` last).
    pub(crate) fn request<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        me: &PeerId,
        route: &[PeerId],
        request_id: &str,
        payload: &Payload,
        delay: Option<Duration>,
    ) -> Result<(PeerId, Vec<u8>), String> {
        let relays = route
            .get(..route.len().saturating_sub(1))
            .unwrap_or_default();
        let mut back: Vec<Hop> = self.hops(&relays.iter().rev().cloned().collect::<Vec<_>>());
        back.push(Hop {
            id: me.clone(),
            public: self.ring.public(),
        });
        let body = Self::body("q", Some(request_id), payload);
        let params = Self::class(&body)?;
        // Reply blocks are the same in every class (the header does not depend on it).
        let (block, keys) =
            sphinx::create_reply_block(rng, &params, &back, delay).map_err(|e| e.to_string())?;
        let (first, packet) =
            sphinx::create_with_reply(rng, &params, &self.hops(route), &body, delay, &block)
                .map_err(|e| e.to_string())?;
        self.replies.insert(request_id, keys);
        Ok((first, frame(packet)))
    }

    /// Bounds the reply keys kept by the pending table: the oldest go first (they belong to
    /// requests that timed out, or are the closest to it).
    pub(crate) fn retain_replies(&mut self, max: usize) {
        self.replies.retain(max);
    }

    /// Our request `request_id` timed out: forget its reply keys; a reply through its block
    /// now counts as late.
    pub(crate) fn forget_request(&mut self, request_id: &str) {
        self.replies.expire_request(request_id);
    }

    /// Reply keys held (tests check they go with their requests).
    #[cfg(test)]
    pub(crate) fn open_replies(&self) -> usize {
        debug_assert_eq!(self.replies.open.len(), self.replies.order.len());
        debug_assert_eq!(self.replies.open.len(), self.replies.by_request.len());
        self.replies.open.len()
    }

    /// The response to a layered request, through its reply block.
    pub(crate) fn respond<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        block: &ReplyBlock,
        request_id: &str,
        payload: &Payload,
    ) -> Result<(PeerId, Vec<u8>), String> {
        let body = Self::body("r", Some(request_id), payload);
        let params = Self::class(&body)?;
        let (first, packet) =
            sphinx::use_reply_block(rng, &params, block, &body).map_err(|e| e.to_string())?;
        Ok((first, frame(packet)))
    }

    /// When the next delayed packet is due, or the onion key rotates or retires.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let delayed = self.delayed.peek().map(|Reverse((at, ..))| *at);
        [delayed, self.ring.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Packets whose delay ran out, and, after a key rotation, the new hello for every peer
    /// that speaks layered onion.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<u8>)> {
        let mut out = Vec::new();
        while self
            .delayed
            .peek()
            .is_some_and(|Reverse((at, ..))| *at <= now)
        {
            if let Some(Reverse((_, _, peer, f))) = self.delayed.pop() {
                self.delayed_bytes = self.delayed_bytes.saturating_sub(f.len());
                out.push((peer, f));
            }
        }
        if self.ring.tick(now) {
            let hello = self.hello();
            let mut peers: Vec<&PeerId> = self.peer_keys.keys().collect();
            peers.sort();
            out.extend(peers.into_iter().map(|p| (p.clone(), hello.clone())));
        }
        out
    }

    /// Onion key rotations so far.
    #[cfg(test)]
    pub(crate) fn rotations(&self) -> u64 {
        self.ring.rotations()
    }

    /// A layered frame from the neighbour `peer`.
    pub(crate) fn on_frame(
        &mut self,
        now: Instant,
        me: &PeerId,
        frame_bytes: &[u8],
        stats: &mut RelayStats,
        linked: impl Fn(&str) -> bool,
    ) -> Option<LayeredAction> {
        let packet = frame_bytes.strip_prefix(&ONION_MAGIC).unwrap_or_default();
        let Some(params) = class_of_packet(packet.len()) else {
            count(stats, "bad_length");
            return None;
        };
        let processed = match self.ring.process(&params, packet, now) {
            Ok(p) => p,
            Err(e) => {
                count(stats, e.reason());
                return None;
            }
        };
        match processed {
            Processed::Forward {
                next,
                packet,
                delay,
            } => {
                if next == *me {
                    count(stats, "loop");
                    return None;
                }
                if !linked(&next) {
                    count(stats, "unknown_next_hop");
                    return None;
                }
                if delay > self.limits.max_delay {
                    count(stats, "delay_too_long");
                    return None;
                }
                let f = frame(packet);
                if delay.is_zero() {
                    stats.layered_forwarded += 1;
                    return Some(LayeredAction::Send(next, f));
                }
                if self.delayed.len() >= self.limits.max_delayed
                    || self.delayed_bytes + f.len() > self.limits.max_delayed_bytes
                {
                    count(stats, "delay_queue_full");
                    return None;
                }
                stats.layered_forwarded += 1;
                self.seq += 1;
                self.delayed_bytes += f.len();
                self.delayed.push(Reverse((now + delay, self.seq, next, f)));
                None
            }
            Processed::Deliver { payload, reply } => {
                stats.layered_delivered += 1;
                let Ok(v) = serde_json::from_slice::<Value>(&payload) else {
                    count(stats, "bad_body");
                    return None;
                };
                let Some(msg) = msg_payload(&v) else {
                    count(stats, "bad_body");
                    return None;
                };
                match (v["t"].as_str(), v["id"].as_str(), reply) {
                    (Some("q"), Some(id), Some(block)) => {
                        let reply = RoutedReply {
                            circuit_id: String::new(),
                            request_id: id.to_owned(),
                            reply_route: Vec::new(),
                            block: Some(block),
                        };
                        Some(LayeredAction::Deliver(msg, Some(reply)))
                    }
                    (Some("m"), _, _) => Some(LayeredAction::Deliver(msg, None)),
                    _ => {
                        count(stats, "bad_body");
                        None
                    }
                }
            }
            Processed::Reply { id, body } => {
                let Some(keys) = self.replies.remove(&id) else {
                    if self.replies.expired.contains(&id) {
                        stats.late_responses += 1;
                    } else {
                        stats.unmatched_responses += 1;
                    }
                    return None;
                };
                let opened = class_of_body(body.len())
                    .ok_or(sphinx::SphinxError::BadPayload)
                    .and_then(|params| sphinx::open_reply(&params, &keys, &body));
                let v: Option<Value> = opened.ok().and_then(|b| serde_json::from_slice(&b).ok());
                match v
                    .as_ref()
                    .and_then(|v| Some((v["id"].as_str()?.to_owned(), msg_payload(v)?)))
                {
                    Some((rid, msg)) => Some(LayeredAction::Response(rid, msg)),
                    None => {
                        count(stats, "bad_reply");
                        None
                    }
                }
            }
        }
    }
}

/// Drop counters by reason, for [`RelayStats::layered_dropped`].
pub type DropCounts = BTreeMap<String, u64>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{Action, Pending, Relay};
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tokio::sync::oneshot;

    /// A peer id named by one character.
    fn id(c: char) -> PeerId {
        format!("{:040x}", u32::from(c))
    }

    /// Peers named `names` (one character each) that have exchanged hellos.
    fn peers(names: &str, cfgs: &[RelayConfig]) -> Vec<(PeerId, Layered)> {
        let mut rng = StdRng::seed_from_u64(names.len() as u64);
        let mut all: Vec<(PeerId, Layered)> = names
            .chars()
            .enumerate()
            .map(|(i, c)| {
                (
                    id(c),
                    Layered::new(&mut rng, cfgs.get(i).unwrap_or(&RelayConfig::default())),
                )
            })
            .collect();
        introduce(&mut all);
        all
    }

    fn introduce(all: &mut [(PeerId, Layered)]) {
        let hellos: Vec<(PeerId, Vec<u8>)> =
            all.iter().map(|(p, l)| (p.clone(), l.hello())).collect();
        for (me, l) in all.iter_mut() {
            for (p, h) in &hellos {
                if p != me {
                    l.on_hello(p, h).unwrap();
                }
            }
        }
    }

    /// Runs `frame` from hop to hop (`at` first) until someone does not forward it at once.
    fn run(
        all: &mut [(PeerId, Layered)],
        stats: &mut RelayStats,
        at: &str,
        frame: Vec<u8>,
        now: Instant,
    ) -> (usize, Vec<usize>, Option<LayeredAction>) {
        let (mut at, mut frame, mut lens) = (at.to_owned(), frame, Vec::new());
        loop {
            lens.push(frame.len());
            let i = all.iter().position(|(p, _)| *p == at).unwrap();
            let (me, l) = &mut all[i];
            match l.on_frame(now, me, &frame, stats, |_| true) {
                Some(LayeredAction::Send(next, f)) => (at, frame) = (next, f),
                other => return (i, lens, other),
            }
        }
    }

    fn text(len: usize) -> Payload {
        Payload::Text("MARKER-".repeat(len / 7 + 1)[..len].to_owned())
    }

    #[test]
    fn capable_peers_send_large_payloads_in_a_larger_class_never_readable() {
        let mut all = peers("art", &[]);
        let (a, r, t) = (id('a'), id('r'), id('t'));
        let route = vec![r.clone(), t.clone()];
        let l = &all[0].1;
        assert_eq!(l.unfit(&route, &text(20_000)), None);
        assert_eq!(l.unfit(&route, &text(200_000)), None);
        assert!(
            matches!(l.unfit(&route, &text(250_000)), Some(Unfit::Impossible(w)) if w.contains("largest layered packet"))
        );
        assert!(matches!(
            l.unfit(&[r.clone(), id('j')], &text(10)),
            Some(Unfit::NoCapability(_))
        ));
        // Routes longer than the layered geometry are refused, not sent readable.
        let many = peers("abcdefghijk", &[]);
        let long: Vec<PeerId> = "bcdefghijk".chars().map(id).collect();
        assert!(
            matches!(many[0].1.unfit(&long, &text(10)), Some(Unfit::Impossible(w)) if w.contains("10 hops"))
        );
        assert_eq!(many[0].1.unfit(&long[1..], &text(10)), None);

        let mut rng = StdRng::seed_from_u64(1);
        let mut stats = RelayStats::default();
        let now = Instant::now();
        for (len, class) in [(100, 0), (20_000, 1), (200_000, 2)] {
            let (first, f) = all[0].1.onion(&mut rng, &route, &text(len), None).unwrap();
            assert_eq!(
                (first.as_str(), f.len()),
                (r.as_str(), 4 + sphinx::packet_len(&PACKET_CLASSES[class]))
            );
            assert!(!f.windows(7).any(|w| w == b"MARKER-"));
            let (at, lens, end) = run(&mut all, &mut stats, &first, f, now);
            assert_eq!(at, 2);
            assert!(lens.iter().all(|&l| l == lens[0]), "{lens:?}");
            assert!(matches!(end, Some(LayeredAction::Deliver(p, None)) if p == text(len)));
        }
        // A small request gets a large answer through the same reply block.
        let (first, f) = all[0]
            .1
            .request(&mut rng, &a, &route, "0123456789abcdef", &text(10), None)
            .unwrap();
        let Some(LayeredAction::Deliver(_, Some(reply))) =
            run(&mut all, &mut stats, &first, f, now).2
        else {
            panic!()
        };
        let block = reply.block.unwrap();
        let (first, f) = all[2]
            .1
            .respond(&mut rng, &block, &reply.request_id, &text(150_000))
            .unwrap();
        assert_eq!(f.len(), 4 + sphinx::packet_len(&PACKET_CLASSES[2]));
        let (at, lens, end) = run(&mut all, &mut stats, &first, f, now);
        assert_eq!((at, lens.len()), (0, 2));
        assert!(
            matches!(end, Some(LayeredAction::Response(id, p)) if id == "0123456789abcdef" && p == text(150_000))
        );
        assert!(
            all[2]
                .1
                .respond(&mut rng, &block, "0123456789abcdef", &text(300_000))
                .unwrap_err()
                .contains("largest")
        );
        assert_eq!(stats.layered_dropped, DropCounts::new());
    }

    #[test]
    fn relays_with_any_max_hops_share_one_geometry() {
        let cfgs: Vec<RelayConfig> = [1, 8, 3, 20]
            .into_iter()
            .map(|max_hops| RelayConfig {
                max_hops,
                ..RelayConfig::default()
            })
            .collect();
        let mut all = peers("abcd", &cfgs);
        let mut rng = StdRng::seed_from_u64(2);
        let route: Vec<PeerId> = "bcd".chars().map(id).collect();
        let (first, f) = all[0].1.onion(&mut rng, &route, &text(10), None).unwrap();
        let (at, _, end) = run(
            &mut all,
            &mut RelayStats::default(),
            &first,
            f,
            Instant::now(),
        );
        assert_eq!(at, 3);
        assert!(matches!(end, Some(LayeredAction::Deliver(..))));
        // A hello with another geometry, or without the capability, is not a layered peer.
        let l = &mut all[0].1;
        for body in [
            r#"{"v":2,"caps":["onion-layered/2"],"key":"KEY","hops":5,"sizes":[4096,32768,245760]}"#,
            r#"{"v":2,"caps":["onion-layered/2"],"key":"KEY","hops":9,"sizes":[4096]}"#,
            r#"{"v":1,"caps":["onion-layered/1"],"key":"KEY"}"#,
            r#"{"v":2,"caps":[]}"#,
        ] {
            let hello = [
                &HELLO_MAGIC[..],
                body.replace("KEY", &"11".repeat(32)).as_bytes(),
            ]
            .concat();
            l.on_hello(&id('b'), &hello).unwrap();
            assert!(!l.knows(&id('b')), "{body}");
        }
        let bad = [
            &HELLO_MAGIC[..],
            br#"{"caps":["onion-layered/2"],"key":"zz"}"#,
        ]
        .concat();
        assert!(l.on_hello(&id('b'), &bad).is_err());
        assert!(
            l.on_hello(&id('b'), &[&HELLO_MAGIC[..], b"{"].concat())
                .is_err()
        );
    }

    #[test]
    fn key_rotation_announces_a_new_key_and_retires_the_old_one() {
        let cfg = RelayConfig {
            key_rotation: Duration::from_secs(600),
            key_grace: Duration::from_secs(60),
            ..RelayConfig::default()
        };
        let mut all = peers("art", &[cfg.clone(), cfg.clone(), cfg]);
        let mut rng = StdRng::seed_from_u64(3);
        let route = vec![id('r'), id('t')];
        let t0 = Instant::now();
        let mut stats = RelayStats::default();
        let (_, old) = all[0].1.onion(&mut rng, &route, &text(10), None).unwrap();
        assert!(matches!(
            all[1].1.on_frame(t0, &id('r'), &old, &mut stats, |_| true),
            Some(LayeredAction::Send(..))
        ));
        assert_eq!(all[1].1.poll_timeout(), Some(t0 + Duration::from_secs(600)));
        // Rotation: a new hello for each layered peer.
        let t1 = t0 + Duration::from_secs(600);
        let out = all[1].1.due(t1);
        assert_eq!(
            out.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            vec![id('a'), id('t')]
        );
        assert_eq!(all[1].1.rotations(), 1);
        // A sender that has not seen it yet still gets through, during the grace period.
        let (_, late) = all[0].1.onion(&mut rng, &route, &text(10), None).unwrap();
        assert!(matches!(
            all[1].1.on_frame(t1, &id('r'), &late, &mut stats, |_| true),
            Some(LayeredAction::Send(..))
        ));
        assert!(
            all[1]
                .1
                .on_frame(t1, &id('r'), &old, &mut stats, |_| true)
                .is_none()
        );
        assert_eq!(stats.layered_dropped.get("replay"), Some(&1));
        // After it, a replay of the old packet fails the MAC: no cache needed to remember it.
        let t2 = t1 + Duration::from_secs(60);
        assert!(all[1].1.due(t2).is_empty());
        assert!(
            all[1]
                .1
                .on_frame(t2, &id('r'), &old, &mut stats, |_| true)
                .is_none()
        );
        assert_eq!(stats.layered_dropped.get("bad_mac"), Some(&1));
        // Senders that got the new hello use the new key.
        let hello = out[0].1.clone();
        all[0].1.on_hello(&id('r'), &hello).unwrap();
        let (_, new) = all[0].1.onion(&mut rng, &route, &text(10), None).unwrap();
        assert!(matches!(
            all[1].1.on_frame(t2, &id('r'), &new, &mut stats, |_| true),
            Some(LayeredAction::Send(..))
        ));
    }

    #[test]
    fn a_full_replay_cache_drops_new_packets_instead_of_forgetting_old_ones() {
        let cfg = RelayConfig {
            replay_capacity: 2,
            ..RelayConfig::default()
        };
        let mut all = peers("art", &[RelayConfig::default(), cfg]);
        let mut rng = StdRng::seed_from_u64(4);
        let route = vec![id('r'), id('t')];
        let now = Instant::now();
        let mut stats = RelayStats::default();
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|_| all[0].1.onion(&mut rng, &route, &text(10), None).unwrap().1)
            .collect();
        for f in &frames {
            let _ = all[1].1.on_frame(now, &id('r'), f, &mut stats, |_| true);
        }
        assert_eq!(stats.layered_forwarded, 2);
        assert_eq!(stats.layered_dropped.get("replay_cache_full"), Some(&3));
        let _ = all[1]
            .1
            .on_frame(now, &id('r'), &frames[0], &mut stats, |_| true);
        assert_eq!(
            stats.layered_dropped.get("replay"),
            Some(&1),
            "the oldest packet is still known"
        );
        // The key rotates early (after MIN_EPOCH), with a fresh cache.
        let later = now + crate::onion::keyring::MIN_EPOCH;
        assert_eq!(all[1].1.poll_timeout(), Some(later));
        assert_eq!(all[1].1.due(later).len(), 2);
    }

    #[test]
    fn long_delays_and_a_full_delay_queue_are_dropped() {
        let base = RelayConfig::default();
        let cfgs = [
            base.clone(),
            RelayConfig {
                max_delay: Duration::from_millis(1),
                ..base.clone()
            },
            RelayConfig {
                max_delayed: 1,
                ..base.clone()
            },
            RelayConfig {
                max_delayed_bytes: 6000,
                ..base.clone()
            },
        ];
        let mut all = peers("abcdt", &cfgs);
        let mut rng = StdRng::seed_from_u64(5);
        let now = Instant::now();
        let mean = Some(Duration::from_secs(5));
        let send = |all: &mut Vec<(PeerId, Layered)>,
                    rng: &mut StdRng,
                    relay: usize,
                    stats: &mut RelayStats| {
            let route = vec![all[relay].0.clone(), id('t')];
            let (_, f) = all[0].1.onion(rng, &route, &text(10), mean).unwrap();
            let (me, l) = &mut all[relay];
            l.on_frame(now, me, &f, stats, |_| true)
        };
        let mut stats = RelayStats::default();
        assert!(send(&mut all, &mut rng, 1, &mut stats).is_none());
        assert_eq!(stats.layered_dropped.get("delay_too_long"), Some(&1));
        // One packet fits the queue of relay c, the next does not.
        assert!(send(&mut all, &mut rng, 2, &mut stats).is_none());
        assert!(send(&mut all, &mut rng, 2, &mut stats).is_none());
        assert_eq!(stats.layered_dropped.get("delay_queue_full"), Some(&1));
        // Relay d: one 5,309-byte frame fits its 6,000 bytes, a second does not.
        assert!(send(&mut all, &mut rng, 3, &mut stats).is_none());
        assert!(send(&mut all, &mut rng, 3, &mut stats).is_none());
        assert_eq!(stats.layered_dropped.get("delay_queue_full"), Some(&2));
        assert_eq!(stats.layered_forwarded, 2);
        // Held packets leave at their time (never beyond MAX_HOP_DELAY), and free the queue.
        let due = all[2].1.poll_timeout().unwrap();
        assert!(due > now && due <= now + sphinx::MAX_HOP_DELAY);
        assert_eq!(all[2].1.due(due).len(), 1);
        assert_eq!((all[2].1.delayed.len(), all[2].1.delayed_bytes), (0, 0));
        assert!(send(&mut all, &mut rng, 2, &mut stats).is_none());
        assert_eq!(stats.layered_dropped.get("delay_queue_full"), Some(&2));
    }

    #[test]
    fn timed_out_requests_are_counted_forget_their_keys_and_late_answers_are_counted() {
        let mut rng = StdRng::seed_from_u64(6);
        let (a, t) = (id('a'), id('t'));
        let mut relay = Relay::new(&mut rng, RelayConfig::default(), a.clone());
        let mut target = Layered::new(&mut rng, &RelayConfig::default());
        relay.layered.on_hello(&t, &target.hello()).unwrap();
        target.on_hello(&a, &relay.layered.hello()).unwrap();
        let t0 = Instant::now();
        let pend = |relay: &mut Relay, id: &str| {
            let (tx, rx) = oneshot::channel();
            relay.pending.insert(
                id.to_owned(),
                Pending {
                    reply: tx,
                    deadline: t0 + Duration::from_secs(60),
                },
            );
            rx
        };
        // A layered request, answered after its timeout.
        let (_, f) = relay
            .layered
            .request(
                &mut rng,
                &a,
                std::slice::from_ref(&t),
                "00000000000000aa",
                &text(5),
                None,
            )
            .unwrap();
        let mut rx = pend(&mut relay, "00000000000000aa");
        let mut stats = RelayStats::default();
        let Some(LayeredAction::Deliver(_, Some(reply))) =
            target.on_frame(t0, &t, &f, &mut stats, |_| true)
        else {
            panic!()
        };
        let (_, answer) = target
            .respond(
                &mut rng,
                reply.block.as_ref().unwrap(),
                &reply.request_id,
                &text(5),
            )
            .unwrap();
        // A GhostMesh-format request too.
        let mut rx2 = pend(&mut relay, "00000000000000bb");
        assert_eq!(relay.layered.open_replies(), 1);
        assert!(relay.tick(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(relay.stats.expired_requests, 2);
        assert_eq!(
            relay.layered.open_replies(),
            0,
            "reply keys go with the request"
        );
        assert!(matches!(
            rx.try_recv(),
            Ok(Err(crate::mesh::MeshError::Timeout))
        ));
        assert!(matches!(
            rx2.try_recv(),
            Ok(Err(crate::mesh::MeshError::Timeout))
        ));
        let later = t0 + Duration::from_secs(61);
        assert!(matches!(
            relay.on_binary(later, &t, &answer, |_| true),
            Some(None)
        ));
        let response = |rid: &str| {
            let body = super::super::packet::route_response("c", rid, &t, &Payload::from("late"));
            super::super::packet::wrap("c", std::slice::from_ref(&a), &Payload::Json(body))
        };
        assert!(
            relay
                .on_packet(&t, &response("00000000000000bb"), |_| true)
                .is_none()
        );
        assert!(
            relay
                .on_packet(&t, &response("00000000000000cc"), |_| true)
                .is_none()
        );
        assert_eq!(
            (relay.stats.late_responses, relay.stats.unmatched_responses),
            (2, 1),
            "{:?}",
            relay.stats
        );
        // An answer in time still works (and is neither late nor unmatched).
        let _rx3 = pend(&mut relay, "00000000000000dd");
        let out = relay.on_packet(&t, &response("00000000000000dd"), |_| true);
        assert!(out.is_none() && relay.pending.is_empty());
        assert_eq!(
            (relay.stats.late_responses, relay.stats.unmatched_responses),
            (2, 1)
        );
        let _: Option<Action> = out;
    }

    #[test]
    fn reply_keys_beyond_the_bound_go_oldest_first() {
        let mut all = peers("at", &[]);
        let mut rng = StdRng::seed_from_u64(7);
        let (a, t) = (id('a'), id('t'));
        let l = &mut all[0].1;
        let ids = ["000000000000000a", "000000000000000b", "000000000000000c"];
        for rid in ids {
            l.request(&mut rng, &a, std::slice::from_ref(&t), rid, &text(3), None)
                .unwrap();
        }
        l.retain_replies(2);
        assert_eq!(l.open_replies(), 2);
        assert!(!l.replies.by_request.contains_key(ids[0]));
        assert!(
            ids[1..]
                .iter()
                .all(|r| l.replies.by_request.contains_key(*r))
        );
        assert_eq!(l.replies.expired.len(), 1);
        l.forget_request(ids[2]);
        assert_eq!(l.open_replies(), 1);
        assert!(l.replies.by_request.contains_key(ids[1]));
    }
}
