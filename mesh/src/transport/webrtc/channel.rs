//! The task that polls one data channel into a link's bounded receive queue.

use std::sync::Arc;
use std::time::Duration;

use ::webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelState};
use tokio::sync::{mpsc, watch};

use super::WebRtcError;
use crate::transport::Frame;

/// After the connection died: how long to wait for each further queued channel event.
const DRAIN_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChanState {
    Connecting,
    Open,
    Closed,
}

/// Aborts a Tokio task when dropped.
#[derive(Debug)]
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) struct ChannelParts {
    pub(super) dc: Arc<dyn DataChannel>,
    pub(super) state: watch::Receiver<ChanState>,
    pub(super) frames: mpsc::Receiver<Frame>,
    pub(super) task: AbortOnDrop,
}

/// Spawns the task that polls `dc` into a bounded frame queue. It ends (dropping the queue's
/// sender, so `recv` returns `None` once drained) when the channel closes or the peer
/// connection fails or closes.
pub(super) fn spawn_poll(
    dc: Arc<dyn DataChannel>,
    mut dead: watch::Receiver<bool>,
    queue: usize,
) -> ChannelParts {
    let (state_tx, state) = watch::channel(ChanState::Connecting);
    let (frame_tx, frames) = mpsc::channel(queue.max(1));
    let task_dc = dc.clone();
    let task = tokio::spawn(async move {
        let dc = task_dc;
        if let Ok(RTCDataChannelState::Open) = dc.ready_state().await {
            state_tx.send_replace(ChanState::Open);
        }
        // Once the connection is dead, events already queued on the channel (messages that
        // arrived before the close) are still delivered; the stream may then never end by
        // itself, so each further poll is bounded.
        let mut draining = false;
        loop {
            let event = if draining {
                tokio::time::timeout(DRAIN_POLL, dc.poll())
                    .await
                    .unwrap_or(None)
            } else {
                tokio::select! {
                    biased;
                    ev = dc.poll() => ev,
                    _ = dead.wait_for(|d| *d) => {
                        draining = true;
                        continue;
                    }
                }
            };
            match event {
                Some(DataChannelEvent::OnOpen) => {
                    state_tx.send_replace(ChanState::Open);
                }
                Some(DataChannelEvent::OnMessage(msg)) => {
                    // `Vec::from(BytesMut)` keeps the reassembled message's allocation when
                    // nothing else shares it, instead of allocating and copying like `to_vec`.
                    let data = Vec::from(msg.data);
                    let frame = if msg.is_string {
                        match String::from_utf8(data) {
                            Ok(s) => Frame::Text(s),
                            // Invalid UTF-8 in a text message: deliver the bytes rather than lose them.
                            Err(e) => Frame::Binary(e.into_bytes()),
                        }
                    } else {
                        Frame::Binary(data)
                    };
                    // Waits while the queue is full: backpressure down to SCTP's window. Not
                    // raced against `dead`, so nothing received is dropped; the task ends when
                    // the link (the queue's receiver) is dropped.
                    if frame_tx.send(frame).await.is_err() {
                        break;
                    }
                }
                Some(DataChannelEvent::OnClose) | None => break,
                Some(_) => {}
            }
        }
        state_tx.send_replace(ChanState::Closed);
    });
    ChannelParts {
        dc,
        state,
        frames,
        task: AbortOnDrop(task),
    }
}

pub(super) async fn wait_open(state: &mut watch::Receiver<ChanState>) -> Result<(), WebRtcError> {
    match state.wait_for(|s| *s != ChanState::Connecting).await {
        Ok(s) if *s == ChanState::Open => Ok(()),
        _ => Err(WebRtcError::Closed),
    }
}
