//! File transfer, wire-compatible with GhostMesh (`file-offer`, `file-chunk`,
//! `file-range-request`, `file-end`, `file-cancel`; base64 chunks, 12 KiB by default), with a
//! negotiated binary fast path between Rust peers.
//!
//! - [`Mesh::send_file`](crate::mesh::Mesh::send_file) returns a live [`FileSession`] at once;
//!   incoming transfers arrive as [`MeshEvent::File`](crate::mesh::MeshEvent::File).
//! - Receivers write bytes to a temporary file as they arrive (memory stays bounded whatever
//!   the size), track every byte range, complete only when all bytes arrived and the sender
//!   said `file-end`, and check the SHA-256 when the sender gave one (in the offer, or, from
//!   Rust senders, in `file-end`).
//! - Fast path: a Rust sender marks its offer `fast`; a Rust receiver answers `file-accept`
//!   with a window, and the sender switches to binary chunk frames (no base64, no JSON) kept
//!   under that window by the receiver's `file-ack`s. A JavaScript receiver never answers, so
//!   it gets GhostMesh's format throughout, and never sees a packet it does not know.
//! - Bad input (chunks for unknown transfers, out-of-range offsets, oversized files, a sender
//!   that goes silent, a receiver that stops taking bytes or acknowledging them, a failed hash
//!   check) ends the session on both sides with a clear [`FileError`] and frees its resources.
//! - What a peer can make us queue is capped: per peer, file frames, range replies and control
//!   packets waiting for the links stay under [`FileConfig::max_outbox_bytes`] (chunks wait,
//!   range replies and control packets beyond it are dropped and counted in [`FileStats`]).
//! - Routed transfers (GhostMesh's `sendFile` with `onion`): with routing defaults set
//!   ([`MeshBuilder::routing`](crate::mesh::MeshBuilder::routing)), `send_file` sends every
//!   packet (`file-offer`, each `file-chunk`, `file-end`, a `file-cancel`) along a freshly
//!   built route with a new circuit id: GhostMesh's onion packets, or layered packets when
//!   every hop is a Rust peer that speaks them (the route's [`RouteMode`]). Always GhostMesh's
//!   format inside (base64 chunks; never the fast path), queued in the first relay's outbox
//!   under the same per-peer bound. At the target, `file-*` packets delivered through relays
//!   become incoming transfers of the pseudo-peer [`ROUTED_PEER`]; see there for where their
//!   replies go and which bounds apply.
//!
//! [`RouteMode`]: crate::relay::RouteMode

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncRead;

mod follower;
mod incoming;
mod outbox;
pub mod packet;
mod ranges;
pub(crate) mod sender;
pub(crate) mod session;
pub(crate) mod transfers;

pub use ranges::RangeSet;
pub use session::{Direction, FileEvent, FileReader, FileSession, FileStatus};
pub use transfers::FileStats;

/// GhostMesh's default chunk size (12 KiB).
pub const DEFAULT_CHUNK_SIZE: u64 = 12 * 1024;
/// GhostMesh's smallest chunk size.
pub const MIN_CHUNK_SIZE: u64 = 1024;
/// Default payload bytes per fast-path frame ([`FileConfig::fast_frame_bytes`]).
pub const DEFAULT_FAST_FRAME_BYTES: u64 = 240 << 10;
/// Fast-path frame payload toward a receiver whose `file-accept` names no size (receivers
/// from before the size was negotiated).
pub(crate) const LEGACY_FAST_FRAME_BYTES: u64 = 64 << 10;
/// A range request covers at most this many chunks (GhostMesh's streaming window).
pub const MAX_RANGE_CHUNKS: u64 = 8;
/// Range requests of one peer being read from disk at once; more are dropped and counted.
pub(crate) const MAX_RANGE_READS: usize = 4;

/// The peer of every incoming transfer whose packets came through relays (inside GhostMesh's
/// `onion-deliver`, or a layered one-way packet): [`FileSession::peer_id`] of such a session,
/// with [`FileSession::routed`] set.
///
/// - Why not a real peer: a routed packet names no sender, and GhostMesh's choice (the
///   neighbour that delivered it) changes from packet to packet when each takes a fresh
///   route, so it cannot hold a transfer together. Routed transfers are keyed by this name
///   and their transfer id; a routed packet can never touch a direct transfer, nor a direct
///   one a routed transfer.
/// - Bounds: all routed senders together count as this one peer, so
///   [`FileConfig::max_incoming_per_peer`] caps routed transfers at once (offers beyond are
///   refused and counted in [`FileStats::refused_offers`]), under
///   [`FileConfig::max_incoming`] like any peer; size, fragment and idle-timeout limits and
///   the hash check apply as to direct transfers. Chunks that overtake their offer (each
///   packet takes its own route) are held for it, at most 64 packets / 1 MiB / 10 s, the
///   oldest dropped first and counted as unknown transfers. A `file-end` that overtakes
///   chunks waits for them (the idle timeout ends the wait).
/// - Replies: there is no way back. A compatible delivery names no sender and carries no reply
///   route, and a layered one-way packet carries no reply block (GhostMesh sends a receiver's
///   `file-cancel` and `file-range-request` to the delivering neighbour, a relay that knows
///   nothing of the transfer). So the receiver's cancel, refusal or failure is local only, it
///   sends no range requests (the bytes arrive with the sender's chunks anyway), an offer's
///   `fast` is ignored, and the sender, like GhostMesh's, completes once every packet is sent.
/// - Warnings about routed file packets ([`MeshEvent::PeerWarning`](crate::mesh::MeshEvent))
///   name this peer too.
pub const ROUTED_PEER: &str = "onion";

/// Where an outgoing file comes from.
pub enum FileSource {
    /// A file on disk (range requests are served from it).
    Path(PathBuf),
    /// Bytes in memory.
    Bytes(bytes::Bytes),
    /// A stream of exactly `size` bytes (range requests cannot be served).
    Reader {
        /// The bytes.
        reader: Box<dyn AsyncRead + Send + Unpin>,
        /// How many.
        size: u64,
    },
}

impl fmt::Debug for FileSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileSource::Path(p) => f.debug_tuple("Path").field(p).finish(),
            FileSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            FileSource::Reader { size, .. } => write!(f, "Reader({size} bytes)"),
        }
    }
}

impl FileSource {
    /// A file on disk.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        FileSource::Path(path.into())
    }
    /// Bytes in memory.
    pub fn bytes(data: impl Into<bytes::Bytes>) -> Self {
        FileSource::Bytes(data.into())
    }
    /// A stream of exactly `size` bytes.
    pub fn reader(reader: impl AsyncRead + Send + Unpin + 'static, size: u64) -> Self {
        FileSource::Reader {
            reader: Box::new(reader),
            size,
        }
    }
}

/// Options of one outgoing transfer.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// File name; default the path's file name, else `ghostmesh-<transferId>`.
    pub name: Option<String>,
    /// MIME type; default `application/octet-stream`.
    pub mime_type: Option<String>,
    /// Chunk size of GhostMesh-format chunks; default 12 KiB, at least 1 KiB.
    pub chunk_size: u64,
    /// Application metadata carried in the offer.
    pub metadata: Option<Value>,
    /// Hash the whole file before offering it, so the offer carries its SHA-256 (a file or
    /// bytes only). Default off: the sender hashes on the way and sends the hash in
    /// `file-end` (one pass instead of two); Rust receivers check either.
    pub hash_upfront: bool,
    /// Offer the binary fast path to Rust receivers. Default on.
    pub fast: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        FileOptions {
            name: None,
            mime_type: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            metadata: None,
            hash_upfront: false,
            fast: true,
        }
    }
}

/// Mesh-wide file-transfer settings and bounds.
#[derive(Debug, Clone)]
pub struct FileConfig {
    /// Largest incoming file accepted. Default 16 GiB.
    pub max_file_size: u64,
    /// Incoming transfers at once from one peer. Default 8.
    pub max_incoming_per_peer: usize,
    /// Incoming transfers at once in total. Default 64.
    pub max_incoming: usize,
    /// Outgoing transfers at once in total. Default 64.
    pub max_outgoing: usize,
    /// An incoming transfer with no packet for this long fails. So does an outgoing one whose
    /// receiver takes no bytes and sends no acknowledgement for this long while the sender
    /// waits on it (a Rust receiver acknowledges at least every `min(idle_timeout / 3, 10 s)`,
    /// paused or not; give senders at least the receivers' timeout, or 30 s). Paused
    /// transfers never time out. Default 60 s.
    pub idle_timeout: Duration,
    /// Where incoming files are written; default the system temporary directory.
    pub temp_dir: Option<PathBuf>,
    /// Bytes a fast-path sender may have unacknowledged. Default 16 MiB.
    pub fast_window: u64,
    /// Payload bytes per fast-path frame, as a sender, and the most a receiver asks for (in
    /// `file-accept`; the sender uses the smaller of its own and the receiver's, and 64 KiB
    /// toward receivers that do not say, as before this setting was negotiated). Each frame
    /// is one link message of this many bytes plus a header (30 bytes, at most 78), so keep it
    /// that much below the links' largest message ([`WebRtcConfig::max_message_size`] and
    /// the memory links' `max_frame_bytes`, both 256 KiB by default). Default 240 KiB: one
    /// frame per 240 KiB instead of four at 64 KiB, so a quarter of the per-frame work
    /// (task hand-offs, link messages, progress updates) for the same bytes.
    ///
    /// [`WebRtcConfig::max_message_size`]: crate::transport::webrtc::WebRtcConfig::max_message_size
    pub fast_frame_bytes: u64,
    /// Most separate byte ranges an incoming transfer may have (a sender scattering tiny
    /// chunks fails). Default 65536.
    pub max_fragments: usize,
    /// Bytes queued for one peer's links (file chunks, range replies, control packets, the
    /// relay's binary frames). Chunks wait beyond half of it (at most 2 MiB); range replies
    /// beyond three quarters and everything else beyond all of it is dropped and counted
    /// ([`FileStats::outbox_dropped`], [`FileStats::range_replies_dropped`]), so a peer that
    /// floods `file-range-request` and stops reading cannot grow memory. Default 8 MiB.
    pub max_outbox_bytes: usize,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            max_file_size: 16 << 30,
            max_incoming_per_peer: 8,
            max_incoming: 64,
            max_outgoing: 64,
            idle_timeout: Duration::from_secs(60),
            temp_dir: None,
            fast_window: 16 << 20,
            fast_frame_bytes: DEFAULT_FAST_FRAME_BYTES,
            max_fragments: 65536,
            max_outbox_bytes: 8 << 20,
        }
    }
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// Canceled with `reason`, by the peer or by us.
    Canceled {
        /// The reason given.
        reason: String,
        /// The peer canceled.
        by_peer: bool,
    },
    /// The peer's last link closed.
    PeerClosed,
    /// The peer went silent for the idle timeout: an incoming transfer got no packet, or an
    /// outgoing one's receiver took no bytes and sent no acknowledgement.
    Timeout,
    /// The bytes do not match the SHA-256 given, or some never arrived.
    Integrity(String),
    /// A bound was exceeded (size, transfers at once, fragments).
    Limit(String),
    /// The peer sent something invalid for this transfer.
    Protocol(String),
    /// A local file operation failed.
    Io(String),
    /// What was asked cannot be provided (e.g. a range of a streamed source).
    Unavailable(String),
    /// The mesh was stopped.
    Stopped,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Canceled { reason, by_peer } => {
                let who = if *by_peer { "peer" } else { "us" };
                write!(f, "canceled by {who}: {reason}")
            }
            FileError::PeerClosed => f.write_str("the peer's links closed"),
            FileError::Timeout => f.write_str("timed out: the peer went silent"),
            FileError::Integrity(e) => write!(f, "integrity: {e}"),
            FileError::Limit(e) => write!(f, "limit: {e}"),
            FileError::Protocol(e) => write!(f, "protocol: {e}"),
            FileError::Io(e) => write!(f, "I/O: {e}"),
            FileError::Unavailable(e) => write!(f, "unavailable: {e}"),
            FileError::Stopped => f.write_str("the mesh stopped"),
        }
    }
}

impl std::error::Error for FileError {}

/// 16 lowercase hex characters from 8 random bytes, as GhostMesh's `_createPacketId`.
pub(crate) fn transfer_id<R: rand::Rng + ?Sized>(rng: &mut R) -> String {
    let mut b = [0u8; 8];
    rng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
