//! [`Output`]: what a [`TrackerClient`](super::TrackerClient) asks its shell to do.

use std::time::Duration;

use super::Id20;

/// What the shell must do, in order. Drain with [`TrackerClient::poll_output`](super::TrackerClient::poll_output) after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open the WebSocket to the tracker after this delay, then call
    /// [`connected`](super::TrackerClient::connected) (or [`disconnected`](super::TrackerClient::disconnected)
    /// if that fails). The first one, `Connect(0)`, is queued by [`TrackerClient::new`](super::TrackerClient::new).
    Connect(Duration),
    /// Send this exact text as one WebSocket text frame.
    Send(String),
    /// Make this many WebRTC offers (initiator connections, non-trickle SDP), give each a fresh
    /// [`Id20::random`] offer id, and hand them to [`offers_ready`](super::TrackerClient::offers_ready).
    NeedOffers(usize),
    /// The tracker relayed `from_peer`'s offer: make an answering connection, then call
    /// [`answer_ready`](super::TrackerClient::answer_ready) with the same `from_peer` and `offer_id`.
    Offer {
        /// The offerer (show as [`Id20::to_hex`]).
        from_peer: Id20,
        /// The offerer's id for this offer, echoed in the answer.
        offer_id: Id20,
        /// The offer object's JSON text, as relayed.
        offer: String,
    },
    /// `from_peer` answered our pending offer `offer_id`: signal it to that connection.
    Answer {
        /// The answerer.
        from_peer: Id20,
        /// Our offer.
        offer_id: Id20,
        /// The answer object's JSON text, as relayed.
        answer: String,
    },
    /// Our offer `offer_id` can no longer be answered (timeout, bound, disconnect or stop):
    /// destroy that pending connection.
    ExpireOffer(Id20),
    /// The tracker's swarm counts (P2PT's `trackerconnect`; sent on every announce reply).
    TrackerUpdate {
        /// Seeders.
        complete: u64,
        /// Leechers.
        incomplete: u64,
    },
    /// A `failure reason` or `warning message` from the tracker, or a frame that was refused.
    Warning(String),
}
