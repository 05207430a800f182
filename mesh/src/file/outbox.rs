//! Per-peer queues of frames waiting for the links (file chunks, range replies, control
//! packets, the relay's binary frames), each under a byte cap, and the sender tasks waiting
//! for room.
//!
//! Within a queue: control frames and range replies go ahead of chunks (they are small, or a
//! reader waits for them). Chunks stop entering at the park mark (their sender task waits),
//! range replies are dropped beyond three quarters of the cap, anything else beyond the cap;
//! the last quarter stays for control frames. A queue never holds more than the cap, except
//! one batch put into an empty queue (a batch larger than the cap could never go otherwise).

use std::collections::{HashMap, VecDeque};

use tokio::sync::oneshot;

use crate::mesh::PeerId;
use crate::transport::Frame;

/// Chunks of sender tasks park at this many queued bytes, or half the cap when smaller.
const PARK_BYTES: usize = 2 << 20;

/// A sender task's frames, waiting for room; `reply` gets `true` once they are queued,
/// `false` when they never will be (the peer or the transfer is gone).
pub(crate) struct Parked {
    /// Whose queue they go to: the receiver, or, for a routed transfer, the route's first
    /// relay.
    pub(crate) peer: PeerId,
    /// The transfer they belong to: (receiver, transfer id).
    pub(crate) owner: Option<(PeerId, String)>,
    pub(crate) frames: Vec<Frame>,
    pub(crate) reply: oneshot::Sender<bool>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
}

pub(crate) struct Outboxes {
    cap: usize,
    queues: HashMap<PeerId, Queue>,
    parked: VecDeque<Parked>,
    /// Control or binary frames dropped at the cap.
    pub(crate) dropped: u64,
}

fn owned_by(p: &Parked, peer: &PeerId, id: &str) -> bool {
    p.owner.as_ref().is_some_and(|(o, i)| o == peer && i == id)
}

fn batch_len(frames: &[Frame]) -> usize {
    frames.iter().map(Frame::len).sum()
}

impl Outboxes {
    pub(crate) fn new(cap: usize) -> Self {
        Outboxes {
            cap,
            queues: HashMap::new(),
            parked: VecDeque::new(),
            dropped: 0,
        }
    }

    fn park_at(&self) -> usize {
        (self.cap / 2).min(PARK_BYTES)
    }

    fn reply_limit(&self) -> usize {
        self.cap / 4 * 3
    }

    /// Bytes queued for `peer`.
    pub(crate) fn bytes(&self, peer: &PeerId) -> usize {
        self.queues.get(peer).map_or(0, |q| q.bytes)
    }

    /// Whether a range reply of about `len` bytes would be queued for `peer` now.
    pub(crate) fn reply_fits(&self, peer: &PeerId, len: usize) -> bool {
        let bytes = self.bytes(peer);
        bytes == 0 || bytes + len <= self.reply_limit()
    }

    /// Puts `frames` ahead of queued chunks, all or none, if the queue stays within `limit`.
    fn push_front(&mut self, peer: &PeerId, frames: Vec<Frame>, limit: usize) -> bool {
        let len = batch_len(&frames);
        let q = self.queues.entry(peer.clone()).or_default();
        if q.bytes > 0 && q.bytes + len > limit {
            return false;
        }
        for f in frames.into_iter().rev() {
            q.bytes += f.len();
            q.frames.push_front(f);
        }
        true
    }

    /// A control packet or binary frame, ahead of chunks; dropped (and counted) at the cap.
    pub(crate) fn push_control(&mut self, peer: &PeerId, frames: Vec<Frame>) -> bool {
        let ok = self.push_front(peer, frames, self.cap);
        if !ok {
            self.dropped += 1;
        }
        ok
    }

    /// A range reply, ahead of chunks; `false` (not queued) beyond three quarters of the cap.
    pub(crate) fn push_reply(&mut self, peer: &PeerId, frames: Vec<Frame>) -> bool {
        let limit = self.reply_limit();
        self.push_front(peer, frames, limit)
    }

    fn room_for_chunks(&self, peer: &PeerId, len: usize) -> bool {
        let bytes = self.bytes(peer);
        bytes == 0 || (bytes < self.park_at() && bytes + len <= self.cap)
    }

    fn push_back(&mut self, p: Parked) -> Option<(PeerId, String)> {
        let q = self.queues.entry(p.peer.clone()).or_default();
        for f in p.frames {
            q.bytes += f.len();
            q.frames.push_back(f);
        }
        let _ = p.reply.send(true);
        p.owner
    }

    /// A sender task's chunks: queued now (returns the transfer, which made progress), or
    /// parked until the queue drains.
    pub(crate) fn enqueue(&mut self, p: Parked) -> Option<(PeerId, String)> {
        if self.room_for_chunks(&p.peer, batch_len(&p.frames)) {
            self.push_back(p)
        } else {
            self.parked.push_back(p);
            None
        }
    }

    /// Moves parked chunks into queues that have room again; returns the transfers that
    /// made progress.
    pub(crate) fn release_parked(&mut self) -> Vec<(PeerId, String)> {
        let mut moved = Vec::new();
        let mut still = VecDeque::new();
        while let Some(p) = self.parked.pop_front() {
            if self.room_for_chunks(&p.peer, batch_len(&p.frames)) {
                moved.extend(self.push_back(p));
            } else {
                still.push_back(p);
            }
        }
        self.parked = still;
        moved
    }

    /// Whether the transfer (to receiver `peer`) has its sender task waiting for room.
    pub(crate) fn is_parked(&self, peer: &PeerId, id: &str) -> bool {
        self.parked.iter().any(|p| owned_by(p, peer, id))
    }

    /// The transfer (to receiver `peer`) ended: its parked chunks go, and its sender task
    /// hears `false`.
    pub(crate) fn unpark(&mut self, peer: &PeerId, id: &str) {
        self.parked.retain_mut(|p| {
            let hit = owned_by(p, peer, id);
            if hit {
                let (tx, _) = oneshot::channel();
                let _ = std::mem::replace(&mut p.reply, tx).send(false);
            }
            !hit
        });
    }

    /// The next frame for `peer`.
    pub(crate) fn take(&mut self, peer: &PeerId) -> Option<Frame> {
        let q = self.queues.get_mut(peer)?;
        let f = q.frames.pop_front()?;
        q.bytes = q.bytes.saturating_sub(f.len());
        Some(f)
    }

    /// The peer's links are gone: its queue goes, its parked senders hear `false`.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.queues.remove(peer);
        self.parked.retain_mut(|p| {
            let hit = &p.peer == peer;
            if hit {
                let (tx, _) = oneshot::channel();
                let _ = std::mem::replace(&mut p.reply, tx).send(false);
            }
            !hit
        });
    }

    /// Every parked sender hears `false`.
    pub(crate) fn shutdown(&mut self) {
        for p in self.parked.drain(..) {
            let _ = p.reply.send(false);
        }
    }

    /// (frames, bytes) queued over all peers.
    pub(crate) fn totals(&self) -> (usize, usize) {
        self.queues
            .values()
            .fold((0, 0), |(f, b), q| (f + q.frames.len(), b + q.bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parked(peer: &str, id: &str, len: usize) -> (Parked, oneshot::Receiver<bool>) {
        let (reply, rx) = oneshot::channel();
        let p = Parked {
            peer: peer.into(),
            owner: Some((peer.into(), id.into())),
            frames: vec![Frame::Binary(vec![0; len])],
            reply,
        };
        (p, rx)
    }

    #[test]
    fn file_outbox_caps_hold_for_chunks_replies_and_control() {
        let mut o = Outboxes::new(1000);
        let peer: PeerId = "p".into();
        // Chunks: in until the park mark (500), then parked.
        let (p, mut rx1) = parked("p", "t", 400);
        assert!(o.enqueue(p).is_some());
        let (p, mut rx2) = parked("p", "t", 400);
        assert!(o.enqueue(p).is_some(), "below the park mark: in");
        let (p, mut rx3) = parked("p", "t", 100);
        assert!(o.enqueue(p).is_none(), "at 800 bytes: parked");
        assert_eq!((rx1.try_recv(), rx2.try_recv()), (Ok(true), Ok(true)));
        assert!(rx3.try_recv().is_err() && o.is_parked(&peer, "t"));
        // Replies stop at 750; control frames at 1000, dropped and counted beyond.
        assert!(
            !o.reply_fits(&peer, 10) && !o.push_reply(&peer, vec![Frame::Text("x".repeat(10))])
        );
        assert!(o.push_control(&peer, vec![Frame::Text("x".repeat(200))]));
        assert!(!o.push_control(&peer, vec![Frame::Binary(vec![0; 1])]));
        assert_eq!((o.dropped, o.bytes(&peer)), (1, 1000));
        // Control goes first; draining releases the parked chunks.
        assert_eq!(o.take(&peer).map(|f| f.len()), Some(200));
        while o.take(&peer).is_some() {}
        assert_eq!(o.release_parked(), vec![(peer.clone(), "t".to_owned())]);
        assert_eq!(rx3.try_recv(), Ok(true));
        // One batch larger than the cap still goes into an empty queue.
        while o.take(&peer).is_some() {}
        assert!(o.push_control(&peer, vec![Frame::Binary(vec![0; 5000])]));
        // An ended transfer's parked chunks go, and its sender hears false.
        let (p, mut rx4) = parked("p", "u", 10);
        assert!(o.enqueue(p).is_none());
        o.unpark(&peer, "u");
        assert_eq!(rx4.try_recv(), Ok(false));
        assert_eq!(o.totals(), (1, 5000));
    }
}
