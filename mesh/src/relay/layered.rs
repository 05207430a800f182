//! Layered (encrypted) routing between Rust peers: the shell side of [`crate::onion::sphinx`].
//!
//! - Capability: when a link opens, each Rust peer sends a binary *hello* frame (`\0GMH` +
//!   JSON `{"v":1,"caps":["onion-layered/1"],"key":<hex X25519 public key>}`). JavaScript
//!   peers ignore binary frames that are not P2PT envelopes, so they never see it, and never
//!   get layered packets: a route uses layered packets only when every hop sent a hello.
//! - Packets travel as binary frames `\0GMO` + the fixed-size Sphinx packet. Inside, the
//!   plaintext is JSON: `{"t":"m","msg"[,"o"]}` (one-way), `{"t":"q","id","msg"[,"o"]}` (a
//!   request, with a reply block attached), `{"t":"r","id","msg"[,"o"]}` (its response, sent
//!   through the reply block: the target never learns who asked).
//! - Relays: per-hop delays from the packet are honoured through a bounded delay queue; next
//!   hop not linked, next hop is us, queue full and every Sphinx error are counted drops.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Map, Value, json};

use super::packet::{msg_fields, msg_payload};
use super::{RelayStats, RoutedReply};
use crate::mesh::PeerId;
use crate::onion::replay::ReplayCache;
use crate::onion::sphinx::{self, Hop, NodeKeys, Processed, ReplyBlock, ReplyKeys, SphinxParams};
use crate::wire::Payload;

/// First bytes of a hello frame.
pub const HELLO_MAGIC: [u8; 4] = [0, b'G', b'M', b'H'];
/// First bytes of a layered onion frame.
pub const ONION_MAGIC: [u8; 4] = [0, b'G', b'M', b'O'];
/// The capability a hello announces.
pub const CAPABILITY: &str = "onion-layered/1";

/// Packets held for their per-hop delay at once; more are dropped (counted).
const MAX_DELAYED: usize = 4096;
/// Replay-cache size and lifetime (onion keys live as long as the mesh).
const REPLAY_CAPACITY: usize = 65_536;
const REPLAY_TTL: Duration = Duration::from_secs(3600);

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

pub(crate) struct Layered {
    params: SphinxParams,
    keys: NodeKeys,
    replay: ReplayCache,
    peer_keys: HashMap<PeerId, [u8; 32]>,
    replies: HashMap<[u8; 16], ReplyKeys>,
    delayed: BinaryHeap<Reverse<Delayed>>,
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
    pub(crate) fn new<R: Rng + ?Sized>(rng: &mut R, max_relays: usize) -> Self {
        Layered {
            params: SphinxParams {
                max_hops: (max_relays + 1).clamp(1, 32),
                ..SphinxParams::default()
            },
            keys: NodeKeys::generate(rng),
            replay: ReplayCache::new(REPLAY_CAPACITY, REPLAY_TTL),
            peer_keys: HashMap::new(),
            replies: HashMap::new(),
            delayed: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// The hello frame for a new link.
    pub(crate) fn hello(&self) -> Vec<u8> {
        let body = json!({"v": 1, "caps": [CAPABILITY], "key": hex(&self.keys.public())});
        let mut f = HELLO_MAGIC.to_vec();
        f.extend_from_slice(body.to_string().as_bytes());
        f
    }

    /// A hello from `peer`: remember its onion key. `Err` for a malformed hello.
    pub(crate) fn on_hello(&mut self, peer: &PeerId, frame: &[u8]) -> Result<(), String> {
        let body = frame.strip_prefix(&HELLO_MAGIC).unwrap_or_default();
        if body.len() > 4096 {
            return Err("hello over 4096 bytes".into());
        }
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("bad hello: {e}"))?;
        let layered = v["caps"].as_array().is_some_and(|c| c.iter().any(|x| x == CAPABILITY));
        if layered {
            let key = v["key"].as_str().and_then(unhex32).ok_or("hello without a valid key")?;
            self.peer_keys.insert(peer.clone(), key);
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

    /// Why `route` cannot go layered, if it cannot.
    pub(crate) fn unfit(&self, route: &[PeerId], payload: &Payload) -> Option<String> {
        if let Some(p) = route.iter().find(|p| !self.knows(p)) {
            return Some(format!("{p} does not speak layered onion (a JavaScript peer?)"));
        }
        if route.len() > self.params.max_hops {
            return Some(format!("{} hops, layered packets carry {}", route.len(), self.params.max_hops));
        }
        // The JSON wrapper adds well under 100 bytes.
        let len = payload.msg_text().len() + 100;
        (len > self.params.payload_bytes).then(|| {
            format!("payload of ~{len} bytes exceeds the layered capacity of {}", self.params.payload_bytes)
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

    /// A one-way layered packet along `route` (relays, then the target).
    pub(crate) fn onion<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        route: &[PeerId],
        payload: &Payload,
        delay: Option<Duration>,
    ) -> Result<(PeerId, Vec<u8>), String> {
        let body = Self::body("m", None, payload);
        let (first, packet) = sphinx::create(rng, &self.params, &self.hops(route), &body, delay).map_err(|e| e.to_string())?;
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
        let relays = &route[..route.len() - 1];
        let mut back: Vec<Hop> = self.hops(&relays.iter().rev().cloned().collect::<Vec<_>>());
        back.push(Hop {
            id: me.clone(),
            public: self.keys.public(),
        });
        let (block, keys) = sphinx::create_reply_block(rng, &self.params, &back, delay).map_err(|e| e.to_string())?;
        let body = Self::body("q", Some(request_id), payload);
        let (first, packet) =
            sphinx::create_with_reply(rng, &self.params, &self.hops(route), &body, delay, &block).map_err(|e| e.to_string())?;
        self.replies.insert(keys.id(), keys);
        Ok((first, frame(packet)))
    }

    /// Forgets reply keys of requests no longer pending (bounded by the pending table).
    pub(crate) fn retain_replies(&mut self, max: usize) {
        if self.replies.len() > max {
            // Pending requests are bounded; keys beyond that belong to expired ones.
            let surplus = self.replies.len() - max;
            let old: Vec<[u8; 16]> = self.replies.keys().take(surplus).copied().collect();
            for k in old {
                self.replies.remove(&k);
            }
        }
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
        let (first, packet) = sphinx::use_reply_block(rng, &self.params, block, &body).map_err(|e| e.to_string())?;
        Ok((first, frame(packet)))
    }

    /// When the next delayed packet is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse((at, ..))| *at)
    }

    /// Packets whose delay ran out.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(PeerId, Vec<u8>)> {
        let mut out = Vec::new();
        while self.delayed.peek().is_some_and(|Reverse((at, ..))| *at <= now) {
            if let Some(Reverse((_, _, peer, f))) = self.delayed.pop() {
                out.push((peer, f));
            }
        }
        out
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
        let processed = match sphinx::process(&self.params, &self.keys, packet, &mut self.replay, now) {
            Ok(p) => p,
            Err(e) => {
                count(stats, e.reason());
                return None;
            }
        };
        match processed {
            Processed::Forward { next, packet, delay } => {
                if next == *me {
                    count(stats, "loop");
                    return None;
                }
                if !linked(&next) {
                    count(stats, "unknown_next_hop");
                    return None;
                }
                stats.layered_forwarded += 1;
                if delay.is_zero() {
                    return Some(LayeredAction::Send(next, frame(packet)));
                }
                if self.delayed.len() >= MAX_DELAYED {
                    count(stats, "delay_queue_full");
                    return None;
                }
                self.seq += 1;
                self.delayed.push(Reverse((now + delay, self.seq, next, frame(packet))));
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
                    stats.unmatched_responses += 1;
                    return None;
                };
                let opened = sphinx::open_reply(&self.params, &keys, &body);
                let v: Option<Value> = opened.ok().and_then(|b| serde_json::from_slice(&b).ok());
                match v.as_ref().and_then(|v| Some((v["id"].as_str()?.to_owned(), msg_payload(v)?))) {
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
