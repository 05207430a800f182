//! Why a send was refused.

use std::fmt;

use crate::wire::MsgId;

/// Why [`Node::send`](super::Node::send) (or a respond) queued nothing.
///
/// A refused send changes nothing in the node (it may have drawn from the RNG).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// There is no open link to the peer ([`Node::link_up`](super::Node::link_up) was not
    /// called, or [`link_down`](super::Node::link_down) was).
    NoLink,
    /// The message is larger than
    /// [`NodeConfig::max_message_units`](super::NodeConfig::max_message_units).
    TooLarge {
        /// The message's size in UTF-16 code units.
        units: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer already has
    /// [`max_pending_per_peer`](super::NodeConfig::max_pending_per_peer) requests awaiting a
    /// response.
    TooManyPendingForPeer {
        /// The limit.
        limit: usize,
    },
    /// [`max_pending`](super::NodeConfig::max_pending) requests already await a response.
    TooManyPending {
        /// The limit.
        limit: usize,
    },
    /// The peer's outbound queue would exceed
    /// [`max_queued_frames_per_peer`](super::NodeConfig::max_queued_frames_per_peer) or
    /// [`max_queued_bytes_per_peer`](super::NodeConfig::max_queued_bytes_per_peer). Drain
    /// [`poll_transmit`](super::Node::poll_transmit) and try again.
    Backpressure {
        /// Frames already queued for the peer.
        queued_frames: usize,
        /// Bytes already queued for the peer.
        queued_bytes: usize,
        /// Frames this message needs.
        frames: usize,
        /// Bytes this message needs.
        bytes: usize,
    },
    /// [`respond_expecting_reply`](super::Node::respond_expecting_reply): a request of ours
    /// to this peer already awaits a response under this id.
    IdInUse {
        /// The id.
        id: MsgId,
    },
    /// Every id in P2PT's range is awaiting a response from this peer (only possible with
    /// `max_pending_per_peer` of 100,000 or more).
    IdsExhausted,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLink => write!(f, "no open link to the peer"),
            Self::TooLarge { units, limit } => write!(
                f,
                "message of {units} UTF-16 code units exceeds the limit of {limit}"
            ),
            Self::TooManyPendingForPeer { limit } => {
                write!(f, "{limit} requests to this peer already await a response")
            }
            Self::TooManyPending { limit } => {
                write!(f, "{limit} requests already await a response")
            }
            Self::Backpressure {
                queued_frames,
                queued_bytes,
                frames,
                bytes,
            } => write!(
                f,
                "outbound queue full: {queued_frames} frames / {queued_bytes} bytes queued, \
                 message needs {frames} frames / {bytes} bytes"
            ),
            Self::IdInUse { id } => {
                write!(
                    f,
                    "a request to this peer already awaits a response under id {id}"
                )
            }
            Self::IdsExhausted => write!(f, "every P2PT id awaits a response from this peer"),
        }
    }
}

impl std::error::Error for SendError {}
