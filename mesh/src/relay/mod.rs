//! Routed delivery through relays, compatible with GhostMesh: onion packets
//! (`onion-forward` layers around an `onion-deliver`) and routed request/response
//! (`route-request` / `route-response` carried inside them).
//!
//! Differences from GhostMesh, all compatible on the wire:
//! - TTLs that survive any route length (GhostMesh's default ttl kills routes with two or more
//!   relays; see [`packet::wrap`]); relays keep GhostMesh's rule (inner ttl = ttl - 1).
//! - Bounds at relays, each drop counted in [`RelayStats`]: ttl spent, next hop not linked,
//!   next hop is ourselves, packet over [`RelayConfig::max_packet_bytes`] (GhostMesh's layers
//!   double in size per hop), malformed layers, reply routes over [`RelayConfig::max_hops`].
//! - Routed requests time out with the mesh's request timeout, and pending ones are bounded.
//! - At the target, GhostMesh's dispatch: a one-way delivery whose payload is a `file-*` packet
//!   goes to the file handler (an incoming transfer of
//!   [`ROUTED_PEER`](crate::file::ROUTED_PEER)), not to the application as an onion message;
//!   with routing defaults set, `send_file` sends every file packet along a fresh route.
//!
//! The GhostMesh format is readable by every relay (the layers are plain JSON); encrypted
//! layered packets between Rust peers live in [`crate::onion`] and [`layered`], with their own
//! bounds: fixed geometry (9 hops, three size classes), onion keys that rotate, a replay cache
//! per key that drops rather than forgets, capped per-hop delays and a bounded delay queue.
//! Requests that time out are counted ([`RelayStats::expired_requests`]), their reply keys
//! forgotten, and answers that come later counted as [`RelayStats::late_responses`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::mesh::{MeshError, PeerId};
use crate::wire::Payload;

pub mod layered;
pub mod packet;

use self::layered::{Layered, LayeredAction, Recent, Unfit};
use crate::onion::sphinx::ReplyBlock;

/// Which packet format a route uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteMode {
    /// Layered (encrypted) when every hop is a Rust peer that announced it; GhostMesh's
    /// format only toward peers that did not, with the reason in [`RouteInfo::fallback`].
    /// Between peers that all announced it, a route or payload that does not fit a layered
    /// packet (over 8 relays, over 240 KiB) is an error, never a silent readable packet.
    #[default]
    Auto,
    /// Always GhostMesh's format (readable by relays).
    Compat,
    /// Always layered; an error when some hop cannot take it.
    Layered,
}

/// How a routed message travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOptions {
    /// Explicit relays, in order (the first must be linked to us). Empty: choose `hops`.
    pub through: Vec<PeerId>,
    /// Relays chosen at random from linked peers when `through` is empty. Default 2
    /// (GhostMesh's default).
    pub hops: usize,
    /// Packet format. Default [`RouteMode::Auto`].
    pub mode: RouteMode,
    /// Layered mode: mean of the exponential per-hop delays relays hold packets for (drawn by
    /// the sender from its seeded RNG). Default none.
    pub mean_delay: Option<Duration>,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            through: Vec::new(),
            hops: 2,
            mode: RouteMode::Auto,
            mean_delay: None,
        }
    }
}

impl RouteOptions {
    /// Through these relays, in order.
    pub fn through(relays: Vec<PeerId>) -> Self {
        RouteOptions {
            through: relays,
            hops: 0,
            ..RouteOptions::default()
        }
    }

    /// With this packet format.
    pub fn mode(mut self, mode: RouteMode) -> Self {
        self.mode = mode;
        self
    }
}

/// Bounds on routing.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Most relays on a route we build, and most entries in a reply route we accept.
    /// Default 8. Layered packets always have room for
    /// [`layered::LAYERED_MAX_HOPS`] hops (8 relays and the target) whatever this says, so
    /// peers with different settings route for each other; a layered route needs at most 8
    /// relays.
    pub max_hops: usize,
    /// Largest onion packet relayed or accepted, in bytes of its layer text. Default 1 MiB.
    pub max_packet_bytes: usize,
    /// Most routed requests awaiting a response. Default 1024.
    pub max_pending: usize,
    /// Layered mode: how often the onion key changes (a new hello announces it). Default
    /// 30 minutes. See [`crate::onion::keyring`].
    pub key_rotation: Duration,
    /// Layered mode: how long the previous onion key still opens packets. Default 5 minutes
    /// (keep it above the request timeout plus per-hop delays).
    pub key_grace: Duration,
    /// Layered mode: replay tags remembered per onion key. Default 65,536. When full, new
    /// packets are dropped (`replay_cache_full`) and the key rotates early.
    pub replay_capacity: usize,
    /// Layered mode: the longest per-hop delay this relay honours; longer ones are dropped
    /// (`delay_too_long`). Default 60 s ([`crate::onion::sphinx::MAX_HOP_DELAY`], the most a
    /// sender draws).
    pub max_delay: Duration,
    /// Layered mode: most packets held for their per-hop delay at once; more are dropped
    /// (`delay_queue_full`). Default 4096.
    pub max_delayed: usize,
    /// Layered mode: most bytes held for per-hop delays at once. Default 64 MiB.
    pub max_delayed_bytes: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_hops: 8,
            max_packet_bytes: 1 << 20,
            max_pending: 1024,
            key_rotation: Duration::from_secs(30 * 60),
            key_grace: Duration::from_secs(5 * 60),
            replay_capacity: 65_536,
            max_delay: crate::onion::sphinx::MAX_HOP_DELAY,
            max_delayed: 4096,
            max_delayed_bytes: 64 << 20,
        }
    }
}

/// Counters of routed traffic seen by this peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Layers passed on to the next hop.
    pub forwarded: u64,
    /// Packets delivered to us.
    pub delivered: u64,
    /// Dropped: ttl spent.
    pub dropped_ttl: u64,
    /// Dropped: the next hop is not linked to us.
    pub dropped_unknown_next: u64,
    /// Dropped: the next hop is ourselves.
    pub dropped_loop: u64,
    /// Dropped: over `max_packet_bytes`.
    pub dropped_too_large: u64,
    /// Dropped: not a valid layer.
    pub dropped_malformed: u64,
    /// Dropped: a reply route longer than `max_hops` + 1.
    pub dropped_hops: u64,
    /// Route responses matching no pending request and no recently expired one (forged, or
    /// very late).
    pub unmatched_responses: u64,
    /// Routed requests that timed out: their circuit expired (reply keys forgotten).
    pub expired_requests: u64,
    /// Responses that arrived after their request timed out (dropped).
    pub late_responses: u64,
    /// Layered packets passed on.
    pub layered_forwarded: u64,
    /// Layered packets delivered to us.
    pub layered_delivered: u64,
    /// Layered packets dropped, by reason (`bad_mac`, `replay`, `replay_cache_full`,
    /// `payload_tampered`, `bad_length`, `unknown_next_hop`, `loop`, `delay_too_long`,
    /// `delay_queue_full`, ...).
    pub layered_dropped: layered::DropCounts,
}

/// Where a routed message went or came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The circuit id (16 hex characters), the same in every layer.
    pub circuit_id: String,
    /// The peers after us: relays, then the target (outgoing); or the route back as the
    /// packet claims it (incoming GhostMesh routed requests; empty for plain onion messages
    /// and for layered packets, which name no sender).
    pub route: Vec<PeerId>,
    /// Layered (encrypted) packets were used.
    pub layered: bool,
    /// Why GhostMesh's format was used although layered was allowed ([`RouteMode::Auto`]).
    pub fallback: Option<String>,
}

/// Answers one routed request along its reply route; see
/// [`MeshHandle::respond_routed`](crate::mesh::MeshHandle::respond_routed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedReply {
    pub(crate) circuit_id: String,
    pub(crate) request_id: String,
    /// Relays back, then the requester.
    pub(crate) reply_route: Vec<PeerId>,
    /// Layered requests: the single-use reply block to answer through.
    pub(crate) block: Option<ReplyBlock>,
}

/// A routed message for the application.
#[derive(Debug, Clone, PartialEq)]
pub struct OnionMessage {
    /// For a routed request, the requester as it claims to be (unauthenticated, as in
    /// GhostMesh); for a plain onion message, the neighbour that delivered it.
    pub from: PeerId,
    /// The content.
    pub payload: Payload,
    /// Circuit and route.
    pub info: RouteInfo,
    /// Present for routed requests: answer with it.
    pub reply: Option<RoutedReply>,
}

struct Pending {
    reply: oneshot::Sender<Result<Payload, MeshError>>,
    deadline: Instant,
}

/// What the core must do after a routed packet.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send `packet` one-way to `peer`.
    Send(PeerId, Value),
    /// Send this binary frame (a layered packet or hello) to `peer`.
    SendBinary(PeerId, Vec<u8>),
    /// Tell the application.
    Deliver(Box<OnionMessage>),
}

/// The core's routing state.
pub(crate) struct Relay {
    cfg: RelayConfig,
    me: PeerId,
    pending: HashMap<String, Pending>,
    /// Ids of requests that timed out, to count their responses as late.
    expired: Recent<String>,
    pub(crate) stats: RelayStats,
    pub(crate) layered: Layered,
}

/// 16 lowercase hex characters (GhostMesh's `_createPacketId`).
fn packet_id<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut b = [0u8; 8];
    rng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn route_err(msg: String) -> MeshError {
    MeshError::Route(msg)
}

impl Relay {
    pub(crate) fn new<R: Rng + ?Sized>(rng: &mut R, cfg: RelayConfig, me: PeerId) -> Self {
        Relay {
            layered: Layered::new(rng, &cfg),
            expired: Recent::new(cfg.max_pending),
            cfg,
            me,
            pending: HashMap::new(),
            stats: RelayStats::default(),
        }
    }

    /// Whether `route` goes layered under `mode`: `Ok(None)` yes, `Ok(Some(why))` GhostMesh's
    /// format (and why), `Err` when layered was required and is impossible.
    ///
    /// [`RouteMode::Auto`] falls back to GhostMesh's readable format only toward a peer that
    /// never announced layered onion; between peers that did, a route or payload that does not
    /// fit a layered packet is an error (choose [`RouteMode::Compat`] to send it readable).
    fn choose(
        &self,
        route: &[PeerId],
        payload: &Payload,
        mode: RouteMode,
    ) -> Result<Option<String>, MeshError> {
        match (mode, self.layered.unfit(route, payload)) {
            (RouteMode::Compat, _) => Ok(Some("GhostMesh format requested".into())),
            (_, None) => Ok(None),
            (RouteMode::Auto, Some(Unfit::NoCapability(why))) => Ok(Some(why)),
            (RouteMode::Layered, Some(Unfit::NoCapability(why))) => {
                Err(route_err(format!("layered routing impossible: {why}")))
            }
            (_, Some(Unfit::Impossible(why))) => Err(route_err(format!(
                "layered routing impossible: {why}; every hop speaks layered onion, so only \
                 RouteMode::Compat (readable by relays) may send it"
            ))),
        }
    }

    /// The route to `target`: relays (explicit, or chosen at random among `linked`), then
    /// `target`.
    pub(crate) fn build_route<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        linked: &[PeerId],
        target: &str,
        opts: &RouteOptions,
    ) -> Result<Vec<PeerId>, MeshError> {
        if !packet::is_peer_id(target) {
            return Err(route_err(format!("{target:?} is not a peer id")));
        }
        let mut route: Vec<PeerId> = if opts.through.is_empty() {
            let candidates: Vec<&PeerId> = linked
                .iter()
                .filter(|p| p.as_str() != target && **p != self.me)
                .collect();
            if candidates.len() < opts.hops {
                return Err(route_err(format!(
                    "{} relays wanted, {} linked peers can relay",
                    opts.hops,
                    candidates.len()
                )));
            }
            rand::seq::index::sample(rng, candidates.len(), opts.hops)
                .into_iter()
                .map(|i| candidates[i].clone())
                .collect()
        } else {
            opts.through.clone()
        };
        if route.len() > self.cfg.max_hops {
            return Err(route_err(format!(
                "{} relays, max_hops is {}",
                route.len(),
                self.cfg.max_hops
            )));
        }
        route.push(target.to_owned());
        for (i, hop) in route.iter().enumerate() {
            if !packet::is_peer_id(hop) || *hop == self.me || route[..i].contains(hop) {
                return Err(route_err(format!(
                    "bad route: {hop:?} is not a peer id, is us, or repeats"
                )));
            }
        }
        if !linked.contains(&route[0]) {
            return Err(MeshError::Send(crate::node::SendError::NoLink));
        }
        Ok(route)
    }

    /// Whether a message like `payload` can be routed to `target` now: the route can be built
    /// and the format chosen (`Err` as [`onion`](Self::onion) would fail).
    pub(crate) fn check_route<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        linked: &[PeerId],
        target: &str,
        payload: &Payload,
        opts: &RouteOptions,
    ) -> Result<(), MeshError> {
        let route = self.build_route(rng, linked, target, opts)?;
        self.choose(&route, payload, opts.mode).map(|_| ())
    }

    /// A one-way onion message to `target`.
    pub(crate) fn onion<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        linked: &[PeerId],
        target: &str,
        payload: &Payload,
        opts: &RouteOptions,
    ) -> Result<(Action, RouteInfo), MeshError> {
        let route = self.build_route(rng, linked, target, opts)?;
        let circuit_id = packet_id(rng);
        let fallback = self.choose(&route, payload, opts.mode)?;
        let action = if fallback.is_none() {
            let (first, frame) = self
                .layered
                .onion(rng, &route, payload, opts.mean_delay)
                .map_err(route_err)?;
            Action::SendBinary(first, frame)
        } else {
            Action::Send(route[0].clone(), packet::wrap(&circuit_id, &route, payload))
        };
        let info = RouteInfo {
            circuit_id,
            route,
            layered: fallback.is_none(),
            fallback: fallback.filter(|_| opts.mode == RouteMode::Auto),
        };
        Ok((action, info))
    }

    /// A routed request to `target`, answered through the reply route.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn request<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        now: Instant,
        timeout: Duration,
        linked: &[PeerId],
        target: &str,
        payload: &Payload,
        opts: &RouteOptions,
        reply: oneshot::Sender<Result<Payload, MeshError>>,
    ) -> Option<(Action, RouteInfo)> {
        if self.pending.len() >= self.cfg.max_pending {
            let _ = reply.send(Err(route_err(format!(
                "{} routed requests already pending (max_pending)",
                self.cfg.max_pending
            ))));
            return None;
        }
        let route = match self.build_route(rng, linked, target, opts) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return None;
            }
        };
        let (circuit_id, request_id) = (packet_id(rng), packet_id(rng));
        let choice = self.choose(&route, payload, opts.mode);
        let fallback = match &choice {
            Ok(Some(why)) if opts.mode == RouteMode::Auto => Some(why.clone()),
            _ => None,
        };
        let layered = matches!(choice, Ok(None));
        let action = match choice {
            Err(e) => {
                let _ = reply.send(Err(e));
                return None;
            }
            Ok(None) => {
                let me = self.me.clone();
                match self
                    .layered
                    .request(rng, &me, &route, &request_id, payload, opts.mean_delay)
                {
                    Ok((first, frame)) => Action::SendBinary(first, frame),
                    Err(e) => {
                        let _ = reply.send(Err(route_err(e)));
                        return None;
                    }
                }
            }
            Ok(Some(_)) => {
                let mut reply_route: Vec<PeerId> =
                    route[..route.len() - 1].iter().rev().cloned().collect();
                reply_route.push(self.me.clone());
                let body = packet::route_request(
                    &circuit_id,
                    &request_id,
                    &self.me,
                    &reply_route,
                    payload,
                );
                Action::Send(
                    route[0].clone(),
                    packet::wrap(&circuit_id, &route, &Payload::Json(body)),
                )
            }
        };
        let info = RouteInfo {
            circuit_id,
            route,
            layered,
            fallback,
        };
        self.pending.insert(
            request_id,
            Pending {
                reply,
                deadline: now + timeout,
            },
        );
        self.layered.retain_replies(self.cfg.max_pending);
        Some((action, info))
    }

    /// The response to a routed request, along its reply route.
    pub(crate) fn respond<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        linked: &[PeerId],
        reply: &RoutedReply,
        payload: &Payload,
    ) -> Result<Action, MeshError> {
        if let Some(block) = &reply.block {
            let (first, frame) = self
                .layered
                .respond(rng, block, &reply.request_id, payload)
                .map_err(route_err)?;
            if !linked.contains(&first) {
                return Err(MeshError::Send(crate::node::SendError::NoLink));
            }
            return Ok(Action::SendBinary(first, frame));
        }
        let first = reply
            .reply_route
            .first()
            .ok_or_else(|| route_err("empty reply route".into()))?;
        if !linked.contains(first) {
            return Err(MeshError::Send(crate::node::SendError::NoLink));
        }
        let body = packet::route_response(&reply.circuit_id, &reply.request_id, &self.me, payload);
        let p = packet::wrap(&reply.circuit_id, &reply.reply_route, &Payload::Json(body));
        Ok(Action::Send(first.clone(), p))
    }

    /// When the next routed request times out or a delayed layered packet is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let pending = self.pending.values().map(|p| p.deadline).min();
        [pending, self.layered.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Times out routed requests past their deadline; returns delayed packets now due.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Action> {
        let due = self
            .layered
            .due(now)
            .into_iter()
            .map(|(p, f)| Action::SendBinary(p, f))
            .collect();
        self.expire(now);
        due
    }

    fn expire(&mut self, now: Instant) {
        let mut gone = Vec::new();
        self.pending.retain(|id, p| {
            let alive = now < p.deadline;
            if !alive {
                let (tx, _) = oneshot::channel();
                let reply = std::mem::replace(&mut p.reply, tx);
                let _ = reply.send(Err(MeshError::Timeout));
                gone.push(id.clone());
            }
            alive
        });
        for id in gone {
            self.stats.expired_requests += 1;
            self.layered.forget_request(&id);
            self.expired.insert(id);
        }
    }

    /// Whether `payload` is a GhostMesh route-response to a request that timed out.
    fn is_late(&self, payload: &Payload) -> bool {
        let Payload::Json(v) = payload else {
            return false;
        };
        packet::route_kind(v) == Some("route-response")
            && v.get("requestId")
                .and_then(Value::as_str)
                .is_some_and(|id| {
                    self.expired.contains(&id.to_owned()) && !self.pending.contains_key(id)
                })
    }

    /// The mesh stops: pending requests fail.
    pub(crate) fn shutdown(&mut self) {
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(MeshError::Stopped));
        }
    }

    /// An onion packet from the neighbour `peer`.
    pub(crate) fn on_packet(
        &mut self,
        peer: &PeerId,
        v: &Value,
        linked: impl Fn(&str) -> bool,
    ) -> Option<Action> {
        let size = v
            .get("payload")
            .or_else(|| v.get("msg"))
            .and_then(Value::as_str)
            .map_or(0, str::len);
        if size > self.cfg.max_packet_bytes {
            self.stats.dropped_too_large += 1;
            return None;
        }
        let Some(ttl) = v.get("ttl").and_then(Value::as_i64) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        let circuit_id = v
            .get("circuitId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match v.get(packet::ONION_KEY).and_then(Value::as_str) {
            Some("onion-forward") => {
                if ttl <= 0 {
                    self.stats.dropped_ttl += 1;
                    return None;
                }
                let Some(next) = v
                    .get("nextPeerId")
                    .and_then(Value::as_str)
                    .filter(|n| packet::is_peer_id(n))
                else {
                    self.stats.dropped_malformed += 1;
                    return None;
                };
                if next == self.me {
                    self.stats.dropped_loop += 1;
                    return None;
                }
                if !linked(next) {
                    self.stats.dropped_unknown_next += 1;
                    return None;
                }
                let Some(inner) = packet::unwrap_forward(v, ttl) else {
                    self.stats.dropped_malformed += 1;
                    return None;
                };
                self.stats.forwarded += 1;
                Some(Action::Send(next.to_owned(), inner))
            }
            Some("onion-deliver") => {
                if ttl <= 0 {
                    self.stats.dropped_ttl += 1;
                    return None;
                }
                let Some(payload) = packet::msg_payload(v) else {
                    self.stats.dropped_malformed += 1;
                    return None;
                };
                if self.is_late(&payload) {
                    self.stats.late_responses += 1;
                    return None;
                }
                self.stats.delivered += 1;
                self.delivered(peer, circuit_id, payload)
            }
            _ => {
                self.stats.dropped_malformed += 1;
                None
            }
        }
    }

    fn delivered(&mut self, peer: &PeerId, circuit_id: String, payload: Payload) -> Option<Action> {
        let body = match &payload {
            Payload::Json(v) => packet::route_kind(v).map(|k| (k, v)),
            Payload::Text(_) => None,
        };
        match body {
            Some(("route-request", v)) => {
                let request_id = v.get("requestId").and_then(Value::as_str);
                let origin = v.get("originPeerId").and_then(Value::as_str);
                let route: Option<Vec<PeerId>> =
                    v.get("replyRoute").and_then(Value::as_array).and_then(|a| {
                        a.iter()
                            .map(|p| {
                                p.as_str()
                                    .filter(|s| packet::is_peer_id(s))
                                    .map(str::to_owned)
                            })
                            .collect()
                    });
                let (Some(request_id), Some(origin), Some(reply_route), Some(inner)) =
                    (request_id, origin, route, packet::msg_payload(v))
                else {
                    self.stats.dropped_malformed += 1;
                    return None;
                };
                if reply_route.is_empty() || reply_route.len() > self.cfg.max_hops + 1 {
                    self.stats.dropped_hops += 1;
                    return None;
                }
                let info = RouteInfo {
                    circuit_id: circuit_id.clone(),
                    route: reply_route.iter().rev().cloned().collect(),
                    layered: false,
                    fallback: None,
                };
                Some(Action::Deliver(Box::new(OnionMessage {
                    from: origin.to_owned(),
                    payload: inner,
                    info,
                    reply: Some(RoutedReply {
                        circuit_id,
                        request_id: request_id.to_owned(),
                        reply_route,
                        block: None,
                    }),
                })))
            }
            Some((_, v)) => {
                let request_id = v
                    .get("requestId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match (self.pending.remove(request_id), packet::msg_payload(v)) {
                    (Some(p), Some(inner)) => {
                        let _ = p.reply.send(Ok(inner));
                    }
                    _ => self.stats.unmatched_responses += 1,
                }
                None
            }
            None => Some(Action::Deliver(Box::new(OnionMessage {
                from: peer.clone(),
                payload,
                info: RouteInfo {
                    circuit_id,
                    route: Vec::new(),
                    layered: false,
                    fallback: None,
                },
                reply: None,
            }))),
        }
    }

    /// A binary frame from `peer` that is a hello or a layered packet (see
    /// [`layered::HELLO_MAGIC`], [`layered::ONION_MAGIC`]); `None` when it is neither.
    pub(crate) fn on_binary(
        &mut self,
        now: Instant,
        peer: &PeerId,
        frame: &[u8],
        linked: impl Fn(&str) -> bool,
    ) -> Option<Option<Action>> {
        if frame.starts_with(&layered::HELLO_MAGIC) {
            if self.layered.on_hello(peer, frame).is_err() {
                self.stats.dropped_malformed += 1;
            }
            return Some(None);
        }
        if !frame.starts_with(&layered::ONION_MAGIC) {
            return None;
        }
        let me = self.me.clone();
        let action = self
            .layered
            .on_frame(now, &me, frame, &mut self.stats, linked);
        Some(action.and_then(|a| match a {
            LayeredAction::Send(p, f) => Some(Action::SendBinary(p, f)),
            LayeredAction::Deliver(payload, reply) => {
                Some(Action::Deliver(Box::new(OnionMessage {
                    from: peer.clone(),
                    payload,
                    info: RouteInfo {
                        circuit_id: String::new(),
                        route: Vec::new(),
                        layered: true,
                        fallback: None,
                    },
                    reply,
                })))
            }
            LayeredAction::Response(id, payload) => {
                match self.pending.remove(&id) {
                    Some(p) => {
                        let _ = p.reply.send(Ok(payload));
                    }
                    None => self.stats.unmatched_responses += 1,
                }
                None
            }
        }))
    }
}
