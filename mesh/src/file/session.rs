//! [`FileSession`]: one transfer, shared by the application, the core and the sender task.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use serde_json::Value;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{broadcast, mpsc, watch};

use super::ranges::RangeSet;
use super::transfers::FileMsg;
use super::{FileError, MAX_RANGE_CHUNKS};
use crate::mesh::PeerId;

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We receive.
    Incoming,
    /// We send.
    Outgoing,
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Bytes are moving.
    Active,
    /// Paused locally (an outgoing sender stops; an incoming Rust-to-Rust transfer stops
    /// acknowledging, so its sender stops too; toward GhostMesh, pause is local only).
    Paused,
    /// Every byte arrived (and matched the hash, when one was given).
    Complete,
    /// Canceled by either side.
    Canceled,
    /// Failed: see [`FileSession::error`].
    Failed,
}

impl FileStatus {
    /// Complete, canceled or failed.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Complete | Self::Canceled | Self::Failed)
    }
}

/// What a session tells its listeners ([`FileSession::events`]).
#[derive(Debug, Clone, PartialEq)]
pub enum FileEvent {
    /// More bytes were sent or stored.
    Progress {
        /// Bytes so far.
        bytes: u64,
        /// The file size.
        total: u64,
    },
    /// The transfer completed.
    Complete,
    /// The transfer failed.
    Error(FileError),
    /// Paused locally.
    Paused,
    /// Resumed locally.
    Resumed,
    /// Canceled, with the reason.
    Canceled(String),
}

/// A way to read any part of an outgoing file again (to serve range requests and
/// [`FileSession::read_range`] on our side).
#[derive(Debug, Clone)]
pub(crate) enum RandomAccess {
    Bytes(bytes::Bytes),
    Path(PathBuf),
}

impl RandomAccess {
    pub(crate) fn read(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        match self {
            RandomAccess::Bytes(b) => {
                let (s, e) = (start as usize, (end as usize).min(b.len()));
                Ok(b.get(s..e).map(<[u8]>::to_vec).unwrap_or_default())
            }
            RandomAccess::Path(p) => {
                let f = std::fs::File::open(p)?;
                read_at(&f, start, end)
            }
        }
    }
}

pub(crate) fn read_at(f: &std::fs::File, start: u64, end: u64) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; end.saturating_sub(start) as usize];
    f.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// What the session asks of the core (cancel must reach the peer; resume and range reads may).
#[derive(Debug)]
pub(crate) enum Control {
    Cancel(String),
    Resume,
    RangeRequest(u64, u64),
}

/// The immutable facts of a transfer.
#[derive(Debug)]
pub(crate) struct Info {
    pub(crate) transfer_id: String,
    pub(crate) name: String,
    pub(crate) mime_type: String,
    pub(crate) size: u64,
    pub(crate) chunk_size: u64,
    pub(crate) total_chunks: u64,
    pub(crate) metadata: Option<Value>,
    pub(crate) peer: PeerId,
    pub(crate) direction: Direction,
    /// The transfer's packets go through relays ([`super::ROUTED_PEER`]).
    pub(crate) routed: bool,
}

/// What a Rust receiver's `file-accept` grants a fast-path sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FastGrant {
    /// Bytes the sender may have unacknowledged.
    pub(crate) window: u64,
    /// Largest frame payload the receiver asks for.
    pub(crate) frame: u64,
}

/// The changing state of a transfer.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) status: FileStatus,
    /// Bytes sent (outgoing) or stored (incoming).
    pub(crate) bytes: u64,
    /// Incoming: which bytes are stored.
    pub(crate) ranges: RangeSet,
    pub(crate) error: Option<FileError>,
    /// Incoming: the temporary file (deleted with the session).
    pub(crate) file: Option<Arc<std::fs::File>>,
    pub(crate) temp: Option<tempfile::TempPath>,
    /// Outgoing: the peer takes binary chunks, with this window and frame size.
    pub(crate) fast_window: Option<FastGrant>,
    /// Outgoing: bytes the receiver acknowledged.
    pub(crate) acked: u64,
    pub(crate) source: Option<RandomAccess>,
    /// Range requests in flight (incoming), to not repeat them.
    pub(crate) requested: RangeSet,
}

pub(crate) struct Inner {
    pub(crate) info: Info,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    events: broadcast::Sender<FileEvent>,
    control: mpsc::Sender<FileMsg>,
}

/// One file transfer, incoming or outgoing. Cheap to clone; every clone is the same session.
/// Incoming bytes live in a temporary file that is deleted when the last clone is dropped
/// (use [`FileSession::save_to`] to keep it).
#[derive(Clone)]
pub struct FileSession {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for FileSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state();
        f.debug_struct("FileSession")
            .field("transfer_id", &self.inner.info.transfer_id)
            .field("name", &self.inner.info.name)
            .field("direction", &self.inner.info.direction)
            .field("size", &self.inner.info.size)
            .field("bytes", &st.bytes)
            .field("status", &st.status)
            .finish()
    }
}

impl PartialEq for FileSession {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl FileSession {
    pub(crate) fn new(info: Info, state: State, control: mpsc::Sender<FileMsg>) -> Self {
        let (version, _) = watch::channel(0);
        let (events, _) = broadcast::channel(256);
        FileSession {
            inner: Arc::new(Inner {
                info,
                state: Mutex::new(state),
                version,
                events,
                control,
            }),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes waiters after a state change, and tells listeners `event`.
    pub(crate) fn changed(&self, event: Option<FileEvent>) {
        self.inner.version.send_modify(|v| *v += 1);
        if let Some(e) = event {
            let _ = self.inner.events.send(e);
        }
    }

    /// Ends the session (once): `Complete`, `Canceled` or `Failed`; the temp file of a
    /// failed or canceled incoming transfer goes at once.
    pub(crate) fn finish(&self, status: FileStatus, error: Option<FileError>) -> bool {
        let event = {
            let mut st = self.state();
            if st.status.is_final() {
                return false;
            }
            st.status = status;
            st.error = error.clone();
            if status != FileStatus::Complete {
                st.file = None;
                st.temp = None;
            }
            match (status, error) {
                (FileStatus::Complete, _) => FileEvent::Complete,
                (FileStatus::Canceled, Some(FileError::Canceled { reason, .. })) => {
                    FileEvent::Canceled(reason)
                }
                (_, Some(e)) => FileEvent::Error(e),
                (_, None) => FileEvent::Error(FileError::Protocol("ended".into())),
            }
        };
        self.changed(Some(event));
        true
    }

    /// The transfer id (16 hex characters).
    pub fn transfer_id(&self) -> &str {
        &self.inner.info.transfer_id
    }
    /// File name.
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }
    /// MIME type.
    pub fn mime_type(&self) -> &str {
        &self.inner.info.mime_type
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.info.size
    }
    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u64 {
        self.inner.info.chunk_size
    }
    /// `max(1, ceil(size / chunk_size))`.
    pub fn total_chunks(&self) -> u64 {
        self.inner.info.total_chunks
    }
    /// Application metadata from the offer.
    pub fn metadata(&self) -> Option<&Value> {
        self.inner.info.metadata.as_ref()
    }
    /// The other peer.
    pub fn peer_id(&self) -> &str {
        &self.inner.info.peer
    }
    /// Whether the transfer goes through relays: an outgoing one sent with routing defaults
    /// set, or an incoming one whose packets came inside onion deliveries (its
    /// [`peer_id`](Self::peer_id) is then [`ROUTED_PEER`](super::ROUTED_PEER)).
    pub fn routed(&self) -> bool {
        self.inner.info.routed
    }
    /// Incoming or outgoing.
    pub fn direction(&self) -> Direction {
        self.inner.info.direction
    }
    /// Current status.
    pub fn status(&self) -> FileStatus {
        self.state().status
    }
    /// Bytes stored (incoming) or sent (outgoing).
    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }
    /// Bytes stored, for an incoming transfer (same as [`bytes`](Self::bytes)).
    pub fn received_bytes(&self) -> u64 {
        self.bytes()
    }
    /// 0.0 ..= 1.0.
    pub fn progress(&self) -> f64 {
        let size = self.size();
        if size == 0 {
            return if self.status() == FileStatus::Complete {
                1.0
            } else {
                0.0
            };
        }
        self.bytes() as f64 / size as f64
    }
    /// Whether either side canceled.
    pub fn canceled(&self) -> bool {
        self.status() == FileStatus::Canceled
    }
    /// Why the transfer failed or was canceled.
    pub fn error(&self) -> Option<FileError> {
        self.state().error.clone()
    }
    /// Whether the binary fast path is in use (outgoing, Rust peer).
    pub fn fast_path(&self) -> bool {
        self.state().fast_window.is_some()
    }

    /// Progress, complete, error, pause, resume and cancel events from now on. A listener
    /// that lags more than 256 events misses the oldest (progress is also in
    /// [`bytes`](Self::bytes)).
    pub fn events(&self) -> broadcast::Receiver<FileEvent> {
        self.inner.events.subscribe()
    }

    /// Waits until `done(state)` holds; errors when the session ends without it.
    pub(crate) async fn wait(&self, mut done: impl FnMut(&State) -> bool) -> Result<(), FileError> {
        let mut rx = self.inner.version.subscribe();
        loop {
            {
                let st = self.state();
                if done(&st) {
                    return Ok(());
                }
                if st.status.is_final() {
                    return Err(st
                        .error
                        .clone()
                        .unwrap_or(FileError::Protocol("the transfer ended first".into())));
                }
            }
            if rx.changed().await.is_err() {
                return Err(FileError::Protocol("session dropped".into()));
            }
        }
    }

    /// Waits until the transfer completes (every byte stored and verified, or, outgoing,
    /// sent, and acknowledged by a Rust receiver), or fails.
    pub async fn wait_until_complete(&self) -> Result<(), FileError> {
        self.wait(|st| st.status == FileStatus::Complete).await
    }

    /// Pauses this side (see [`FileStatus::Paused`]).
    pub fn pause(&self) {
        let paused = {
            let mut st = self.state();
            (st.status == FileStatus::Active).then(|| st.status = FileStatus::Paused)
        };
        if paused.is_some() {
            self.changed(Some(FileEvent::Paused));
        }
    }

    /// Resumes after [`pause`](Self::pause).
    pub async fn resume(&self) {
        let resumed = {
            let mut st = self.state();
            (st.status == FileStatus::Paused).then(|| st.status = FileStatus::Active)
        };
        if resumed.is_some() {
            self.changed(Some(FileEvent::Resumed));
            self.control(Control::Resume).await;
        }
    }

    /// Cancels the transfer on both sides with `reason`.
    pub async fn cancel(&self, reason: &str) {
        let error = FileError::Canceled {
            reason: reason.to_owned(),
            by_peer: false,
        };
        if self.finish(FileStatus::Canceled, Some(error)) {
            self.control(Control::Cancel(reason.to_owned())).await;
        }
    }

    async fn control(&self, c: Control) {
        let info = &self.inner.info;
        let msg = FileMsg::Control {
            peer: info.peer.clone(),
            id: info.transfer_id.clone(),
            direction: info.direction,
            routed: info.routed,
            control: c,
        };
        let _ = self.inner.control.send(msg).await;
    }

    /// Bytes `[start, end)` (clipped to the size), waiting for them to arrive when needed; an
    /// incoming transfer asks the sender for missing bytes first (GhostMesh's range request).
    pub async fn read_range(&self, start: u64, end: u64) -> Result<Vec<u8>, FileError> {
        let end = end.min(self.size());
        if start >= end {
            return Ok(Vec::new());
        }
        match self.direction() {
            Direction::Outgoing => {
                let source = self.state().source.clone().ok_or_else(|| {
                    FileError::Unavailable("the source cannot be read again (a stream)".into())
                })?;
                tokio::task::spawn_blocking(move || source.read(start, end))
                    .await
                    .map_err(|e| FileError::Io(e.to_string()))?
                    .map_err(|e| FileError::Io(e.to_string()))
            }
            Direction::Incoming => {
                self.request_missing(start, end).await;
                self.wait(|st| st.ranges.contains(start, end)).await?;
                let file = self
                    .state()
                    .file
                    .clone()
                    .ok_or_else(|| FileError::Unavailable("the file is gone".into()))?;
                tokio::task::spawn_blocking(move || read_at(&file, start, end))
                    .await
                    .map_err(|e| FileError::Io(e.to_string()))?
                    .map_err(|e| FileError::Io(e.to_string()))
            }
        }
    }

    /// Asks the sender for the first gap in `[start, end)` (at most [`MAX_RANGE_CHUNKS`]
    /// chunks), unless asked already.
    async fn request_missing(&self, start: u64, end: u64) {
        let ask = {
            let mut st = self.state();
            // Bytes at the arrival front come anyway; ask only for a gap beyond it (a reader
            // that jumped ahead), as GhostMesh streams from an offset.
            let front = st.ranges.contiguous_from(0);
            if st.status.is_final() {
                None
            } else {
                st.ranges
                    .first_gap(start, end)
                    .filter(|&gap| gap > front)
                    .and_then(|gap| {
                        let limit = gap + MAX_RANGE_CHUNKS * self.chunk_size();
                        let stop = end.min(limit);
                        (!st.requested.contains(gap, stop)).then(|| {
                            st.requested.insert(gap, stop);
                            (gap, stop)
                        })
                    })
            }
        };
        if let Some((s, e)) = ask {
            self.control(Control::RangeRequest(s, e)).await;
        }
    }

    /// Reads the whole file as a stream; bytes are yielded as soon as they arrive in order,
    /// so reading can start before the transfer completes.
    pub fn reader(&self) -> FileReader {
        FileReader {
            session: self.clone(),
            pos: 0,
            pending: None,
        }
    }

    /// Waits for completion, then copies the file to `path`.
    pub async fn save_to(&self, path: impl AsRef<Path>) -> Result<(), FileError> {
        self.wait_until_complete().await?;
        let path = path.as_ref().to_owned();
        match self.direction() {
            Direction::Incoming => {
                let temp = self
                    .state()
                    .temp
                    .as_ref()
                    .map(|t| t.to_path_buf())
                    .ok_or_else(|| FileError::Unavailable("the file is gone".into()))?;
                tokio::fs::copy(temp, path)
                    .await
                    .map(|_| ())
                    .map_err(|e| FileError::Io(e.to_string()))
            }
            Direction::Outgoing => {
                let data = self.read_range(0, self.size()).await?;
                tokio::fs::write(path, data)
                    .await
                    .map_err(|e| FileError::Io(e.to_string()))
            }
        }
    }
}

type ReadFuture = Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, FileError>> + Send>>;

/// The bytes of a [`FileSession`] in order, as an [`AsyncRead`]; see [`FileSession::reader`].
pub struct FileReader {
    session: FileSession,
    pos: u64,
    pending: Option<ReadFuture>,
}

impl fmt::Debug for FileReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileReader")
            .field("pos", &self.pos)
            .finish()
    }
}

/// Bytes per read of a [`FileReader`].
const READ_PIECE: u64 = 256 * 1024;

impl AsyncRead for FileReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let size = self.session.size();
        if self.pos >= size || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if self.pending.is_none() {
            let session = self.session.clone();
            let start = self.pos;
            // Whatever is contiguous now (at least one byte, waiting for it if needed).
            let ready = session.state().ranges.contiguous_from(start);
            let want = (buf.remaining() as u64).min(READ_PIECE);
            let end = (start + ready.clamp(1, want)).min(size);
            self.pending = Some(Box::pin(
                async move { session.read_range(start, end).await },
            ));
        }
        let Some(fut) = self.pending.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.pending = None;
                let data = result.map_err(|e| io::Error::other(e.to_string()))?;
                let n = data.len().min(buf.remaining());
                buf.put_slice(&data[..n]);
                self.pos += n as u64;
                Poll::Ready(Ok(()))
            }
        }
    }
}
