//! Links: one bidirectional, reliable, ordered message channel to one remote peer, as the node
//! core sees it. Transports make links: [`memory`] (in-process, with settable latency and
//! bandwidth, for tests and the harness) and `webrtc` (webrtc-rs data channels); a
//! [`connector`] makes them from tracker-relayed offers and answers.
//!
//! A link carries whole messages (WebRTC data-channel messages), not a byte stream. `send`
//! waits when the transport's buffer is full: that is the backpressure the shell relies on,
//! so no layer above grows an unbounded queue.

use std::future::Future;
use std::pin::Pin;

pub mod connector;
pub mod memory;
pub mod webrtc;

/// One data-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text message (what P2PT and GhostMesh send).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Frame {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a link operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The link is closed (by either side, or the transport failed).
    Closed,
    /// The frame is larger than the link accepts.
    TooLarge {
        /// Frame size in bytes.
        size: usize,
        /// The link's limit.
        max: usize,
    },
    /// A transport-specific failure.
    Transport(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Closed => f.write_str("link closed"),
            LinkError::TooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds the link's limit of {max}")
            }
            LinkError::Transport(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// A boxed future, so links of different transports can sit behind `dyn Link`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A message channel to one remote peer.
pub trait Link: Send + Sync + std::fmt::Debug {
    /// Sends one message; waits while the transport's send buffer is full.
    fn send(&self, frame: Frame) -> BoxFuture<'_, Result<(), LinkError>>;
    /// The next message; `None` once the link is closed and drained.
    fn recv(&self) -> BoxFuture<'_, Option<Frame>>;
    /// Closes the link; pending and later `recv`s on both sides end with `None`.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// The channel label (P2PT: 20 random bytes as hex, chosen by the offerer).
    fn label(&self) -> &str;
}
