//! The core task: one [`Node`] over every link, fed by commands (from [`MeshHandle`]s) and
//! network input (from link readers and tracker tasks), emitting [`MeshEvent`]s through a
//! bounded backlog.
//!
//! [`MeshHandle`]: super::MeshHandle

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{EVENT_BACKLOG, Limits, MeshError, MeshEvent, PeerId, ResponseHandle};
use crate::file::packet::{is_fast, is_file_packet};
use crate::file::session::{Direction, Info, RandomAccess, State};
use crate::file::transfers::{FileMsg, Transfers};
use crate::file::{FileError, FileSession, FileStatus, ROUTED_PEER, RangeSet, transfer_id};
use crate::hidden::HiddenMsg;
use crate::hidden::packet::{self as hidden, kind as hidden_kind};
use crate::hidden::service::Reply as HiddenReplyTo;
use crate::node::{Event, Node, RequestId};
use crate::relay::{self, Relay, RelayConfig, RouteInfo, RouteOptions, RoutedReply};
use crate::transport::{Frame, Link, LinkError};
use crate::wire::{MAX_CHUNK_UNITS, MsgId, Payload, encode_chunks};

/// What [`MeshHandle`](super::MeshHandle)s ask of the core.
pub(crate) enum CoreMsg {
    Send {
        peer: PeerId,
        payload: Payload,
        timeout: Option<Duration>,
        reply: oneshot::Sender<Result<Payload, MeshError>>,
    },
    SendNoReply {
        peer: PeerId,
        payload: Payload,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Respond {
        handle: ResponseHandle,
        payload: Payload,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    Peers(oneshot::Sender<Vec<PeerId>>),
    SendFile {
        peer: PeerId,
        request: OutgoingFile,
        reply: oneshot::Sender<Result<NewOutgoing, MeshError>>,
    },
    FileStats(oneshot::Sender<crate::file::FileStats>),
    SendOnion {
        target: PeerId,
        payload: Payload,
        route: Option<RouteOptions>,
        reply: oneshot::Sender<Result<RouteInfo, MeshError>>,
    },
    SendRouted {
        target: PeerId,
        payload: Payload,
        route: Option<RouteOptions>,
        timeout: Option<Duration>,
        info: Option<oneshot::Sender<RouteInfo>>,
        reply: oneshot::Sender<Result<Payload, MeshError>>,
    },
    RespondRouted {
        to: RoutedReply,
        payload: Payload,
        reply: oneshot::Sender<Result<(), MeshError>>,
    },
    RelayStats(oneshot::Sender<relay::RelayStats>),
    Stop(oneshot::Sender<()>),
}

/// An outgoing file, as the handle resolved it.
pub(crate) struct OutgoingFile {
    pub(crate) name: Option<String>,
    pub(crate) mime_type: String,
    pub(crate) size: u64,
    pub(crate) chunk_size: u64,
    pub(crate) metadata: Option<serde_json::Value>,
    pub(crate) source: Option<RandomAccess>,
}

/// What the handle needs to start the sender task.
pub(crate) struct NewOutgoing {
    pub(crate) session: FileSession,
    pub(crate) seed: u64,
    pub(crate) tx: mpsc::Sender<FileMsg>,
    pub(crate) fast_frame_bytes: u64,
    /// Routing defaults are set: every packet goes through relays (no fast path).
    pub(crate) routed: bool,
}

/// What links and tracker tasks tell the core.
pub(crate) enum NetMsg {
    NewLink(PeerId, Box<dyn Link>),
    Frame(PeerId, Frame),
    LinkClosed(PeerId, u64),
    /// A link's writer emptied its queue: move more frames.
    Drained,
    /// An event from a tracker task, passed on in order with the others.
    Event(Box<MeshEvent>),
}

impl fmt::Debug for CoreMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CoreMsg")
    }
}

/// Why the core loop woke up.
enum Wake {
    Command(Option<CoreMsg>),
    Room(Option<mpsc::OwnedPermit<MeshEvent>>),
    Net(Option<NetMsg>),
    File(Option<FileMsg>),
    Timer,
}

/// Frames handed to one link's writer task and not yet written.
const WRITER_QUEUE: usize = 16;
/// Bytes handed to one link's writer task and not yet written: the core stops handing over
/// at this mark (one frame always goes to an empty writer), so the writer's queue holds about
/// as many bytes whatever the frame size (16 frames of 240 KiB would be 3.75 MiB per link).
const WRITER_BYTES: usize = 1 << 20;

/// What a link's writer task holds, shared with the core.
#[derive(Default)]
struct WriterGauge {
    /// Bytes handed over and not yet written.
    bytes: AtomicUsize,
    /// The core stopped handing over (the writer was full): the writer sends one
    /// [`NetMsg::Drained`] once it is down to half, instead of one per frame or per batch.
    waiting: AtomicBool,
}

impl WriterGauge {
    fn full(&self, writer: &mpsc::Sender<Frame>) -> bool {
        writer.capacity() == 0 || self.bytes.load(Ordering::SeqCst) >= WRITER_BYTES
    }
}

struct LinkEntry {
    id: u64,
    link: Arc<dyn Link>,
    writer: mpsc::Sender<Frame>,
    gauge: Arc<WriterGauge>,
    tasks: [JoinHandle<()>; 2],
}

/// The core's channels: commands in, network input in (and a sender for link tasks), events
/// out.
pub(crate) struct Channels {
    pub(crate) cmd_rx: mpsc::Receiver<CoreMsg>,
    pub(crate) net_rx: mpsc::Receiver<NetMsg>,
    pub(crate) net_tx: mpsc::Sender<NetMsg>,
    pub(crate) events: mpsc::Sender<MeshEvent>,
}

pub(crate) struct Core {
    node: Node<PeerId>,
    rng: StdRng,
    cmd_rx: mpsc::Receiver<CoreMsg>,
    net_rx: mpsc::Receiver<NetMsg>,
    net_tx: mpsc::Sender<NetMsg>,
    events: mpsc::Sender<MeshEvent>,
    /// Events not yet taken by the application's queue; reading frames pauses while this
    /// holds [`EVENT_BACKLOG`] (one frame adds only a few).
    backlog: VecDeque<MeshEvent>,
    peers: HashMap<PeerId, Vec<LinkEntry>>,
    next_link: u64,
    pending: HashMap<RequestId, oneshot::Sender<Result<Payload, MeshError>>>,
    limits: Limits,
    transfers: Transfers,
    file_rx: mpsc::Receiver<FileMsg>,
    relay: Relay,
    /// Routing applied to plain sends, when set.
    routing: Option<RouteOptions>,
    /// Hidden-service packets go to the hidden-service task.
    hidden: Arc<crate::hidden::Shared>,
}

/// Routing settings handed to the core.
pub(crate) struct Routing {
    pub(crate) me: PeerId,
    pub(crate) defaults: Option<RouteOptions>,
    pub(crate) config: RelayConfig,
}

impl Core {
    pub(crate) fn new(
        node: Node<PeerId>,
        mut rng: StdRng,
        channels: Channels,
        limits: Limits,
        files: crate::file::FileConfig,
        routing: Routing,
        hidden: Arc<crate::hidden::Shared>,
    ) -> Self {
        let (file_tx, file_rx) = mpsc::channel(256);
        let transfers = Transfers::new(files, file_tx, rand::Rng::next_u64(&mut rng));
        Core {
            relay: Relay::new(&mut rng, routing.config, routing.me),
            routing: routing.defaults,
            hidden,
            transfers,
            file_rx,
            node,
            rng,
            cmd_rx: channels.cmd_rx,
            net_rx: channels.net_rx,
            net_tx: channels.net_tx,
            events: channels.events,
            backlog: VecDeque::new(),
            peers: HashMap::new(),
            next_link: 0,
            pending: HashMap::new(),
            limits,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            // Events first: handling them may queue frames (file acks, cancels).
            self.collect_events();
            self.flush();
            // Hand over what fits without waiting.
            while let Some(event) = self.backlog.pop_front() {
                match self.events.try_send(event) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(event)) => {
                        self.backlog.push_front(event);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            let reading = self.backlog.len() < EVENT_BACKLOG;
            let deadline = [
                self.node.poll_timeout(),
                self.transfers.poll_timeout(),
                self.relay.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let wake = tokio::select! {
                biased;
                cmd = self.cmd_rx.recv() => Wake::Command(cmd),
                permit = self.events.clone().reserve_owned(), if !self.backlog.is_empty() => {
                    Wake::Room(permit.ok())
                }
                // The core holds a sender itself, so this never yields `None`.
                msg = self.net_rx.recv(), if reading => Wake::Net(msg),
                msg = self.file_rx.recv() => Wake::File(msg),
                () = sleep_until(deadline) => Wake::Timer,
            };
            match wake {
                Wake::Command(None) | Wake::Room(None) => return,
                Wake::Command(Some(cmd)) => {
                    if self.command(cmd).await {
                        return;
                    }
                }
                Wake::Room(Some(permit)) => {
                    if let Some(event) = self.backlog.pop_front() {
                        permit.send(event);
                    }
                }
                Wake::Net(msg) => {
                    if let Some(msg) = msg {
                        self.net(msg);
                    }
                }
                Wake::File(msg) => {
                    if let Some(msg) = msg {
                        self.file_msg(msg);
                    }
                }
                Wake::Timer => {
                    let now = clock_now();
                    self.node.tick(now);
                    self.transfers.tick(now);
                    for action in self.relay.tick(now) {
                        self.act(now, action);
                    }
                    // Timed-out routed transfers' cancels, warnings.
                    self.take_file_warnings();
                }
            }
        }
    }

    /// Handles one command; `true` when the core must end.
    async fn command(&mut self, cmd: CoreMsg) -> bool {
        let now = clock_now();
        match cmd {
            CoreMsg::Send {
                peer,
                payload,
                timeout,
                reply,
            } if self.routing.is_some() => {
                let route = self.routing.clone();
                self.routed(now, peer, payload, route, timeout, None, reply);
            }
            CoreMsg::SendRouted {
                target,
                payload,
                route,
                timeout,
                info,
                reply,
            } => {
                let route = route
                    .or_else(|| self.routing.clone())
                    .or_else(|| Some(RouteOptions::default()));
                self.routed(now, target, payload, route, timeout, info, reply);
            }
            CoreMsg::SendOnion {
                target,
                payload,
                route,
                reply,
            } => {
                let opts = route.or_else(|| self.routing.clone()).unwrap_or_default();
                let linked = self.linked();
                let result = self
                    .relay
                    .onion(&mut self.rng, &linked, &target, &payload, &opts);
                let _ = reply.send(result.map(|(action, info)| {
                    self.act(now, action);
                    info
                }));
            }
            CoreMsg::RespondRouted { to, payload, reply } => {
                let linked = self.linked();
                let result = self.relay.respond(&mut self.rng, &linked, &to, &payload);
                let _ = reply.send(result.map(|action| self.act(now, action)));
            }
            CoreMsg::RelayStats(reply) => {
                let _ = reply.send(self.relay.stats.clone());
            }
            CoreMsg::Send {
                peer,
                payload,
                timeout,
                reply,
            } => match self.node.send_with_timeout(
                now,
                &peer,
                payload,
                timeout.unwrap_or(self.node.config().request_timeout),
                &mut self.rng,
            ) {
                Ok(request) => {
                    self.pending.insert(request, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(MeshError::Send(e)));
                }
            },
            CoreMsg::SendNoReply {
                peer,
                payload,
                reply,
            } => {
                let result = self.node.send_no_reply(now, &peer, payload, &mut self.rng);
                let _ = reply.send(result.map(|_| ()).map_err(MeshError::Send));
            }
            CoreMsg::Respond {
                handle,
                payload,
                reply,
            } => {
                let result = self.node.respond(now, &handle, payload);
                let _ = reply.send(result.map_err(MeshError::Send));
            }
            CoreMsg::Peers(reply) => {
                let mut peers: Vec<PeerId> = self.peers.keys().cloned().collect();
                peers.sort();
                let _ = reply.send(peers);
            }
            CoreMsg::SendFile {
                peer,
                request,
                reply,
            } => {
                let _ = reply.send(self.new_outgoing(peer, request));
            }
            CoreMsg::FileStats(reply) => {
                let _ = reply.send(self.transfers.stats());
            }
            CoreMsg::Stop(reply) => {
                self.transfers.shutdown();
                self.relay.shutdown();
                self.flush();
                for (_, links) in self.peers.drain() {
                    for entry in links {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), entry.link.close()).await;
                        for task in entry.tasks {
                            task.abort();
                        }
                    }
                }
                for (_, reply) in self.pending.drain() {
                    let _ = reply.send(Err(MeshError::Stopped));
                }
                let _ = reply.send(());
                return true;
            }
        }
        false
    }

    /// Linked peers, sorted (route choice must not depend on hash order).
    fn linked(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self.peers.keys().cloned().collect();
        v.sort();
        v
    }

    #[allow(clippy::too_many_arguments)]
    fn routed(
        &mut self,
        now: Instant,
        target: PeerId,
        payload: Payload,
        route: Option<RouteOptions>,
        timeout: Option<Duration>,
        info: Option<oneshot::Sender<RouteInfo>>,
        reply: oneshot::Sender<Result<Payload, MeshError>>,
    ) {
        let opts = route.unwrap_or_default();
        let linked = self.linked();
        let timeout = timeout.unwrap_or(self.node.config().request_timeout);
        let rng = &mut self.rng;
        let sent = self
            .relay
            .request(rng, now, timeout, &linked, &target, &payload, &opts, reply);
        if let Some((action, route)) = sent {
            if let Some(info) = info {
                let _ = info.send(route);
            }
            self.act(now, action);
        }
    }

    /// Carries out a routing action.
    fn act(&mut self, now: Instant, action: relay::Action) {
        match action {
            relay::Action::Send(peer, packet) => {
                // A refusal here (the link just went, queues full) is a drop, as on any relay.
                let _ = self
                    .node
                    .send_no_reply(now, &peer, Payload::Json(packet), &mut self.rng);
            }
            relay::Action::SendBinary(peer, frame) => self.transfers.push_binary(&peer, frame),
            relay::Action::Deliver(msg) => match (&msg.payload, msg.reply) {
                // GhostMesh's target dispatch: a `file-*` payload of a one-way delivery goes to
                // the file handler, as a transfer of the routed pseudo-peer (see ROUTED_PEER).
                (Payload::Json(v), None) if is_file_packet(v) => {
                    let routed = ROUTED_PEER.to_owned();
                    if let Some(session) = self.transfers.on_packet(now, &routed, v) {
                        self.backlog.push_back(MeshEvent::File(session));
                    }
                    self.take_file_warnings();
                }
                // A routed hidden-service request (entry to master): the hidden-service task.
                (Payload::Json(v), Some(reply)) if hidden_kind(v) == Some(hidden::REQUEST) => {
                    self.hidden.offer(HiddenMsg::Request {
                        from: msg.from,
                        packet: v.clone(),
                        reply: HiddenReplyTo::Routed(reply),
                    });
                }
                (_, reply) => self
                    .backlog
                    .push_back(MeshEvent::Onion(relay::OnionMessage { reply, ..*msg })),
            },
        }
    }

    fn new_outgoing(&mut self, peer: PeerId, req: OutgoingFile) -> Result<NewOutgoing, MeshError> {
        // With routing defaults, as `send`: the first relay must be linked, the receiver need
        // not be. The route (relays, and the packet format for a full chunk) is checked now,
        // so a transfer that could never be routed fails here rather than after its offer.
        let routed = self.routing.is_some();
        if let Some(opts) = self.routing.clone() {
            let linked = self.linked();
            let sample = crate::file::packet::Packet::Chunk {
                transfer_id: "0123456789abcdef".into(),
                chunk_index: 0,
                offset: 0,
                // Anything over the largest layered packet is as unfit as the whole chunk.
                data: vec![0; req.chunk_size.min(req.size).min(256 << 10) as usize],
            };
            let sample = Payload::Json(sample.to_json());
            self.relay
                .check_route(&mut self.rng, &linked, &peer, &sample, &opts)?;
        } else if !self.peers.contains_key(&peer) {
            return Err(MeshError::Send(crate::node::SendError::NoLink));
        }
        let cfg = self.transfers.config().clone();
        if self.transfers.outgoing_count() >= cfg.max_outgoing {
            let e = format!(
                "already {} outgoing transfers (max_outgoing)",
                cfg.max_outgoing
            );
            return Err(MeshError::File(FileError::Limit(e)));
        }
        let id = transfer_id(&mut self.rng);
        let info = Info {
            name: req.name.unwrap_or_else(|| format!("ghostmesh-{id}")),
            transfer_id: id,
            mime_type: req.mime_type,
            size: req.size,
            chunk_size: req.chunk_size,
            total_chunks: crate::file::packet::total_chunks(req.size, req.chunk_size),
            metadata: req.metadata,
            peer,
            direction: Direction::Outgoing,
            routed,
        };
        let state = State {
            status: FileStatus::Active,
            bytes: 0,
            ranges: RangeSet::new(),
            error: None,
            file: None,
            temp: None,
            fast_window: None,
            acked: 0,
            source: req.source,
            requested: RangeSet::new(),
        };
        let session = FileSession::new(info, state, self.transfers.tx.clone());
        self.transfers.add_outgoing(session.clone());
        Ok(NewOutgoing {
            session,
            seed: rand::Rng::next_u64(&mut self.rng),
            tx: self.transfers.tx.clone(),
            fast_frame_bytes: cfg.fast_frame_bytes,
            routed,
        })
    }

    fn file_msg(&mut self, msg: FileMsg) {
        match msg {
            FileMsg::Out {
                peer,
                frames,
                reply,
                ..
            } if !self.peers.contains_key(&peer) => {
                drop(frames);
                let _ = reply.send(false);
            }
            FileMsg::Routed {
                peer,
                id,
                packet,
                reply,
            } => self.routed_file_packet(peer, id, packet, reply),
            other => self.transfers.on_msg(other),
        }
        self.take_file_warnings();
    }

    /// A file packet to `target` along a freshly built route with a new circuit id (GhostMesh's
    /// `sendFile` with `onion`): the first relay and the frames for it.
    fn route_file_packet(
        &mut self,
        target: &PeerId,
        packet: serde_json::Value,
    ) -> Result<(PeerId, Vec<Frame>), String> {
        let opts = self.routing.clone().unwrap_or_default();
        let linked = self.linked();
        let sent = self.relay.onion(
            &mut self.rng,
            &linked,
            target,
            &Payload::Json(packet),
            &opts,
        );
        match sent {
            Ok((relay::Action::Send(first, outer), _)) => {
                let msg_id = MsgId::p2pt(rand::Rng::next_u32(&mut self.rng));
                let frames = encode_chunks(&msg_id, &Payload::Json(outer), MAX_CHUNK_UNITS);
                Ok((first, frames.into_iter().map(Frame::Text).collect()))
            }
            Ok((relay::Action::SendBinary(first, frame), _)) => {
                Ok((first, vec![Frame::Binary(frame)]))
            }
            Ok(_) => Err("no route to the receiver".into()),
            Err(e) => Err(format!("no route to the receiver: {e}")),
        }
    }

    /// A routed transfer's packet: its frames wait in the first relay's outbox. No route: the
    /// transfer fails with the reason.
    fn routed_file_packet(
        &mut self,
        target: PeerId,
        id: String,
        packet: serde_json::Value,
        reply: oneshot::Sender<bool>,
    ) {
        match self.route_file_packet(&target, packet) {
            Ok((first, frames)) => {
                self.transfers
                    .enqueue_routed(first, (target, id), frames, reply)
            }
            Err(why) => {
                self.transfers.fail_routed(&(target, id), why);
                let _ = reply.send(false);
            }
        }
    }

    /// Passes file warnings to the application, and sends routed transfers' control packets
    /// (cancels) along fresh routes, as control frames of the first relay (dropped and counted
    /// when its outbox is full).
    fn take_file_warnings(&mut self) {
        for (peer, message) in self.transfers.warnings.drain(..) {
            self.backlog
                .push_back(MeshEvent::PeerWarning { peer, message });
        }
        for (target, packet) in std::mem::take(&mut self.transfers.routed_out) {
            // No route now: the receiver's idle timeout ends its side.
            if let Ok((first, frames)) = self.route_file_packet(&target, packet) {
                self.transfers.push_frames(&first, frames);
            }
        }
    }

    fn net(&mut self, msg: NetMsg) {
        let now = clock_now();
        match msg {
            NetMsg::Frame(peer, Frame::Binary(data)) if is_fast(&data) => {
                self.transfers.on_fast(now, &peer, &data);
                self.take_file_warnings();
            }
            NetMsg::Frame(peer, Frame::Binary(data)) if data.first() == Some(&0) => {
                let peers = &self.peers;
                match self
                    .relay
                    .on_binary(now, &peer, &data, |p| peers.contains_key(p))
                {
                    Some(Some(action)) => self.act(now, action),
                    Some(None) => {}
                    // Another binary frame: P2PT's raw data.
                    None => self.node.frame_bytes(now, &peer, &data),
                }
            }
            NetMsg::NewLink(peer, link) => self.add_link(peer, link),
            NetMsg::Frame(peer, Frame::Text(text)) => self.node.frame(now, &peer, &text),
            NetMsg::Frame(peer, Frame::Binary(data)) => self.node.frame_bytes(now, &peer, &data),
            NetMsg::LinkClosed(peer, id) => self.remove_link(&peer, id),
            NetMsg::Drained => {}
            NetMsg::Event(event) => self.backlog.push_back(*event),
        }
    }

    /// Moves queued frames to the writer of each peer's oldest link while it has room:
    /// messages first, then file frames.
    fn flush(&mut self) {
        for (peer, links) in &self.peers {
            let Some(first) = links.first() else { continue };
            let gauge = &first.gauge;
            loop {
                if gauge.full(&first.writer) {
                    // Ask for a `Drained`, then look again: the writer may have made room
                    // before it could see the request (SeqCst on both sides: it then sees it).
                    gauge.waiting.store(true, Ordering::SeqCst);
                    if gauge.full(&first.writer) {
                        break;
                    }
                }
                let frame = match self.node.poll_transmit_to(peer) {
                    Some(text) => Frame::Text(text),
                    None => match self.transfers.take_frame(peer) {
                        Some(frame) => frame,
                        None => break,
                    },
                };
                let len = frame.len();
                gauge.bytes.fetch_add(len, Ordering::SeqCst);
                if first.writer.try_send(frame).is_err() {
                    // Only when the writer task has ended (its link is closing).
                    gauge.bytes.fetch_sub(len, Ordering::SeqCst);
                    break;
                }
            }
        }
        self.transfers.release_parked();
    }

    /// Routes node events: responses to their waiting callers, the rest to the backlog.
    fn collect_events(&mut self) {
        while let Some(event) = self.node.poll_event() {
            let out = match event {
                Event::Message {
                    peer,
                    handle,
                    payload,
                } => {
                    if let Payload::Json(value) = &payload {
                        // GhostMesh's dispatch order: onion layers first, then files.
                        if relay::packet::is_onion(value) {
                            let peers = &self.peers;
                            let action = self
                                .relay
                                .on_packet(&peer, value, |p| peers.contains_key(p));
                            if let Some(action) = action {
                                self.act(clock_now(), action);
                            }
                            continue;
                        }
                        // Then hidden-service requests and server-reveal challenges.
                        match hidden_kind(value) {
                            Some(hidden::REQUEST) => {
                                let msg = HiddenMsg::Request {
                                    from: peer,
                                    packet: value.clone(),
                                    reply: HiddenReplyTo::Direct(handle),
                                };
                                self.hidden.offer(msg);
                                continue;
                            }
                            Some(hidden::REVEAL_REQUEST) => {
                                self.hidden.offer(HiddenMsg::Reveal {
                                    packet: value.clone(),
                                    handle,
                                });
                                continue;
                            }
                            _ => {}
                        }
                        if is_file_packet(value) {
                            if let Some(session) =
                                self.transfers.on_packet(clock_now(), &peer, value)
                            {
                                self.backlog.push_back(MeshEvent::File(session));
                            }
                            self.take_file_warnings();
                            continue;
                        }
                    }
                    MeshEvent::Message {
                        peer,
                        payload,
                        handle,
                    }
                }
                Event::Response {
                    request, payload, ..
                } => {
                    if let Some(reply) = self.pending.remove(&request) {
                        let _ = reply.send(Ok(payload));
                    }
                    continue;
                }
                Event::Timeout { request, .. } => {
                    if let Some(reply) = self.pending.remove(&request) {
                        let _ = reply.send(Err(MeshError::Timeout));
                    }
                    continue;
                }
                Event::PeerFailed { request, .. } => {
                    if let Some(reply) = self.pending.remove(&request) {
                        let _ = reply.send(Err(MeshError::PeerClosed));
                    }
                    continue;
                }
                Event::Raw { peer, data } => MeshEvent::Raw { peer, data },
                Event::ProtocolError { peer, error } => MeshEvent::PeerWarning {
                    peer,
                    message: format!("protocol error: {error}"),
                },
            };
            self.backlog.push_back(out);
        }
    }

    fn refuse(&mut self, peer: PeerId, link: Arc<dyn Link>, why: String) {
        tokio::spawn(async move { link.close().await });
        self.backlog
            .push_back(MeshEvent::PeerWarning { peer, message: why });
    }

    fn add_link(&mut self, peer: PeerId, link: Box<dyn Link>) {
        let link: Arc<dyn Link> = Arc::from(link);
        let known = self.peers.get(&peer).map_or(0, Vec::len);
        if known == 0 && self.peers.len() >= self.limits.max_peers {
            let why = format!(
                "link refused: already {} peers (max_peers)",
                self.peers.len()
            );
            return self.refuse(peer, link, why);
        }
        if known >= self.limits.max_links_per_peer {
            let why =
                format!("link refused: already {known} links to this peer (max_links_per_peer)");
            return self.refuse(peer, link, why);
        }
        let id = self.next_link;
        self.next_link += 1;
        let reader = {
            let (link, tx, peer) = (link.clone(), self.net_tx.clone(), peer.clone());
            tokio::spawn(async move {
                while let Some(frame) = link.recv().await {
                    if tx.send(NetMsg::Frame(peer.clone(), frame)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(NetMsg::LinkClosed(peer, id)).await;
            })
        };
        let (writer, mut frames) = mpsc::channel::<Frame>(WRITER_QUEUE);
        let gauge = Arc::new(WriterGauge::default());
        let writer_task = {
            let (link, tx, gauge) = (link.clone(), self.net_tx.clone(), gauge.clone());
            tokio::spawn(async move {
                while let Some(frame) = frames.recv().await {
                    let len = frame.len();
                    let sent = link.send(frame).await;
                    let left = gauge.bytes.fetch_sub(len, Ordering::SeqCst) - len;
                    match sent {
                        Ok(()) => {}
                        // One frame over the link's byte limit (a heavily escaped chunk): drop
                        // it, keep the link; that message never completes and its request
                        // times out.
                        Err(LinkError::TooLarge { .. }) => {}
                        Err(_) => {
                            // The reader sees the close and reports it.
                            link.close().await;
                            return;
                        }
                    }
                    // Down to half the bytes (a queue full of small frames is already).
                    if left <= WRITER_BYTES / 2
                        && gauge.waiting.swap(false, Ordering::SeqCst)
                        && tx.send(NetMsg::Drained).await.is_err()
                    {
                        return;
                    }
                }
            })
        };
        let links = self.peers.entry(peer.clone()).or_default();
        links.push(LinkEntry {
            id,
            link,
            writer,
            gauge,
            tasks: [reader, writer_task],
        });
        if known == 0 {
            self.node.link_up(peer.clone());
            self.transfers.peer_linked(&peer);
            // Tell a Rust peer our capabilities and onion key (JavaScript peers ignore it).
            let hello = self.relay.layered.hello();
            self.transfers.push_binary(&peer, hello);
            self.backlog.push_back(MeshEvent::PeerConnected(peer));
        }
    }

    fn remove_link(&mut self, peer: &PeerId, id: u64) {
        let Some(links) = self.peers.get_mut(peer) else {
            return;
        };
        if let Some(pos) = links.iter().position(|l| l.id == id) {
            let entry = links.remove(pos);
            for task in entry.tasks {
                task.abort();
            }
        }
        if links.is_empty() {
            self.peers.remove(peer);
            self.node.link_down(peer);
            self.transfers.peer_closed(peer);
            self.relay.layered.forget(peer);
            self.backlog.push_back(MeshEvent::PeerClosed(peer.clone()));
        }
    }
}

/// The shells' clock: tokio's, so the whole mesh follows `tokio::time::pause()` (tests on a
/// virtual clock) while the sans-IO cores keep taking plain `Instant`s.
pub(crate) fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
