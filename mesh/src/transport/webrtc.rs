//! WebRTC links over webrtc-rs 0.21 data channels, with P2PT/GhostMesh-style signalling.
//!
//! Signalling is non-trickle, like simple-peer with `trickle: false`: each side waits for ICE
//! gathering to complete (bounded by [`WebRtcConfig::gather_timeout`]) and hands over one
//! complete session description as compact JSON, `{"type":"offer","sdp":"..."}`, with the
//! `a=ice-options:trickle` lines removed (simple-peer's `filterTrickle`).
//!
//! * Offerer: [`create_offer`] → send the JSON to the remote → [`PendingOffer::accept_answer`].
//! * Answerer: [`accept_offer`] → send the answer JSON back → [`PendingAnswer::connected`].
//!
//! The offerer creates one reliable, ordered, in-band-negotiated channel (`channelConfig {}` in
//! P2PT) whose label the caller supplies; P2PT uses 20 random bytes as hex, which
//! [`random_label`] makes from a caller-provided RNG. The answerer adopts the label of the
//! channel that arrives.
//!
//! # Flow control
//!
//! * Sending: the peer connection is built with
//!   [`WebRtcConfig::send_buffer_limit`], so [`Link::send`] waits while the channel has that many
//!   bytes handed to SCTP but not yet acknowledged.
//! * Receiving: one task per link polls the channel and pushes frames into a bounded queue of
//!   [`WebRtcConfig::recv_queue_frames`]. When the application stops calling [`Link::recv`], the
//!   queue fills, the task stops polling, webrtc-rs stops draining SCTP, the advertised receive
//!   window shrinks and the *remote sender* is slowed down. That is: **backpressure, never
//!   drops, never an unbounded queue**. The link stays open while the application is slow.
//!   What can sit unread per link is still sizable, because webrtc-rs buffers too (a
//!   256-message per-channel event queue, a driver backlog, the 1 MiB SCTP receive window):
//!   with 16 KiB messages, an 8-frame queue and a 256 KiB send limit the sender stalled after
//!   ~606 unread messages (~9.7 MiB) in `tests/webrtc_link.rs`.
//!
//! # Lifetime
//!
//! Dropping a [`PendingOffer`], [`PendingAnswer`] or [`WebRtcLink`] closes its peer connection
//! (from a spawned task, so it needs a Tokio runtime; without one the connection's driver is only
//! stopped when the process ends). [`Link::close`] closes the data channel (the remote sees the
//! SCTP stream reset and its `recv` ends with `None`), then the peer connection.

use std::fmt;
use std::io;
use std::net::UdpSocket;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::webrtc::data_channel::{
    DataChannel, DataChannelEvent, RTCDataChannelInit, RTCDataChannelState,
};
use ::webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionState, RTCSdpType,
    RTCSessionDescription, SettingEngineBuilder,
};
use ::webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, watch};

use super::{BoxFuture, Frame, Link, LinkError};

/// One ICE server (STUN or TURN), as in `RTCIceServer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, ...
    pub urls: Vec<String>,
    /// TURN user name (empty for STUN).
    pub username: String,
    /// TURN credential (empty for STUN).
    pub credential: String,
}

/// Settings for every peer connection this transport builds.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// ICE servers. Empty by default, as P2PT and GhostMesh pass `iceServers: []`: host
    /// candidates only.
    pub ice_servers: Vec<IceServer>,
    /// `iceTransportPolicy: "relay"` (TURN only) instead of `"all"`.
    pub ice_transport_policy_relay: bool,
    /// Local UDP addresses to bind. Default `["0.0.0.0:0"]`: webrtc-rs expands a wildcard to one
    /// socket per non-loopback, non-link-local IPv4 interface. Tests pass `127.0.0.1:0`.
    pub bind_addrs: Vec<String>,
    /// SO_RCVBUF/SO_SNDBUF for each UDP socket; `0` keeps the OS default. Default 4 MiB: with
    /// the Linux default (~208 KiB) the kernel drops datagrams under load and webrtc-rs SCTP
    /// recovers slowly (measured 7 MB/s vs 400 MB/s on loopback). The kernel caps the value at
    /// `net.core.rmem_max` / `wmem_max`; failures to set it are ignored.
    pub socket_buffer_bytes: usize,
    /// Per-channel send-buffer limit in bytes: [`Link::send`] waits while this many bytes are
    /// unacknowledged. Default 1 MiB.
    pub send_buffer_limit: usize,
    /// Largest message accepted by [`Link::send`] and advertised as `a=max-message-size`.
    /// Default 256 KiB, what browsers and libdatachannel advertise: a P2PT chunk of 16000 UTF-16
    /// units can reach ~96 KB once JSON-escaped, past webrtc-rs's own 64 KiB default.
    pub max_message_size: usize,
    /// Capacity, in frames, of each link's receive queue (see the module docs). Default 256.
    pub recv_queue_frames: usize,
    /// How long to wait for ICE gathering to complete before sending the description with
    /// whatever candidates exist (simple-peer waits 5 s). Default 5 s.
    pub gather_timeout: Duration,
    /// How long [`PendingOffer::accept_answer`] and [`PendingAnswer::connected`] wait for the
    /// channel to open. Default 15 s.
    pub connect_timeout: Duration,
    /// ICE connectivity-check interval; `None` keeps webrtc-rs's 200 ms. Lower values shorten
    /// connection setup a little (measured ~600 ms → ~410 ms at 10 ms on loopback).
    pub ice_check_interval: Option<Duration>,
    /// Accept browsers' mDNS (`.local`) host candidates. Off by default: webrtc-rs then opens a
    /// multicast socket per connection, which fails ("No such device") on hosts, containers and
    /// namespaces without a multicast route. Turn it on for browser peers on a LAN without STUN.
    pub mdns: bool,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            ice_servers: Vec::new(),
            ice_transport_policy_relay: false,
            bind_addrs: vec!["0.0.0.0:0".to_owned()],
            socket_buffer_bytes: 4 * 1024 * 1024,
            send_buffer_limit: 1024 * 1024,
            max_message_size: 256 * 1024,
            recv_queue_frames: 256,
            gather_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(15),
            ice_check_interval: None,
            mdns: false,
        }
    }
}

impl WebRtcConfig {
    /// The default configuration bound to one address only, e.g. `"127.0.0.1:0"` for tests.
    pub fn bound_to(addr: &str) -> Self {
        WebRtcConfig {
            bind_addrs: vec![addr.to_owned()],
            ..WebRtcConfig::default()
        }
    }
}

/// Why signalling or connection setup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebRtcError {
    /// The offer/answer JSON or its SDP is malformed, or of the wrong type.
    InvalidSignal(String),
    /// webrtc-rs reported an error.
    WebRtc(String),
    /// A bounded wait ran out.
    Timeout(&'static str),
    /// The peer connection or data channel closed or failed before the link was up.
    Closed,
}

impl fmt::Display for WebRtcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebRtcError::InvalidSignal(e) => write!(f, "invalid signal: {e}"),
            WebRtcError::WebRtc(e) => write!(f, "webrtc: {e}"),
            WebRtcError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            WebRtcError::Closed => f.write_str("peer connection closed before the channel opened"),
        }
    }
}

impl std::error::Error for WebRtcError {}

fn rtc_err(e: ::webrtc::error::Error) -> WebRtcError {
    WebRtcError::WebRtc(e.to_string())
}

/// A P2PT channel label: 20 bytes from `rng` as lowercase hex (40 characters).
pub fn random_label<R: rand::Rng + ?Sized>(rng: &mut R) -> String {
    let mut bytes = [0u8; 20];
    rng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ── Signal JSON ────────────────────────────────────────────────────────────────────────────

#[derive(Serialize, Deserialize)]
struct SignalJson {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

/// Removes `a=ice-options:trickle` lines, as simple-peer does for non-trickle peers.
fn strip_trickle(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if line.trim_end() != "a=ice-options:trickle" {
            out.push_str(line);
        }
    }
    out
}

fn encode_signal(desc: &RTCSessionDescription) -> Result<String, WebRtcError> {
    let kind = match desc.sdp_type {
        RTCSdpType::Offer => "offer",
        RTCSdpType::Answer => "answer",
        other => {
            return Err(WebRtcError::WebRtc(format!(
                "unexpected local description type {other}"
            )));
        }
    };
    serde_json::to_string(&SignalJson {
        kind: kind.to_owned(),
        sdp: strip_trickle(&desc.sdp),
    })
    .map_err(|e| WebRtcError::WebRtc(e.to_string()))
}

fn decode_signal(json: &str, want: RTCSdpType) -> Result<RTCSessionDescription, WebRtcError> {
    let s: SignalJson =
        serde_json::from_str(json).map_err(|e| WebRtcError::InvalidSignal(e.to_string()))?;
    let desc = match (want, s.kind.as_str()) {
        (RTCSdpType::Offer, "offer") => RTCSessionDescription::offer(s.sdp),
        (RTCSdpType::Answer, "answer") => RTCSessionDescription::answer(s.sdp),
        (_, other) => {
            return Err(WebRtcError::InvalidSignal(format!(
                "expected type {want}, got {other:?}"
            )));
        }
    };
    desc.map_err(|e| WebRtcError::InvalidSignal(e.to_string()))
}

// ── Runtime wrapper: bigger UDP socket buffers ──────────────────────────────────────────────

/// Tokio runtime whose UDP sockets get larger kernel buffers.
#[derive(Debug)]
struct BufRuntime {
    inner: TokioRuntime,
    socket_buffer_bytes: usize,
}

type PinFut<'a, T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

impl Runtime for BufRuntime {
    fn spawn(&self, future: PinFut<'static, ()>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }
    fn spawn_reactor(&self, pool: usize, future: PinFut<'static, ()>) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(pool, future)
    }
    fn wrap_udp_socket(&self, socket: UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        if self.socket_buffer_bytes > 0 {
            let r = socket2::SockRef::from(&socket);
            // Best effort: the kernel clamps to rmem_max/wmem_max, and an error only costs speed.
            let _ = r.set_recv_buffer_size(self.socket_buffer_bytes);
            let _ = r.set_send_buffer_size(self.socket_buffer_bytes);
        }
        self.inner.wrap_udp_socket(socket)
    }
    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }
    fn connect_tcp<'a>(
        &'a self,
        remote: std::net::SocketAddr,
    ) -> PinFut<'a, io::Result<Arc<dyn AsyncTcpStream>>> {
        self.inner.connect_tcp(remote)
    }
    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> PinFut<'a, io::Result<Vec<std::net::SocketAddr>>> {
        self.inner.resolve_host(host)
    }
    fn now(&self) -> std::time::Instant {
        self.inner.now()
    }
    fn sleep(&self, duration: Duration) -> PinFut<'static, ()> {
        self.inner.sleep(duration)
    }
    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }
    fn block_on(&self, future: Pin<Box<dyn std::future::Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }
    fn yield_now(&self) -> PinFut<'static, ()> {
        self.inner.yield_now()
    }
}

// ── Event handler ──────────────────────────────────────────────────────────────────────────

/// Receives peer-connection events; must never block (it runs on the connection's driver).
struct Handler {
    gathered: watch::Sender<bool>,
    /// Set once the connection is `Failed` or `Closed`.
    dead: watch::Sender<bool>,
    /// Answerer only: remote channels, handed to [`PendingAnswer::connected`].
    incoming: Option<mpsc::Sender<Arc<dyn DataChannel>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            self.dead.send_replace(true);
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // Never await here. Only the first channel is used; P2PT opens one per connection.
        if let Some(tx) = &self.incoming {
            let _ = tx.try_send(dc);
        }
    }
}

struct HandlerRx {
    gathered: watch::Receiver<bool>,
    dead: watch::Receiver<bool>,
}

fn handler(incoming: Option<mpsc::Sender<Arc<dyn DataChannel>>>) -> (Arc<Handler>, HandlerRx) {
    let (gathered, gathered_rx) = watch::channel(false);
    let (dead, dead_rx) = watch::channel(false);
    (
        Arc::new(Handler {
            gathered,
            dead,
            incoming,
        }),
        HandlerRx {
            gathered: gathered_rx,
            dead: dead_rx,
        },
    )
}

// ── Peer connection guard ──────────────────────────────────────────────────────────────────

/// Owns a peer connection and closes it once: explicitly, or from a spawned task on drop.
struct PcGuard {
    pc: Arc<dyn PeerConnection>,
    closed: AtomicBool,
}

impl PcGuard {
    async fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.pc.close().await;
        }
    }
}

impl Drop for PcGuard {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let pc = self.pc.clone();
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

async fn build_pc(cfg: &WebRtcConfig, handler: Arc<Handler>) -> Result<PcGuard, WebRtcError> {
    let ice_servers = cfg
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
        })
        .collect();
    let policy = if cfg.ice_transport_policy_relay {
        RTCIceTransportPolicy::Relay
    } else {
        RTCIceTransportPolicy::All
    };
    let configuration = RTCConfigurationBuilder::default()
        .with_ice_servers(ice_servers)
        .with_ice_transport_policy(policy)
        .build();
    let max_msg = u32::try_from(cfg.max_message_size).unwrap_or(u32::MAX);
    let mut settings = SettingEngineBuilder::new().with_sctp_max_message_size(
        rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize::Bounded(max_msg),
    );
    if cfg.ice_check_interval.is_some() {
        settings = settings.with_ice_connection_attempts(cfg.ice_check_interval, None);
    }
    settings = settings.with_multicast_dns_mode(if cfg.mdns {
        rtc::ice::mdns::MulticastDnsMode::QueryOnly
    } else {
        rtc::ice::mdns::MulticastDnsMode::Disabled
    });
    let runtime: Arc<dyn Runtime> = Arc::new(BufRuntime {
        inner: TokioRuntime,
        socket_buffer_bytes: cfg.socket_buffer_bytes,
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_setting_engine(settings.build())
        .with_handler(handler)
        .with_runtime(runtime)
        .with_udp_addrs(cfg.bind_addrs.clone())
        .with_data_channel_send_buffer_limit(cfg.send_buffer_limit)
        .build()
        .await
        .map_err(rtc_err)?;
    Ok(PcGuard {
        pc: Arc::new(pc),
        closed: AtomicBool::new(false),
    })
}

/// Waits (bounded) for ICE gathering, then returns the local description as signal JSON.
async fn gathered_description(
    pc: &dyn PeerConnection,
    gathered: &mut watch::Receiver<bool>,
    limit: Duration,
) -> Result<String, WebRtcError> {
    // On timeout, go on with whatever candidates exist, as simple-peer does.
    let _ = tokio::time::timeout(limit, gathered.wait_for(|done| *done)).await;
    let desc = pc.local_description().await.ok_or_else(|| {
        WebRtcError::WebRtc("no local description after set_local_description".into())
    })?;
    encode_signal(&desc)
}

// ── Channel poll task ──────────────────────────────────────────────────────────────────────

/// How long `close` waits for sent data to be acknowledged before resetting the channel.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// After the connection died: how long to wait for each further queued channel event.
const DRAIN_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChanState {
    Connecting,
    Open,
    Closed,
}

/// Aborts a Tokio task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct ChannelParts {
    dc: Arc<dyn DataChannel>,
    state: watch::Receiver<ChanState>,
    frames: mpsc::Receiver<Frame>,
    task: AbortOnDrop,
}

/// Spawns the task that polls `dc` into a bounded frame queue. It ends (dropping the queue's
/// sender, so `recv` returns `None` once drained) when the channel closes or the peer
/// connection fails or closes.
fn spawn_poll(
    dc: Arc<dyn DataChannel>,
    mut dead: watch::Receiver<bool>,
    queue: usize,
) -> ChannelParts {
    let (state_tx, state) = watch::channel(ChanState::Connecting);
    let (frame_tx, frames) = mpsc::channel(queue.max(1));
    let task_dc = dc.clone();
    let task = tokio::spawn(async move {
        let dc = task_dc;
        if let Ok(RTCDataChannelState::Open) = dc.ready_state().await {
            state_tx.send_replace(ChanState::Open);
        }
        // Once the connection is dead, events already queued on the channel (messages that
        // arrived before the close) are still delivered; the stream may then never end by
        // itself, so each further poll is bounded.
        let mut draining = false;
        loop {
            let event = if draining {
                tokio::time::timeout(DRAIN_POLL, dc.poll())
                    .await
                    .unwrap_or(None)
            } else {
                tokio::select! {
                    biased;
                    ev = dc.poll() => ev,
                    _ = dead.wait_for(|d| *d) => {
                        draining = true;
                        continue;
                    }
                }
            };
            match event {
                Some(DataChannelEvent::OnOpen) => {
                    state_tx.send_replace(ChanState::Open);
                }
                Some(DataChannelEvent::OnMessage(msg)) => {
                    let frame = if msg.is_string {
                        match String::from_utf8(msg.data.to_vec()) {
                            Ok(s) => Frame::Text(s),
                            // Invalid UTF-8 in a text message: deliver the bytes rather than lose them.
                            Err(e) => Frame::Binary(e.into_bytes()),
                        }
                    } else {
                        Frame::Binary(msg.data.to_vec())
                    };
                    // Waits while the queue is full: backpressure down to SCTP's window. Not
                    // raced against `dead`, so nothing received is dropped; the task ends when
                    // the link (the queue's receiver) is dropped.
                    if frame_tx.send(frame).await.is_err() {
                        break;
                    }
                }
                Some(DataChannelEvent::OnClose) | None => break,
                Some(_) => {}
            }
        }
        state_tx.send_replace(ChanState::Closed);
    });
    ChannelParts {
        dc,
        state,
        frames,
        task: AbortOnDrop(task),
    }
}

async fn wait_open(state: &mut watch::Receiver<ChanState>) -> Result<(), WebRtcError> {
    match state.wait_for(|s| *s != ChanState::Connecting).await {
        Ok(s) if *s == ChanState::Open => Ok(()),
        _ => Err(WebRtcError::Closed),
    }
}

// ── Offerer ────────────────────────────────────────────────────────────────────────────────

/// An offer waiting for its answer. Dropping it closes the peer connection.
pub struct PendingOffer {
    pc: PcGuard,
    channel: ChannelParts,
    label: String,
    max_message_size: usize,
    connect_timeout: Duration,
}

impl fmt::Debug for PendingOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingOffer")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Builds a peer connection with one data channel labelled `label` and returns the complete
/// (non-trickle) offer as `{"type":"offer","sdp":"..."}`.
pub async fn create_offer(
    cfg: &WebRtcConfig,
    label: &str,
) -> Result<(PendingOffer, String), WebRtcError> {
    let (handler, mut rx) = handler(None);
    let pc = build_pc(cfg, handler).await?;
    let dc = pc
        .pc
        .create_data_channel(label, Some(RTCDataChannelInit::default()))
        .await
        .map_err(rtc_err)?;
    let channel = spawn_poll(dc, rx.dead.clone(), cfg.recv_queue_frames);
    let offer = pc.pc.create_offer(None).await.map_err(rtc_err)?;
    pc.pc.set_local_description(offer).await.map_err(rtc_err)?;
    let json = gathered_description(&*pc.pc, &mut rx.gathered, cfg.gather_timeout).await?;
    let pending = PendingOffer {
        pc,
        channel,
        label: label.to_owned(),
        max_message_size: cfg.max_message_size,
        connect_timeout: cfg.connect_timeout,
    };
    Ok((pending, json))
}

impl PendingOffer {
    /// The channel label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Applies the remote answer and waits (bounded) for the channel to open. On error the
    /// peer connection is closed.
    pub async fn accept_answer(self, answer_json: &str) -> Result<WebRtcLink, WebRtcError> {
        let answer = decode_signal(answer_json, RTCSdpType::Answer)?;
        self.pc
            .pc
            .set_remote_description(answer)
            .await
            .map_err(rtc_err)?;
        let mut state = self.channel.state.clone();
        tokio::time::timeout(self.connect_timeout, wait_open(&mut state))
            .await
            .map_err(|_| WebRtcError::Timeout("the data channel to open"))??;
        Ok(WebRtcLink::new(
            self.pc,
            self.channel,
            self.label,
            self.max_message_size,
        ))
    }
}

// ── Answerer ───────────────────────────────────────────────────────────────────────────────

/// An answered offer waiting for the remote's channel. Dropping it closes the peer connection.
pub struct PendingAnswer {
    pc: PcGuard,
    incoming: mpsc::Receiver<Arc<dyn DataChannel>>,
    dead: watch::Receiver<bool>,
    max_message_size: usize,
    recv_queue_frames: usize,
    connect_timeout: Duration,
}

impl fmt::Debug for PendingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAnswer").finish_non_exhaustive()
    }
}

/// Applies a remote offer (`{"type":"offer","sdp":"..."}`) and returns the complete answer JSON
/// to send back, plus the pending connection.
pub async fn accept_offer(
    cfg: &WebRtcConfig,
    offer_json: &str,
) -> Result<(String, PendingAnswer), WebRtcError> {
    let offer = decode_signal(offer_json, RTCSdpType::Offer)?;
    let (tx, incoming) = mpsc::channel(4);
    let (handler, mut rx) = handler(Some(tx));
    let pc = build_pc(cfg, handler).await?;
    pc.pc
        .set_remote_description(offer)
        .await
        .map_err(|e| WebRtcError::InvalidSignal(e.to_string()))?;
    let answer = pc.pc.create_answer(None).await.map_err(rtc_err)?;
    pc.pc.set_local_description(answer).await.map_err(rtc_err)?;
    let json = gathered_description(&*pc.pc, &mut rx.gathered, cfg.gather_timeout).await?;
    let pending = PendingAnswer {
        pc,
        incoming,
        dead: rx.dead,
        max_message_size: cfg.max_message_size,
        recv_queue_frames: cfg.recv_queue_frames,
        connect_timeout: cfg.connect_timeout,
    };
    Ok((json, pending))
}

impl PendingAnswer {
    /// Waits (bounded) for the remote's data channel to arrive and open.
    pub async fn connected(mut self) -> Result<WebRtcLink, WebRtcError> {
        let limit = self.connect_timeout;
        let mut dead = self.dead.clone();
        let (channel, label) = tokio::time::timeout(limit, async {
            let dc = tokio::select! {
                dc = self.incoming.recv() => dc.ok_or(WebRtcError::Closed)?,
                _ = dead.wait_for(|d| *d) => return Err(WebRtcError::Closed),
            };
            let label = dc.label().await.map_err(rtc_err)?;
            let channel = spawn_poll(dc, self.dead.clone(), self.recv_queue_frames);
            let mut state = channel.state.clone();
            wait_open(&mut state).await?;
            Ok((channel, label))
        })
        .await
        .map_err(|_| WebRtcError::Timeout("the remote data channel to open"))??;
        Ok(WebRtcLink::new(
            self.pc,
            channel,
            label,
            self.max_message_size,
        ))
    }
}

// ── The link ───────────────────────────────────────────────────────────────────────────────

/// A [`Link`] over one WebRTC data channel. Dropping it closes the peer connection.
pub struct WebRtcLink {
    label: String,
    max_message_size: usize,
    dc: Arc<dyn DataChannel>,
    state: watch::Receiver<ChanState>,
    frames: Mutex<mpsc::Receiver<Frame>>,
    // Field order matters for drop: stop polling, then close the connection.
    _task: AbortOnDrop,
    pc: PcGuard,
}

impl fmt::Debug for WebRtcLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRtcLink")
            .field("label", &self.label)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl WebRtcLink {
    fn new(pc: PcGuard, channel: ChannelParts, label: String, max_message_size: usize) -> Self {
        WebRtcLink {
            label,
            max_message_size,
            dc: channel.dc,
            state: channel.state,
            frames: Mutex::new(channel.frames),
            _task: channel.task,
            pc,
        }
    }

    /// Boxes the link for the node core.
    pub fn boxed(self) -> Box<dyn Link> {
        Box::new(self)
    }

    async fn send_frame(&self, frame: Frame) -> Result<(), LinkError> {
        let size = frame.len();
        if size > self.max_message_size {
            return Err(LinkError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        if *self.state.borrow() == ChanState::Closed {
            return Err(LinkError::Closed);
        }
        let sent = match frame {
            Frame::Text(text) => self.dc.send_text(&text).await,
            Frame::Binary(bytes) => {
                let buf = Bytes::from(bytes)
                    .try_into_mut()
                    .unwrap_or_else(|b| BytesMut::from(&b[..]));
                self.dc.send(buf).await
            }
        };
        sent.map_err(|e| match e {
            ::webrtc::error::Error::ErrDataChannelClosed
            | ::webrtc::error::Error::ErrClosedPipe => LinkError::Closed,
            e if *self.state.borrow() == ChanState::Closed => {
                let _ = e;
                LinkError::Closed
            }
            e => LinkError::Transport(e.to_string()),
        })
    }

    async fn close_link(&self) {
        if *self.state.borrow() != ChanState::Closed {
            // webrtc-rs drops data still unacknowledged when the channel closes (a message sent
            // just before `close` was lost in tests), so first wait, bounded, for the remote to
            // acknowledge everything sent.
            let deadline = tokio::time::Instant::now() + CLOSE_FLUSH_LIMIT;
            while matches!(self.dc.outstanding_bytes().await, Ok(n) if n > 0)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // The stream reset tells the remote; give it a moment to go out before the
            // connection (and its sockets) go away.
            let _ = self.dc.close().await;
            let mut state = self.state.clone();
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                state.wait_for(|s| *s == ChanState::Closed),
            )
            .await;
        }
        self.pc.close().await;
    }
}

impl Link for WebRtcLink {
    fn send(&self, frame: Frame) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(self.send_frame(frame))
    }

    fn recv(&self) -> BoxFuture<'_, Option<Frame>> {
        Box::pin(async move { self.frames.lock().await.recv().await })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.close_link())
    }

    fn label(&self) -> &str {
        &self.label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_trickle_lines_only() {
        let sdp = "v=0\r\na=ice-options:trickle\r\na=ice-ufrag:x\r\na=ice-options:trickle\n";
        assert_eq!(strip_trickle(sdp), "v=0\r\na=ice-ufrag:x\r\n");
    }

    #[test]
    fn label_is_40_hex_chars() {
        let mut rng = rand::rng();
        let l = random_label(&mut rng);
        assert_eq!(l.len(), 40);
        assert!(l.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn bad_signals_are_errors() {
        assert!(decode_signal("not json", RTCSdpType::Offer).is_err());
        assert!(decode_signal(r#"{"type":"answer","sdp":"v=0"}"#, RTCSdpType::Offer).is_err());
        assert!(decode_signal(r#"{"type":"offer","sdp":"garbage"}"#, RTCSdpType::Offer).is_err());
    }
}
