//! Putting chunks back together, per peer and bounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::{Chunk, MsgId, Payload, WireError, parse_frame};

/// Bounds on what unfinished messages may cost. P2PT and GhostMesh have none of these
/// (ghostmesh-wire.md §5.1.3): there a peer can grow memory without limit.
///
/// Sizes are in UTF-16 code units, the unit P2PT chunks by; a buffered code unit costs 2
/// bytes. A message that arrives whole in one frame is never buffered and only counts
/// against `max_message_units`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Largest message, in UTF-16 code units of its `msg` text (for JSON, of the JSON text).
    ///
    /// Default 16 Mi units (16,777,216, up to 32 MiB while buffered): 16 times the largest
    /// message in P2PT's own test suite (a 1 MB string), room for about 1,050 full 16000-unit
    /// chunks. Bulk data in GhostMesh goes through file transfer in 12 KiB pieces, each its
    /// own small message, so nothing legitimate should come close.
    pub max_message_units: usize,
    /// Most unfinished messages one peer may have at once. Default 16.
    ///
    /// JavaScript sends a message's chunks back to back, but a peer can have several
    /// channels, and GhostMesh's backpressure lets concurrent sends interleave, so a few at a
    /// time are legitimate.
    pub max_partials_per_peer: usize,
    /// Most unfinished messages across all peers. Default 1024.
    pub max_partials: usize,
    /// Most UTF-16 code units buffered across all unfinished messages. Default 64 Mi units
    /// (128 MiB). Without it the worst case would be `max_partials × max_message_units`.
    pub max_buffered_units: usize,
    /// An unfinished message with no new chunk for this long is dropped, by
    /// [`Reassembler::expire`] or when its next chunk finally arrives. The clock restarts at
    /// every chunk so that a large message on a slow link survives. Default 60 s, GhostMesh's
    /// request timeout. `Duration::MAX` disables expiry.
    pub partial_timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_message_units: 16 * 1024 * 1024,
            max_partials_per_peer: 16,
            max_partials: 1024,
            max_buffered_units: 64 * 1024 * 1024,
            partial_timeout: Duration::from_secs(60),
        }
    }
}

/// A complete message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The id; answer with the same id to make the reply a response (P2PT `respond`).
    pub id: MsgId,
    /// The content: text, or the parsed JSON when the sender set `o`.
    pub payload: Payload,
}

/// What a frame amounted to.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// Not an envelope frame (it does not start with `^`). P2PT ignores these apart from its
    /// raw `data` event, which sees every frame; the caller still has the frame.
    Raw,
    /// A chunk was stored; the message is not complete yet.
    Partial {
        /// The message id.
        id: MsgId,
        /// UTF-16 code units received so far for this message.
        units: usize,
    },
    /// The frame completed a message.
    Complete(Message),
}

/// An unfinished message.
#[derive(Debug)]
struct Partial {
    units: Vec<u16>,
    next_index: u64,
    last_seen: Instant,
}

/// Reassembles P2PT messages from the frames of many peers.
///
/// One `Reassembler` can serve a whole node: unfinished messages are kept per `(peer, id)`,
/// so two peers that happen to use the same id never mix (P2PT keys by id alone). `P`
/// identifies a peer, typically its 40-hex-character id; give all channels of one peer the
/// same key, because JavaScript may send a response on any of them.
///
/// It is sans-IO: it owns no socket and reads no clock. Pass the current instant to
/// [`push`](Self::push), call [`expire`](Self::expire) from a timer (see
/// [`next_expiry`](Self::next_expiry)) and [`remove_peer`](Self::remove_peer) when a peer's
/// last channel closes.
///
/// Chunks must arrive in order (`c` = 0, 1, 2, …; data channels are ordered and every
/// P2PT/GhostMesh sender numbers them so). A chunk 0 for an id that already has an unfinished
/// message starts over: the stale message is dropped, where P2PT would splice its leftover
/// chunks into the new one. Any other out-of-order chunk drops the message with
/// [`WireError::ChunkOutOfOrder`]; so does every error about a message, and later chunks of a
/// dropped message are reported as out of order too.
///
/// ```
/// use std::time::Instant;
/// use ghostmesh::wire::{encode_chunks, MsgId, Payload, Reassembler, Received};
///
/// let payload = Payload::Json(serde_json::json!({"text": "😀".repeat(5)}));
/// // Tiny chunks so that the emoji are split across frames.
/// let frames = encode_chunks(&MsgId::Int(123456), &payload, 3);
///
/// let mut reassembler = Reassembler::default();
/// let now = Instant::now();
/// let mut complete = None;
/// for frame in &frames {
///     if let Received::Complete(message) = reassembler.push(&"peer-a", frame, now)? {
///         complete = Some(message);
///     }
/// }
/// let message = complete.expect("the last frame completes the message");
/// assert_eq!(message.id, MsgId::Int(123456));
/// assert_eq!(message.payload, payload);
/// # Ok::<(), ghostmesh::wire::WireError>(())
/// ```
#[derive(Debug)]
pub struct Reassembler<P> {
    limits: ReassemblyLimits,
    peers: HashMap<P, HashMap<MsgId, Partial>>,
    partials: usize,
    buffered_units: usize,
}

impl<P: Eq + Hash + Clone> Default for Reassembler<P> {
    fn default() -> Self {
        Self::new(ReassemblyLimits::default())
    }
}

impl<P: Eq + Hash + Clone> Reassembler<P> {
    /// An empty reassembler with these limits.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            peers: HashMap::new(),
            partials: 0,
            buffered_units: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ReassemblyLimits {
        &self.limits
    }

    /// Unfinished messages across all peers.
    pub fn partial_count(&self) -> usize {
        self.partials
    }

    /// Unfinished messages of one peer.
    pub fn peer_partial_count(&self, peer: &P) -> usize {
        self.peers.get(peer).map_or(0, HashMap::len)
    }

    /// UTF-16 code units buffered across all unfinished messages.
    pub fn buffered_units(&self) -> usize {
        self.buffered_units
    }

    /// Feeds one text frame received from `peer` at `now`.
    pub fn push(&mut self, peer: &P, frame: &str, now: Instant) -> Result<Received, WireError> {
        match parse_frame(frame)? {
            None => Ok(Received::Raw),
            Some(chunk) => self.push_chunk(peer, chunk, now),
        }
    }

    /// Feeds one binary frame. JavaScript decodes binary frames as UTF-8, replacing invalid
    /// sequences with U+FFFD, and so does this.
    pub fn push_bytes(
        &mut self,
        peer: &P,
        frame: &[u8],
        now: Instant,
    ) -> Result<Received, WireError> {
        self.push(peer, &String::from_utf8_lossy(frame), now)
    }

    /// Feeds one already parsed chunk (see [`parse_frame`]).
    pub fn push_chunk(
        &mut self,
        peer: &P,
        chunk: Chunk,
        now: Instant,
    ) -> Result<Received, WireError> {
        let Chunk {
            id,
            units,
            object,
            index,
            last,
        } = chunk;
        // Take the unfinished message out; it goes back only if it is still unfinished and
        // within bounds, so every error path below has already dropped it.
        let previous = self.take(peer, &id).filter(|p| !self.is_expired(p, now));
        let mut buffer = match (previous, index) {
            (_, 0) => Vec::new(),
            (Some(p), i) if i == p.next_index => p.units,
            (previous, got) => {
                let expected = previous.map_or(0, |p| p.next_index);
                return Err(WireError::ChunkOutOfOrder { id, expected, got });
            }
        };
        let total = buffer.len().saturating_add(units.len());
        if total > self.limits.max_message_units {
            return Err(WireError::MessageTooLarge {
                id,
                limit: self.limits.max_message_units,
            });
        }
        if buffer.is_empty() {
            buffer = units;
        } else {
            buffer.extend_from_slice(&units);
        }
        if last {
            return complete(id, buffer, object).map(Received::Complete);
        }
        if index == 0 {
            if self.peer_partial_count(peer) >= self.limits.max_partials_per_peer {
                return Err(WireError::TooManyPartialsForPeer {
                    id,
                    limit: self.limits.max_partials_per_peer,
                });
            }
            if self.partials >= self.limits.max_partials {
                return Err(WireError::TooManyPartials {
                    id,
                    limit: self.limits.max_partials,
                });
            }
        }
        // `self.buffered_units` no longer counts this message (it was taken out above).
        if self.buffered_units.saturating_add(total) > self.limits.max_buffered_units {
            return Err(WireError::BufferFull {
                id,
                limit: self.limits.max_buffered_units,
            });
        }
        self.insert(
            peer,
            id.clone(),
            Partial {
                units: buffer,
                next_index: index.saturating_add(1),
                last_seen: now,
            },
        );
        Ok(Received::Partial { id, units: total })
    }

    /// Drops every unfinished message that has had no chunk for
    /// [`ReassemblyLimits::partial_timeout`], and returns which ones.
    pub fn expire(&mut self, now: Instant) -> Vec<(P, MsgId)> {
        let timeout = self.limits.partial_timeout;
        let mut expired = Vec::new();
        let mut freed_units = 0;
        self.peers.retain(|peer, partials| {
            partials.retain(|id, p| {
                let keep = now.saturating_duration_since(p.last_seen) < timeout;
                if !keep {
                    freed_units += p.units.len();
                    expired.push((peer.clone(), id.clone()));
                }
                keep
            });
            !partials.is_empty()
        });
        self.partials = self.partials.saturating_sub(expired.len());
        self.buffered_units = self.buffered_units.saturating_sub(freed_units);
        expired
    }

    /// When the next unfinished message will be due for [`expire`](Self::expire), if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(HashMap::values)
            .filter_map(|p| p.last_seen.checked_add(self.limits.partial_timeout))
            .min()
    }

    /// Drops a peer's unfinished messages (call it when its last channel closes); returns
    /// how many there were.
    pub fn remove_peer(&mut self, peer: &P) -> usize {
        let Some(partials) = self.peers.remove(peer) else {
            return 0;
        };
        self.partials = self.partials.saturating_sub(partials.len());
        let units: usize = partials.values().map(|p| p.units.len()).sum();
        self.buffered_units = self.buffered_units.saturating_sub(units);
        partials.len()
    }

    fn is_expired(&self, partial: &Partial, now: Instant) -> bool {
        now.saturating_duration_since(partial.last_seen) >= self.limits.partial_timeout
    }

    fn take(&mut self, peer: &P, id: &MsgId) -> Option<Partial> {
        let partials = self.peers.get_mut(peer)?;
        let partial = partials.remove(id)?;
        if partials.is_empty() {
            self.peers.remove(peer);
        }
        self.partials = self.partials.saturating_sub(1);
        self.buffered_units = self.buffered_units.saturating_sub(partial.units.len());
        Some(partial)
    }

    fn insert(&mut self, peer: &P, id: MsgId, partial: Partial) {
        self.partials += 1;
        self.buffered_units += partial.units.len();
        self.peers
            .entry(peer.clone())
            .or_default()
            .insert(id, partial);
    }
}

/// Turns the reassembled code units into the payload.
fn complete(id: MsgId, units: Vec<u16>, object: bool) -> Result<Message, WireError> {
    let Ok(text) = String::from_utf16(&units) else {
        return Err(WireError::LoneSurrogate { id });
    };
    let payload = if object {
        match serde_json::from_str(&text) {
            Ok(value) => Payload::Json(value),
            Err(e) => {
                return Err(WireError::InvalidJson {
                    id,
                    reason: e.to_string(),
                });
            }
        }
    } else {
        Payload::Text(text)
    };
    Ok(Message { id, payload })
}
