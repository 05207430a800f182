//! The tokio shell: [`Mesh`] drives one [`TrackerClient`] per tracker URL over a WebSocket
//! (`ws://` or `wss://`), makes links from the offers and answers they relay through a
//! [`Connector`] (WebRTC by default, or in-process memory links), and runs one [`Node`] over
//! those links.
//!
//! Tasks: one per tracker URL (socket, backoff, offers, answers; `tracker.rs`), one "core" task
//! owning the [`Node`] (frames in, frames out to the oldest open link of a peer, events out;
//! `core.rs`), and a reader and a writer task per link. Peers are named by the 40-hex of their
//! `peer_id`. A peer may have several links (it met us through two trackers, or both sides
//! offered): messages use the oldest, and when it closes the next one takes over.
//!
//! Backpressure and bounds: the application reads events from a bounded queue; while it lags
//! by more than [`EVENT_BACKLOG`] events, the core stops reading incoming frames (the links'
//! own flow control then slows the senders) but keeps serving `send`, `respond`, timers and
//! `stop`, so nothing is lost and nothing grows. Links per peer, peers, and connections being
//! set up at once are capped by the builder's settings.
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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::file::sender::{self, Plan, Reader};
use crate::file::session::RandomAccess;
use crate::file::{
    FileConfig, FileError, FileOptions, FileSession, FileSource, FileStats, MIN_CHUNK_SIZE,
};
use crate::hidden::{self, HiddenError, HiddenServiceConfig};
use crate::node::{MessageHandle, Node, NodeConfig, RawFrame, SendError};
use crate::relay::{OnionMessage, RelayConfig, RelayStats, RouteInfo, RouteOptions, RoutedReply};
use crate::signal::{Identity, SignalConfig, TrackerClient};
use crate::transport::connector::{Connector, WebRtcConnector};
use crate::transport::webrtc::{IceServer, WebRtcConfig};
use crate::wire::Payload;

mod core;
pub(crate) use self::core::clock_now;
mod tracker;

use self::core::{Channels, Core, CoreMsg, OutgoingFile, Routing};
use self::tracker::TrackerTask;

/// Events the core holds for a lagging application before it stops reading incoming frames.
pub const EVENT_BACKLOG: usize = 1024;

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
    /// A file transfer could not start.
    File(FileError),
    /// A route could not be built (too few relays, bad ids, too many hops, ...).
    Route(String),
    /// A hidden-service call failed.
    Hidden(HiddenError),
}

impl fmt::Display for MeshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeshError::Timeout => f.write_str("no response before the request timeout"),
            MeshError::PeerClosed => f.write_str("the peer's links closed"),
            MeshError::Send(e) => write!(f, "send refused: {e:?}"),
            MeshError::Stopped => f.write_str("the mesh is stopped"),
            MeshError::Config(e) => write!(f, "bad configuration: {e}"),
            MeshError::File(e) => write!(f, "file transfer: {e}"),
            MeshError::Route(e) => write!(f, "routing: {e}"),
            MeshError::Hidden(e) => write!(f, "hidden service: {e}"),
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
    /// A frame that is not a P2PT envelope (P2PT's raw `data` event).
    Raw {
        /// The sender.
        peer: PeerId,
        /// The frame.
        data: RawFrame,
    },
    /// A peer offered a file; the session is already receiving (see [`FileSession`]). An offer
    /// that came through relays (inside an onion delivery) is a transfer of the pseudo-peer
    /// [`ROUTED_PEER`](crate::file::ROUTED_PEER).
    File(FileSession),
    /// A message that came through relays (GhostMesh's `onionmsg`); routed requests carry a
    /// reply for [`MeshHandle::respond_routed`]. One-way deliveries of `file-*` packets are
    /// not messages: they go to the file handler ([`MeshEvent::File`]).
    Onion(OnionMessage),
    /// A peer sent a malformed envelope or file packet, or a link to it was refused by a
    /// bound; nothing else happened.
    PeerWarning {
        /// The peer.
        peer: PeerId,
        /// What was wrong.
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
    connector: Option<Arc<dyn Connector>>,
    tracker_tls: Option<Arc<rustls::ClientConfig>>,
    seed: Option<u64>,
    connect_timeout: Duration,
    limits: Limits,
    files: FileConfig,
    routing: Option<RouteOptions>,
    relay: RelayConfig,
    hidden: HiddenServiceConfig,
}

/// Caps on what remote parties can make the shell hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_peers: usize,
    pub(crate) max_links_per_peer: usize,
    pub(crate) max_connecting: usize,
}

impl MeshBuilder {
    /// How long [`Mesh::send`] waits for a response. Default 60 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.node.request_timeout = timeout;
        self
    }

    /// WebRTC settings (ICE servers, relay policy, bind addresses, ...). Replaces earlier
    /// WebRTC settings; ignored when a [`MeshBuilder::connector`] is set.
    pub fn webrtc(mut self, cfg: WebRtcConfig) -> Self {
        self.webrtc = cfg;
        self
    }

    /// STUN/TURN servers (`RTCIceServer`s with TURN user names and credentials). Default none:
    /// host candidates only, as P2PT and GhostMesh.
    pub fn ice_servers(mut self, servers: Vec<IceServer>) -> Self {
        self.webrtc.ice_servers = servers;
        self
    }

    /// `iceTransportPolicy: "relay"`: connect through TURN only, never revealing host
    /// addresses to peers. Default off.
    pub fn relay_only(mut self, relay: bool) -> Self {
        self.webrtc.ice_transport_policy_relay = relay;
        self
    }

    /// Makes links with `connector` instead of WebRTC, e.g. a
    /// [`MemoryNetwork`](crate::transport::connector::MemoryNetwork) endpoint.
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// TLS settings for `wss://` trackers. Default: the webpki root certificates.
    pub fn tracker_tls(mut self, cfg: Arc<rustls::ClientConfig>) -> Self {
        self.tracker_tls = Some(cfg);
        self
    }

    /// How long one tracker connection attempt may take. Default 10 s.
    pub fn tracker_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// File-transfer settings and bounds (size limit, transfers at once, temp directory,
    /// fast-path window).
    pub fn file_config(mut self, cfg: FileConfig) -> Self {
        self.files = cfg;
        self
    }

    /// Route every [`MeshHandle::send`] and [`MeshHandle::send_file`] through relays
    /// (GhostMesh's `onion` option): explicit `through` relays or `hops` random ones, in the
    /// route's [`RouteMode`](crate::relay::RouteMode). Default: direct. See
    /// [`MeshHandle::send_file`] for what a routed transfer does.
    pub fn routing(mut self, route: RouteOptions) -> Self {
        self.routing = Some(route);
        self
    }

    /// Hidden-service roles: entry peers and master key (client), service-to-master map
    /// (entry), identity and reveal (master), padding and delay padding. See [`crate::hidden`].
    pub fn hidden_service(mut self, cfg: HiddenServiceConfig) -> Self {
        self.hidden = cfg;
        self
    }

    /// Bounds on routing (max hops, packet size, pending routed requests).
    pub fn relay_config(mut self, cfg: RelayConfig) -> Self {
        self.relay = cfg;
        self
    }

    /// Most peers linked at once; links to further peers are closed at once. Default 512.
    pub fn max_peers(mut self, n: usize) -> Self {
        self.limits.max_peers = n.max(1);
        self
    }

    /// Most links to one peer (one per tracker and direction is usual). Default 4.
    pub fn max_links_per_peer(mut self, n: usize) -> Self {
        self.limits.max_links_per_peer = n.max(1);
        self
    }

    /// Most connections being set up at once per tracker (each relayed offer starts one);
    /// offers beyond are ignored with a warning. Default 32.
    pub fn max_connecting(mut self, n: usize) -> Self {
        self.limits.max_connecting = n.max(1);
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
        for url in &self.trackers {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(MeshError::Config(format!(
                    "tracker URL {url:?} must start with ws:// or wss://"
                )));
            }
        }
        let tls = match self.tracker_tls {
            Some(cfg) => cfg,
            None => tracker::default_tls()?,
        };
        let mut rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_rng(&mut rand::rng()),
        };
        let identity = Identity::new(&self.identifier, &mut rng);
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (net_tx, net_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(EVENT_BACKLOG);
        let (stop_tx, stop_rx) = watch::channel(false);
        let connector = match self.connector {
            Some(c) => c,
            None => Arc::new(WebRtcConnector::new(self.webrtc)),
        };
        let mut trackers = Vec::new();
        for url in self.trackers {
            let task = TrackerTask {
                url,
                client: TrackerClient::new(identity, self.signal.clone()),
                connector: connector.clone(),
                rng: StdRng::seed_from_u64(rand::Rng::next_u64(&mut rng)),
                core: net_tx.clone(),
                stop: stop_rx.clone(),
                connect_timeout: self.connect_timeout,
                tls: tls.clone(),
                max_connecting: self.limits.max_connecting,
            };
            trackers.push(tokio::spawn(task.run()));
        }
        let channels = Channels {
            cmd_rx,
            net_rx,
            net_tx,
            events: events_tx,
        };
        let me = identity.peer_id.to_hex();
        let (hidden, hidden_rx) = hidden::Shared::new(
            self.hidden,
            me.clone(),
            self.node.request_timeout,
            rand::Rng::next_u64(&mut rng),
        );
        let core = Core::new(
            Node::new(self.node),
            StdRng::seed_from_u64(rand::Rng::next_u64(&mut rng)),
            channels,
            self.limits,
            self.files,
            Routing {
                me: me.clone(),
                defaults: self.routing,
                config: self.relay,
            },
            hidden.clone(),
        );
        let core = tokio::spawn(core.run());
        let handle = MeshHandle {
            peer_id: me,
            core_tx: cmd_tx,
            hidden: hidden.clone(),
        };
        let hidden_task = tokio::spawn(hidden::service::run(hidden, hidden_rx, handle.clone()));
        Ok(Mesh {
            handle,
            events: events_rx,
            stop: stop_tx,
            trackers,
            core: Some(core),
            hidden_task,
        })
    }
}

/// Sends and responds on behalf of a [`Mesh`]; cheap to clone and usable from any task.
#[derive(Debug, Clone)]
pub struct MeshHandle {
    peer_id: PeerId,
    core_tx: mpsc::Sender<CoreMsg>,
    pub(crate) hidden: Arc<hidden::Shared>,
}

impl MeshHandle {
    /// Our peer id (40 hex digits).
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// Sends `payload` to `peer` and waits for its response (or the request timeout).
    pub async fn send(&self, peer: &str, payload: Payload) -> Result<Payload, MeshError> {
        self.send_timeout_opt(peer, payload, None).await
    }

    /// [`send`](Self::send) with its own timeout instead of the request timeout.
    pub async fn send_with_timeout(
        &self,
        peer: &str,
        payload: Payload,
        timeout: Duration,
    ) -> Result<Payload, MeshError> {
        self.send_timeout_opt(peer, payload, Some(timeout)).await
    }

    async fn send_timeout_opt(
        &self,
        peer: &str,
        payload: Payload,
        timeout: Option<Duration>,
    ) -> Result<Payload, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::Send {
            peer: peer.to_owned(),
            payload,
            timeout,
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

    /// The peers linked now (40 hex digits each), sorted.
    pub async fn peers(&self) -> Result<Vec<PeerId>, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::Peers(reply)).await?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// Starts sending a file to `peer` and returns its live session at once. Toward a
    /// JavaScript GhostMesh peer this is GhostMesh's format; toward a Rust peer the binary
    /// fast path is negotiated (unless `options.fast` is off).
    ///
    /// With routing defaults set ([`MeshBuilder::routing`]) the transfer is routed, as
    /// GhostMesh's `sendFile` with `onion`: each packet (`file-offer`, every `file-chunk`,
    /// `file-end`, a `file-cancel`) goes along a freshly built route with a new circuit id,
    /// inside GhostMesh's `onion-deliver` (compatible), or a layered packet when every hop is
    /// a Rust peer that speaks them (per the route's mode, with the usual fallback and errors).
    /// A routed transfer always uses GhostMesh's packets (base64 chunks) and never negotiates
    /// the fast path, which is for direct links only. As for [`send`](Self::send), the first
    /// relay must be linked and `peer` need not be; a route that cannot be built, or a chunk
    /// that cannot go in the format required, is an error here, and a packet that finds no
    /// route later fails the session ([`FileError::Unavailable`]). The packets wait in the
    /// first relay's outbox under [`FileConfig::max_outbox_bytes`](crate::file::FileConfig).
    /// Nothing comes back through the relays (see [`ROUTED_PEER`](crate::file::ROUTED_PEER)),
    /// so, like GhostMesh's, the session completes once every packet is sent.
    pub async fn send_file(
        &self,
        peer: &str,
        source: FileSource,
        options: FileOptions,
    ) -> Result<FileSession, MeshError> {
        let io = |e: std::io::Error| MeshError::File(FileError::Io(e.to_string()));
        let (reader, size, random, default_name) = match source {
            FileSource::Path(path) => {
                let file = tokio::fs::File::open(&path).await.map_err(io)?;
                let size = file.metadata().await.map_err(io)?.len();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                (
                    Reader::File(file),
                    size,
                    Some(RandomAccess::Path(path)),
                    name,
                )
            }
            FileSource::Bytes(bytes) => {
                let size = bytes.len() as u64;
                (
                    Reader::Bytes(bytes.clone()),
                    size,
                    Some(RandomAccess::Bytes(bytes)),
                    None,
                )
            }
            FileSource::Reader { reader, size } => (Reader::Stream(reader), size, None, None),
        };
        let request = OutgoingFile {
            name: options.name.clone().or(default_name),
            mime_type: options
                .mime_type
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "application/octet-stream".into()),
            size,
            chunk_size: options.chunk_size.max(MIN_CHUNK_SIZE),
            metadata: options.metadata.clone(),
            source: random,
        };
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::SendFile {
            peer: peer.to_owned(),
            request,
            reply,
        })
        .await?;
        let new = rx.await.map_err(|_| MeshError::Stopped)??;
        let plan = Plan {
            hash_upfront: options.hash_upfront,
            fast: options.fast && !new.routed,
            routed: new.routed,
            fast_frame_bytes: new.fast_frame_bytes,
            seed: new.seed,
        };
        tokio::spawn(sender::run(new.session.clone(), reader, plan, new.tx));
        Ok(new.session)
    }

    /// Sends a routed request to `target` through relays (`route`, or the builder's routing,
    /// or 2 random relays) and waits for its routed response (GhostMesh's `send` with
    /// `onion`). Delivered as [`MeshEvent::Onion`] with a reply.
    pub async fn send_routed(
        &self,
        target: &str,
        payload: Payload,
        route: Option<RouteOptions>,
    ) -> Result<Payload, MeshError> {
        self.send_routed_with_info(target, payload, route, None)
            .await
            .map(|(p, _)| p)
    }

    /// [`send_routed`](Self::send_routed) that also tells the route taken (relays, whether it
    /// went layered, why not), with its own timeout when given.
    pub async fn send_routed_with_info(
        &self,
        target: &str,
        payload: Payload,
        route: Option<RouteOptions>,
        timeout: Option<Duration>,
    ) -> Result<(Payload, RouteInfo), MeshError> {
        let (reply, rx) = oneshot::channel();
        let (info_tx, info_rx) = oneshot::channel();
        self.command(CoreMsg::SendRouted {
            target: target.to_owned(),
            payload,
            route,
            timeout,
            info: Some(info_tx),
            reply,
        })
        .await?;
        let payload = rx.await.map_err(|_| MeshError::Stopped)??;
        let info = info_rx.await.map_err(|_| MeshError::Stopped)?;
        Ok((payload, info))
    }

    /// Sends a one-way onion message to `target`; returns the circuit and route used.
    pub async fn send_onion(
        &self,
        target: &str,
        payload: Payload,
        route: Option<RouteOptions>,
    ) -> Result<RouteInfo, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::SendOnion {
            target: target.to_owned(),
            payload,
            route,
            reply,
        })
        .await?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    /// Answers a routed request along its reply route.
    pub async fn respond_routed(&self, to: RoutedReply, payload: Payload) -> Result<(), MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::RespondRouted { to, payload, reply })
            .await?;
        rx.await.map_err(|_| MeshError::Stopped)?
    }

    /// Counters of routed traffic (forwarded, delivered, drops by reason).
    pub async fn relay_stats(&self) -> Result<RelayStats, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::RelayStats(reply)).await?;
        rx.await.map_err(|_| MeshError::Stopped)
    }

    /// Counts of refused file input (unknown transfers, malformed packets, refused offers).
    pub async fn file_stats(&self) -> Result<FileStats, MeshError> {
        let (reply, rx) = oneshot::channel();
        self.command(CoreMsg::FileStats(reply)).await?;
        rx.await.map_err(|_| MeshError::Stopped)
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
    hidden_task: JoinHandle<()>,
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
            connector: None,
            tracker_tls: None,
            seed: None,
            connect_timeout: Duration::from_secs(10),
            limits: Limits {
                max_peers: 512,
                max_links_per_peer: 4,
                max_connecting: 32,
            },
            files: FileConfig::default(),
            routing: None,
            relay: RelayConfig::default(),
            hidden: HiddenServiceConfig::default(),
        }
    }

    /// A cloneable handle for sending and responding from other tasks, while one task reads
    /// [`Mesh::next_event`] (a task awaiting a response cannot read events at the same time).
    pub fn handle(&self) -> MeshHandle {
        self.handle.clone()
    }

    /// The next event; `None` once the mesh is stopped. Read events steadily: while more than
    /// [`EVENT_BACKLOG`] are unread the mesh stops reading incoming frames (sends, responses
    /// already received, timers and `stop` go on).
    pub async fn next_event(&mut self) -> Option<MeshEvent> {
        self.events.recv().await
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
        self.hidden_task.abort();
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

/// Events as an async stream (the same as [`Mesh::next_event`]).
impl futures_util::Stream for Mesh {
    type Item = MeshEvent;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<MeshEvent>> {
        self.events.poll_recv(cx)
    }
}

/// Every [`MeshHandle`] operation (send, respond, send_file, routed sends, stats, ...) works
/// on the `Mesh` itself.
impl std::ops::Deref for Mesh {
    type Target = MeshHandle;

    fn deref(&self) -> &MeshHandle {
        &self.handle
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for task in &self.trackers {
            task.abort();
        }
        self.hidden_task.abort();
        if let Some(core) = &self.core {
            core.abort();
        }
    }
}
