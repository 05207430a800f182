//! The error type of the envelope layer.

use std::fmt;

use super::MsgId;

/// Why a frame or a message was rejected.
///
/// Every error is about one frame (and, where named, the message it belonged to). The
/// [`Reassembler`](super::Reassembler) never panics and never keeps a half-broken message: when
/// a chunk is rejected, the partial message it belonged to (if any) is dropped with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The text after `^` is not a JSON object with the envelope fields (`id` and `msg` are
    /// required), or a field has the wrong JSON type.
    Malformed {
        /// What was wrong, for logs.
        reason: String,
    },
    /// `c` is present but is not a non-negative integer (missing or `null` counts as 0).
    InvalidChunkIndex {
        /// The message the chunk claimed to belong to.
        id: MsgId,
        /// The raw JSON of `c`.
        raw: String,
    },
    /// A chunk arrived whose index is not the next one expected for its message. The data
    /// channel is ordered, so this means a lost chunk, a duplicate or a hostile peer. Any
    /// partial message under this id is dropped.
    ChunkOutOfOrder {
        /// The message id.
        id: MsgId,
        /// The index the reassembler was waiting for (0 when no message was in progress).
        expected: u64,
        /// The index that arrived.
        got: u64,
    },
    /// The message would exceed
    /// [`ReassemblyLimits::max_message_units`](super::ReassemblyLimits::max_message_units).
    /// The partial message is dropped.
    MessageTooLarge {
        /// The message id.
        id: MsgId,
        /// The limit, in UTF-16 code units.
        limit: usize,
    },
    /// The peer already has
    /// [`ReassemblyLimits::max_partials_per_peer`](super::ReassemblyLimits::max_partials_per_peer)
    /// messages in progress; the new one is refused.
    TooManyPartialsForPeer {
        /// The refused message id.
        id: MsgId,
        /// The limit.
        limit: usize,
    },
    /// All peers together already have
    /// [`ReassemblyLimits::max_partials`](super::ReassemblyLimits::max_partials) messages in
    /// progress; the new one is refused.
    TooManyPartials {
        /// The refused message id.
        id: MsgId,
        /// The limit.
        limit: usize,
    },
    /// Buffering this chunk would exceed
    /// [`ReassemblyLimits::max_buffered_units`](super::ReassemblyLimits::max_buffered_units)
    /// across all partial messages. The partial message is dropped.
    BufferFull {
        /// The message id.
        id: MsgId,
        /// The limit, in UTF-16 code units.
        limit: usize,
    },
    /// The reassembled text still contains an unpaired UTF-16 surrogate, so it is not valid
    /// Unicode and cannot become a Rust `String`.
    LoneSurrogate {
        /// The message id.
        id: MsgId,
    },
    /// The message was flagged `o` (a JSON value) but its text is not valid JSON.
    InvalidJson {
        /// The message id.
        id: MsgId,
        /// The parser's complaint.
        reason: String,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { reason } => write!(f, "malformed envelope frame: {reason}"),
            Self::InvalidChunkIndex { id, raw } => write!(
                f,
                "message {id}: chunk index `c` must be a non-negative integer, got {raw}"
            ),
            Self::ChunkOutOfOrder { id, expected, got } => write!(
                f,
                "message {id}: expected chunk {expected}, got chunk {got}; message dropped"
            ),
            Self::MessageTooLarge { id, limit } => write!(
                f,
                "message {id}: larger than {limit} UTF-16 code units; message dropped"
            ),
            Self::TooManyPartialsForPeer { id, limit } => write!(
                f,
                "message {id}: the peer already has {limit} unfinished messages; refused"
            ),
            Self::TooManyPartials { id, limit } => write!(
                f,
                "message {id}: {limit} unfinished messages are already buffered; refused"
            ),
            Self::BufferFull { id, limit } => write!(
                f,
                "message {id}: unfinished messages would exceed {limit} buffered UTF-16 code units; message dropped"
            ),
            Self::LoneSurrogate { id } => write!(
                f,
                "message {id}: text contains an unpaired UTF-16 surrogate after reassembly"
            ),
            Self::InvalidJson { id, reason } => {
                write!(f, "message {id}: flagged as JSON (o) but invalid: {reason}")
            }
        }
    }
}

impl std::error::Error for WireError {}
