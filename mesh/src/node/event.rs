//! What a [`Node`](super::Node) tells the application.

use std::fmt;

use crate::wire::{MsgId, Payload, WireError};

/// Identifies one request of ours that awaits a response: returned by
/// [`Node::send`](super::Node::send) and named again by the [`Event`] that settles it.
///
/// Unique for the node's lifetime (a counter), unlike the P2PT message id, which is reused by
/// chained conversations and drawn from only 100,000 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The counter value (1 for the node's first request).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request#{}", self.0)
    }
}

/// Names one incoming message, to answer it with [`Node::respond`](super::Node::respond).
///
/// Every message carries its own handle. P2PT instead keeps one `peer.respond` per channel
/// and rebinds it to the newest incoming message (ghostmesh-wire.md §5.1.1), so an answer
/// given after another message arrived goes out under the wrong id; with handles it cannot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageHandle<P> {
    pub(crate) peer: P,
    pub(crate) id: MsgId,
}

impl<P> MessageHandle<P> {
    /// The peer that sent the message.
    pub fn peer(&self) -> &P {
        &self.peer
    }

    /// The message's id, which the answer reuses.
    pub fn id(&self) -> &MsgId {
        &self.id
    }
}

/// A frame that is not a P2PT envelope (it does not start with `^`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    /// A text frame.
    Text(String),
    /// A binary frame, as received (its lossy UTF-8 decoding did not start with `^`).
    Binary(Vec<u8>),
}

/// Something the application should know; see [`Node::poll_event`](super::Node::poll_event).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<P> {
    /// A new incoming message (its id matched no request of ours). Answer it with
    /// [`Node::respond`](super::Node::respond) and `handle`, or not at all.
    Message {
        /// The sender.
        peer: P,
        /// Names this message for a response.
        handle: MessageHandle<P>,
        /// The content.
        payload: Payload,
    },
    /// The answer to one of our requests. `handle` lets the conversation go on under the
    /// same id (respond to the response), as P2PT's chained messages do.
    Response {
        /// The peer that answered.
        peer: P,
        /// The request it answers.
        request: RequestId,
        /// Names the response, to respond to it in turn.
        handle: MessageHandle<P>,
        /// The content.
        payload: Payload,
    },
    /// No response arrived within the request's timeout. A late response will arrive as a
    /// [`Event::Message`].
    Timeout {
        /// The peer that did not answer.
        peer: P,
        /// The request.
        request: RequestId,
    },
    /// The link to the peer went down while the request awaited a response.
    PeerFailed {
        /// The peer.
        peer: P,
        /// The request.
        request: RequestId,
    },
    /// A frame that is not a P2PT envelope (P2PT's raw `data` event).
    Raw {
        /// The sender.
        peer: P,
        /// The frame.
        data: RawFrame,
    },
    /// An envelope frame was rejected. Nothing else happened; the node stays usable.
    ProtocolError {
        /// The sender.
        peer: P,
        /// What was wrong.
        error: WireError,
    },
}
