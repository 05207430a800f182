//! Incoming transfers: offers, bytes to temporary files, range tracking, completion, hash
//! checks, acknowledgements (and keep-alive acks while paused or verifying, so a Rust
//! sender's idle timeout holds off), and a `file-cancel` to the sender whenever one fails.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::follower::HashFollower;
use super::packet::{Offer, Packet};
use super::session::{Direction, Info, State};
use super::transfers::{FileMsg, Key, Transfers};
use super::{FileError, FileEvent, FileSession, FileStatus, RangeSet};
use crate::mesh::PeerId;
use crate::relay::layered::Recent;

pub(super) struct Incoming {
    pub(super) session: FileSession,
    pub(super) last: Instant,
    /// The sender speaks the fast path: acks go back.
    pub(super) fast: bool,
    pub(super) acked: u64,
    /// When we last sent an ack (keep-alives go out when it is older than the ping interval).
    pub(super) pinged: Instant,
    /// `file-end` arrived.
    pub(super) ended: bool,
    pub(super) sha256: Option<String>,
    pub(super) verifying: bool,
    /// The SHA-256 of the bytes stored in order so far, computed off the core's task (only
    /// when the sender is expected to give a hash: Rust senders always do, GhostMesh never
    /// does).
    pub(super) follower: Option<HashFollower>,
}

impl Transfers {
    /// How often a fast-path receiver acknowledges at least (its sender's idle timeout must
    /// not fire while we are paused, verifying, or receiving slowly).
    pub(super) fn ping_interval(&self) -> Duration {
        (self.cfg.idle_timeout / 3).clamp(Duration::from_millis(1), Duration::from_secs(10))
    }

    pub(super) fn ack(&mut self, peer: &PeerId, id: &str, received: u64, complete: bool) {
        let ack = Packet::Ack {
            transfer_id: id.to_owned(),
            received,
            complete,
        };
        self.push_packet(peer, &ack);
    }

    /// Fails incoming transfers that went silent; sends keep-alive acks. (A paused incoming
    /// transfer does not time out: its sender may be waiting for our acks.)
    pub(super) fn tick_incoming(&mut self, now: Instant) {
        let timeout = self.cfg.idle_timeout;
        let ping = self.ping_interval();
        let mut acks = Vec::new();
        let mut failed = Vec::new();
        for (key, inc) in &mut self.incoming {
            let paused = inc.session.status() == FileStatus::Paused;
            if paused {
                inc.last = now;
            }
            if !(inc.verifying || paused || now < inc.last + timeout) {
                failed.push(key.clone());
                continue;
            }
            if inc.fast && now >= inc.pinged + ping {
                // Paused: repeat the last ack, so the window stays shut.
                if !paused && !inc.verifying {
                    inc.acked = inc.acked.max(inc.session.bytes());
                }
                inc.pinged = now;
                acks.push((key.clone(), inc.acked));
            }
        }
        for (key, received) in acks {
            self.ack(&key.0, &key.1, received, false);
        }
        for key in failed {
            if let Some(inc) = self.incoming.remove(&key) {
                self.fail_incoming(&key, inc, FileError::Timeout);
            }
        }
    }

    /// When the next incoming idle timeout or keep-alive falls due.
    pub(super) fn incoming_deadline(&self) -> Option<Instant> {
        let ping = self.ping_interval();
        let timeout = self.cfg.idle_timeout;
        self.incoming
            .values()
            .flat_map(|i| {
                let idle = (!i.verifying).then_some(i.last + timeout);
                let keepalive = i.fast.then_some(i.pinged + ping);
                idle.into_iter().chain(keepalive)
            })
            .min()
    }

    pub(super) fn on_offer(
        &mut self,
        now: Instant,
        peer: &PeerId,
        mut offer: Offer,
    ) -> Option<FileSession> {
        let key = (peer.clone(), offer.transfer_id.clone());
        // A routed offer never gets the fast path: nothing could go back to its sender.
        let routed = peer == super::ROUTED_PEER;
        offer.fast &= !routed;
        if routed {
            self.early.offered.insert(offer.transfer_id.clone());
        }
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
        if from_peer >= self.cfg.max_incoming_per_peer
            || self.incoming.len() >= self.cfg.max_incoming
        {
            return self.refuse(
                peer,
                &offer.transfer_id,
                "too many transfers at once".into(),
            );
        }
        let dir = self.cfg.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
        let temp = tempfile::Builder::new()
            .prefix("ghostmesh-")
            .tempfile_in(&dir)
            .map(tempfile::NamedTempFile::into_parts);
        let (file, temp) = match temp {
            Ok((file, temp)) => (std::sync::Arc::new(file), temp),
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
            routed,
        };
        let state = State {
            status: FileStatus::Active,
            bytes: 0,
            ranges: RangeSet::new(),
            error: None,
            file: Some(file.clone()),
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
            // Plus the frame size we ask for (an extension of the extension: senders from
            // before it ignore it and send 64 KiB frames, which we take as well).
            let mut json = accept.to_json();
            if let Some(m) = json.as_object_mut() {
                m.insert("frame".into(), self.cfg.fast_frame_bytes.into());
            }
            self.push_json(peer, json);
        }
        self.incoming.insert(
            key.clone(),
            Incoming {
                session: session.clone(),
                last: now,
                fast: offer.fast,
                acked: 0,
                pinged: now,
                ended: false,
                follower: (offer.fast || offer.sha256.is_some()).then(|| HashFollower::start(file)),
                sha256: offer.sha256,
                verifying: false,
            },
        );
        if routed {
            let (held, expired) = self.early.take(now, &key.1);
            self.stats.unknown_transfer += expired;
            for packet in held {
                match packet {
                    Packet::Chunk { offset, data, .. } => self.store(now, &key, offset, &data),
                    Packet::End { sha256, .. } => self.on_end(now, &key, sha256),
                    _ => {}
                }
            }
        }
        Some(session)
    }

    /// Ends `inc` with `error` and tells the sender, so it stops (and frees its slot) too.
    pub(super) fn fail_incoming(&mut self, key: &Key, inc: Incoming, error: FileError) {
        inc.session.finish(FileStatus::Failed, Some(error.clone()));
        self.cancel_sender(key, error.to_string());
    }

    fn cancel_sender(&mut self, key: &Key, reason: String) {
        let packet = Packet::Cancel {
            transfer_id: key.1.clone(),
            reason,
        };
        self.push_packet(&key.0, &packet);
    }

    pub(super) fn store(&mut self, now: Instant, key: &Key, offset: u64, data: &[u8]) {
        let Some(inc) = self.incoming.get_mut(key) else {
            self.unknown(&key.0, "file chunk");
            return;
        };
        inc.last = now;
        let size = inc.session.size();
        let end = offset.checked_add(data.len() as u64);
        let result = match end {
            Some(end) if end <= size => {
                // Written without holding the session's lock (readers and waiters take it).
                let Some(file) = inc.session.state().file.clone() else {
                    // Finished already (canceled locally, say): ignore.
                    return;
                };
                use std::os::unix::fs::FileExt;
                match file.write_all_at(data, offset) {
                    Ok(()) => {
                        let mut st = inc.session.state();
                        st.ranges.insert(offset, end);
                        st.bytes = st.ranges.covered();
                        if let Some(f) = inc.follower.as_mut() {
                            f.advance(st.ranges.contiguous_from(0));
                        }
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
            _ => Err(FileError::Protocol(format!(
                "chunk at offset {offset} with {} bytes runs past the size {size}",
                data.len()
            ))),
        };
        match result {
            Ok(bytes) => {
                inc.session
                    .changed(Some(FileEvent::Progress { bytes, total: size }));
                let window = self.cfg.fast_window;
                let paused = inc.session.status() == FileStatus::Paused;
                if inc.fast && !paused && bytes - inc.acked >= window / 4 {
                    inc.acked = bytes;
                    inc.pinged = now;
                    self.ack(&key.0, &key.1, bytes, false);
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
    pub(super) fn maybe_complete(&mut self, key: &Key, at_end: bool) {
        let Some(inc) = self.incoming.get_mut(key) else {
            return;
        };
        if !inc.ended || inc.verifying {
            return;
        }
        let (covered, size) = (inc.session.bytes(), inc.session.size());
        if covered < size {
            // Routed packets take separate routes and may arrive in any order: a routed
            // transfer waits for its missing bytes (the idle timeout ends the wait).
            if at_end && key.0 != super::ROUTED_PEER {
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
                    self.ack(&key.0, &key.1, size, true);
                }
            }
            Some(expected) => {
                // Take the hash back from the follower and hash what it has not reached,
                // off the core's thread.
                inc.verifying = true;
                let follower = inc.follower.take();
                let session = inc.session.clone();
                let (tx, peer, id) = (self.tx.clone(), key.0.clone(), key.1.clone());
                tokio::spawn(async move {
                    let (hasher, hashed) = match follower {
                        Some(f) => f.finish().await,
                        None => (Sha256::new(), 0),
                    };
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

    /// The hash check ended: a fast-path sender gets the final ack, or, on a failure, any
    /// sender gets a `file-cancel` with the reason (a fast-path sender would otherwise wait
    /// for the final ack, holding its outgoing slot).
    pub(super) fn on_verified(&mut self, peer: PeerId, id: String, ok: bool) {
        let key = (peer, id);
        let Some(inc) = self.incoming.remove(&key) else {
            return;
        };
        if ok {
            if inc.fast {
                self.ack(&key.0, &key.1, inc.session.size(), true);
            }
        } else {
            let reason = inc.session.error().map_or_else(
                || "integrity: hash check failed".to_owned(),
                |e| e.to_string(),
            );
            self.cancel_sender(&key, reason);
        }
    }
}

/// Routed packets held for their offer, at most this many ...
const EARLY_PACKETS: usize = 64;
/// ... holding at most this many bytes of chunk data ...
const EARLY_BYTES: usize = 1 << 20;
/// ... for at most this long.
const EARLY_TTL: Duration = Duration::from_secs(10);

/// Routed transfer ids whose offer came, remembered (the oldest forgotten first) so that
/// packets of an ended transfer are not held as early ones.
const OFFERED_IDS: usize = 1024;

/// Routed `file-chunk`s and `file-end`s that arrived before their transfer's `file-offer`:
/// every routed packet takes its own route, so a chunk may overtake the offer. Bounded in
/// packets, bytes and age; the oldest go first, each counted as an unknown transfer.
pub(crate) struct Early {
    held: VecDeque<(Instant, Packet, usize)>,
    bytes: usize,
    /// Recent routed offers (accepted or refused): later packets for them are late, not early.
    pub(super) offered: Recent<String>,
}

impl Default for Early {
    fn default() -> Self {
        Early {
            held: VecDeque::new(),
            bytes: 0,
            offered: Recent::new(OFFERED_IDS),
        }
    }
}

impl Early {
    /// Whether packets for `id` may still be early (its offer has not been seen).
    pub(super) fn may_hold(&self, id: &str) -> bool {
        !self.offered.contains(&id.to_owned())
    }

    /// Holds `packet`; returns how many held packets were dropped (too old, or to make room).
    pub(super) fn hold(&mut self, now: Instant, packet: Packet) -> u64 {
        let len = match &packet {
            Packet::Chunk { data, .. } => data.len(),
            _ => 0,
        };
        let mut dropped = self.expire(now);
        if len > EARLY_BYTES {
            return dropped + 1;
        }
        while self.held.len() >= EARLY_PACKETS || self.bytes + len > EARLY_BYTES {
            let Some((_, _, n)) = self.held.pop_front() else {
                break;
            };
            self.bytes -= n;
            dropped += 1;
        }
        self.bytes += len;
        self.held.push_back((now, packet, len));
        dropped
    }

    /// The packets held for transfer `id`, in arrival order, and how many others expired.
    pub(super) fn take(&mut self, now: Instant, id: &str) -> (Vec<Packet>, u64) {
        let expired = self.expire(now);
        let mut out = Vec::new();
        let mut keep = VecDeque::new();
        for (at, p, n) in self.held.drain(..) {
            if p.transfer_id() == id {
                self.bytes -= n;
                out.push(p);
            } else {
                keep.push_back((at, p, n));
            }
        }
        self.held = keep;
        (out, expired)
    }

    fn expire(&mut self, now: Instant) -> u64 {
        let mut n = 0;
        while self
            .held
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) > EARLY_TTL)
        {
            if let Some((_, _, len)) = self.held.pop_front() {
                self.bytes -= len;
                n += 1;
            }
        }
        n
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
fn hash_file(
    mut hasher: Sha256,
    file: Option<&std::fs::File>,
    from: u64,
    size: u64,
) -> std::io::Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: &str, len: usize) -> Packet {
        Packet::Chunk {
            transfer_id: id.into(),
            chunk_index: 0,
            offset: 0,
            data: vec![7; len],
        }
    }

    #[test]
    fn early_routed_packets_are_bounded_in_count_bytes_and_age() {
        let t0 = Instant::now();
        let mut e = Early::default();
        // Count: the 65th packet pushes out the oldest.
        for i in 0..EARLY_PACKETS {
            assert_eq!(e.hold(t0, chunk(&format!("c{i}"), 10)), 0);
        }
        assert_eq!(e.hold(t0, chunk("new", 10)), 1);
        assert_eq!((e.held.len(), e.bytes), (EARLY_PACKETS, EARLY_PACKETS * 10));
        assert!(e.take(t0, "c0").0.is_empty(), "the oldest went first");
        let (got, expired) = e.take(t0, "new");
        assert_eq!((got, expired), (vec![chunk("new", 10)], 0));
        // Bytes: a chunk that does not fit pushes out as many as needed; one over the whole
        // budget is not held at all.
        assert_eq!(
            e.hold(t0, chunk("big", EARLY_BYTES - 100)),
            53,
            "63 held, 10 of them fit beside it"
        );
        assert!(e.bytes <= EARLY_BYTES);
        assert_eq!(e.hold(t0, chunk("huge", EARLY_BYTES + 1)), 1);
        // Age: everything older than the TTL goes at the next call, counted.
        let later = t0 + EARLY_TTL + Duration::from_millis(1);
        let held = e.held.len() as u64;
        let (got, expired) = e.take(later, "big");
        assert_eq!((got.len(), expired), (0, held));
        assert_eq!((e.held.len(), e.bytes), (0, 0));
        // Ends are held too, and come back in arrival order with the chunks.
        let end = Packet::End {
            transfer_id: "x".into(),
            sha256: None,
        };
        e.hold(later, chunk("x", 1));
        e.hold(later, end.clone());
        assert_eq!(e.take(later, "x").0, vec![chunk("x", 1), end]);
        // Offered ids are never held again.
        e.offered.insert("x".into());
        assert!(!e.may_hold("x") && e.may_hold("y"));
    }
}
