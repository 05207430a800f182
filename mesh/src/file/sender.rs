//! The task that sends one outgoing file: offer, chunks (GhostMesh format, or binary frames
//! once a Rust receiver accepts the fast path, under its window), `file-end`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, oneshot};

use super::packet::{self, Offer, Packet};
use super::session::{Control, Direction, RandomAccess};
use super::transfers::{FileMsg, hex};
use super::{FileError, FileSession, FileStatus, MIN_CHUNK_SIZE};
use crate::transport::Frame;
use crate::wire::{MAX_CHUNK_UNITS, MsgId, Payload, encode_chunks};

/// Where the sender reads from.
pub(crate) enum Reader {
    Bytes(bytes::Bytes),
    File(tokio::fs::File),
    Stream(Box<dyn tokio::io::AsyncRead + Send + Unpin>),
}

impl Reader {
    /// Appends the `len` bytes at `offset` (the next ones, for files and streams) to `out`,
    /// without zero-filling the room first.
    async fn append(&mut self, offset: u64, len: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let short = || std::io::Error::other("source shorter than its size");
        match self {
            Reader::Bytes(b) => {
                let s = offset as usize;
                out.extend_from_slice(b.get(s..s + len).ok_or_else(short)?);
                Ok(())
            }
            Reader::File(f) => append_from(f, len, out).await,
            Reader::Stream(r) => append_from(r, len, out).await,
        }
    }

    async fn read_exact(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            Reader::Bytes(b) => {
                let s = offset as usize;
                let src = b
                    .get(s..s + buf.len())
                    .ok_or_else(|| std::io::Error::other("source shorter than its size"))?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Reader::File(f) => f.read_exact(buf).await.map(|_| ()),
            Reader::Stream(r) => r.read_exact(buf).await.map(|_| ()),
        }
    }
}

/// Appends exactly `len` bytes read from `r` to `out` (reads into the spare capacity).
async fn append_from<R>(r: &mut R, len: usize, out: &mut Vec<u8>) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin + ?Sized,
{
    out.reserve_exact(len);
    let end = out.len() + len;
    while out.len() < end {
        let want = end - out.len();
        let n = (&mut *r).take(want as u64).read_buf(out).await?;
        if n == 0 {
            return Err(std::io::Error::other("source shorter than its size"));
        }
    }
    Ok(())
}

/// Fast-path frames at least this large are hashed off the runtime's worker threads.
const BLOCKING_HASH_BYTES: usize = 64 << 10;

/// Settings of one send.
pub(crate) struct Plan {
    pub(crate) hash_upfront: bool,
    pub(crate) fast: bool,
    /// Every packet goes through relays (the core wraps each one): GhostMesh's packets,
    /// never the fast path.
    pub(crate) routed: bool,
    pub(crate) fast_frame_bytes: u64,
    pub(crate) seed: u64,
}

struct Sender {
    session: FileSession,
    tx: mpsc::Sender<FileMsg>,
    rng: StdRng,
    routed: bool,
}

/// What the sender hands the core: link frames, or (routed) a packet to wrap in a route.
enum Batch {
    Frames(Vec<Frame>),
    Routed(serde_json::Value),
}

impl Sender {
    /// Hands frames to the core (waits while the peer's outbox is full); `false` when the
    /// peer or the transfer is gone (the core ended it: canceled, timed out).
    async fn out(&mut self, batch: Batch) -> bool {
        match self.hand_over(batch).await {
            Some(rx) => rx.await.unwrap_or(false),
            None => false,
        }
    }

    /// Gives frames to the core without waiting for them to be queued: the answer comes
    /// on the returned receiver (`None`: the core is gone). Lets the next frame be read and
    /// hashed while the core queues this one.
    async fn hand_over(&mut self, batch: Batch) -> Option<oneshot::Receiver<bool>> {
        let (reply, rx) = oneshot::channel();
        let (peer, id) = (
            self.session.peer_id().to_owned(),
            self.session.transfer_id().to_owned(),
        );
        let msg = match batch {
            Batch::Frames(frames) => FileMsg::Out {
                peer,
                id: Some(id),
                frames,
                reply,
            },
            Batch::Routed(packet) => FileMsg::Routed {
                peer,
                id,
                packet,
                reply,
            },
        };
        self.tx.send(msg).await.ok().map(|()| rx)
    }

    /// A GhostMesh packet: P2PT envelope frames for the link, or, routed, the packet itself.
    fn batch(&mut self, p: &Packet) -> Batch {
        if self.routed {
            return Batch::Routed(p.to_json());
        }
        let id = MsgId::p2pt(self.rng.next_u32());
        let frames = encode_chunks(&id, &Payload::Json(p.to_json()), MAX_CHUNK_UNITS);
        Batch::Frames(frames.into_iter().map(Frame::Text).collect())
    }

    async fn packet(&mut self, p: &Packet) -> bool {
        let batch = self.batch(p);
        self.out(batch).await
    }

    /// The bytes below `sent` are queued for the peer.
    fn progress(&self, sent: u64) {
        self.session.state().bytes = sent;
        self.session.changed(Some(super::FileEvent::Progress {
            bytes: sent,
            total: self.session.size(),
        }));
    }

    async fn done(&self) {
        let msg = FileMsg::Done {
            peer: self.session.peer_id().to_owned(),
            id: self.session.transfer_id().to_owned(),
        };
        let _ = self.tx.send(msg).await;
    }

    /// Fails the session and tells the receiver (through the core's control path: the
    /// cancel goes ahead of queued chunks and never waits for room).
    async fn fail(&mut self, error: FileError) {
        if self.session.finish(FileStatus::Failed, Some(error.clone())) {
            let msg = FileMsg::Control {
                peer: self.session.peer_id().to_owned(),
                id: self.session.transfer_id().to_owned(),
                direction: Direction::Outgoing,
                routed: self.routed,
                control: Control::Cancel(error.to_string()),
            };
            let _ = self.tx.send(msg).await;
        }
        self.done().await;
    }
}

/// SHA-256 of a whole source that can be read again.
async fn hash_source(source: RandomAccess, size: u64) -> Result<String, FileError> {
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let mut pos = 0;
        while pos < size {
            let end = (pos + (4 << 20)).min(size);
            hasher.update(source.read(pos, end)?);
            pos = end;
        }
        Ok::<_, std::io::Error>(hex(&hasher.finalize()))
    })
    .await
    .map_err(|e| FileError::Io(e.to_string()))?
    .map_err(|e| FileError::Io(e.to_string()))
}

/// Sends `session`'s file from `reader`; ends with the session complete, failed or canceled.
pub(crate) async fn run(
    session: FileSession,
    mut reader: Reader,
    plan: Plan,
    tx: mpsc::Sender<FileMsg>,
) {
    let mut s = Sender {
        session: session.clone(),
        tx,
        rng: StdRng::seed_from_u64(plan.seed),
        routed: plan.routed,
    };
    let (size, chunk_size, id) = (
        session.size(),
        session.chunk_size(),
        session.transfer_id().to_owned(),
    );
    let source = session.state().source.clone();
    let upfront = match (&source, plan.hash_upfront) {
        (Some(src), true) => match hash_source(src.clone(), size).await {
            Ok(h) => Some(h),
            Err(e) => return s.fail(e).await,
        },
        _ => None,
    };
    if let Reader::File(f) = &mut reader {
        if let Err(e) = f.seek(std::io::SeekFrom::Start(0)).await {
            return s.fail(FileError::Io(e.to_string())).await;
        }
    }
    let offer = Packet::Offer(Offer {
        transfer_id: id.clone(),
        name: session.name().to_owned(),
        mime_type: session.mime_type().to_owned(),
        size,
        chunk_size,
        total_chunks: packet::total_chunks(size, chunk_size),
        metadata: session.metadata().cloned(),
        sha256: upfront.clone(),
        fast: plan.fast && !plan.routed,
    });
    if !s.packet(&offer).await {
        return s.fail(FileError::PeerClosed).await;
    }

    // Hashed on the way unless the offer already carries the hash.
    let mut hasher = upfront.is_none().then(Sha256::new);
    let mut offset = 0u64;
    let mut buf = Vec::new();
    // The previous frames, handed to the core: (where they end, the core's answer). One
    // batch in flight at a time keeps the order and the outbox's bounds.
    let mut in_flight: Option<(u64, oneshot::Receiver<bool>)> = None;
    // GhostMesh sends one (empty) chunk for an empty file; so do we.
    let mut first = true;
    while offset < size || first {
        first = false;
        // Paused: wait; canceled or failed: stop.
        if s.session
            .wait(|st| st.status == FileStatus::Active)
            .await
            .is_err()
        {
            return s.done().await;
        }
        let grant = s.session.state().fast_window;
        if let Some(grant) = grant {
            let sent = offset;
            let waited = s
                .session
                .wait(|st| {
                    st.status == FileStatus::Active && sent.saturating_sub(st.acked) < grant.window
                })
                .await;
            if waited.is_err() {
                return s.done().await;
            }
        }
        let piece = match grant {
            Some(g) => plan.fast_frame_bytes.min(g.frame).max(MIN_CHUNK_SIZE),
            None => chunk_size,
        };
        let len = piece.min(size - offset) as usize;
        let frames = if grant.is_some() {
            // Read straight into the frame, after its header.
            let mut frame = packet::encode_fast(&id, offset, &[]);
            let header = frame.len();
            if let Err(e) = reader.append(offset, len, &mut frame).await {
                return s
                    .fail(FileError::Io(format!("reading the source: {e}")))
                    .await;
            }
            match hasher.take() {
                // A large frame is hashed on the blocking pool (the frame goes there and
                // back, no copy), so the runtime's workers keep driving the links meanwhile.
                Some(mut h) if len >= BLOCKING_HASH_BYTES => {
                    let hashed = tokio::task::spawn_blocking(move || {
                        h.update(&frame[header..]);
                        (h, frame)
                    })
                    .await;
                    match hashed {
                        Ok((h, f)) => {
                            hasher = Some(h);
                            frame = f;
                        }
                        Err(e) => return s.fail(FileError::Io(format!("hashing: {e}"))).await,
                    }
                }
                Some(mut h) => {
                    h.update(&frame[header..]);
                    hasher = Some(h);
                }
                None => {}
            }
            Batch::Frames(vec![Frame::Binary(frame)])
        } else {
            buf.resize(len, 0);
            if let Err(e) = reader.read_exact(offset, &mut buf).await {
                return s
                    .fail(FileError::Io(format!("reading the source: {e}")))
                    .await;
            }
            if let Some(h) = hasher.as_mut() {
                h.update(&buf);
            }
            let chunk = Packet::Chunk {
                transfer_id: id.clone(),
                chunk_index: offset / chunk_size,
                offset,
                data: std::mem::take(&mut buf),
            };
            let batch = s.batch(&chunk);
            // Keep the buffer's allocation for the next chunk.
            if let Packet::Chunk { data, .. } = chunk {
                buf = data;
            }
            batch
        };
        if let Some((end, rx)) = in_flight.take() {
            if !rx.await.unwrap_or(false) {
                return s.fail(FileError::PeerClosed).await;
            }
            s.progress(end);
        }
        offset += len as u64;
        match s.hand_over(frames).await {
            Some(rx) => in_flight = Some((offset, rx)),
            None => return s.fail(FileError::PeerClosed).await,
        }
    }
    if let Some((end, rx)) = in_flight.take() {
        if !rx.await.unwrap_or(false) {
            return s.fail(FileError::PeerClosed).await;
        }
        s.progress(end);
    }
    if s.session.status().is_final() {
        return s.done().await;
    }
    let end = Packet::End {
        transfer_id: id,
        sha256: hasher.map(|h| hex(&h.finalize())).or(upfront),
    };
    if !s.packet(&end).await {
        return s.fail(FileError::PeerClosed).await;
    }
    if s.session.fast_path() {
        // A Rust receiver confirms after its hash check (the core completes the session), or
        // cancels when it fails; the core's idle timeout ends a receiver gone silent.
        let _ = s.session.wait(|st| st.status == FileStatus::Complete).await;
    } else {
        // GhostMesh has no acknowledgement: sent is complete.
        s.session.finish(FileStatus::Complete, None);
    }
    s.done().await;
}
