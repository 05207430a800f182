//! The tokio shell: [`Mesh`] drives one [`TrackerClient`] per tracker URL over a WebSocket, makes
//! WebRTC links from the offers and answers they relay, and runs one [`Node`] over those links.
//!
//! Tasks: one per tracker URL (socket, backoff, offers, answers), one "core" task owning the
//! [`Node`] (frames in, frames out to the first open link of a peer, events out), and a reader
//! and a writer task per link. Peers are named by the 40-hex of their `peer_id`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ghostmesh::mesh::MeshError> {
//! use ghostmesh::mesh::{Mesh, MeshEvent};
//! let mut mesh = Mesh::builder(vec!["ws://127.0.0.1:8000".into()], "myApp").start().await?;
//! while let Some(event) = mesh.next_event().await {
//!     if let MeshEvent::Message { handle, payload, .. } = event {
//!         mesh.respond(handle, payload).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::node::{Event, MessageHandle, Node, NodeConfig, RequestId, SendError};
use crate::signal::{Id20, Identity, Output, SignalConfig, TrackerClient};
use crate::transport::webrtc::{self, PendingOffer, WebRtcConfig};
use crate::transport::{Frame, Link, LinkError};
use crate::wire::Payload;

/// A peer: the 40 lowercase hex digits of its `peer_id`.
pub type PeerId = String;

/// Answers one incoming message; see [`Mesh::respond`].
pub type ResponseHandle = MessageHandle<PeerId>;

/// Why a mesh operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshError {
    /// No response within the request timeout.
    Timeout,
    /// The peer's last link closed while the request waited.
    PeerClosed,
    /// The node refused the message (no link to the peer, too large, queues full, ...).
    Send(SendError),
    /// The mesh was stopped.
    Stopped,
    /// The builder's settings are unusable.
    Config(String),
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshError::Timeout => f.write_str("no response before the request timeout"),
            MeshError::PeerClosed => f.write_str("the peer's links closed"),
            MeshError::Send(e) => write!(f, "send refused: {e:?}"),
            MeshError::Stopped => f.write_str("the mesh is stopped"),
            MeshError::Config(e) => write!(f, "bad configuration: {e}"),
        }
    }
}

impl std::error::Error for MeshError {}

/// What the application hears from the mesh.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MeshEvent {
    /// The first link to this peer opened.
    PeerConnected(PeerId),
    /// The last link to this peer closed.
    PeerClosed(PeerId),
    /// A new incoming message; answer with [`Mesh::respond`] and `handle`, or not at all.
    Message {
        /// The sender.
        peer: PeerId,
        /// The content.
        payload: Payload,
        /// Names this message for [`Mesh::respond`].
        handle: ResponseHandle,
    },
    /// The tracker answered an announce (first answer after each (re)connect).
    TrackerConnected {
        /// The tracker.
        url: String,
    },
    /// The tracker sent a failure or warning, or its socket failed.
    TrackerWarning {
        /// The tracker.
        url: String,
        /// What happened.
        message: String,
    },
}

/// Settings of a [`Mesh`]; made by [`Mesh::builder`].
#[derive(Debug, Clone)]
pub struct MeshBuilder {
    trackers: Vec<String>,
    identifier: String,
    node: NodeConfig,
    signal: SignalConfig,
    webrtc: WebRtcConfig,
    seed: Option<u64>,
    connect_timeout: Duration,
}

impl MeshBuilder {
    /// How long [`Mesh::send`] waits for a response. Default 60 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.node.request_timeout = timeout;
        self
    }

    /// WebRTC settings (ICE servers, relay policy, bind addresses, ...).
    pub fn webrtc(mut self, cfg: WebRtcConfig) -> Self {
        self.webrtc = cfg;
        self
    }

    /// Offers made per announce. Default 5.
    pub fn offers_per_announce(mut self, n: usize) -> Self {
        self.signal.offers_per_announce = n;
        self
    }

    /// Largest message sent or accepted, in UTF-16 code units. Default 16 Mi.
    pub fn max_message_units(mut self, units: usize) -> Self {
        self.node.max_message_units = units;
        self.node.reassembly.max_message_units = units;
        self
    }

    /// The whole node configuration (replaces earlier node settings).
    pub fn node_config(mut self, cfg: NodeConfig) -> Self {
        self.node = cfg;
        self
    }

    /// The whole tracker-client configuration (replaces earlier signalling settings).
    pub fn signal_config(mut self, cfg: SignalConfig) -> Self {
        self.signal = cfg;
        self
    }

    /// Seeds the mesh's RNG (peer id, offer ids, labels, message ids) instead of OS entropy.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Starts the tracker and core tasks. Needs a Tokio runtime.
    pub async fn start(self) -> Result<Mesh, MeshError> {
        if self.trackers.is_empty() {
            return Err(MeshError::Config("no tracker URL".into()));
        }
        let mut rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        let identity = Identity::new(&self.identifier, &mut rng);
        let (core_tx, core_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(1024);
        let (stop_tx, stop_rx) = watch::channel(false);
        let webrtc = Arc::new(self.webrtc);
        let mut trackers = Vec::new();
        for url in self.trackers {
            let task = TrackerTask {
                url,
                client: TrackerClient::new(identity, self.signal.clone()),
                webrtc: webrtc.clone(),
                rng: StdRng::seed_from_u64(rand::Rng::next_u64(&mut rng)),
                core: core_tx.clone(),
                events: events_tx.clone(),
                stop: stop_rx.clone(),
                connect_timeout: self.connect_timeout,
            };
            trackers.push(tokio::spawn(task.run()));
        }
        let core = Core {
            node: Node::new(self.node),
            rng: StdRng::seed_from_u64(rand::Rng::next_u64(&mut rng)),
            rx: core_rx,
            tx: core_tx.clone(),
            events: events_tx,
            peers: HashMap::new(),
            next_link: 0,
            pending: HashMap::new(),
        };
        let core = tokio::spawn(core.run());
        Ok(Mesh {
            handle: MeshHandle {
                peer_id: identity.peer_id.to_hex(),
                core_tx,
            },
            events: events_rx,
            stop: stop_tx,
            trackers,
            core: Some(core),
        })
    }
}

/// Sends and responds on behalf of a [`Mesh`]; cheap to clone and usable from any task.
#[derive(Debug, Clone)]
pub struct MeshHandle {
    peer_id: PeerId,
    core_tx: mpsc::Sender<CoreMsg>,
}

impl MeshHandle {
    /// Our peer id (40 hex digits).
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Sends `payload` to `peer` and waits for its response (or the request timeout).
    pub async fn send(&self, peer: &str, payload: Payload) -> Result<Payload, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::Send {
            peer: peer.to_owned(),
            payload,
            reply,
        })
        .await?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    /// Sends `payload` to `peer` expecting no response.
    pub async fn send_no_reply(&self, peer: &str, payload: Payload) -> Result<(), MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::SendNoReply {
            peer: peer.to_owned(),
            payload,
            reply,
        })
        .await?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    /// Answers the message `handle` names.
    pub async fn respond(&self, handle: ResponseHandle, payload: Payload) -> Result<(), MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::Respond {
            handle,
            payload,
            reply,
        })
        .await?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    async fn command(&self, msg: CoreMsg) -> Result<(), MeshError> {
        self.core_tx.send(msg).await.map_err(|_| MeshError::Stopped)
    }
}

/// A running GhostMesh/P2PT peer. See the [module docs](self).
#[derive(Debug)]
pub struct Mesh {
    handle: MeshHandle,
    events: mpsc::Receiver<MeshEvent>,
    stop: watch::Sender<bool>,
    trackers: Vec<JoinHandle<()>>,
    core: Option<JoinHandle<()>>,
}

impl Mesh {
    /// A builder for a peer of swarm `identifier` (P2PT's identifier string) on `trackers`.
    pub fn builder(trackers: Vec<String>, identifier: &str) -> MeshBuilder {
        MeshBuilder {
            trackers,
            identifier: identifier.to_owned(),
            node: NodeConfig::default(),
            signal: SignalConfig::default(),
            webrtc: WebRtcConfig::default(),
            seed: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Our peer id (40 hex digits).
    pub fn peer_id(&self) -> &str {
        self.handle.peer_id()
    }

    /// A cloneable handle for sending and responding from other tasks, while one task reads
    /// [`Mesh::next_event`] (a task awaiting a response cannot read events at the same time).
    pub fn handle(&self) -> MeshHandle {
        self.handle.clone()
    }

    /// The next event; `None` once the mesh is stopped. Read events steadily: while the
    /// event queue is full the mesh stops processing incoming frames.
    pub async fn next_event(&mut self) -> Option<MeshEvent> {
        self.events.recv().await
    }

    /// Sends `payload` to `peer` and waits for its response (or the request timeout).
    pub async fn send(&self, peer: &str, payload: Payload) -> Result<Payload, MeshError> {
        self.handle.send(peer, payload).await
    }

    /// Sends `payload` to `peer` expecting no response.
    pub async fn send_no_reply(&self, peer: &str, payload: Payload) -> Result<(), MeshError> {
        self.handle.send_no_reply(peer, payload).await
    }

    /// Answers the message `handle` names.
    pub async fn respond(&self, handle: ResponseHandle, payload: Payload) -> Result<(), MeshError> {
        self.handle.respond(handle, payload).await
    }

    /// Leaves: sends `stopped` to every connected tracker, closes every link, ends the tasks.
    pub async fn stop(&mut self) {
        let _ = self.stop.send(true);
        for task in self.trackers.drain(..) {
            // A tracker task ends within its bounded stop; abort it if it does not.
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let (reply, rx) = oneshot::channel();
        if self.handle.core_tx.send(CoreMsg::Stop(reply)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        if let Some(core) = self.core.take() {
            let abort = core.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), core)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for task in &self.trackers {
            task.abort();
        }
        if let Some(core) = &self.core {
            core.abort();
        }
    }
}

// ── The core task: the node and the links ─────────────────────────────────────────────────

enum CoreMsg {
    NewLink(PeerId, Box<dyn Link>),
    Frame(PeerId, Frame),
    LinkClosed(PeerId, u64),
    Drained,
    Send {
        peer: PeerId,
        payload: Payload,
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
    Stop(oneshot::Sender<()>),
}

impl fmt::Debug for CoreMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CoreMsg")
    }
}

/// Frames handed to one link's writer task and not yet written.
const WRITER_QUEUE: usize = 16;

struct LinkEntry {
    id: u64,
    link: Arc<dyn Link>,
    writer: mpsc::Sender<String>,
    tasks: [JoinHandle<()>; 2],
}

struct Core {
    node: Node<PeerId>,
    rng: StdRng,
    rx: mpsc::Receiver<CoreMsg>,
    tx: mpsc::Sender<CoreMsg>,
    events: mpsc::Sender<MeshEvent>,
    peers: HashMap<PeerId, Vec<LinkEntry>>,
    next_link: u64,
    pending: HashMap<RequestId, oneshot::Sender<Result<Payload, MeshError>>>,
}

impl Core {
    async fn run(mut self) {
        loop {
            self.flush();
            if !self.drain_events().await {
                return;
            }
            let deadline = self.node.poll_timeout();
            let msg = tokio::select! {
                msg = self.rx.recv() => msg,
                () = sleep_until(deadline) => {
                    self.node.tick(Instant::now());
                    continue;
                }
            };
            let Some(msg) = msg else { return };
            let now = Instant::now();
            match msg {
                CoreMsg::NewLink(peer, link) => self.add_link(peer, link).await,
                CoreMsg::Frame(peer, Frame::Text(text)) => self.node.frame(now, &peer, &text),
                CoreMsg::Frame(peer, Frame::Binary(data)) => {
                    self.node.frame_bytes(now, &peer, &data)
                }
                CoreMsg::LinkClosed(peer, id) => self.remove_link(&peer, id).await,
                CoreMsg::Drained => {}
                CoreMsg::Send {
                    peer,
                    payload,
                    reply,
                } => match self.node.send(now, &peer, payload, &mut self.rng) {
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
                CoreMsg::Stop(reply) => {
                    self.flush();
                    for (_, links) in self.peers.drain() {
                        for entry in links {
                            let _ =
                                tokio::time::timeout(Duration::from_secs(2), entry.link.close())
                                    .await;
                            for task in entry.tasks {
                                task.abort();
                            }
                        }
                    }
                    for (_, reply) in self.pending.drain() {
                        let _ = reply.send(Err(MeshError::Stopped));
                    }
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    /// Moves queued frames to the writer of each peer's first link while it has room.
    fn flush(&mut self) {
        for (peer, links) in &self.peers {
            let Some(first) = links.first() else { continue };
            while first.writer.capacity() > 0 {
                let Some(frame) = self.node.poll_transmit_to(peer) else {
                    break;
                };
                if first.writer.try_send(frame).is_err() {
                    break;
                }
            }
        }
    }

    /// Passes node events on; `false` when the application is gone.
    async fn drain_events(&mut self) -> bool {
        while let Some(event) = self.node.poll_event() {
            let out = match event {
                Event::Message {
                    peer,
                    handle,
                    payload,
                } => MeshEvent::Message {
                    peer,
                    payload,
                    handle,
                },
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
                _ => continue,
            };
            if self.events.send(out).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn add_link(&mut self, peer: PeerId, link: Box<dyn Link>) {
        let link: Arc<dyn Link> = Arc::from(link);
        let id = self.next_link;
        self.next_link += 1;
        let reader = {
            let (link, tx, peer) = (link.clone(), self.tx.clone(), peer.clone());
            tokio::spawn(async move {
                while let Some(frame) = link.recv().await {
                    if tx.send(CoreMsg::Frame(peer.clone(), frame)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(CoreMsg::LinkClosed(peer, id)).await;
            })
        };
        let (writer, mut frames) = mpsc::channel::<String>(WRITER_QUEUE);
        let writer_task = {
            let (link, tx) = (link.clone(), self.tx.clone());
            tokio::spawn(async move {
                while let Some(frame) = frames.recv().await {
                    match link.send(Frame::Text(frame)).await {
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
                    if frames.is_empty() && tx.send(CoreMsg::Drained).await.is_err() {
                        return;
                    }
                }
            })
        };
        let links = self.peers.entry(peer.clone()).or_default();
        let first = links.is_empty();
        links.push(LinkEntry {
            id,
            link,
            writer,
            tasks: [reader, writer_task],
        });
        if first {
            self.node.link_up(peer.clone());
            let _ = self.events.send(MeshEvent::PeerConnected(peer)).await;
        }
    }

    async fn remove_link(&mut self, peer: &PeerId, id: u64) {
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
            let _ = self.events.send(MeshEvent::PeerClosed(peer.clone())).await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

// ── One tracker task ──────────────────────────────────────────────────────────────────────

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum Internal {
    Offers(Vec<(Id20, String, PendingOffer)>),
    Answer(Id20, Id20, String),
    Warning(String),
}

struct TrackerTask {
    url: String,
    client: TrackerClient,
    webrtc: Arc<WebRtcConfig>,
    rng: StdRng,
    core: mpsc::Sender<CoreMsg>,
    events: mpsc::Sender<MeshEvent>,
    stop: watch::Receiver<bool>,
    connect_timeout: Duration,
}

impl TrackerTask {
    async fn run(mut self) {
        let (itx, mut irx) = mpsc::channel::<Internal>(64);
        let mut ws: Option<Ws> = None;
        let mut connect_at: Option<Instant> = None;
        let mut offers: HashMap<Id20, PendingOffer> = HashMap::new();
        let mut announced = false;
        loop {
            // Outputs first: they may change the socket.
            while let Some(out) = self.client.poll_output() {
                match out {
                    Output::Connect(delay) => {
                        if let Some(mut old) = ws.take() {
                            let _ = old.close(None).await;
                        }
                        connect_at = Some(Instant::now() + delay);
                    }
                    Output::Send(text) => {
                        if let Some(socket) = ws.as_mut() {
                            if let Err(e) = socket.send(WsMessage::Text(text.into())).await {
                                self.warn(format!("send failed: {e}")).await;
                                ws = None;
                                self.client.disconnected(Instant::now(), &mut self.rng);
                            }
                        }
                    }
                    Output::NeedOffers(n) => {
                        let labels: Vec<(Id20, String)> = (0..n)
                            .map(|_| {
                                (
                                    Id20::random(&mut self.rng),
                                    webrtc::random_label(&mut self.rng),
                                )
                            })
                            .collect();
                        let (cfg, itx) = (self.webrtc.clone(), itx.clone());
                        tokio::spawn(async move {
                            let made = futures_util::future::join_all(labels.into_iter().map(
                                |(id, label)| {
                                    let cfg = cfg.clone();
                                    async move {
                                        webrtc::create_offer(&cfg, &label)
                                            .await
                                            .map(|(p, json)| (id, json, p))
                                    }
                                },
                            ))
                            .await;
                            let mut ok = Vec::new();
                            for r in made {
                                match r {
                                    Ok(o) => ok.push(o),
                                    Err(e) => {
                                        let _ = itx
                                            .send(Internal::Warning(format!("offer failed: {e}")))
                                            .await;
                                    }
                                }
                            }
                            let _ = itx.send(Internal::Offers(ok)).await;
                        });
                    }
                    Output::Offer {
                        from_peer,
                        offer_id,
                        offer,
                    } => {
                        let (cfg, itx, core) =
                            (self.webrtc.clone(), itx.clone(), self.core.clone());
                        tokio::spawn(async move {
                            let pending = match webrtc::accept_offer(&cfg, &offer).await {
                                Ok((answer, pending)) => {
                                    let _ = itx
                                        .send(Internal::Answer(from_peer, offer_id, answer))
                                        .await;
                                    pending
                                }
                                Err(e) => {
                                    let _ = itx
                                        .send(Internal::Warning(format!("answer failed: {e}")))
                                        .await;
                                    return;
                                }
                            };
                            match pending.connected().await {
                                Ok(link) => {
                                    let _ = core
                                        .send(CoreMsg::NewLink(from_peer.to_hex(), link.boxed()))
                                        .await;
                                }
                                Err(e) => {
                                    let _ = itx
                                        .send(Internal::Warning(format!("connect failed: {e}")))
                                        .await;
                                }
                            }
                        });
                    }
                    Output::Answer {
                        from_peer,
                        offer_id,
                        answer,
                    } => {
                        if let Some(pending) = offers.remove(&offer_id) {
                            let (itx, core) = (itx.clone(), self.core.clone());
                            tokio::spawn(async move {
                                match pending.accept_answer(&answer).await {
                                    Ok(link) => {
                                        let _ = core
                                            .send(CoreMsg::NewLink(
                                                from_peer.to_hex(),
                                                link.boxed(),
                                            ))
                                            .await;
                                    }
                                    Err(e) => {
                                        let _ = itx
                                            .send(Internal::Warning(format!("connect failed: {e}")))
                                            .await;
                                    }
                                }
                            });
                        }
                    }
                    Output::ExpireOffer(id) => {
                        offers.remove(&id);
                    }
                    Output::TrackerUpdate { .. } => {
                        if !announced {
                            announced = true;
                            let url = self.url.clone();
                            let _ = self.events.send(MeshEvent::TrackerConnected { url }).await;
                        }
                    }
                    Output::Warning(message) => self.warn(message).await,
                }
            }
            if *self.stop.borrow() {
                self.client.stop(Instant::now());
                while let Some(out) = self.client.poll_output() {
                    if let (Output::Send(text), Some(socket)) = (out, ws.as_mut()) {
                        let _ = socket.send(WsMessage::Text(text.into())).await;
                    }
                }
                if let Some(mut socket) = ws.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                }
                return;
            }
            // Connect when due (bounded; the client decides the backoff).
            if ws.is_none() && connect_at.is_some_and(|at| at <= Instant::now()) {
                connect_at = None;
                let attempt = tokio::time::timeout(
                    self.connect_timeout,
                    tokio_tungstenite::connect_async(self.url.as_str()),
                )
                .await;
                match attempt {
                    Ok(Ok((socket, _))) => {
                        ws = Some(socket);
                        announced = false;
                        self.client.connected(Instant::now());
                    }
                    Ok(Err(e)) => {
                        self.warn(format!("connect failed: {e}")).await;
                        self.client.disconnected(Instant::now(), &mut self.rng);
                    }
                    Err(_) => {
                        self.warn("connect timed out".into()).await;
                        self.client.disconnected(Instant::now(), &mut self.rng);
                    }
                }
                continue;
            }
            let wake = match (connect_at, self.client.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                frame = next_frame(&mut ws) => match frame {
                    Some(Ok(WsMessage::Text(text))) => self.client.frame(Instant::now(), text.as_str()),
                    Some(Ok(WsMessage::Binary(data))) => {
                        self.client.frame(Instant::now(), &String::from_utf8_lossy(&data));
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                        ws = None;
                        self.warn("tracker socket closed".into()).await;
                        self.client.disconnected(Instant::now(), &mut self.rng);
                    }
                    Some(Ok(_)) => {}
                },
                msg = irx.recv() => match msg {
                    Some(Internal::Offers(made)) => {
                        let mut list = Vec::with_capacity(made.len());
                        for (id, json, pending) in made {
                            list.push((id, json));
                            offers.insert(id, pending);
                        }
                        self.client.offers_ready(Instant::now(), list);
                    }
                    Some(Internal::Answer(to, offer_id, answer)) => {
                        self.client.answer_ready(Instant::now(), to, offer_id, &answer);
                    }
                    Some(Internal::Warning(message)) => self.warn(message).await,
                    None => {}
                },
                () = sleep_until(wake) => self.client.tick(Instant::now()),
                _ = self.stop.changed() => {}
            }
        }
    }

    async fn warn(&self, message: String) {
        let url = self.url.clone();
        let _ = self
            .events
            .send(MeshEvent::TrackerWarning { url, message })
            .await;
    }
}

async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}
