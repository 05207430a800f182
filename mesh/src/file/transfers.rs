//! The core's side of file transfer: incoming sessions (bytes to temporary files, range
//! tracking, completion, hash checks, acks), routing of control packets to outgoing
//! sessions, and the per-peer outbox file frames wait in for the links.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::packet::{self, Offer, Packet};
use super::session::{Control, Direction, Info, State};
use super::{FileConfig, FileError, FileEvent, FileSession, FileStatus, MAX_RANGE_CHUNKS, RangeSet};
use crate::mesh::PeerId;
use crate::transport::Frame;
use crate::wire::{MAX_CHUNK_UNITS, MsgId, Payload, encode_chunks};

/// Bytes of file frames queued per peer before senders wait.
const OUTBOX_BYTES: usize = 2 << 20;

/// What sessions and sender tasks tell the core.
#[derive(Debug)]
pub(crate) enum FileMsg {
    /// The application acted on a session.
    Control {
        peer: PeerId,
        id: String,
        direction: Direction,
        control: Control,
    },
    /// A sender task's frames, in order; `reply` says whether they were queued (false: the
    /// peer is gone).
    Out {
        peer: PeerId,
        frames: Vec<Frame>,
        /// Range replies go ahead of queued chunks (a reader is waiting for them).
        urgent: bool,
        reply: oneshot::Sender<bool>,
    },
    /// A hash check ended (`ok`): tell a fast-path sender, and forget the transfer.
    Verified { peer: PeerId, id: String, ok: bool },
    /// A sender task ended: forget the outgoing transfer.
    Done { peer: PeerId, id: String },
}

type Key = (PeerId, String);

struct Incoming {
    session: FileSession,
    last: Instant,
    /// The sender speaks the fast path: acks go back.
    fast: bool,
    acked: u64,
    /// `file-end` arrived.
    ended: bool,
    sha256: Option<String>,
    verifying: bool,
    /// SHA-256 of the bytes below `hashed`, fed as in-order data arrives (only when the sender
    /// is expected to give a hash: Rust senders always do, GhostMesh never does).
    hasher: Option<Sha256>,
    hashed: u64,
}

#[derive(Default)]
struct Outbox {
    frames: VecDeque<Frame>,
    bytes: usize,
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
}

pub(crate) struct Transfers {
    cfg: FileConfig,
    pub(crate) tx: mpsc::Sender<FileMsg>,
    incoming: HashMap<Key, Incoming>,
    outgoing: HashMap<Key, FileSession>,
    outbox: HashMap<PeerId, Outbox>,
    parked: VecDeque<(PeerId, Vec<Frame>, oneshot::Sender<bool>)>,
    rng: StdRng,
    /// Peers with an open link: control frames for others are not queued (nothing would
    /// ever send them).
    linked: std::collections::HashSet<PeerId>,
    pub(crate) stats: FileStats,
    /// Warnings for the application: (peer, message).
    pub(crate) warnings: Vec<(PeerId, String)>,
}

impl Transfers {
    pub(crate) fn new(cfg: FileConfig, tx: mpsc::Sender<FileMsg>, seed: u64) -> Self {
        Transfers {
            cfg,
            tx,
            incoming: HashMap::new(),
            outgoing: HashMap::new(),
            outbox: HashMap::new(),
            parked: VecDeque::new(),
            rng: StdRng::seed_from_u64(seed),
            linked: std::collections::HashSet::new(),
            stats: FileStats::default(),
            warnings: Vec::new(),
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
        FileStats {
            incoming: self.incoming.len(),
            outgoing: self.outgoing.len(),
            queued_frames: self.outbox.values().map(|o| o.frames.len()).sum(),
            ..self.stats.clone()
        }
    }

    pub(crate) fn add_outgoing(&mut self, session: FileSession) {
        let key = (session.peer_id().to_owned(), session.transfer_id().to_owned());
        self.outgoing.insert(key, session);
    }

    /// Queues a control packet for `peer` as a one-way P2PT message (GhostMesh's
    /// `_sendOneWay`), ahead of queued chunks: cancels, acks and range requests are small and
    /// urgent.
    fn push_packet(&mut self, peer: &PeerId, packet: &Packet) {
        if !self.linked.contains(peer) {
            return;
        }
        let id = MsgId::p2pt(self.rng.next_u32());
        let frames = encode_chunks(&id, &Payload::Json(packet.to_json()), MAX_CHUNK_UNITS);
        let out = self.outbox.entry(peer.clone()).or_default();
        for f in frames.into_iter().rev() {
            out.bytes += f.len();
            out.frames.push_front(Frame::Text(f));
        }
    }

    /// Queues a small binary control frame (hello, layered packet) ahead of queued chunks.
    pub(crate) fn push_binary(&mut self, peer: &PeerId, frame: Vec<u8>) {
        if !self.linked.contains(peer) {
            return;
        }
        let out = self.outbox.entry(peer.clone()).or_default();
        out.bytes += frame.len();
        out.frames.push_front(Frame::Binary(frame));
    }

    /// A sender task's frames: queued now, or once the peer's outbox drains.
    pub(crate) fn enqueue(&mut self, peer: PeerId, frames: Vec<Frame>, urgent: bool, reply: oneshot::Sender<bool>) {
        let out = self.outbox.entry(peer.clone()).or_default();
        if urgent {
            // Envelope chunks of different messages may interleave: the receiver reassembles
            // by message id.
            for f in frames.into_iter().rev() {
                out.bytes += f.len();
                out.frames.push_front(f);
            }
            let _ = reply.send(true);
        } else if out.bytes < OUTBOX_BYTES {
            for f in frames {
                out.bytes += f.len();
                out.frames.push_back(f);
            }
            let _ = reply.send(true);
        } else {
            self.parked.push_back((peer, frames, reply));
        }
    }

    /// The next file frame for `peer`, if any.
    pub(crate) fn take_frame(&mut self, peer: &PeerId) -> Option<Frame> {
        let out = self.outbox.get_mut(peer)?;
        let f = out.frames.pop_front()?;
        out.bytes = out.bytes.saturating_sub(f.len());
        Some(f)
    }

    /// Moves parked sender frames into outboxes that have room again.
    pub(crate) fn release_parked(&mut self) {
        let mut still = VecDeque::new();
        while let Some((peer, frames, reply)) = self.parked.pop_front() {
            let out = self.outbox.entry(peer.clone()).or_default();
            if out.bytes < OUTBOX_BYTES {
                for f in frames {
                    out.bytes += f.len();
                    out.frames.push_back(f);
                }
                let _ = reply.send(true);
            } else {
                still.push_back((peer, frames, reply));
            }
        }
        self.parked = still;
    }

    /// The peer's first link opened.
    pub(crate) fn peer_linked(&mut self, peer: &PeerId) {
        self.linked.insert(peer.clone());
    }

    /// The peer's last link closed: its transfers fail, its queues go.
    pub(crate) fn peer_closed(&mut self, peer: &PeerId) {
        self.linked.remove(peer);
        self.outbox.remove(peer);
        let parked = std::mem::take(&mut self.parked);
        for (p, frames, reply) in parked {
            if &p == peer {
                let _ = reply.send(false);
            } else {
                self.parked.push_back((p, frames, reply));
            }
        }
        self.incoming.retain(|(p, _), inc| {
            if p == peer {
                inc.session.finish(FileStatus::Failed, Some(FileError::PeerClosed));
            }
            p != peer
        });
        self.outgoing.retain(|(p, _), s| {
            if p == peer {
                s.finish(FileStatus::Failed, Some(FileError::PeerClosed));
            }
            p != peer
        });
    }

    /// The mesh stops: every live session fails.
    pub(crate) fn shutdown(&mut self) {
        for (_, inc) in self.incoming.drain() {
            inc.session.finish(FileStatus::Failed, Some(FileError::Stopped));
        }
        for (_, s) in self.outgoing.drain() {
            s.finish(FileStatus::Failed, Some(FileError::Stopped));
        }
        for (_, _, reply) in self.parked.drain(..) {
            let _ = reply.send(false);
        }
    }

    /// When the next idle timeout falls due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.incoming
            .values()
            .filter(|i| !i.verifying)
            .map(|i| i.last + self.cfg.idle_timeout)
            .min()
    }

    /// Fails incoming transfers that went silent. (A paused incoming transfer does not time
    /// out: its sender may be waiting for our acks.)
    pub(crate) fn tick(&mut self, now: Instant) {
        let timeout = self.cfg.idle_timeout;
        self.incoming.retain(|_, inc| {
            let paused = inc.session.status() == FileStatus::Paused;
            if paused {
                inc.last = now;
            }
            let alive = inc.verifying || paused || now < inc.last + timeout;
            if !alive {
                inc.session.finish(FileStatus::Failed, Some(FileError::Timeout));
            }
            alive
        });
    }

    /// A file packet from `peer`; returns a new incoming session to announce.
    pub(crate) fn on_packet(&mut self, now: Instant, peer: &PeerId, value: &Value) -> Option<FileSession> {
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
        match packet {
            Packet::Offer(offer) => return self.on_offer(now, peer, offer),
            Packet::Chunk { offset, data, .. } => self.store(now, &key, offset, &data),
            Packet::End { sha256, .. } => {
                let Some(inc) = self.incoming.get_mut(&key) else {
                    return self.unknown(peer, "file-end");
                };
                inc.ended = true;
                inc.last = now;
                if sha256.is_some() {
                    inc.sha256 = sha256;
                }
                self.maybe_complete(&key, true);
            }
            Packet::Cancel { reason, .. } => {
                let error = FileError::Canceled {
                    reason,
                    by_peer: true,
                };
                if let Some(inc) = self.incoming.remove(&key) {
                    inc.session.finish(FileStatus::Canceled, Some(error));
                } else if let Some(s) = self.outgoing.remove(&key) {
                    s.finish(FileStatus::Canceled, Some(error));
                } else {
                    return self.unknown(peer, "file-cancel");
                }
            }
            Packet::RangeRequest { start, end, .. } => {
                let Some(s) = self.outgoing.get(&key) else {
                    return self.unknown(peer, "file-range-request");
                };
                let limit = start.saturating_add(MAX_RANGE_CHUNKS * s.chunk_size());
                let end = end.min(s.size()).min(limit);
                let source = s.state().source.clone();
                match source {
                    Some(source) if start < end => {
                        let (tx, peer, id, cs) =
                            (self.tx.clone(), peer.clone(), key.1.clone(), s.chunk_size());
                        let seed = self.rng.next_u32();
                        tokio::spawn(async move {
                            let read = tokio::task::spawn_blocking(move || source.read(start, end)).await;
                            let Ok(Ok(data)) = read else { return };
                            let chunk = Packet::Chunk {
                                transfer_id: id,
                                chunk_index: start / cs.max(1),
                                offset: start,
                                data,
                            };
                            let frames = encode_chunks(
                                &MsgId::p2pt(seed),
                                &Payload::Json(chunk.to_json()),
                                MAX_CHUNK_UNITS,
                            );
                            let frames = frames.into_iter().map(Frame::Text).collect();
                            let (reply, _) = oneshot::channel();
                            let msg = FileMsg::Out { peer, frames, urgent: true, reply };
                            let _ = tx.send(msg).await;
                        });
                    }
                    Some(_) => {}
                    None => self.warnings.push((
                        peer.clone(),
                        "range request for a streamed file (cannot be served)".into(),
                    )),
                }
            }
            Packet::Accept { window, .. } => {
                let Some(s) = self.outgoing.get(&key) else {
                    return self.unknown(peer, "file-accept");
                };
                s.state().fast_window = Some(window.clamp(256 << 10, 1 << 30));
                s.changed(None);
            }
            Packet::Ack {
                received, complete, ..
            } => {
                let Some(s) = self.outgoing.get(&key) else {
                    return self.unknown(peer, "file-ack");
                };
                {
                    let mut st = s.state();
                    st.acked = st.acked.max(received.min(s.size()));
                }
                s.changed(None);
                if complete {
                    if let Some(s) = self.outgoing.remove(&key) {
                        s.finish(FileStatus::Complete, None);
                    }
                }
            }
        }
        None
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

    /// Handles one message from a session or sender task (except `Out`, which needs the
    /// core's view of links).
    pub(crate) fn on_msg(&mut self, msg: FileMsg) {
        match msg {
            FileMsg::Control {
                peer,
                id,
                direction,
                control,
            } => self.on_control(peer, id, direction, control),
            FileMsg::Out {
                peer,
                frames,
                urgent,
                reply,
            } => self.enqueue(peer, frames, urgent, reply),
            FileMsg::Verified { peer, id, ok } => self.on_verified(peer, id, ok),
            FileMsg::Done { peer, id } => {
                self.outgoing.remove(&(peer, id));
            }
        }
    }

    fn on_control(&mut self, peer: PeerId, id: String, direction: Direction, control: Control) {
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
                    }
                }
                let packet = Packet::Cancel {
                    transfer_id: key.1.clone(),
                    reason,
                };
                self.push_packet(&key.0, &packet);
            }
            Control::Resume => {
                if let Some(inc) = self.incoming.get_mut(&key) {
                    if inc.fast {
                        let received = inc.session.bytes();
                        inc.acked = received;
                        let ack = Packet::Ack {
                            transfer_id: key.1.clone(),
                            received,
                            complete: false,
                        };
                        self.push_packet(&key.0, &ack);
                    }
                }
            }
            Control::RangeRequest(start, end) => {
                if self.incoming.contains_key(&key) {
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

    fn on_verified(&mut self, peer: PeerId, id: String, ok: bool) {
        let key = (peer, id);
        if let Some(inc) = self.incoming.remove(&key) {
            if inc.fast && ok {
                let ack = Packet::Ack {
                    transfer_id: key.1.clone(),
                    received: inc.session.size(),
                    complete: true,
                };
                self.push_packet(&key.0, &ack);
            }
        }
    }

    /// Largest chunk payload accepted: a GhostMesh range reply (8 chunks) or a fast frame.
    fn max_chunk_data(&self) -> usize {
        // Chunk sizes differ per transfer; the per-transfer check is the offset bound.
        (MAX_RANGE_CHUNKS as usize * 64 * 1024).max(self.cfg.fast_frame_bytes as usize)
    }

    fn unknown(&mut self, peer: &PeerId, what: &str) -> Option<FileSession> {
        self.stats.unknown_transfer += 1;
        self.warnings
            .push((peer.clone(), format!("{what} for an unknown transfer (ignored)")));
        None
    }

    fn refuse(&mut self, peer: &PeerId, id: &str, reason: String) -> Option<FileSession> {
        self.stats.refused_offers += 1;
        self.warnings.push((peer.clone(), format!("file offer refused: {reason}")));
        let packet = Packet::Cancel {
            transfer_id: id.to_owned(),
            reason,
        };
        self.push_packet(peer, &packet);
        None
    }

    fn on_offer(&mut self, now: Instant, peer: &PeerId, offer: Offer) -> Option<FileSession> {
        let key = (peer.clone(), offer.transfer_id.clone());
        if self.incoming.contains_key(&key) {
            return self.refuse(peer, &offer.transfer_id, "duplicate transfer id".into());
        }
        if offer.size > self.cfg.max_file_size {
            let reason = format!(
                "file of {} bytes exceeds the receiver's limit of {}",
                offer.size, self.cfg.max_file_size
            );
            return self.refuse(peer, &offer.transfer_id, reason);
        }
        let from_peer = self.incoming.keys().filter(|(p, _)| p == peer).count();
        if from_peer >= self.cfg.max_incoming_per_peer || self.incoming.len() >= self.cfg.max_incoming {
            return self.refuse(peer, &offer.transfer_id, "too many transfers at once".into());
        }
        let dir = self.cfg.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let temp = tempfile::Builder::new()
            .prefix("ghostmesh-")
            .tempfile_in(&dir)
            .map(tempfile::NamedTempFile::into_parts);
        let (file, temp) = match temp {
            Ok(parts) => parts,
            Err(e) => {
                let reason = format!("receiver cannot store the file: {e}");
                return self.refuse(peer, &offer.transfer_id, reason);
            }
        };
        let info = Info {
            transfer_id: offer.transfer_id.clone(),
            name: offer.name,
            mime_type: offer.mime_type,
            size: offer.size,
            chunk_size: offer.chunk_size,
            total_chunks: offer.total_chunks,
            metadata: offer.metadata,
            peer: peer.clone(),
            direction: Direction::Incoming,
        };
        let state = State {
            status: FileStatus::Active,
            bytes: 0,
            ranges: RangeSet::new(),
            error: None,
            file: Some(std::sync::Arc::new(file)),
            temp: Some(temp),
            fast_window: None,
            acked: 0,
            source: None,
            requested: RangeSet::new(),
        };
        let session = FileSession::new(info, state, self.tx.clone());
        if offer.fast {
            let accept = Packet::Accept {
                transfer_id: offer.transfer_id.clone(),
                window: self.cfg.fast_window,
            };
            self.push_packet(peer, &accept);
        }
        self.incoming.insert(
            key,
            Incoming {
                session: session.clone(),
                last: now,
                fast: offer.fast,
                acked: 0,
                ended: false,
                hasher: (offer.fast || offer.sha256.is_some()).then(Sha256::new),
                sha256: offer.sha256,
                verifying: false,
                hashed: 0,
            },
        );
        Some(session)
    }

    fn fail_incoming(&mut self, key: &Key, inc: Incoming, error: FileError) {
        inc.session.finish(FileStatus::Failed, Some(error.clone()));
        // Tell the sender, so it stops too.
        let packet = Packet::Cancel {
            transfer_id: key.1.clone(),
            reason: error.to_string(),
        };
        self.push_packet(&key.0, &packet);
    }

    fn store(&mut self, now: Instant, key: &Key, offset: u64, data: &[u8]) {
        let Some(inc) = self.incoming.get_mut(key) else {
            self.unknown(&key.0, "file chunk");
            return;
        };
        inc.last = now;
        let size = inc.session.size();
        let end = offset.checked_add(data.len() as u64);
        let result = match end {
            Some(end) if end <= size => {
                let mut st = inc.session.state();
                match st.file.as_deref() {
                    Some(file) => {
                        use std::os::unix::fs::FileExt;
                        match file.write_all_at(data, offset) {
                            Ok(()) => {
                                if let Some(h) = inc.hasher.as_mut() {
                                    if offset <= inc.hashed && inc.hashed < end {
                                        h.update(&data[(inc.hashed - offset) as usize..]);
                                        inc.hashed = end;
                                    }
                                }
                                st.ranges.insert(offset, end);
                                st.bytes = st.ranges.covered();
                                if st.ranges.fragments() > self.cfg.max_fragments {
                                    Err(FileError::Limit(format!(
                                        "more than {} separate byte ranges",
                                        self.cfg.max_fragments
                                    )))
                                } else {
                                    Ok(st.bytes)
                                }
                            }
                            Err(e) => Err(FileError::Io(e.to_string())),
                        }
                    }
                    // Finished already (canceled locally, say): ignore.
                    None => return,
                }
            }
            _ => Err(FileError::Protocol(format!(
                "chunk at offset {offset} with {} bytes runs past the size {size}",
                data.len()
            ))),
        };
        match result {
            Ok(bytes) => {
                inc.session.changed(Some(FileEvent::Progress { bytes, total: size }));
                let window = self.cfg.fast_window;
                let paused = inc.session.status() == FileStatus::Paused;
                if inc.fast && !paused && bytes - inc.acked >= window / 4 {
                    inc.acked = bytes;
                    let ack = Packet::Ack {
                        transfer_id: key.1.clone(),
                        received: bytes,
                        complete: false,
                    };
                    self.push_packet(&key.0, &ack);
                }
                self.maybe_complete(key, false);
            }
            Err(e) => {
                if let Some(inc) = self.incoming.remove(key) {
                    self.fail_incoming(key, inc, e);
                }
            }
        }
    }

    /// Completes (or starts the hash check of) a transfer that has every byte and its end.
    fn maybe_complete(&mut self, key: &Key, at_end: bool) {
        let Some(inc) = self.incoming.get_mut(key) else {
            return;
        };
        if !inc.ended || inc.verifying {
            return;
        }
        let (covered, size) = (inc.session.bytes(), inc.session.size());
        if covered < size {
            if at_end {
                // Everything the sender sent came before its end on the ordered link.
                let missing = size - covered;
                if let Some(inc) = self.incoming.remove(key) {
                    let e = FileError::Integrity(format!("file-end with {missing} bytes missing"));
                    self.fail_incoming(key, inc, e);
                }
            }
            return;
        }
        match inc.sha256.clone() {
            None => {
                inc.session.finish(FileStatus::Complete, None);
                let fast = inc.fast;
                self.incoming.remove(key);
                if fast {
                    let ack = Packet::Ack {
                        transfer_id: key.1.clone(),
                        received: size,
                        complete: true,
                    };
                    self.push_packet(&key.0, &ack);
                }
            }
            Some(expected) => {
                let (hasher, hashed) = match inc.hasher.take() {
                    Some(h) => (h, inc.hashed),
                    None => (Sha256::new(), 0),
                };
                if hashed == size {
                    // Every byte was hashed on arrival: decide now.
                    let ok = hex(&hasher.finalize()) == expected;
                    let session = inc.session.clone();
                    verdict(&session, ok, &expected);
                    self.on_verified(key.0.clone(), key.1.clone(), ok);
                    return;
                }
                // Hash the rest from the file, off the core's thread.
                inc.verifying = true;
                let session = inc.session.clone();
                let (tx, peer, id) = (self.tx.clone(), key.0.clone(), key.1.clone());
                tokio::spawn(async move {
                    let file = session.state().file.clone();
                    let hashed = tokio::task::spawn_blocking(move || {
                        hash_file(hasher, file.as_deref(), hashed, size)
                    })
                    .await;
                    let ok = match hashed {
                        Ok(Ok(actual)) => {
                            verdict(&session, actual == expected, &expected);
                            actual == expected
                        }
                        Ok(Err(e)) => {
                            session.finish(FileStatus::Failed, Some(FileError::Io(e.to_string())));
                            false
                        }
                        Err(e) => {
                            session.finish(FileStatus::Failed, Some(FileError::Io(e.to_string())));
                            false
                        }
                    };
                    let _ = tx.send(FileMsg::Verified { peer, id, ok }).await;
                });
            }
        }
    }
}

/// Completes or fails `session` on the hash check's outcome.
fn verdict(session: &FileSession, ok: bool, expected: &str) {
    if ok {
        session.finish(FileStatus::Complete, None);
    } else {
        let e = FileError::Integrity(format!("SHA-256 mismatch: expected {expected}"));
        session.finish(FileStatus::Failed, Some(e));
    }
}

/// Feeds bytes `from..size` of `file` to `hasher` (which holds the bytes below `from`);
/// returns the digest as lowercase hex.
fn hash_file(mut hasher: Sha256, file: Option<&std::fs::File>, from: u64, size: u64) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let file = file.ok_or_else(|| std::io::Error::other("file gone"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = from;
    while pos < size {
        let n = ((size - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
