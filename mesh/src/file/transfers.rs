//! The core's side of file transfer: routing of file packets to incoming sessions
//! ([`incoming`](super::incoming)) and outgoing ones, range replies, idle timeouts of
//! outgoing transfers, and the per-peer outboxes ([`outbox`](super::outbox)) frames wait in
//! for the links.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::incoming::Incoming;
use super::outbox::{Outboxes, Parked};
use super::packet::{self, Packet};
use super::session::{Control, Direction, FastGrant};
use super::{
    FileConfig, FileError, FileSession, FileStatus, LEGACY_FAST_FRAME_BYTES, MAX_RANGE_CHUNKS,
    MAX_RANGE_READS, MIN_CHUNK_SIZE,
};
use crate::mesh::PeerId;
use crate::transport::Frame;
use crate::wire::{MAX_CHUNK_UNITS, MsgId, Payload, encode_chunks};

pub(crate) use super::incoming::hex;

/// What sessions and sender tasks tell the core.
#[derive(Debug)]
pub(crate) enum FileMsg {
    /// The application acted on a session.
    Control {
        peer: PeerId,
        id: String,
        direction: Direction,
        /// The transfer goes through relays (see [`super::ROUTED_PEER`]).
        routed: bool,
        control: Control,
    },
    /// A sender task's frames, in order; `reply` says whether they were queued (false: the
    /// peer or the transfer is gone).
    Out {
        peer: PeerId,
        /// The transfer they belong to.
        id: Option<String>,
        frames: Vec<Frame>,
        reply: oneshot::Sender<bool>,
    },
    /// A routed transfer's packet (GhostMesh's JSON), for the core to send along a freshly
    /// built route to `peer` (the receiver); `reply` as for `Out`.
    Routed {
        peer: PeerId,
        id: String,
        packet: Value,
        reply: oneshot::Sender<bool>,
    },
    /// A range read ended: its reply (none when the read failed), to go ahead of chunks.
    RangeReply {
        peer: PeerId,
        frames: Option<Vec<Frame>>,
    },
    /// A hash check ended (`ok`): tell the sender, and forget the transfer.
    Verified { peer: PeerId, id: String, ok: bool },
    /// A sender task ended: forget the outgoing transfer.
    Done { peer: PeerId, id: String },
}

pub(crate) type Key = (PeerId, String);

/// One outgoing transfer, as the core sees it.
struct Outgoing {
    session: FileSession,
    /// Last progress: its chunks entered the outbox, the receiver sent something for it, it
    /// was paused or resumed, or it was found not waiting on the receiver.
    last: Instant,
}

/// Counts of refused input, for tests and diagnostics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Packets or frames for transfers we do not know.
    pub unknown_transfer: u64,
    /// Malformed file packets.
    pub malformed: u64,
    /// Offers refused by a bound.
    pub refused_offers: u64,
    /// Incoming transfers in progress (holding a temporary file).
    pub incoming: usize,
    /// Outgoing transfers in progress.
    pub outgoing: usize,
    /// File frames waiting in outboxes.
    pub queued_frames: usize,
    /// Bytes waiting in outboxes (each peer's under [`FileConfig::max_outbox_bytes`]).
    pub queued_bytes: usize,
    /// Control packets and binary frames (acks, cancels, the relay's onion frames) dropped
    /// because their peer's outbox was full.
    pub outbox_dropped: u64,
    /// Range requests not served: too many reads in flight for the peer, or its outbox full.
    pub range_replies_dropped: u64,
    /// Outgoing transfers failed by the idle timeout.
    pub outgoing_timeouts: u64,
}

pub(crate) struct Transfers {
    pub(super) cfg: FileConfig,
    pub(crate) tx: mpsc::Sender<FileMsg>,
    pub(super) incoming: HashMap<Key, Incoming>,
    outgoing: HashMap<Key, Outgoing>,
    outbox: Outboxes,
    /// Range reads in flight, per peer.
    range_reads: HashMap<PeerId, usize>,
    rng: StdRng,
    /// Peers with an open link: control frames for others are not queued (nothing would
    /// ever send them).
    linked: HashSet<PeerId>,
    pub(crate) stats: FileStats,
    /// Warnings for the application: (peer, message).
    pub(crate) warnings: Vec<(PeerId, String)>,
    /// Control packets of routed outgoing transfers (cancels) for the core to send along a
    /// route: (receiver, packet). Drained by the core after every call.
    pub(crate) routed_out: Vec<(PeerId, Value)>,
    /// Routed packets that came before their transfer's offer (fresh routes reorder them).
    pub(super) early: super::incoming::Early,
}

impl Transfers {
    pub(crate) fn new(cfg: FileConfig, tx: mpsc::Sender<FileMsg>, seed: u64) -> Self {
        Transfers {
            outbox: Outboxes::new(cfg.max_outbox_bytes),
            cfg,
            tx,
            incoming: HashMap::new(),
            outgoing: HashMap::new(),
            range_reads: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            linked: HashSet::new(),
            stats: FileStats::default(),
            warnings: Vec::new(),
            routed_out: Vec::new(),
            early: super::incoming::Early::default(),
        }
    }

    pub(crate) fn config(&self) -> &FileConfig {
        &self.cfg
    }

    pub(crate) fn outgoing_count(&self) -> usize {
        self.outgoing.len()
    }

    /// The counters, with the live counts filled in.
    pub(crate) fn stats(&self) -> FileStats {
        let (queued_frames, queued_bytes) = self.outbox.totals();
        FileStats {
            incoming: self.incoming.len(),
            outgoing: self.outgoing.len(),
            queued_frames,
            queued_bytes,
            outbox_dropped: self.outbox.dropped,
            ..self.stats.clone()
        }
    }

    pub(crate) fn add_outgoing(&mut self, session: FileSession) {
        let key = (
            session.peer_id().to_owned(),
            session.transfer_id().to_owned(),
        );
        let last = crate::mesh::clock_now();
        self.outgoing.insert(key, Outgoing { session, last });
    }

    /// Queues a control packet for `peer` as a one-way P2PT message (GhostMesh's
    /// `_sendOneWay`), ahead of queued chunks: cancels, acks and range requests are small and
    /// urgent. Dropped (and counted) when the peer's outbox is full.
    pub(super) fn push_packet(&mut self, peer: &PeerId, packet: &Packet) {
        self.push_json(peer, packet.to_json());
    }

    /// [`push_packet`](Self::push_packet) for a packet already in JSON form.
    pub(super) fn push_json(&mut self, peer: &PeerId, packet: Value) {
        if !self.linked.contains(peer) {
            return;
        }
        let id = MsgId::p2pt(self.rng.next_u32());
        let frames = encode_chunks(&id, &Payload::Json(packet), MAX_CHUNK_UNITS);
        self.outbox
            .push_control(peer, frames.into_iter().map(Frame::Text).collect());
    }

    /// Queues a control message's frames (a routed cancel, wrapped for its first relay) ahead
    /// of queued chunks; dropped (and counted) when the peer's outbox is full.
    pub(crate) fn push_frames(&mut self, peer: &PeerId, frames: Vec<Frame>) {
        if !self.linked.contains(peer) {
            return;
        }
        self.outbox.push_control(peer, frames);
    }

    /// Queues a small binary frame (hello, the relay's onion frames) ahead of queued chunks;
    /// dropped (and counted in [`FileStats::outbox_dropped`]) when the peer's outbox is full.
    pub(crate) fn push_binary(&mut self, peer: &PeerId, frame: Vec<u8>) {
        if !self.linked.contains(peer) {
            return;
        }
        self.outbox.push_control(peer, vec![Frame::Binary(frame)]);
    }

    /// A sender task's frames: queued now, or once the peer's outbox drains.
    fn enqueue(
        &mut self,
        peer: PeerId,
        id: Option<String>,
        frames: Vec<Frame>,
        reply: oneshot::Sender<bool>,
    ) {
        let owner = id.map(|id| (peer.clone(), id));
        if let Some(key) = self.outbox.enqueue(Parked {
            peer,
            owner,
            frames,
            reply,
        }) {
            self.touch(&key, crate::mesh::clock_now());
        }
    }

    /// A routed transfer's packet, wrapped for the route's first hop `first`: queued in that
    /// hop's outbox like any chunk (it waits while the outbox is over its park mark, so the
    /// per-peer bound holds for relays too), or `false` to the sender when the transfer is
    /// gone or `first` has no link.
    pub(crate) fn enqueue_routed(
        &mut self,
        first: PeerId,
        owner: Key,
        frames: Vec<Frame>,
        reply: oneshot::Sender<bool>,
    ) {
        if !self.outgoing.contains_key(&owner) || !self.linked.contains(&first) {
            let _ = reply.send(false);
            return;
        }
        let parked = Parked {
            peer: first,
            owner: Some(owner),
            frames,
            reply,
        };
        if let Some(key) = self.outbox.enqueue(parked) {
            self.touch(&key, crate::mesh::clock_now());
        }
    }

    /// A routed outgoing transfer could not be sent on (no route): it fails with `why`.
    pub(crate) fn fail_routed(&mut self, key: &Key, why: String) {
        if let Some(o) = self.outgoing.remove(key) {
            o.session
                .finish(FileStatus::Failed, Some(FileError::Unavailable(why)));
            self.outbox.unpark(&key.0, &key.1);
        }
    }

    /// Queues a control packet for the receiver of an outgoing transfer: along a route when
    /// the transfer is routed, else directly.
    fn tell_receiver(&mut self, peer: &PeerId, routed: bool, packet: &Packet) {
        if routed {
            self.routed_out.push((peer.clone(), packet.to_json()));
        } else {
            self.push_packet(peer, packet);
        }
    }

    /// The next file frame for `peer`, if any.
    pub(crate) fn take_frame(&mut self, peer: &PeerId) -> Option<Frame> {
        self.outbox.take(peer)
    }

    /// Moves parked sender frames into outboxes that have room again.
    pub(crate) fn release_parked(&mut self) {
        let moved = self.outbox.release_parked();
        if !moved.is_empty() {
            let now = crate::mesh::clock_now();
            for key in moved {
                self.touch(&key, now);
            }
        }
    }

    /// Progress on an outgoing transfer.
    fn touch(&mut self, key: &Key, now: Instant) {
        if let Some(o) = self.outgoing.get_mut(key) {
            o.last = now;
        }
    }

    /// The peer's first link opened.
    pub(crate) fn peer_linked(&mut self, peer: &PeerId) {
        self.linked.insert(peer.clone());
    }

    /// The peer's last link closed: its transfers fail, its queues go.
    pub(crate) fn peer_closed(&mut self, peer: &PeerId) {
        self.linked.remove(peer);
        self.outbox.forget(peer);
        self.range_reads.remove(peer);
        self.incoming.retain(|(p, _), inc| {
            if p == peer {
                inc.session
                    .finish(FileStatus::Failed, Some(FileError::PeerClosed));
            }
            p != peer
        });
        // A routed transfer does not use a link to its receiver (its packets wait in relays'
        // outboxes, which fail their senders when those links close).
        self.outgoing.retain(|(p, _), o| {
            let lost = p == peer && !o.session.routed();
            if lost {
                o.session
                    .finish(FileStatus::Failed, Some(FileError::PeerClosed));
            }
            !lost
        });
    }

    /// The mesh stops: every live session fails.
    pub(crate) fn shutdown(&mut self) {
        for (_, inc) in self.incoming.drain() {
            inc.session
                .finish(FileStatus::Failed, Some(FileError::Stopped));
        }
        for (_, o) in self.outgoing.drain() {
            o.session
                .finish(FileStatus::Failed, Some(FileError::Stopped));
        }
        self.outbox.shutdown();
    }

    /// When the next idle timeout (or keep-alive ack) falls due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.cfg.idle_timeout;
        let outgoing = self
            .outgoing
            .values()
            .filter(|o| !o.session.status().is_final())
            .map(|o| o.last + timeout)
            .min();
        self.incoming_deadline().into_iter().chain(outgoing).min()
    }

    /// Fails transfers whose peer went silent; sends keep-alive acks.
    pub(crate) fn tick(&mut self, now: Instant) {
        self.tick_incoming(now);
        self.tick_outgoing(now);
    }

    /// An outgoing transfer times out when it waits on its receiver (its chunks wait for
    /// room, or it is on the fast path, where the receiver acknowledges at least every ping
    /// interval) and nothing moved for the idle timeout. Paused ones never time out; one
    /// busy reading or hashing its source does not wait on the receiver.
    fn tick_outgoing(&mut self, now: Instant) {
        let timeout = self.cfg.idle_timeout;
        let mut expired = Vec::new();
        for (key, o) in &mut self.outgoing {
            let status = o.session.status();
            if status.is_final() || now < o.last + timeout {
                continue;
            }
            let waiting = o.session.fast_path() || self.outbox.is_parked(&key.0, &key.1);
            if status == FileStatus::Paused || !waiting {
                o.last = now;
            } else {
                expired.push(key.clone());
            }
        }
        for key in expired {
            let Some(o) = self.outgoing.remove(&key) else {
                continue;
            };
            self.stats.outgoing_timeouts += 1;
            o.session
                .finish(FileStatus::Failed, Some(FileError::Timeout));
            self.outbox.unpark(&key.0, &key.1);
            let cancel = Packet::Cancel {
                transfer_id: key.1.clone(),
                reason: FileError::Timeout.to_string(),
            };
            self.tell_receiver(&key.0, o.session.routed(), &cancel);
        }
    }

    /// A file packet from `peer`; returns a new incoming session to announce.
    pub(crate) fn on_packet(
        &mut self,
        now: Instant,
        peer: &PeerId,
        value: &Value,
    ) -> Option<FileSession> {
        let max_data = self.max_chunk_data();
        let packet = match packet::decode(value, max_data) {
            Ok(p) => p,
            Err(e) => {
                self.stats.malformed += 1;
                // A bad chunk for a known transfer ends that transfer with the reason.
                if let Some(id) = value.get("transferId").and_then(Value::as_str) {
                    let key = (peer.clone(), id.to_owned());
                    if let Some(inc) = self.incoming.remove(&key) {
                        self.fail_incoming(&key, inc, FileError::Protocol(e.to_string()));
                        return None;
                    }
                }
                self.warnings.push((peer.clone(), e.to_string()));
                return None;
            }
        };
        let key = (peer.clone(), packet.transfer_id().to_owned());
        // Routed chunks and ends may overtake their offer (each packet takes its own route):
        // held, bounded, until it comes.
        if peer == super::ROUTED_PEER
            && !self.incoming.contains_key(&key)
            && matches!(packet, Packet::Chunk { .. } | Packet::End { .. })
            && self.early.may_hold(&key.1)
        {
            self.stats.unknown_transfer += self.early.hold(now, packet);
            return None;
        }
        match packet {
            Packet::Offer(offer) => return self.on_offer(now, peer, offer),
            Packet::Chunk { offset, data, .. } => self.store(now, &key, offset, &data),
            Packet::End { sha256, .. } => self.on_end(now, &key, sha256),
            Packet::Cancel { reason, .. } => {
                let error = FileError::Canceled {
                    reason,
                    by_peer: true,
                };
                if let Some(inc) = self.incoming.remove(&key) {
                    inc.session.finish(FileStatus::Canceled, Some(error));
                } else if let Some(o) = self.outgoing.remove(&key) {
                    o.session.finish(FileStatus::Canceled, Some(error));
                    self.outbox.unpark(&key.0, &key.1);
                } else {
                    return self.unknown(peer, "file-cancel");
                }
            }
            Packet::RangeRequest { start, end, .. } => {
                let Some(o) = self.outgoing.get_mut(&key) else {
                    return self.unknown(peer, "file-range-request");
                };
                o.last = now;
                let s = o.session.clone();
                self.serve_range(peer, &key.1, &s, start, end);
            }
            Packet::Accept { window, .. } => {
                let Some(o) = self.outgoing.get_mut(&key) else {
                    return self.unknown(peer, "file-accept");
                };
                o.last = now;
                // The frame size the receiver asks for (`frame`, next to `window`); receivers
                // from before it was negotiated do not say, and get 64 KiB frames.
                let frame = value
                    .get("frame")
                    .and_then(Value::as_u64)
                    .unwrap_or(LEGACY_FAST_FRAME_BYTES)
                    .max(MIN_CHUNK_SIZE);
                let window = window.clamp(256 << 10, 1 << 30);
                o.session.state().fast_window = Some(FastGrant { window, frame });
                o.session.changed(None);
            }
            Packet::Ack {
                received, complete, ..
            } => {
                let Some(o) = self.outgoing.get_mut(&key) else {
                    return self.unknown(peer, "file-ack");
                };
                o.last = now;
                let s = &o.session;
                {
                    let mut st = s.state();
                    st.acked = st.acked.max(received.min(s.size()));
                }
                s.changed(None);
                if complete {
                    if let Some(o) = self.outgoing.remove(&key) {
                        o.session.finish(FileStatus::Complete, None);
                    }
                }
            }
        }
        None
    }

    /// `file-end` for `key`.
    pub(super) fn on_end(&mut self, now: Instant, key: &Key, sha256: Option<String>) {
        let Some(inc) = self.incoming.get_mut(key) else {
            self.unknown(&key.0, "file-end");
            return;
        };
        inc.ended = true;
        inc.last = now;
        if sha256.is_some() {
            inc.sha256 = sha256;
        }
        self.maybe_complete(key, true);
    }

    /// GhostMesh's range reply: one `file-chunk` at `offset = start` with up to
    /// [`MAX_RANGE_CHUNKS`] chunks of bytes, read off the core's thread and queued ahead of
    /// the chunks. At most [`MAX_RANGE_READS`] reads per peer at once, and only while the
    /// peer's outbox has room; other requests are dropped and counted.
    fn serve_range(&mut self, peer: &PeerId, id: &str, s: &FileSession, start: u64, end: u64) {
        let cs = s.chunk_size().max(1);
        let limit = start.saturating_add(MAX_RANGE_CHUNKS.saturating_mul(cs));
        let end = end.min(s.size()).min(limit);
        let Some(source) = s.state().source.clone() else {
            let w = "range request for a streamed file (cannot be served)".to_owned();
            self.warnings.push((peer.clone(), w));
            return;
        };
        if start >= end {
            return;
        }
        let reads = self.range_reads.entry(peer.clone()).or_default();
        // Base64 and the envelope: a little over 4/3 of the bytes.
        let estimate = ((end - start) as usize).saturating_mul(4) / 3 + 512;
        if *reads >= MAX_RANGE_READS || !self.outbox.reply_fits(peer, estimate) {
            self.stats.range_replies_dropped += 1;
            return;
        }
        *reads += 1;
        let (tx, peer, id) = (self.tx.clone(), peer.clone(), id.to_owned());
        let seed = self.rng.next_u32();
        tokio::spawn(async move {
            let read = tokio::task::spawn_blocking(move || source.read(start, end)).await;
            let frames = match read {
                Ok(Ok(data)) => {
                    let chunk = Packet::Chunk {
                        transfer_id: id,
                        chunk_index: start / cs,
                        offset: start,
                        data,
                    };
                    let frames = encode_chunks(
                        &MsgId::p2pt(seed),
                        &Payload::Json(chunk.to_json()),
                        MAX_CHUNK_UNITS,
                    );
                    Some(frames.into_iter().map(Frame::Text).collect())
                }
                _ => None,
            };
            let _ = tx.send(FileMsg::RangeReply { peer, frames }).await;
        });
    }

    fn on_range_reply(&mut self, peer: PeerId, frames: Option<Vec<Frame>>) {
        if let Some(n) = self.range_reads.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
        let Some(frames) = frames else { return };
        if self.linked.contains(&peer) && !self.outbox.push_reply(&peer, frames) {
            self.stats.range_replies_dropped += 1;
        }
    }

    /// A fast-path chunk frame from `peer`.
    pub(crate) fn on_fast(&mut self, now: Instant, peer: &PeerId, frame: &[u8]) {
        match packet::decode_fast(frame) {
            Ok((id, offset, data)) => {
                let key = (peer.clone(), id);
                self.store(now, &key, offset, data);
            }
            Err(e) => {
                self.stats.malformed += 1;
                self.warnings.push((peer.clone(), e.to_string()));
            }
        }
    }

    /// Handles one message from a session, a sender task or a range read (the core answers
    /// `Out` for a peer without links itself).
    pub(crate) fn on_msg(&mut self, msg: FileMsg) {
        match msg {
            FileMsg::Control {
                peer,
                id,
                direction,
                routed,
                control,
            } => self.on_control(peer, id, direction, routed, control),
            FileMsg::Out {
                peer,
                id,
                frames,
                reply,
            } => self.enqueue(peer, id, frames, reply),
            FileMsg::RangeReply { peer, frames } => self.on_range_reply(peer, frames),
            FileMsg::Verified { peer, id, ok } => self.on_verified(peer, id, ok),
            // The core routes these itself; one reaching here has no route to take.
            FileMsg::Routed { reply, .. } => {
                let _ = reply.send(false);
            }
            FileMsg::Done { peer, id } => {
                self.outbox.unpark(&peer, &id);
                self.outgoing.remove(&(peer, id));
            }
        }
    }

    fn on_control(
        &mut self,
        peer: PeerId,
        id: String,
        direction: Direction,
        routed: bool,
        control: Control,
    ) {
        let key = (peer, id);
        match control {
            Control::Cancel(reason) => {
                // Tell the peer even when the entry is already gone: a sender task that saw
                // the cancel may have ended (and removed it) before this message arrived.
                match direction {
                    Direction::Incoming => {
                        self.incoming.remove(&key);
                    }
                    Direction::Outgoing => {
                        self.outgoing.remove(&key);
                        self.outbox.unpark(&key.0, &key.1);
                    }
                }
                let packet = Packet::Cancel {
                    transfer_id: key.1.clone(),
                    reason,
                };
                // A routed incoming transfer has no way back to its sender (see
                // `ROUTED_PEER`): the cancel is local only.
                match direction {
                    Direction::Outgoing => self.tell_receiver(&key.0, routed, &packet),
                    Direction::Incoming if routed => {}
                    Direction::Incoming => self.push_packet(&key.0, &packet),
                }
            }
            Control::Resume => {
                self.touch(&key, crate::mesh::clock_now());
                if let Some(inc) = self.incoming.get_mut(&key) {
                    if inc.fast {
                        let received = inc.session.bytes();
                        inc.acked = received;
                        inc.pinged = crate::mesh::clock_now();
                        self.ack(&key.0, &key.1, received, false);
                    }
                }
            }
            Control::RangeRequest(start, end) => {
                // Routed: no way back to the sender; the bytes come with its chunks anyway.
                if !routed && self.incoming.contains_key(&key) {
                    let packet = Packet::RangeRequest {
                        transfer_id: key.1.clone(),
                        start,
                        end,
                    };
                    self.push_packet(&key.0, &packet);
                }
            }
        }
    }

    /// Largest chunk payload accepted: a GhostMesh range reply (8 chunks) or a fast frame.
    fn max_chunk_data(&self) -> usize {
        // Chunk sizes differ per transfer; the per-transfer check is the offset bound.
        (MAX_RANGE_CHUNKS as usize * 64 * 1024).max(self.cfg.fast_frame_bytes as usize)
    }

    pub(super) fn unknown(&mut self, peer: &PeerId, what: &str) -> Option<FileSession> {
        self.stats.unknown_transfer += 1;
        self.warnings.push((
            peer.clone(),
            format!("{what} for an unknown transfer (ignored)"),
        ));
        None
    }

    pub(super) fn refuse(
        &mut self,
        peer: &PeerId,
        id: &str,
        reason: String,
    ) -> Option<FileSession> {
        self.stats.refused_offers += 1;
        self.warnings
            .push((peer.clone(), format!("file offer refused: {reason}")));
        let packet = Packet::Cancel {
            transfer_id: id.to_owned(),
            reason,
        };
        self.push_packet(peer, &packet);
        None
    }
}
