//! The sans-IO message layer of one peer: requests, responses, timeouts and bounds, above
//! the data-channel links and the P2PT envelope of [`wire`](crate::wire).
//!
//! A [`Node`] is driven by its shell: it is told when a link to a peer opens or closes
//! ([`Node::link_up`], [`Node::link_down`]), what arrived ([`Node::frame`]), what the
//! application wants to send ([`Node::send`], [`Node::respond`]) and what time it is (every
//! input takes `now`; [`Node::tick`] when [`Node::poll_timeout`] comes due). It answers with
//! frames to write ([`Node::poll_transmit`]) and [`Event`]s ([`Node::poll_event`]). It owns no
//! socket, reads no clock and draws random message ids only from the RNG it is handed, so the
//! same inputs and seed give the same frames.
//!
//! Correlation follows P2PT (ghostmesh-wire.md §3.4): a completed incoming message whose id
//! matches one of our requests to that peer that awaits a response is that request's
//! [`Event::Response`]; any other is an [`Event::Message`]. Ids compare as JavaScript's
//! `String(id)` does, so `123` and `"123"` are the same id. What differs from P2PT, all
//! invisible to a JavaScript peer:
//!
//! * every incoming message has its own [`MessageHandle`], so answers cannot be crossed
//!   (the `peer.respond` race, §5.1.1);
//! * only [`Node::send`] and [`Node::respond_expecting_reply`] wait for a response;
//!   [`Node::send_no_reply`] and [`Node::respond`] register nothing, so fire-and-forget
//!   messages leak nothing and cannot swallow a later incoming message (§5.1.2);
//! * requests time out ([`NodeConfig::request_timeout`]) and fail when the link goes down;
//! * everything is bounded ([`NodeConfig`]), and bad frames become
//!   [`Event::ProtocolError`]s instead of log lines (§5.1.7).

mod config;
mod error;
mod event;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::wire::{MsgId, Payload, Reassembler, Received, WireError, encode_msg_chunks};

pub use config::NodeConfig;
pub use error::SendError;
pub use event::{Event, MessageHandle, RawFrame, RequestId};

/// Counters of what a [`Node`] has seen, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Incoming messages that were not responses ([`Event::Message`]).
    pub messages: u64,
    /// Responses to our requests ([`Event::Response`]).
    pub responses: u64,
    /// Requests that timed out ([`Event::Timeout`]).
    pub timeouts: u64,
    /// Requests failed by a link going down ([`Event::PeerFailed`]).
    pub peer_failures: u64,
    /// Frames that were not envelopes ([`Event::Raw`]).
    pub raw_frames: u64,
    /// Rejected envelope frames ([`Event::ProtocolError`]).
    pub protocol_errors: u64,
    /// Unfinished incoming messages dropped because no chunk came for
    /// [`ReassemblyLimits::partial_timeout`](crate::wire::ReassemblyLimits::partial_timeout).
    pub partials_expired: u64,
    /// Queued frames dropped unsent because their peer's link went down.
    pub frames_dropped: u64,
}

/// A request of ours that awaits a response.
#[derive(Debug)]
struct Pending<P> {
    peer: P,
    key: String,
    deadline: Option<Instant>,
}

/// What we keep per peer with an open link.
#[derive(Debug)]
struct PeerState {
    queue: VecDeque<String>,
    queued_bytes: usize,
    /// The peer is in `Node::ready`.
    scheduled: bool,
    /// Correlation key (JavaScript's `String(id)`) to request.
    pending: HashMap<String, RequestId>,
}

impl PeerState {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            queued_bytes: 0,
            scheduled: false,
            pending: HashMap::new(),
        }
    }
}

/// The sans-IO core of one mesh peer: the P2PT message layer above its data-channel links.
///
/// `P` names a remote peer, typically its 40-hex-character peer id; all data channels to
/// one peer share one key. See the [module documentation](self) for the model.
///
/// Two nodes wired back to back, one asking and the other answering:
///
/// ```
/// use std::time::Instant;
/// use rand::SeedableRng;
/// use ghostmesh::node::{Event, Node, NodeConfig};
/// use ghostmesh::wire::Payload;
///
/// let mut rng = rand::rngs::StdRng::seed_from_u64(7);
/// let now = Instant::now();
/// let mut alice = Node::new(NodeConfig::default());
/// let mut bob = Node::new(NodeConfig::default());
/// alice.link_up("bob");
/// bob.link_up("alice");
///
/// let request = alice.send(now, &"bob", Payload::from("ping"), &mut rng)?;
/// while let Some((to, frame)) = alice.poll_transmit() {
///     assert_eq!(to, "bob");
///     bob.frame(now, &"alice", &frame);
/// }
/// let Some(Event::Message { handle, payload, .. }) = bob.poll_event() else { panic!() };
/// assert_eq!(payload, Payload::from("ping"));
/// bob.respond(now, &handle, serde_json::json!({"pong": true}).into())?;
/// while let Some((_, frame)) = bob.poll_transmit() {
///     alice.frame(now, &"bob", &frame);
/// }
/// match alice.poll_event() {
///     Some(Event::Response { request: r, payload, .. }) => {
///         assert_eq!(r, request);
///         assert_eq!(payload, Payload::Json(serde_json::json!({"pong": true})));
///     }
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(alice.pending_count(), 0);
/// # Ok::<(), ghostmesh::node::SendError>(())
/// ```
#[derive(Debug)]
pub struct Node<P> {
    config: NodeConfig,
    reassembler: Reassembler<P>,
    /// Peers with an open link.
    peers: HashMap<P, PeerState>,
    /// Peers with queued frames, in the order `poll_transmit` serves them.
    ready: VecDeque<P>,
    requests: HashMap<RequestId, Pending<P>>,
    deadlines: BTreeSet<(Instant, RequestId)>,
    next_request: u64,
    events: VecDeque<Event<P>>,
    stats: NodeStats,
}

impl<P: Clone + Eq + Hash> Default for Node<P> {
    fn default() -> Self {
        Self::new(NodeConfig::default())
    }
}

/// The key P2PT's `responseWaiting[peer.id]` uses: JavaScript's `String(id)`.
fn correlation_key(id: &MsgId) -> String {
    match id {
        MsgId::Int(n) => n.to_string(),
        MsgId::Str(s) => s.clone(),
        MsgId::Other(raw) => raw.as_json().to_owned(),
    }
}

/// How many random draws to try before scanning for a free id.
const ID_DRAWS: usize = 64;

impl<P: Clone + Eq + Hash> Node<P> {
    /// A node with no links.
    pub fn new(config: NodeConfig) -> Self {
        Self {
            reassembler: Reassembler::new(config.reassembly.clone()),
            config,
            peers: HashMap::new(),
            ready: VecDeque::new(),
            requests: HashMap::new(),
            deadlines: BTreeSet::new(),
            next_request: 0,
            events: VecDeque::new(),
            stats: NodeStats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Counters, for metrics.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// The reassembler of incoming messages (for its counters).
    pub fn reassembler(&self) -> &Reassembler<P> {
        &self.reassembler
    }

    /// A link (data channel) to `peer` opened. Idempotent.
    pub fn link_up(&mut self, peer: P) {
        self.peers.entry(peer).or_insert_with(PeerState::new);
    }

    /// The link to `peer` closed: its requests that await a response fail
    /// ([`Event::PeerFailed`], in the order they were sent), its queued frames are dropped
    /// and its unfinished incoming messages are forgotten.
    pub fn link_down(&mut self, peer: &P) {
        self.reassembler.remove_peer(peer);
        let Some(state) = self.peers.remove(peer) else {
            return;
        };
        self.stats.frames_dropped += state.queue.len() as u64;
        if state.scheduled {
            self.ready.retain(|p| p != peer);
        }
        let mut failed: Vec<RequestId> = state.pending.into_values().collect();
        failed.sort_unstable();
        for request in failed {
            if let Some(pending) = self.requests.remove(&request) {
                if let Some(deadline) = pending.deadline {
                    self.deadlines.remove(&(deadline, request));
                }
                self.stats.peer_failures += 1;
                self.events.push_back(Event::PeerFailed {
                    peer: pending.peer,
                    request,
                });
            }
        }
    }

    /// Whether a link to `peer` is open.
    pub fn is_linked(&self, peer: &P) -> bool {
        self.peers.contains_key(peer)
    }

    /// A text frame arrived from `peer` at `now`.
    ///
    /// Requests whose deadline is `now` or earlier time out first, so a response that
    /// arrives at or after its deadline is not a response any more.
    pub fn frame(&mut self, now: Instant, peer: &P, data: &str) {
        self.expire_requests(now);
        let received = self.reassembler.push(peer, data, now);
        self.on_received(peer, received, || RawFrame::Text(data.to_owned()));
    }

    /// A binary frame arrived from `peer` at `now`. JavaScript decodes binary frames as UTF-8
    /// (lossily), and so does this.
    pub fn frame_bytes(&mut self, now: Instant, peer: &P, data: &[u8]) {
        self.expire_requests(now);
        let received = self.reassembler.push_bytes(peer, data, now);
        self.on_received(peer, received, || RawFrame::Binary(data.to_vec()));
    }

    fn on_received(
        &mut self,
        peer: &P,
        received: Result<Received, WireError>,
        raw: impl FnOnce() -> RawFrame,
    ) {
        match received {
            Ok(Received::Raw) => {
                self.stats.raw_frames += 1;
                self.events.push_back(Event::Raw {
                    peer: peer.clone(),
                    data: raw(),
                });
            }
            Ok(Received::Partial { .. }) => {}
            Ok(Received::Complete(message)) => {
                let handle = MessageHandle {
                    peer: peer.clone(),
                    id: message.id,
                };
                let request = self
                    .peers
                    .get_mut(peer)
                    .and_then(|state| state.pending.remove(&correlation_key(&handle.id)));
                let event = match request {
                    Some(request) => {
                        if let Some(pending) = self.requests.remove(&request) {
                            if let Some(deadline) = pending.deadline {
                                self.deadlines.remove(&(deadline, request));
                            }
                        }
                        self.stats.responses += 1;
                        Event::Response {
                            peer: peer.clone(),
                            request,
                            handle,
                            payload: message.payload,
                        }
                    }
                    None => {
                        self.stats.messages += 1;
                        Event::Message {
                            peer: peer.clone(),
                            handle,
                            payload: message.payload,
                        }
                    }
                };
                self.events.push_back(event);
            }
            Err(error) => {
                self.stats.protocol_errors += 1;
                self.events.push_back(Event::ProtocolError {
                    peer: peer.clone(),
                    error,
                });
            }
        }
    }

    /// Sends `payload` to `peer` as a new message and waits
    /// [`NodeConfig::request_timeout`] for a response.
    ///
    /// The message id is drawn from `rng` in P2PT's range (100000–199999) and is not in use
    /// by another of our requests to this peer.
    pub fn send<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        peer: &P,
        payload: Payload,
        rng: &mut R,
    ) -> Result<RequestId, SendError> {
        self.send_with_timeout(now, peer, payload, self.config.request_timeout, rng)
    }

    /// [`send`](Self::send) with its own timeout (`Duration::MAX`: none).
    pub fn send_with_timeout<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        peer: &P,
        payload: Payload,
        timeout: Duration,
        rng: &mut R,
    ) -> Result<RequestId, SendError> {
        let (_, request) =
            self.enqueue(now, peer, IdChoice::Fresh(rng), &payload, Some(timeout))?;
        request.ok_or(SendError::IdsExhausted)
    }

    /// Sends `payload` to `peer` as a new message that expects no response: nothing waits
    /// for one, so an incoming message that reuses the id is an [`Event::Message`]. Returns
    /// the id used.
    pub fn send_no_reply<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        peer: &P,
        payload: Payload,
        rng: &mut R,
    ) -> Result<MsgId, SendError> {
        self.enqueue(now, peer, IdChoice::Fresh(rng), &payload, None)
            .map(|(id, _)| id)
    }

    /// Answers the message `handle` names, under its id. Expects nothing back; see
    /// [`respond_expecting_reply`](Self::respond_expecting_reply) to continue a conversation.
    pub fn respond(
        &mut self,
        now: Instant,
        handle: &MessageHandle<P>,
        payload: Payload,
    ) -> Result<(), SendError> {
        self.enqueue::<rand::rngs::StdRng>(
            now,
            &handle.peer,
            IdChoice::Given(&handle.id),
            &payload,
            None,
        )
        .map(|_| ())
    }

    /// Answers the message `handle` names, under its id, and waits
    /// [`NodeConfig::request_timeout`] for the peer to answer in turn under the same id (P2PT's
    /// chained conversations).
    pub fn respond_expecting_reply(
        &mut self,
        now: Instant,
        handle: &MessageHandle<P>,
        payload: Payload,
    ) -> Result<RequestId, SendError> {
        let (_, request) = self.enqueue::<rand::rngs::StdRng>(
            now,
            &handle.peer,
            IdChoice::Given(&handle.id),
            &payload,
            Some(self.config.request_timeout),
        )?;
        request.ok_or(SendError::IdsExhausted)
    }

    /// Stops waiting for a response to `request`, with no event. A response that still
    /// arrives will be an [`Event::Message`]. Returns whether the request was waiting.
    pub fn cancel(&mut self, request: RequestId) -> bool {
        let Some(pending) = self.requests.remove(&request) else {
            return false;
        };
        if let Some(deadline) = pending.deadline {
            self.deadlines.remove(&(deadline, request));
        }
        if let Some(state) = self.peers.get_mut(&pending.peer) {
            state.pending.remove(&pending.key);
        }
        true
    }

    fn enqueue<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        peer: &P,
        id: IdChoice<'_, R>,
        payload: &Payload,
        expect_reply: Option<Duration>,
    ) -> Result<(MsgId, Option<RequestId>), SendError> {
        self.expire_requests(now);
        let config = &self.config;
        let state = self.peers.get_mut(peer).ok_or(SendError::NoLink)?;
        let text = payload.msg_text();
        let units = text.encode_utf16().count();
        if units > config.max_message_units {
            return Err(SendError::TooLarge {
                units,
                limit: config.max_message_units,
            });
        }
        if expect_reply.is_some() {
            if state.pending.len() >= config.max_pending_per_peer {
                return Err(SendError::TooManyPendingForPeer {
                    limit: config.max_pending_per_peer,
                });
            }
            if self.requests.len() >= config.max_pending {
                return Err(SendError::TooManyPending {
                    limit: config.max_pending,
                });
            }
        }
        let id = match id {
            IdChoice::Given(id) => {
                if expect_reply.is_some() && state.pending.contains_key(&correlation_key(id)) {
                    return Err(SendError::IdInUse { id: id.clone() });
                }
                id.clone()
            }
            IdChoice::Fresh(rng) => fresh_id(&state.pending, rng)?,
        };
        let frames = encode_msg_chunks(&id, &text, payload.is_json(), config.max_chunk_units);
        let bytes: usize = frames.iter().map(String::len).sum();
        if state.queue.len().saturating_add(frames.len()) > config.max_queued_frames_per_peer
            || state.queued_bytes.saturating_add(bytes) > config.max_queued_bytes_per_peer
        {
            return Err(SendError::Backpressure {
                queued_frames: state.queue.len(),
                queued_bytes: state.queued_bytes,
                frames: frames.len(),
                bytes,
            });
        }
        state.queued_bytes += bytes;
        state.queue.extend(frames);
        if !state.scheduled {
            state.scheduled = true;
            self.ready.push_back(peer.clone());
        }
        let request = expect_reply.map(|timeout| {
            self.next_request += 1;
            let request = RequestId(self.next_request);
            let key = correlation_key(&id);
            state.pending.insert(key.clone(), request);
            let deadline = now.checked_add(timeout);
            if let Some(deadline) = deadline {
                self.deadlines.insert((deadline, request));
            }
            self.requests.insert(
                request,
                Pending {
                    peer: peer.clone(),
                    key,
                    deadline,
                },
            );
            request
        });
        Ok((id, request))
    }

    /// The next frame to write: the peer's link and the text frame. Frames of one peer come
    /// in the order they were queued; peers take turns, one frame each.
    pub fn poll_transmit(&mut self) -> Option<(P, String)> {
        while let Some(peer) = self.ready.pop_front() {
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            let Some(frame) = state.queue.pop_front() else {
                state.scheduled = false;
                continue;
            };
            state.queued_bytes -= frame.len();
            if state.queue.is_empty() {
                state.scheduled = false;
            } else {
                self.ready.push_back(peer.clone());
            }
            return Some((peer, frame));
        }
        None
    }

    /// The next frame to write to one peer, for a shell that drains each link at its own
    /// pace (for example while the channel's `bufferedAmount` is low).
    pub fn poll_transmit_to(&mut self, peer: &P) -> Option<String> {
        let state = self.peers.get_mut(peer)?;
        let frame = state.queue.pop_front()?;
        state.queued_bytes -= frame.len();
        Some(frame)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event<P>> {
        self.events.pop_front()
    }

    /// When [`tick`](Self::tick) should next be called, if anything is waiting for time.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let request = self.deadlines.first().map(|&(deadline, _)| deadline);
        match (request, self.reassembler.next_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: requests whose deadline is `now` or earlier time out
    /// ([`Event::Timeout`], earliest deadline first) and stale unfinished incoming messages
    /// are dropped.
    pub fn tick(&mut self, now: Instant) {
        self.expire_requests(now);
        self.stats.partials_expired += self.reassembler.expire(now).len() as u64;
    }

    fn expire_requests(&mut self, now: Instant) {
        while let Some(&(deadline, request)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(pending) = self.requests.remove(&request) else {
                continue;
            };
            if let Some(state) = self.peers.get_mut(&pending.peer) {
                state.pending.remove(&pending.key);
            }
            self.stats.timeouts += 1;
            self.events.push_back(Event::Timeout {
                peer: pending.peer,
                request,
            });
        }
    }

    /// Requests awaiting a response, across all peers.
    pub fn pending_count(&self) -> usize {
        self.requests.len()
    }

    /// Requests awaiting a response from `peer`.
    pub fn peer_pending_count(&self, peer: &P) -> usize {
        self.peers.get(peer).map_or(0, |s| s.pending.len())
    }

    /// Frames queued for `peer` and not yet taken.
    pub fn queued_frames(&self, peer: &P) -> usize {
        self.peers.get(peer).map_or(0, |s| s.queue.len())
    }

    /// Bytes queued for `peer` and not yet taken.
    pub fn queued_bytes(&self, peer: &P) -> usize {
        self.peers.get(peer).map_or(0, |s| s.queued_bytes)
    }
}

/// Where a message's id comes from.
enum IdChoice<'a, R: ?Sized> {
    /// A response: the id of the message answered.
    Given(&'a MsgId),
    /// A new message: drawn from the RNG.
    Fresh(&'a mut R),
}

/// A P2PT id no request to this peer is waiting under: random draws first, then (when the
/// peer has nearly exhausted the range) a scan from the last draw.
fn fresh_id<R: Rng + ?Sized>(
    pending: &HashMap<String, RequestId>,
    rng: &mut R,
) -> Result<MsgId, SendError> {
    let mut start = MsgId::P2PT_MIN;
    for _ in 0..ID_DRAWS {
        let id = MsgId::p2pt(rng.next_u32());
        if !pending.contains_key(&correlation_key(&id)) {
            return Ok(id);
        }
        if let MsgId::Int(n) = id {
            start = n;
        }
    }
    let span = MsgId::P2PT_MAX - MsgId::P2PT_MIN + 1;
    (0..span)
        .map(|offset| MsgId::Int(MsgId::P2PT_MIN + (start - MsgId::P2PT_MIN + offset) % span))
        .find(|id| !pending.contains_key(&correlation_key(id)))
        .ok_or(SendError::IdsExhausted)
}
