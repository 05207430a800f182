//! [`WebRtcLink`]: a [`Link`] over one open data channel.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::webrtc::data_channel::DataChannel;
use bytes::{Bytes, BytesMut};
use tokio::sync::{Mutex, mpsc, watch};

use super::channel::{AbortOnDrop, ChanState, ChannelParts};
use super::peer::PcGuard;
use crate::transport::{BoxFuture, Frame, Link, LinkError};

/// How long `close` waits for sent data to be acknowledged before resetting the channel.
const CLOSE_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// A [`Link`] over one WebRTC data channel. Dropping it closes the peer connection.
pub struct WebRtcLink {
    label: String,
    max_message_size: usize,
    dc: Arc<dyn DataChannel>,
    state: watch::Receiver<ChanState>,
    frames: Mutex<mpsc::Receiver<Frame>>,
    // Field order matters for drop: stop polling, then close the connection.
    _task: AbortOnDrop,
    pc: PcGuard,
}

impl fmt::Debug for WebRtcLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebRtcLink")
            .field("label", &self.label)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl WebRtcLink {
    pub(super) fn new(
        pc: PcGuard,
        channel: ChannelParts,
        label: String,
        max_message_size: usize,
    ) -> Self {
        // The channel is open: setup is over, the driver may sleep until its timers again.
        pc.wake.end();
        WebRtcLink {
            label,
            max_message_size,
            dc: channel.dc,
            state: channel.state,
            frames: Mutex::new(channel.frames),
            _task: channel.task,
            pc,
        }
    }

    /// Boxes the link for the node core.
    pub fn boxed(self) -> Box<dyn Link> {
        Box::new(self)
    }

    async fn send_frame(&self, frame: Frame) -> Result<(), LinkError> {
        let size = frame.len();
        if size > self.max_message_size {
            return Err(LinkError::TooLarge {
                size,
                max: self.max_message_size,
            });
        }
        if *self.state.borrow() == ChanState::Closed {
            return Err(LinkError::Closed);
        }
        let sent = match frame {
            Frame::Text(text) => self.dc.send_text(&text).await,
            Frame::Binary(bytes) => {
                let buf = Bytes::from(bytes)
                    .try_into_mut()
                    .unwrap_or_else(|b| BytesMut::from(&b[..]));
                self.dc.send(buf).await
            }
        };
        sent.map_err(|e| match e {
            ::webrtc::error::Error::ErrDataChannelClosed
            | ::webrtc::error::Error::ErrClosedPipe => LinkError::Closed,
            e if *self.state.borrow() == ChanState::Closed => {
                let _ = e;
                LinkError::Closed
            }
            e => LinkError::Transport(e.to_string()),
        })
    }

    async fn close_link(&self) {
        if *self.state.borrow() != ChanState::Closed {
            // webrtc-rs drops data still unacknowledged when the channel closes (a message sent
            // just before `close` was lost in tests), so first wait, bounded, for the remote to
            // acknowledge everything sent.
            let deadline = tokio::time::Instant::now() + CLOSE_FLUSH_LIMIT;
            while matches!(self.dc.outstanding_bytes().await, Ok(n) if n > 0)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // The stream reset tells the remote; give it a moment to go out before the
            // connection (and its sockets) go away.
            let _ = self.dc.close().await;
            let mut state = self.state.clone();
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                state.wait_for(|s| *s == ChanState::Closed),
            )
            .await;
        }
        self.pc.close().await;
    }
}

impl Link for WebRtcLink {
    fn send(&self, frame: Frame) -> BoxFuture<'_, Result<(), LinkError>> {
        Box::pin(self.send_frame(frame))
    }

    fn recv(&self) -> BoxFuture<'_, Option<Frame>> {
        Box::pin(async move { self.frames.lock().await.recv().await })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.close_link())
    }

    fn label(&self) -> &str {
        &self.label
    }
}
