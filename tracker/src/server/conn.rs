//! One WebSocket connection: a reader that feeds the core, a writer that drains the bounded
//! queue, and the bookkeeping that makes a closed socket leave every swarm at once.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::Shared;
use super::queue::{Item, OutQueue, QueueLimits};
use crate::config::secs;
use crate::metrics::Drop;
use crate::swarm::ConnId;
use crate::wire::{DecodeError, ReplyAction};

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

/// The part of a connection other tasks reach: its outbound queue.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    queue: Mutex<OutQueue>,
    notify: Notify,
}

impl ConnHandle {
    fn new(limits: QueueLimits) -> Self {
        ConnHandle {
            queue: Mutex::new(OutQueue::new(limits)),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message under the drop policy of [`OutQueue`].
    pub(super) fn push(
        &self,
        text: String,
        is_offer: bool,
        evicted: &mut Vec<Drop>,
    ) -> Result<(), Drop> {
        let r = self.lock().push(text, is_offer, evicted);
        if r.is_ok() {
            self.notify.notify_one();
        }
        r
    }

    fn close(&self, code: u16, reason: &str) {
        self.lock().close(code, reason);
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Item> {
        self.lock().pop()
    }
}

/// Why the reader stopped.
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

/// Serves one upgraded connection until it ends, then removes its peers from every swarm.
pub(super) async fn run<S>(shared: Arc<Shared>, slot: Slot, io: S, ip: IpAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.cfg;
    // tungstenite's defaults allocate a 128 KiB read buffer per connection up front (measured:
    // ~140 KB RSS per idle connection). Start small; the buffer grows for larger messages up to
    // max_message_bytes. Writes go out at once: our own queue is the buffer.
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(cfg.max_message_bytes))
        .max_frame_size(Some(cfg.max_frame_bytes));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_cfg)).await;
    let (mut sink, mut stream) = ws.split();
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    let handle = Arc::new(ConnHandle::new(QueueLimits {
        messages: cfg.out_queue_messages,
        bytes: cfg.out_queue_bytes,
    }));
    shared.conns.insert(conn, handle.clone());
    tracing::debug!(conn = conn.0, %ip, "connection opened");

    let write_timeout = secs(cfg.write_timeout_secs);
    let writer_handle = handle.clone();
    let mut writer = tokio::spawn(async move {
        loop {
            let Some(item) = writer_handle.pop() else {
                writer_handle.notify.notified().await;
                continue;
            };
            let (msg, last) = match item {
                Item::Text(t) => (Message::text(t), false),
                Item::Close(code, reason) => (
                    Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    })),
                    true,
                ),
            };
            match tokio::time::timeout(write_timeout, sink.send(msg)).await {
                Ok(Ok(())) if !last => {}
                Ok(Ok(())) => return End::Client,
                Ok(Err(_)) => return End::Client,
                Err(_) => return End::Slow,
            }
        }
    });

    let idle = secs(cfg.idle_timeout_secs);
    let mut stop = shared.shutdown.subscribe();
    let mut writer_end: Option<End> = None;
    let end = loop {
        let next = tokio::select! {
            r = tokio::time::timeout(idle, stream.next()) => r,
            _ = stop.wait_for(|&down| down) => {
                handle.close(1001, "tracker shutting down");
                break End::Shutdown;
            }
            w = &mut writer => {
                let w = w.unwrap_or(End::Client);
                writer_end = Some(w);
                break w;
            }
        };
        match next {
            Err(_) => {
                handle.close(1000, "idle timeout");
                break End::Idle;
            }
            Ok(None) => {
                handle.close(1000, "");
                break End::Client;
            }
            Ok(Some(Ok(Message::Text(t)))) => shared.handle_frame(conn, t.as_bytes()),
            Ok(Some(Ok(Message::Binary(b)))) => shared.handle_frame(conn, &b),
            Ok(Some(Ok(Message::Close(_)))) => {
                handle.close(1000, "");
                break End::Client;
            }
            Ok(Some(Ok(_))) => {} // ping, pong: tungstenite answers pings itself
            Ok(Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })))) => {
                shared.reply_error(
                    conn,
                    DecodeError {
                        action: ReplyAction::Announce,
                        info_hash: None,
                        reason: format!("message too big: {size} bytes, the limit is {max_size}"),
                    },
                );
                handle.close(1009, "message too big");
                break End::TooBig;
            }
            // A client that vanished without a close handshake is an ordinary disconnect.
            Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_))))
            | Ok(Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)))) => {
                handle.close(1000, "");
                break End::Client;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(conn = conn.0, error = %e, "WebSocket protocol error");
                let code = if matches!(e, WsError::Utf8(_)) {
                    1007
                } else {
                    1002
                };
                handle.close(code, "protocol error");
                break End::ProtocolError;
            }
        }
    };

    // Leave every swarm at once, before waiting on the writer: peers must not get offers
    // relayed to a dead socket.
    shared.conn_closed(conn);
    if writer_end.is_none() {
        // Let the writer flush what is queued and the close frame, within the write timeout.
        match tokio::time::timeout(write_timeout, &mut writer).await {
            Ok(w) => writer_end = w.ok(),
            Err(_) => {
                writer.abort();
                writer_end = Some(End::Slow);
            }
        }
    }
    // Release the slot only now: shutdown waits on it, and must not finish before the close
    // frame is on the wire.
    drop(slot);
    let end = if end == End::Client && writer_end == Some(End::Slow) {
        End::Slow
    } else {
        end
    };
    shared.metrics.closed(end.as_str());
    tracing::debug!(conn = conn.0, reason = end.as_str(), "connection closed");
}
