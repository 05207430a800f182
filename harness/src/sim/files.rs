//! `send_file` in the simulator: GhostMesh's file packets (`file-offer`, base64 `file-chunk`s,
//! `file-end`) sent one-way through the sender's [`Node`](ghostmesh::node::Node), and, once the
//! receiver's `file-accept` is back, binary fast-path frames ([`encode_fast`]) on the link under
//! the receiver's window with its `file-ack`s, as `ghostmesh::mesh` does between Rust peers.
//! Every packet is made by the mesh's own encoders, so byte counts are real.
//!
//! The sender hands the next piece to the link when the previous one has left its upload
//! queue (the sender's bandwidth): so on a link without a `bandwidth` the whole file leaves at
//! once, before an accept could arrive, and a `fast` transfer stays in GhostMesh's format.

use ghostmesh::file::packet::{self, Offer, Packet, decode, decode_fast, encode_fast};
use ghostmesh::wire::Payload;
use rand::RngExt;
use serde_json::{Value, json};

use super::{Ev, Sim};
use crate::filedata::{self, FAST_FRAME_BYTES, FAST_WINDOW};
use crate::record::{MsgRecord, kind};
use crate::scenario::{Action, FileFormat, Target};

/// One transfer, both ends.
#[derive(Debug)]
pub(super) struct SimFile {
    rec: usize,
    from: u32,
    to: u32,
    inc_from: u32,
    inc_to: u32,
    size: u64,
    chunk: u64,
    seed: u64,
    tid: String,
    // Sender.
    offset: u64,
    started: bool,
    window: Option<u64>,
    acked: u64,
    sent_end: bool,
    done: bool,
    waiting: bool,
    fast_used: bool,
    // Receiver.
    r_fast: bool,
    r_received: u64,
    r_acked: u64,
    r_end: bool,
    r_ok: bool,
    r_done: bool,
}

impl Sim<'_> {
    pub(super) fn file_round(&mut self, i: usize) {
        let sc = self.sc;
        let Action::SendFile {
            from,
            to,
            size,
            chunk_size,
            format,
            ..
        } = &sc.steps[i].action
        else {
            return;
        };
        for &p in &from.peers {
            let p = p as u32;
            if !self.peers[p as usize].up {
                continue;
            }
            let linked: Vec<u32> = self.peers[p as usize]
                .links
                .keys()
                .copied()
                .filter(|q| match to {
                    Target::Neighbour => true,
                    Target::Among(sel) => sel.peers.binary_search(&(*q as usize)).is_ok(),
                })
                .collect();
            let target =
                (!linked.is_empty()).then(|| linked[self.rng.random_range(0..linked.len())]);
            let id = self.rec.sent(MsgRecord {
                step: i,
                from: p as usize,
                to: target.map(|q| q as usize),
                bytes: *size as usize,
                sent_at: self.now,
                failure: target.is_none().then(|| "no link to a target peer".into()),
                kind: kind::FILE,
                fast: Some(false),
                ..MsgRecord::default()
            });
            let Some(q) = target else { continue };
            let tid = filedata::hex16(self.rng.random());
            let seed = filedata::file_seed(sc.seed, id);
            let offer = Packet::Offer(Offer {
                transfer_id: tid.clone(),
                name: format!("ghostmesh-{tid}"),
                mime_type: "application/octet-stream".into(),
                size: *size,
                chunk_size: *chunk_size,
                total_chunks: packet::total_chunks(*size, *chunk_size),
                metadata: Some(json!({ "gm": id })),
                sha256: Some(filedata::digest_hex(seed, *size)),
                fast: *format == FileFormat::Fast,
            });
            let f = self.files.len();
            self.files.push(SimFile {
                rec: id,
                from: p,
                to: q,
                inc_from: self.peers[p as usize].inc,
                inc_to: self.peers[q as usize].inc,
                size: *size,
                chunk: *chunk_size,
                seed,
                tid: tid.clone(),
                offset: 0,
                started: false,
                window: None,
                acked: 0,
                sent_end: false,
                done: false,
                waiting: false,
                fast_used: false,
                r_fast: false,
                r_received: 0,
                r_acked: 0,
                r_end: false,
                r_ok: true,
                r_done: false,
            });
            self.file_ids.insert(tid, f);
            self.send_packet(p, q, &offer);
            self.pump(p);
            self.at(self.now, Ev::FileTick(f));
        }
    }

    /// Sends a file packet one-way through `p`'s node (the caller pumps).
    fn send_packet(&mut self, p: u32, q: u32, packet: &Packet) {
        let now = self.instant();
        if let Some(n) = self.peers[p as usize].node.as_mut() {
            let _ = n.send_no_reply(now, &q, Payload::Json(packet.to_json()), &mut self.rng);
        }
    }

    fn file_fail(&mut self, f: usize, why: &str) {
        let file = &mut self.files[f];
        file.done = true;
        file.r_done = true;
        let m = &mut self.rec.messages[file.rec];
        if m.delivered_at.is_none() && m.failure.is_none() {
            m.failure = Some(why.into());
        }
    }

    /// The sender's next step: a piece, `file-end`, or wait for the window.
    pub(super) fn file_tick(&mut self, f: usize) {
        let file = &self.files[f];
        if file.done || file.sent_end {
            return;
        }
        let (p, q) = (file.from, file.to);
        if !self.live(p, file.inc_from) || !self.peers[p as usize].links.contains_key(&q) {
            self.file_fail(f, "link closed");
            return;
        }
        if let Some(w) = file.window
            && file.offset.saturating_sub(file.acked) >= w
        {
            self.files[f].waiting = true;
            return;
        }
        if file.offset < file.size || !file.started {
            let file = &mut self.files[f];
            file.started = true;
            let piece = if file.window.is_some() {
                FAST_FRAME_BYTES
            } else {
                file.chunk
            };
            let len = piece.min(file.size - file.offset);
            let data = filedata::bytes(file.seed, file.offset, len as usize);
            let offset = file.offset;
            file.offset += len;
            if file.window.is_some() {
                file.fast_used = true;
                let frame = encode_fast(&file.tid, offset, &data);
                self.transmit_binary(p, q, frame);
            } else {
                let chunk = Packet::Chunk {
                    transfer_id: file.tid.clone(),
                    chunk_index: offset / file.chunk,
                    offset,
                    data,
                };
                self.send_packet(p, q, &chunk);
                self.pump(p);
            }
            let next = self.peers[p as usize].upload_free.max(self.now);
            self.at(next, Ev::FileTick(f));
        } else {
            let file = &mut self.files[f];
            file.sent_end = true;
            let end = Packet::End {
                transfer_id: file.tid.clone(),
                sha256: Some(filedata::digest_hex(file.seed, file.size)),
            };
            let compat = file.window.is_none();
            let rec = file.rec;
            self.rec.messages[rec].fast = Some(file.fast_used);
            self.send_packet(p, q, &end);
            self.pump(p);
            if compat {
                // GhostMesh has no acknowledgement: sent is complete for the sender.
                self.files[f].done = true;
                self.rec.messages[rec].acked_at = Some(self.now);
            }
        }
    }

    /// A file packet `p` received from `from` (called while `p`'s node is pumped).
    pub(super) fn on_file_packet(&mut self, p: u32, from: u32, v: &Value) {
        let Ok(packet) = decode(v, 4 << 20) else {
            return;
        };
        let Some(&f) = self.file_ids.get(packet.transfer_id()) else {
            return;
        };
        let file = &self.files[f];
        let at_receiver = p == file.to && from == file.from && self.live(p, file.inc_to);
        let at_sender = p == file.from && from == file.to && self.live(p, file.inc_from);
        match packet {
            Packet::Offer(o) if at_receiver && o.fast => {
                self.files[f].r_fast = true;
                let accept = Packet::Accept {
                    transfer_id: o.transfer_id,
                    window: FAST_WINDOW,
                };
                self.send_packet(p, from, &accept);
            }
            Packet::Chunk { offset, data, .. } if at_receiver => self.file_store(f, offset, &data),
            Packet::End { .. } if at_receiver => {
                self.files[f].r_end = true;
                self.file_maybe_complete(f);
            }
            Packet::Accept { window, .. } if at_sender => {
                let file = &mut self.files[f];
                if !file.sent_end {
                    file.window = Some(window.clamp(256 << 10, 1 << 30));
                }
            }
            Packet::Ack {
                received, complete, ..
            } if at_sender => {
                let file = &mut self.files[f];
                file.acked = file.acked.max(received);
                if complete && !file.done {
                    file.done = true;
                    let rec = file.rec;
                    self.rec.messages[rec].acked_at = Some(self.now);
                } else if file.waiting {
                    file.waiting = false;
                    self.at(self.now, Ev::FileTick(f));
                }
            }
            _ => {}
        }
    }

    /// A binary frame `p` received (fast-path chunks).
    pub(super) fn on_fast_frame(&mut self, p: u32, frame: &[u8]) {
        let Ok((tid, offset, data)) = decode_fast(frame) else {
            return;
        };
        if let Some(&f) = self.file_ids.get(&tid)
            && self.files[f].to == p
            && self.live(p, self.files[f].inc_to)
        {
            self.file_store(f, offset, data);
        }
    }

    fn file_store(&mut self, f: usize, offset: u64, data: &[u8]) {
        let file = &mut self.files[f];
        if file.r_done {
            return;
        }
        // Links are reliable and ordered, so bytes arrive at the front.
        if offset != file.r_received || !filedata::intact(file.seed, offset, data) {
            file.r_ok = false;
        }
        file.r_received = file.r_received.max(offset + data.len() as u64);
        if file.r_fast && file.r_received - file.r_acked >= FAST_WINDOW / 4 {
            file.r_acked = file.r_received;
            let ack = Packet::Ack {
                transfer_id: file.tid.clone(),
                received: file.r_received,
                complete: false,
            };
            let (to, from) = (file.to, file.from);
            self.send_packet(to, from, &ack);
        }
        self.file_maybe_complete(f);
    }

    fn file_maybe_complete(&mut self, f: usize) {
        let file = &mut self.files[f];
        if file.r_done || !file.r_end {
            return;
        }
        file.r_done = true;
        let (to, from, rec) = (file.to, file.from, file.rec);
        if file.r_ok && file.r_received == file.size {
            self.rec.messages[rec].delivered_at = Some(self.now);
            if file.r_fast {
                let ack = Packet::Ack {
                    transfer_id: file.tid.clone(),
                    received: file.size,
                    complete: true,
                };
                self.send_packet(to, from, &ack);
            }
        } else {
            self.rec.messages[rec].failure = Some(format!(
                "integrity: {} of {} bytes arrived{}",
                file.r_received,
                file.size,
                if file.r_ok {
                    ""
                } else {
                    ", some altered or misplaced"
                }
            ));
        }
    }

    /// The link between `p` and `q` went down: their unfinished transfers fail.
    pub(super) fn files_link_down(&mut self, p: u32, q: u32) {
        let hit: Vec<usize> = self
            .files
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                !(f.done && f.r_done) && ((f.from == p && f.to == q) || (f.from == q && f.to == p))
            })
            .map(|(i, _)| i)
            .collect();
        for f in hit {
            self.file_fail(f, "link closed");
        }
    }
}
