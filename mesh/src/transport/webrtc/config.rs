//! [`WebRtcConfig`]: what every peer connection of this transport is built with.

use std::time::Duration;

use ::webrtc::peer_connection::{
    RTCConfiguration, RTCConfigurationBuilder, RTCIceServer, RTCIceTransportPolicy, SettingEngine,
    SettingEngineBuilder,
};
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use rtc::peer_connection::transport::RTCDtlsRole;

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
///
/// Build it with struct-update syntax so new fields keep their defaults:
///
/// ```
/// use ghostmesh::transport::webrtc::WebRtcConfig;
/// use std::time::Duration;
///
/// let cfg = WebRtcConfig {
///     connect_timeout: Duration::from_secs(30),
///     ..WebRtcConfig::bound_to("127.0.0.1:0")
/// };
/// assert_eq!(cfg.bind_addrs, ["127.0.0.1:0"]);
/// ```
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
    /// Per-channel send-buffer limit in bytes: [`Link::send`](crate::transport::Link::send)
    /// waits while this many bytes are unacknowledged. Default 1 MiB.
    pub send_buffer_limit: usize,
    /// Largest message accepted by [`Link::send`](crate::transport::Link::send) and advertised
    /// as `a=max-message-size`. Default 256 KiB, what browsers and libdatachannel advertise: a
    /// P2PT chunk of 16000 UTF-16 units can reach ~96 KB once JSON-escaped, past webrtc-rs's
    /// own 64 KiB default.
    pub max_message_size: usize,
    /// Capacity, in frames, of each link's receive queue (see the module docs). Default 256.
    pub recv_queue_frames: usize,
    /// How long to wait for ICE gathering to complete before sending the description with
    /// whatever candidates exist (simple-peer waits 5 s). Default 5 s.
    pub gather_timeout: Duration,
    /// How long [`PendingOffer::accept_answer`](super::PendingOffer::accept_answer) and
    /// [`PendingAnswer::connected`](super::PendingAnswer::connected) wait for the channel to
    /// open. Default 15 s.
    pub connect_timeout: Duration,
    /// ICE connectivity-check interval; `None` keeps webrtc-rs's 200 ms (which also paces
    /// retries on real networks). With [`setup_wake_interval`](Self::setup_wake_interval) set,
    /// a shorter interval no longer shortens setup on loopback.
    pub ice_check_interval: Option<Duration>,
    /// While a connection is being set up (until its channel opens), wake the connection's
    /// driver at least this often. Default 2 ms; `None` keeps webrtc-rs's behaviour.
    ///
    /// webrtc-rs 0.21 leaves the packets of each handshake step (DTLS ClientHello, SCTP INIT,
    /// DCEP OPEN) queued until its next protocol timer, ~200 ms per step: ~600 ms to connect
    /// on loopback instead of a few milliseconds. This changes no timeout or retransmission
    /// interval, only how soon queued packets leave, so it is as safe on the Internet as on
    /// loopback. Its cost is one no-op driver pass per interval per connection being set
    /// up, from the moment the handshake can start (the offerer applies the answer; the
    /// answerer has made its answer; an offer waiting for an answer costs nothing) until the
    /// channel opens, at most 5 s (or [`connect_timeout`](Self::connect_timeout) if
    /// shorter); a slower setup goes on at webrtc-rs's pace.
    pub setup_wake_interval: Option<Duration>,
    /// Offer with `a=setup:active` instead of `actpass`, so that the answerer is the DTLS
    /// server and waits for our ClientHello. Default on.
    ///
    /// Why: an answerer that is the DTLS client (what `actpass` lets every implementation
    /// choose) sends its ClientHello as soon as its ICE check succeeds, which is often before
    /// the answer has travelled back through the tracker and been applied here; webrtc-rs
    /// drops it and the handshake waits for the answerer's retransmission (1 s in
    /// libdatachannel, used by P2PT in Node: Rust offer to P2PT answer took ~1.07 s, now
    /// ~80 ms). Our own connection still follows the answer's `a=setup`, so an answerer that
    /// insists on `active` also works.
    ///
    /// Compatibility: JSEP answerers (browsers, libdatachannel, this crate) answer an active
    /// offer with `passive`. webrtc-rs 0.21 on its own does not (it answers `active`, and then
    /// both ends wait as DTLS servers); this crate's answerer corrects that, but a third-party
    /// answerer with the same flaw (an application on plain webrtc-rs 0.21) would never
    /// connect to such an offer.
    /// Turn this off to send exactly what webrtc-rs generates.
    pub offer_dtls_client: bool,
    /// SCTP MTU: the size of each outbound SCTP packet (one DTLS record in one UDP datagram,
    /// ~37 bytes more on the wire). `None` keeps webrtc-rs's 1191, sized for a TURN-relayed
    /// IPv6 path with a 1280-byte MTU. Default `Some(1052)`: 1024 payload bytes per packet.
    ///
    /// Why 1052: webrtc-rs sends a run of equal-size datagrams with one UDP GSO `sendmsg`
    /// (and the receiver gets them with one GRO read) only when the run has at least 16 of
    /// them. At 1191 a 16 KiB message is 14 full packets and a short one, so every packet
    /// costs a syscall on each side; at 1052 it is 16 equal packets and consecutive
    /// messages form runs of up to ~60. That doubled 16 KiB throughput on loopback, for
    /// ~10 % less at 64 KiB (12 % more packets). Smaller than the stack's default, so it is
    /// safe on every path that one is.
    ///
    /// Larger values cut the per-packet cost further (16384 gave >400 MB/s on loopback) but
    /// only fit where every hop carries such datagrams unfragmented *and* the receiver reads
    /// them whole: between two peers of this crate on loopback (with UDP GRO, Linux ≥ 5.0;
    /// without it webrtc-rs reads into 2000-byte buffers). Never with browsers or
    /// libdatachannel, and never above 16384 (the DTLS record limit).
    pub sctp_mtu: Option<u32>,
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
            setup_wake_interval: Some(Duration::from_millis(2)),
            offer_dtls_client: true,
            sctp_mtu: Some(1052),
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

    /// This configuration with webrtc-rs's own timing and packet size back: no setup
    /// wake-ups, `actpass` offers, webrtc-rs's SCTP MTU. For comparisons (the bench) and as
    /// a fallback should one of these defaults misbehave with some peer.
    pub fn stack_defaults(mut self) -> Self {
        self.setup_wake_interval = None;
        self.offer_dtls_client = false;
        self.sctp_mtu = None;
        self
    }

    pub(super) fn rtc_configuration(&self) -> RTCConfiguration {
        let ice_servers = self
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect();
        let policy = if self.ice_transport_policy_relay {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        };
        RTCConfigurationBuilder::default()
            .with_ice_servers(ice_servers)
            .with_ice_transport_policy(policy)
            .build()
    }

    /// `answer_as_dtls_server`: the remote offer said `a=setup:active`. webrtc-rs 0.21 would
    /// still answer `active` (both ends then wait as DTLS servers), so it is told to answer
    /// `passive`.
    pub(super) fn setting_engine(&self, answer_as_dtls_server: bool) -> SettingEngine {
        let max_msg = u32::try_from(self.max_message_size).unwrap_or(u32::MAX);
        let mut settings = SettingEngineBuilder::new()
            .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(max_msg));
        if self.ice_check_interval.is_some() {
            settings = settings.with_ice_connection_attempts(self.ice_check_interval, None);
        }
        settings = settings.with_multicast_dns_mode(if self.mdns {
            rtc::ice::mdns::MulticastDnsMode::QueryOnly
        } else {
            rtc::ice::mdns::MulticastDnsMode::Disabled
        });
        if let Some(mtu) = self.sctp_mtu {
            settings = settings.with_sctp_mtu(mtu);
        }
        if answer_as_dtls_server {
            settings = settings.with_answering_dtls_role(RTCDtlsRole::Server);
        }
        settings.build()
    }
}
