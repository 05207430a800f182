//! One webrtc-rs peer connection: building it, its event handler, closing it once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::webrtc::data_channel::DataChannel;
use ::webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use ::webrtc::runtime::Runtime;
use tokio::sync::{mpsc, watch};

use super::runtime::{BufRuntime, WakeCap};
use super::signal::encode_signal;
use super::{WebRtcConfig, WebRtcError, rtc_err};

/// Receives peer-connection events; must never block (it runs on the connection's driver).
pub(super) struct Handler {
    gathered: watch::Sender<bool>,
    /// Set once the connection is `Failed` or `Closed`.
    dead: watch::Sender<bool>,
    /// Answerer only: remote channels, handed to [`super::PendingAnswer::connected`].
    incoming: Option<mpsc::Sender<Arc<dyn DataChannel>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            self.dead.send_replace(true);
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // Never await here. Only the first channel is used; P2PT opens one per connection.
        if let Some(tx) = &self.incoming {
            let _ = tx.try_send(dc);
        }
    }
}

/// The receiving ends of a [`Handler`]'s signals.
pub(super) struct HandlerRx {
    pub(super) gathered: watch::Receiver<bool>,
    pub(super) dead: watch::Receiver<bool>,
}

pub(super) fn handler(
    incoming: Option<mpsc::Sender<Arc<dyn DataChannel>>>,
) -> (Arc<Handler>, HandlerRx) {
    let (gathered, gathered_rx) = watch::channel(false);
    let (dead, dead_rx) = watch::channel(false);
    (
        Arc::new(Handler {
            gathered,
            dead,
            incoming,
        }),
        HandlerRx {
            gathered: gathered_rx,
            dead: dead_rx,
        },
    )
}

/// Owns a peer connection and closes it once: explicitly, or from a spawned task on drop.
pub(super) struct PcGuard {
    pub(super) pc: Arc<dyn PeerConnection>,
    /// The connection's setup-time driver wake-ups; ended once the channel is open.
    pub(super) wake: Arc<WakeCap>,
    closed: AtomicBool,
}

impl PcGuard {
    pub(super) async fn close(&self) {
        self.wake.end();
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.pc.close().await;
        }
    }
}

impl Drop for PcGuard {
    fn drop(&mut self) {
        self.wake.end();
        if !self.closed.swap(true, Ordering::AcqRel)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let pc = self.pc.clone();
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// Builds a peer connection; `answer_as_dtls_server`: see [`WebRtcConfig::setting_engine`].
pub(super) async fn build_pc(
    cfg: &WebRtcConfig,
    handler: Arc<Handler>,
    answer_as_dtls_server: bool,
) -> Result<PcGuard, WebRtcError> {
    let wake = Arc::new(WakeCap::default());
    let runtime: Arc<dyn Runtime> =
        Arc::new(BufRuntime::new(cfg.socket_buffer_bytes, wake.clone()));
    let pc = PeerConnectionBuilder::new()
        .with_configuration(cfg.rtc_configuration())
        .with_setting_engine(cfg.setting_engine(answer_as_dtls_server))
        .with_handler(handler)
        .with_runtime(runtime)
        .with_udp_addrs(cfg.bind_addrs.clone())
        .with_data_channel_send_buffer_limit(cfg.send_buffer_limit)
        .build()
        .await
        .map_err(rtc_err)?;
    Ok(PcGuard {
        pc: Arc::new(pc),
        wake,
        closed: AtomicBool::new(false),
    })
}

/// Waits (bounded) for ICE gathering, then returns the local description as signal JSON.
pub(super) async fn gathered_description(
    pc: &dyn PeerConnection,
    gathered: &mut watch::Receiver<bool>,
    limit: Duration,
    dtls_active_offer: bool,
) -> Result<String, WebRtcError> {
    // On timeout, go on with whatever candidates exist, as simple-peer does.
    let _ = tokio::time::timeout(limit, gathered.wait_for(|done| *done)).await;
    let desc = pc.local_description().await.ok_or_else(|| {
        WebRtcError::WebRtc("no local description after set_local_description".into())
    })?;
    encode_signal(&desc, dtls_active_offer)
}
