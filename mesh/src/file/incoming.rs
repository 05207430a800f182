//! Incoming transfers: offers, bytes to temporary files, range tracking, completion, hash
//! checks, acknowledgements (and keep-alive acks while paused or verifying, so a Rust
//! sender's idle timeout holds off), and a `file-cancel` to the sender whenever one fails.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::follower::HashFollower;
use super::packet::{Offer, Packet};
use super::session::{Direction, Info, State};
use super::transfers::{FileMsg, Key, Transfers};
use super::{FileError, FileEvent, FileSession, FileStatus, RangeSet};
use crate::mesh::PeerId;

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

    pub(super) fn on_offer(&mut self, now: Instant, peer: &PeerId, offer: Offer) -> Option<FileSession> {
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
            key,
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
                inc.session.changed(Some(FileEvent::Progress { bytes, total: size }));
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
            let reason = inc
                .session
                .error()
                .map_or_else(|| "integrity: hash check failed".to_owned(), |e| e.to_string());
            self.cancel_sender(&key, reason);
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
