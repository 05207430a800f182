//! One WebSocket connection: one task that reads frames into the core and drains the bounded
//! queue onto the socket, and the bookkeeping that makes a closed socket leave every swarm at
//! once.
//!
//! Memory per connection is the point of its shape (measured with heaptrack; see
//! BENCHMARKS.md): reading and writing are driven by one hand-polled future instead of a reader
//! task, a writer task and a split socket; the queue wakes the task through a stored waker
//! instead of a `Notify`; shutdown reaches connections through their handles instead of a
//! watch receiver each; and tungstenite's read buffer is 512 bytes over a [`LeanIo`] that
//! holds nothing while the connection is idle. Queued messages go out in batches, one write
//! per batch.

use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_util::{Sink, Stream};
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::Shared;
use super::lean_io::LeanIo;
use super::queue::{Item, OutQueue, QueueLimits};
use crate::config::secs;
use crate::metrics::Drop;
use crate::swarm::ConnId;
use crate::wire::{DecodeError, ReplyAction};

/// tungstenite's read buffer, allocated up front per connection (it grows for larger messages).
const WS_READ_BUFFER: usize = 512;

/// Frames read or batches written per poll before the task yields to others.
const ROUNDS_PER_POLL: usize = 32;

/// Bytes of queued messages written with one syscall at most.
const WRITE_BATCH: usize = 64 * 1024;

/// A reserved place in the connection limits, released on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Slot {
    /// Takes a place for a connection from `ip`, or says which limit refuses it.
    pub(super) fn reserve(
        shared: &Arc<Shared>,
        ip: IpAddr,
    ) -> Result<Slot, (StatusCode, &'static str, String)> {
        let cfg = &shared.cfg;
        if *shared.shutdown.borrow() {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "shutdown",
                "tracker is shutting down\n".into(),
            ));
        }
        let mut per_ip = shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if shared.ws_count.load(Ordering::Relaxed) >= cfg.max_connections {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "max_connections",
                format!("tracker is full ({} connections)\n", cfg.max_connections),
            ));
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= cfg.max_connections_per_ip {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "max_connections_per_ip",
                format!(
                    "too many connections from {ip} (max {})\n",
                    cfg.max_connections_per_ip
                ),
            ));
        }
        *n += 1;
        let total = shared.ws_count.fetch_add(1, Ordering::Relaxed) + 1;
        shared.metrics.set_connections(total);
        Ok(Slot {
            shared: shared.clone(),
            ip,
        })
    }
}

impl std::ops::Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        let total = self.shared.ws_count.fetch_sub(1, Ordering::Relaxed) - 1;
        self.shared.metrics.set_connections(total);
    }
}

/// The part of a connection other tasks reach: its outbound queue, and the waker of the
/// connection's task while it waits for the queue.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    inner: Mutex<HandleInner>,
}

#[derive(Debug)]
struct HandleInner {
    queue: OutQueue,
    waker: Option<Waker>,
    shutdown: bool,
}

impl ConnHandle {
    fn new(limits: QueueLimits) -> Self {
        ConnHandle {
            inner: Mutex::new(HandleInner {
                queue: OutQueue::new(limits),
                waker: None,
                shutdown: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HandleInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message under the drop policy of [`OutQueue`].
    pub(super) fn push(
        &self,
        text: String,
        is_offer: bool,
        evicted: &mut Vec<Drop>,
    ) -> Result<(), Drop> {
        let mut g = self.lock();
        let r = g.queue.push(text, is_offer, evicted);
        let waker = if r.is_ok() { g.waker.take() } else { None };
        drop(g);
        if let Some(w) = waker {
            w.wake();
        }
        r
    }

    /// See [`OutQueue::offer_refusal`].
    pub(super) fn offer_refusal(&self, min_len: usize) -> Option<Drop> {
        self.lock().queue.offer_refusal(min_len)
    }

    fn close(&self, code: u16, reason: &str) {
        let mut g = self.lock();
        g.queue.close(code, reason);
        let waker = g.waker.take();
        drop(g);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The tracker is shutting down: close with 1001 after what is queued.
    pub(super) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.close(1001, "tracker shutting down");
    }

    fn shutdown_requested(&self) -> bool {
        self.lock().shutdown
    }

    /// The next item, or `None` after arranging for `cx` to be woken by the next push.
    fn poll_pop(&self, cx: &Context<'_>) -> Option<Item> {
        let mut g = self.lock();
        if let Some(item) = g.queue.pop() {
            return Some(item);
        }
        if !g.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            g.waker = Some(cx.waker().clone());
        }
        None
    }
}

/// Why the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Client,
    Idle,
    Slow,
    TooBig,
    ProtocolError,
    Shutdown,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Client => "client",
            End::Idle => "idle",
            End::Slow => "slow",
            End::TooBig => "too_big",
            End::ProtocolError => "protocol_error",
            End::Shutdown => "shutdown",
        }
    }
}

/// What one received frame (or the end of the stream) means for the read side.
fn on_frame(
    shared: &Shared,
    conn: ConnId,
    handle: &ConnHandle,
    next: Option<Result<Message, WsError>>,
) -> Option<End> {
    match next {
        None => {
            handle.close(1000, "");
            Some(End::Client)
        }
        Some(Ok(Message::Text(t))) => {
            shared.handle_frame(conn, Ok(t.as_str()));
            None
        }
        Some(Ok(Message::Binary(b))) => {
            shared.handle_frame(conn, Err(&b));
            None
        }
        Some(Ok(Message::Close(_))) => {
            handle.close(1000, "");
            Some(End::Client)
        }
        Some(Ok(_)) => None, // ping, pong: tungstenite answers pings itself
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
            shared.reply_error(
                conn,
                DecodeError {
                    action: ReplyAction::Announce,
                    info_hash: None,
                    reason: format!("message too big: {size} bytes, the limit is {max_size}"),
                },
            );
            handle.close(1009, "message too big");
            Some(End::TooBig)
        }
        // A client that vanished without a close handshake is an ordinary disconnect.
        Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_)))
        | Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
            handle.close(1000, "");
            Some(End::Client)
        }
        Some(Err(e)) => {
            tracing::debug!(conn = conn.0, error = %e, "WebSocket protocol error");
            let code = if matches!(e, WsError::Utf8(_)) {
                1007
            } else {
                1002
            };
            handle.close(code, "protocol error");
            Some(End::ProtocolError)
        }
    }
}

/// Serves one upgraded connection until it ends, then removes its peers from every swarm.
///
/// One future does both directions. The read side feeds frames to the core until the client
/// leaves, errs, idles past `idle_timeout_secs` or the tracker shuts down; it then queues a
/// close frame, and the connection leaves every swarm at once. The write side sends queued
/// messages one at a time (a message not flushed within `write_timeout_secs` ends the
/// connection as slow) and, after the read side ended, flushes what is queued and the close
/// frame within `write_timeout_secs`.
pub(super) async fn run<S>(shared: Arc<Shared>, slot: Slot, io: S, ip: IpAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.cfg;
    // Writes go out at once: our own queue is the buffer.
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_frame_bytes));
    let mut ws =
        WebSocketStream::from_raw_socket(LeanIo::new(io), Role::Server, Some(ws_cfg)).await;
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let handle = Arc::new(ConnHandle::new(QueueLimits {
        messages: cfg.out_queue_messages,
        bytes: cfg.out_queue_bytes,
    }));
    shared.conns.insert(conn, handle.clone());
    // Shutdown closes the connections it finds in `conns`; one inserted as it began sees the flag.
    if *shared.shutdown.borrow() {
        handle.shutdown();
    }
    tracing::debug!(conn = conn.0, %ip, "connection opened");

    let write_timeout = secs(cfg.write_timeout_secs);
    let idle = secs(cfg.idle_timeout_secs);
    let mut timer = pin!(tokio::time::sleep(idle));
    let mut last_read = Instant::now();
    let mut read_end: Option<(End, Instant)> = None;
    let mut write_end: Option<End> = None;
    // A message handed to the socket and not yet flushed: since when, and whether it is the
    // close frame.
    let mut flushing: Option<(Instant, bool)> = None;

    std::future::poll_fn(|cx| {
        for _ in 0..ROUNDS_PER_POLL {
            let mut progress = false;
            if read_end.is_none() && handle.shutdown_requested() {
                read_end = Some((End::Shutdown, Instant::now()));
                shared.conn_closed(conn);
            }

            // Write side: what is queued goes out as one batch (one write), flushed before the
            // next batch is taken.
            while write_end.is_none() {
                if let Some((_, last)) = flushing {
                    match Pin::new(&mut ws).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {
                            flushing = None;
                            progress = true;
                            if last {
                                write_end = Some(End::Client);
                            }
                            continue;
                        }
                        Poll::Ready(Err(_)) => write_end = Some(End::Client),
                        Poll::Pending => {}
                    }
                    break;
                }
                let mut batch = 0usize;
                let mut last = false;
                let mut failed = false;
                let mut stalled = false;
                ws.get_mut().set_batching(true);
                while batch < WRITE_BATCH && !last {
                    match Pin::new(&mut ws).poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => {
                            failed = true;
                            break;
                        }
                        Poll::Pending => {
                            stalled = true;
                            break;
                        }
                    }
                    let Some(item) = handle.poll_pop(cx) else {
                        break;
                    };
                    let msg = match item {
                        Item::Text(t) => {
                            batch += t.len().max(1);
                            Message::text(t)
                        }
                        Item::Close(code, reason) => {
                            batch += 1;
                            last = true;
                            Message::Close(Some(CloseFrame {
                                code: CloseCode::from(code),
                                reason: reason.into(),
                            }))
                        }
                    };
                    if Pin::new(&mut ws).start_send(msg).is_err() {
                        failed = true;
                        break;
                    }
                }
                ws.get_mut().set_batching(false);
                if failed {
                    write_end = Some(End::Client);
                    break;
                }
                if batch == 0 && !stalled {
                    break;
                }
                // Flushing also clears a stall; either way the write timeout runs from now.
                flushing = Some((Instant::now(), last));
            }
            if let Some(w) = write_end {
                if read_end.is_none() {
                    // The write side failed first: that is why the connection ends.
                    read_end = Some((w, Instant::now()));
                    shared.conn_closed(conn);
                }
                return Poll::Ready(());
            }

            // Read side.
            if read_end.is_none()
                && let Poll::Ready(next) = Pin::new(&mut ws).poll_next(cx)
            {
                progress = true;
                last_read = Instant::now();
                if let Some(end) = on_frame(&shared, conn, &handle, next) {
                    read_end = Some((end, last_read));
                    // Leave every swarm at once, before flushing: peers must not get offers
                    // relayed to a dead socket.
                    shared.conn_closed(conn);
                }
            }

            // Timers: idle (checked lazily: frames do not re-arm the timer), the write timeout
            // of a message being flushed, and the flush deadline once reading ended.
            let due = [
                read_end.is_none().then(|| last_read + idle),
                flushing.map(|(since, _)| since + write_timeout),
                read_end.map(|(_, at)| at + write_timeout),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(due) = due
                && (due < timer.deadline() || timer.is_elapsed())
            {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                if read_end.is_none() && now >= last_read + idle {
                    handle.close(1000, "idle timeout");
                    read_end = Some((End::Idle, now));
                    shared.conn_closed(conn);
                }
                if flushing.is_some_and(|(since, _)| now >= since + write_timeout)
                    || read_end.is_some_and(|(_, at)| now >= at + write_timeout)
                {
                    write_end = Some(End::Slow);
                    if read_end.is_none() {
                        read_end = Some((End::Slow, now));
                        shared.conn_closed(conn);
                    }
                    return Poll::Ready(());
                }
                // Re-armed at the top of the next round.
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Busy: let other connections run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;

    let end = read_end.map_or(End::Client, |(e, _)| e);
    // Release the slot only now: shutdown waits on it, and must not finish before the close
    // frame is on the wire.
    drop(ws);
    drop(slot);
    let end = if end == End::Client && write_end == Some(End::Slow) {
        End::Slow
    } else {
        end
    };
    shared.metrics.closed(end.as_str());
    tracing::debug!(conn = conn.0, reason = end.as_str(), "connection closed");
}
