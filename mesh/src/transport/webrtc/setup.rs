//! Connection setup: the offerer's and the answerer's halves.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::webrtc::data_channel::{DataChannel, RTCDataChannelInit};
use ::webrtc::peer_connection::RTCSdpType;
use tokio::sync::{mpsc, watch};

use super::channel::{ChannelParts, spawn_poll, wait_open};
use super::link::WebRtcLink;
use super::peer::{PcGuard, build_pc, gathered_description, handler};
use super::signal::{decode_signal, setup_role};
use super::{WebRtcConfig, WebRtcError, rtc_err};

/// The longest a connection gets setup wake-ups (see [`WebRtcConfig::setup_wake_interval`]):
/// a handshake takes a few round trips, so past this it is slow or dead anyway, and an answer
/// the remote never applies should not keep a driver busy for the whole connect timeout.
const SETUP_WAKE_WINDOW: Duration = Duration::from_secs(5);

fn wake_window(connect_timeout: Duration) -> Duration {
    connect_timeout.min(SETUP_WAKE_WINDOW)
}

// ── Offerer ────────────────────────────────────────────────────────────────────────────────

/// An offer waiting for its answer. Dropping it closes the peer connection.
pub struct PendingOffer {
    pc: PcGuard,
    channel: ChannelParts,
    label: String,
    max_message_size: usize,
    connect_timeout: Duration,
    setup_wake_interval: Option<Duration>,
}

impl fmt::Debug for PendingOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingOffer")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

/// Builds a peer connection with one data channel labelled `label` and returns the complete
/// (non-trickle) offer as `{"type":"offer","sdp":"..."}`.
pub async fn create_offer(
    cfg: &WebRtcConfig,
    label: &str,
) -> Result<(PendingOffer, String), WebRtcError> {
    let (handler, mut rx) = handler(None);
    let pc = build_pc(cfg, handler, false).await?;
    let dc = pc
        .pc
        .create_data_channel(label, Some(RTCDataChannelInit::default()))
        .await
        .map_err(rtc_err)?;
    let channel = spawn_poll(dc, rx.dead.clone(), cfg.recv_queue_frames);
    let offer = pc.pc.create_offer(None).await.map_err(rtc_err)?;
    pc.pc.set_local_description(offer).await.map_err(rtc_err)?;
    let json = gathered_description(
        &*pc.pc,
        &mut rx.gathered,
        cfg.gather_timeout,
        cfg.offer_dtls_client,
    )
    .await?;
    let pending = PendingOffer {
        pc,
        channel,
        label: label.to_owned(),
        max_message_size: cfg.max_message_size,
        connect_timeout: cfg.connect_timeout,
        setup_wake_interval: cfg.setup_wake_interval,
    };
    Ok((pending, json))
}

impl PendingOffer {
    /// The channel label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Applies the remote answer and waits (bounded) for the channel to open. On error the
    /// peer connection is closed.
    pub async fn accept_answer(self, answer_json: &str) -> Result<WebRtcLink, WebRtcError> {
        let answer = decode_signal(answer_json, RTCSdpType::Answer)?;
        self.pc
            .wake
            .start(self.setup_wake_interval, wake_window(self.connect_timeout));
        self.pc
            .pc
            .set_remote_description(answer)
            .await
            .map_err(rtc_err)?;
        let mut state = self.channel.state.clone();
        tokio::time::timeout(self.connect_timeout, wait_open(&mut state))
            .await
            .map_err(|_| WebRtcError::Timeout("the data channel to open"))??;
        Ok(WebRtcLink::new(
            self.pc,
            self.channel,
            self.label,
            self.max_message_size,
        ))
    }
}

// ── Answerer ───────────────────────────────────────────────────────────────────────────────

/// An answered offer waiting for the remote's channel. Dropping it closes the peer connection.
pub struct PendingAnswer {
    pc: PcGuard,
    incoming: mpsc::Receiver<Arc<dyn DataChannel>>,
    dead: watch::Receiver<bool>,
    max_message_size: usize,
    recv_queue_frames: usize,
    connect_timeout: Duration,
}

impl fmt::Debug for PendingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAnswer").finish_non_exhaustive()
    }
}

/// Applies a remote offer (`{"type":"offer","sdp":"..."}`) and returns the complete answer JSON
/// to send back, plus the pending connection.
pub async fn accept_offer(
    cfg: &WebRtcConfig,
    offer_json: &str,
) -> Result<(String, PendingAnswer), WebRtcError> {
    let offer = decode_signal(offer_json, RTCSdpType::Offer)?;
    let remote_active = setup_role(&offer.sdp) == Some("active");
    let (tx, incoming) = mpsc::channel(4);
    let (handler, mut rx) = handler(Some(tx));
    let pc = build_pc(cfg, handler, remote_active).await?;
    pc.pc
        .set_remote_description(offer)
        .await
        .map_err(|e| WebRtcError::InvalidSignal(e.to_string()))?;
    let answer = pc.pc.create_answer(None).await.map_err(rtc_err)?;
    pc.pc.set_local_description(answer).await.map_err(rtc_err)?;
    let json = gathered_description(&*pc.pc, &mut rx.gathered, cfg.gather_timeout, false).await?;
    // The offerer can reach us once it has this answer: the handshake starts now.
    pc.wake
        .start(cfg.setup_wake_interval, wake_window(cfg.connect_timeout));
    let pending = PendingAnswer {
        pc,
        incoming,
        dead: rx.dead,
        max_message_size: cfg.max_message_size,
        recv_queue_frames: cfg.recv_queue_frames,
        connect_timeout: cfg.connect_timeout,
    };
    Ok((json, pending))
}

impl PendingAnswer {
    /// Waits (bounded) for the remote's data channel to arrive and open.
    pub async fn connected(mut self) -> Result<WebRtcLink, WebRtcError> {
        let limit = self.connect_timeout;
        let mut dead = self.dead.clone();
        let (channel, label) = tokio::time::timeout(limit, async {
            let dc = tokio::select! {
                dc = self.incoming.recv() => dc.ok_or(WebRtcError::Closed)?,
                _ = dead.wait_for(|d| *d) => return Err(WebRtcError::Closed),
            };
            let label = dc.label().await.map_err(rtc_err)?;
            let channel = spawn_poll(dc, self.dead.clone(), self.recv_queue_frames);
            let mut state = channel.state.clone();
            wait_open(&mut state).await?;
            Ok((channel, label))
        })
        .await
        .map_err(|_| WebRtcError::Timeout("the remote data channel to open"))??;
        Ok(WebRtcLink::new(
            self.pc,
            channel,
            label,
            self.max_message_size,
        ))
    }
}
