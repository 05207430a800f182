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
//! ```no_run
//! # async fn demo() -> Result<(), ghostmesh::transport::webrtc::WebRtcError> {
//! use ghostmesh::transport::webrtc::{WebRtcConfig, accept_offer, create_offer};
//! use ghostmesh::transport::{Frame, Link};
//!
//! let cfg = WebRtcConfig::bound_to("127.0.0.1:0");
//! let (pending_offer, offer_json) = create_offer(&cfg, "my-label").await?;
//! // ... offer_json travels to the remote (e.g. through a tracker), which does:
//! let (answer_json, pending_answer) = accept_offer(&cfg, &offer_json).await?;
//! // ... answer_json travels back.
//! let (a, b) = tokio::join!(pending_offer.accept_answer(&answer_json), pending_answer.connected());
//! let (a, b) = (a?.boxed(), b?.boxed());
//! a.send(Frame::Text("hi".into())).await.ok();
//! assert_eq!(b.recv().await, Some(Frame::Text("hi".into())));
//! # Ok(()) }
//! ```
//!
//! # Connection setup time
//!
//! Two defaults make a connection open in milliseconds on a LAN instead of ~0.6-1.2 s; both
//! are explained on their fields and can be turned off ([`WebRtcConfig::stack_defaults`]):
//! [`WebRtcConfig::setup_wake_interval`] (webrtc-rs otherwise holds each handshake step's
//! packets until its next ~200 ms timer) and [`WebRtcConfig::offer_dtls_client`] (the offerer
//! is the DTLS client, so an early ClientHello from the answerer cannot be lost).
//!
//! # Flow control
//!
//! * Sending: the peer connection is built with
//!   [`WebRtcConfig::send_buffer_limit`], so [`Link::send`](crate::transport::Link::send)
//!   waits while the channel has that many bytes handed to SCTP but not yet acknowledged.
//! * Receiving: one task per link polls the channel and pushes frames into a bounded queue of
//!   [`WebRtcConfig::recv_queue_frames`]. When the application stops calling
//!   [`Link::recv`](crate::transport::Link::recv), the queue fills, the task stops polling,
//!   webrtc-rs stops draining SCTP, the advertised receive window shrinks and the *remote
//!   sender* is slowed down. That is: **backpressure, never drops, never an unbounded
//!   queue**. The link stays open while the application is slow. What can sit unread per
//!   link is still sizable, because webrtc-rs buffers too (a 256-message per-channel event
//!   queue, a driver backlog, the 1 MiB SCTP receive window): with 16 KiB messages, an
//!   8-frame queue and a 256 KiB send limit the sender stalled after ~606 unread messages
//!   (~9.7 MiB) in `tests/webrtc_link.rs`.
//!
//! # Lifetime
//!
//! Dropping a [`PendingOffer`], [`PendingAnswer`] or [`WebRtcLink`] closes its peer connection
//! (from a spawned task, so it needs a Tokio runtime; without one the connection's driver is only
//! stopped when the process ends). [`Link::close`](crate::transport::Link::close) closes the
//! data channel (the remote sees the SCTP stream reset and its `recv` ends with `None`), then
//! the peer connection.
//!
//! # Layout
//!
//! `config` ([`WebRtcConfig`]), `signal` (offer/answer JSON and SDP edits), `runtime` (the
//! Tokio runtime wrapper: socket buffers, setup wake-ups), `peer` (building and closing a peer
//! connection), `setup` (offerer and answerer), `channel` (the receive task), `link`
//! ([`WebRtcLink`]).

use std::fmt;

mod channel;
mod config;
mod link;
mod peer;
mod runtime;
mod setup;
mod signal;

pub use config::{IceServer, WebRtcConfig};
pub use link::WebRtcLink;
pub use setup::{PendingAnswer, PendingOffer, accept_offer, create_offer};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_is_40_hex_chars() {
        let mut rng = rand::rng();
        let l = random_label(&mut rng);
        assert_eq!(l.len(), 40);
        assert!(l.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
