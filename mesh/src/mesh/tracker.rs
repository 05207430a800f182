//! One tracker task: the WebSocket to one tracker (`ws://` or `wss://`), the sans-IO
//! [`TrackerClient`] that decides announces, backoff and offer expiry, and the connector calls
//! that turn relayed offers and answers into links for the core.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::core::{NetMsg, clock_now, sleep_until};
use super::{MeshError, MeshEvent};
use crate::signal::{Id20, Output, TrackerClient};
use crate::transport::connector::{AwaitingAnswer, Connector};
use crate::transport::webrtc;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The TLS client settings used for `wss://` trackers when none are given: the webpki roots,
/// ring crypto (the provider the workspace builds).
pub(crate) fn default_tls() -> Result<Arc<rustls::ClientConfig>, MeshError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| MeshError::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(cfg))
}

enum Internal {
    Offers(Vec<(Id20, String, Box<dyn AwaitingAnswer>)>),
    Answer(Id20, Id20, String),
    Warning(String),
}

pub(crate) struct TrackerTask {
    pub(crate) url: String,
    pub(crate) client: TrackerClient,
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) rng: StdRng,
    pub(crate) core: mpsc::Sender<NetMsg>,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// Connections being set up at once (answers awaiting open, offers awaiting their link).
    pub(crate) max_connecting: usize,
}

impl TrackerTask {
    pub(crate) async fn run(mut self) {
        let (itx, mut irx) = mpsc::channel::<Internal>(64);
        let connecting = Arc::new(Semaphore::new(self.max_connecting));
        let mut ws: Option<Ws> = None;
        let mut connect_at: Option<Instant> = None;
        let mut offers: HashMap<Id20, Box<dyn AwaitingAnswer>> = HashMap::new();
        let mut announced = false;
        loop {
            // Outputs first: they may change the socket.
            while let Some(out) = self.client.poll_output() {
                match out {
                    Output::Connect(delay) => {
                        if let Some(mut old) = ws.take() {
                            let _ = old.close(None).await;
                        }
                        connect_at = Some(clock_now() + delay);
                    }
                    Output::Send(text) => {
                        if let Some(socket) = ws.as_mut() {
                            if let Err(e) = socket.send(WsMessage::Text(text.into())).await {
                                self.warn(format!("send failed: {e}"));
                                ws = None;
                                self.client.disconnected(clock_now(), &mut self.rng);
                            }
                        }
                    }
                    Output::NeedOffers(n) => {
                        let labels: Vec<(Id20, String)> = (0..n)
                            .map(|_| {
                                (
                                    Id20::random(&mut self.rng),
                                    webrtc::random_label(&mut self.rng),
                                )
                            })
                            .collect();
                        let (connector, itx) = (self.connector.clone(), itx.clone());
                        tokio::spawn(async move {
                            let made = futures_util::future::join_all(labels.into_iter().map(
                                |(id, label)| {
                                    let offer = connector.offer(label);
                                    async move { offer.await.map(|(json, p)| (id, json, p)) }
                                },
                            ))
                            .await;
                            let mut ok = Vec::new();
                            for r in made {
                                match r {
                                    Ok(o) => ok.push(o),
                                    Err(e) => {
                                        let _ = itx
                                            .send(Internal::Warning(format!("offer failed: {e}")))
                                            .await;
                                    }
                                }
                            }
                            let _ = itx.send(Internal::Offers(ok)).await;
                        });
                    }
                    Output::Offer {
                        from_peer,
                        offer_id,
                        offer,
                    } => {
                        // Each relayed offer starts a connection; a flood of them must not.
                        let Ok(permit) = connecting.clone().try_acquire_owned() else {
                            self.warn("too many connections being set up; offer ignored".into());
                            continue;
                        };
                        let (answer, itx, core) =
                            (self.connector.answer(offer), itx.clone(), self.core.clone());
                        tokio::spawn(async move {
                            let _permit = permit;
                            let pending = match answer.await {
                                Ok((answer, pending)) => {
                                    let _ = itx
                                        .send(Internal::Answer(from_peer, offer_id, answer))
                                        .await;
                                    pending
                                }
                                Err(e) => {
                                    let _ = itx
                                        .send(Internal::Warning(format!("answer failed: {e}")))
                                        .await;
                                    return;
                                }
                            };
                            match pending.connected().await {
                                Ok(link) => {
                                    let _ =
                                        core.send(NetMsg::NewLink(from_peer.to_hex(), link)).await;
                                }
                                Err(e) => {
                                    let _ = itx
                                        .send(Internal::Warning(format!("connect failed: {e}")))
                                        .await;
                                }
                            }
                        });
                    }
                    Output::Answer {
                        from_peer,
                        offer_id,
                        answer,
                    } => {
                        if let Some(pending) = offers.remove(&offer_id) {
                            let (itx, core) = (itx.clone(), self.core.clone());
                            tokio::spawn(async move {
                                match pending.accept(answer).await {
                                    Ok(link) => {
                                        let _ = core
                                            .send(NetMsg::NewLink(from_peer.to_hex(), link))
                                            .await;
                                    }
                                    Err(e) => {
                                        let _ = itx
                                            .send(Internal::Warning(format!("connect failed: {e}")))
                                            .await;
                                    }
                                }
                            });
                        }
                    }
                    Output::ExpireOffer(id) => {
                        offers.remove(&id);
                    }
                    Output::TrackerUpdate { .. } => {
                        if !announced {
                            announced = true;
                            let url = self.url.clone();
                            self.event(MeshEvent::TrackerConnected { url });
                        }
                    }
                    Output::Warning(message) => self.warn(message),
                }
            }
            if *self.stop.borrow() {
                self.client.stop(clock_now());
                while let Some(out) = self.client.poll_output() {
                    if let (Output::Send(text), Some(socket)) = (out, ws.as_mut()) {
                        let _ = socket.send(WsMessage::Text(text.into())).await;
                    }
                }
                if let Some(mut socket) = ws.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                }
                return;
            }
            // Connect when due (bounded; the client decides the backoff).
            if ws.is_none() && connect_at.is_some_and(|at| at <= clock_now()) {
                connect_at = None;
                let connector = self
                    .url
                    .starts_with("wss://")
                    .then(|| tokio_tungstenite::Connector::Rustls(self.tls.clone()));
                let attempt = tokio::time::timeout(
                    self.connect_timeout,
                    tokio_tungstenite::connect_async_tls_with_config(
                        self.url.as_str(),
                        None,
                        true,
                        connector,
                    ),
                )
                .await;
                match attempt {
                    Ok(Ok((socket, _))) => {
                        ws = Some(socket);
                        announced = false;
                        self.client.connected(clock_now());
                    }
                    Ok(Err(e)) => {
                        self.warn(format!("connect failed: {e}"));
                        self.client.disconnected(clock_now(), &mut self.rng);
                    }
                    Err(_) => {
                        self.warn("connect timed out".into());
                        self.client.disconnected(clock_now(), &mut self.rng);
                    }
                }
                continue;
            }
            let wake = match (connect_at, self.client.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                frame = next_frame(&mut ws) => match frame {
                    Some(Ok(WsMessage::Text(text))) => self.client.frame(clock_now(), text.as_str()),
                    Some(Ok(WsMessage::Binary(data))) => {
                        self.client.frame(clock_now(), &String::from_utf8_lossy(&data));
                    }
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                        ws = None;
                        self.warn("tracker socket closed".into());
                        self.client.disconnected(clock_now(), &mut self.rng);
                    }
                    Some(Ok(_)) => {}
                },
                msg = irx.recv() => match msg {
                    Some(Internal::Offers(made)) => {
                        let mut list = Vec::with_capacity(made.len());
                        for (id, json, pending) in made {
                            list.push((id, json));
                            offers.insert(id, pending);
                        }
                        self.client.offers_ready(clock_now(), list);
                    }
                    Some(Internal::Answer(to, offer_id, answer)) => {
                        self.client.answer_ready(clock_now(), to, offer_id, &answer);
                    }
                    Some(Internal::Warning(message)) => self.warn(message),
                    None => {}
                },
                () = sleep_until(wake) => self.client.tick(clock_now()),
                _ = self.stop.changed() => {}
            }
        }
    }

    fn warn(&self, message: String) {
        let url = self.url.clone();
        self.event(MeshEvent::TrackerWarning { url, message });
    }

    /// Passes an event to the core without waiting: when the application lags so far that
    /// the core's input is full, tracker news is dropped rather than stalling signalling.
    fn event(&self, event: MeshEvent) {
        let _ = self.core.try_send(NetMsg::Event(Box::new(event)));
    }
}

async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(socket) => socket.next().await,
        None => std::future::pending().await,
    }
}
