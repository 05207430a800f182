//! Limits and timeouts of a [`Node`](super::Node).

use std::time::Duration;

use crate::wire::{MAX_CHUNK_UNITS, ReassemblyLimits};

/// How a [`Node`](super::Node) behaves and what it may cost.
///
/// Every bound here is about what *we* keep: P2PT and GhostMesh keep a resolver per sent
/// message forever and queue without limit (ghostmesh-wire.md §5.1.2–4). What a remote peer
/// can make us buffer is bounded by [`reassembly`](Self::reassembly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// How long [`send`](super::Node::send) waits for a response before
    /// [`Event::Timeout`](super::Event::Timeout). Default 60 s, GhostMesh's routed-request
    /// timeout (P2PT itself has none).
    pub request_timeout: Duration,
    /// Most requests awaiting a response from one peer. Default 1024.
    pub max_pending_per_peer: usize,
    /// Most requests awaiting a response across all peers. Default 16384.
    pub max_pending: usize,
    /// Most frames queued for one peer and not yet taken by
    /// [`poll_transmit`](super::Node::poll_transmit). Default 4096 (about four messages of the
    /// largest default size).
    pub max_queued_frames_per_peer: usize,
    /// Most bytes (UTF-8 length of the frames) queued for one peer. Default 64 MiB.
    pub max_queued_bytes_per_peer: usize,
    /// Largest message we send, in UTF-16 code units of its `msg` text. Default 16 Mi units,
    /// the default [`ReassemblyLimits::max_message_units`], so that a peer with default limits
    /// accepts everything we send.
    pub max_message_units: usize,
    /// Chunk size of outgoing messages, in UTF-16 code units. Default
    /// [`MAX_CHUNK_UNITS`] (16000), P2PT's; change it only to test.
    pub max_chunk_units: usize,
    /// Bounds on incoming unfinished messages, enforced by the
    /// [`Reassembler`](crate::wire::Reassembler).
    pub reassembly: ReassemblyLimits,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let reassembly = ReassemblyLimits::default();
        Self {
            request_timeout: Duration::from_secs(60),
            max_pending_per_peer: 1024,
            max_pending: 16 * 1024,
            max_queued_frames_per_peer: 4096,
            max_queued_bytes_per_peer: 64 * 1024 * 1024,
            max_message_units: reassembly.max_message_units,
            max_chunk_units: MAX_CHUNK_UNITS,
            reassembly,
        }
    }
}
