//! One load connection: connect (from a chosen 127.x source address, ws:// or wss://), then
//! either hold the socket idle or run the announce/answer loop until told to stop.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ghostmesh_tracker::wire::Id20;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::msg::{self, Kind, Sdp};
use super::stats::Counters;
use super::{Mode, Shared};

/// A connected load socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where and how connections connect.
#[derive(Debug, Clone)]
pub struct Dial {
    /// The tracker's URL (`ws://` or `wss://`, loopback host).
    pub url: String,
    /// Its socket address.
    pub addr: SocketAddr,
    /// TLS.
    pub tls: Tls,
    /// Source addresses, used round-robin (127.0.0.1, 127.0.0.2, ... for many connections).
    pub sources: Vec<IpAddr>,
    /// tungstenite's read buffer per connection.
    pub read_buffer: usize,
}

/// TLS for the connections.
#[derive(Debug, Clone)]
pub enum Tls {
    /// `ws://`.
    Off,
    /// `wss://`, certificates checked against the webpki roots.
    Verify,
    /// `wss://`, any certificate accepted (self-signed test trackers).
    Insecure(Arc<rustls::ClientConfig>),
}

/// Opens connection number `i`.
pub async fn connect(dial: &Dial, i: usize) -> Result<Ws, String> {
    let socket = if dial.addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    if !dial.sources.is_empty() {
        let src = dial.sources[i % dial.sources.len()];
        socket
            .bind(SocketAddr::new(src, 0))
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    let tcp = socket
        .connect(dial.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", dial.addr))?;
    let _ = tcp.set_nodelay(true);
    let cfg = WebSocketConfig::default()
        .read_buffer_size(dial.read_buffer)
        .write_buffer_size(0);
    let connector = match &dial.tls {
        Tls::Off => Some(Connector::Plain),
        Tls::Verify => None, // tokio-tungstenite's rustls with the webpki roots
        Tls::Insecure(c) => Some(Connector::Rustls(c.clone())),
    };
    let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
        dial.url.as_str(),
        tcp,
        Some(cfg),
        connector,
    )
    .await
    .map_err(|e| format!("WebSocket handshake: {e}"))?;
    Ok(ws)
}

/// A rustls client config that accepts any server certificate (self-signed test trackers).
pub fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Verifies signatures (the handshake stays real TLS) but trusts any certificate.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Connection `i`: connect under the shared handshake limit, then run the mode until `stop`.
pub async fn run(i: usize, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let ws = {
        let Ok(_permit) = shared.connect_limit.acquire().await else {
            return;
        };
        if *stop.borrow() {
            return;
        }
        let timeout = shared.cfg.connect_timeout;
        match tokio::time::timeout(timeout, connect(&shared.dial, i)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                shared.connect_failed(e);
                return;
            }
            Err(_) => {
                shared.connect_failed(format!("no connection within {timeout:?}"));
                return;
            }
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    match shared.cfg.mode {
        Mode::Idle => idle(ws, &shared, &mut stop).await,
        Mode::Load => load(i, ws, &shared, &mut stop).await,
    }
    shared.open_now.fetch_sub(1, Ordering::Relaxed);
}

/// Holds the socket open, reading (and so answering pings) until `stop`.
async fn idle(mut ws: Ws, shared: &Shared, stop: &mut watch::Receiver<bool>) {
    shared.open_now.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(_)) => {}
                _ => break,
            },
            _ = stop.wait_for(|&s| s) => return,
        }
    }
    disconnected(shared, stop);
}

/// One swarm this connection's peer is in.
struct Membership {
    hash: Id20,
    left: u64,
    started: bool,
}

/// The announce/answer loop: keeps `in_flight` announces outstanding, answers every relayed
/// offer (or the configured share), records announce latency while measuring.
async fn load(i: usize, ws: Ws, shared: &Shared, stop: &mut watch::Receiver<bool>) {
    shared.open_now.fetch_add(1, Ordering::Relaxed);
    let cfg = &shared.cfg;
    let c = &shared.counters;
    let mut rng =
        SmallRng::seed_from_u64(cfg.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let peer_id = Id20::random(&mut rng);
    let sdp = Sdp::new(&mut rng, cfg.sdp_bytes);
    let mut swarms: Vec<Membership> = shared
        .popularity
        .pick_distinct(&mut rng, cfg.swarms_per_conn)
        .into_iter()
        .map(|h| Membership {
            hash: shared.hashes[h],
            left: if rng.random_bool(cfg.seeder_ratio) {
                0
            } else {
                1 << 20
            },
            started: false,
        })
        .collect();
    let (mut sink, mut stream) = ws.split();
    let mut pending: VecDeque<(Id20, Instant)> = VecDeque::new();
    let mut next_swarm = 0usize;
    let mut sent = 0u64;
    let mut next_send = Instant::now();
    let mut timer = pin!(tokio::time::sleep(Duration::ZERO));

    let send = |text: String| Message::text(text);
    loop {
        // Top up the window of announces (and the occasional scrape).
        let now = Instant::now();
        while pending.len() < cfg.in_flight && now >= next_send && !swarms.is_empty() {
            sent += 1;
            if cfg.scrape_every > 0 && sent % cfg.scrape_every == 0 {
                let hashes: Vec<Id20> = (0..5)
                    .map(|_| shared.hashes[shared.popularity.pick(&mut rng)])
                    .collect();
                if sink.send(send(msg::scrape(&hashes))).await.is_err() {
                    return disconnected(shared, stop);
                }
                Counters::inc(&c.scrapes_sent);
                continue;
            }
            let n_swarms = swarms.len();
            let m = &mut swarms[next_swarm % n_swarms];
            next_swarm += 1;
            let text = msg::announce(
                &mut rng, &m.hash, &peer_id, m.left, !m.started, cfg.offers, &sdp,
            );
            m.started = true;
            pending.push_back((m.hash, Instant::now()));
            if sink.send(send(text)).await.is_err() {
                return disconnected(shared, stop);
            }
            Counters::inc(&c.announces_sent);
            if !cfg.announce_interval.is_zero() {
                next_send = Instant::now() + cfg.announce_interval;
            }
        }
        // Wake for the oldest reply's timeout, or the next paced announce.
        let wake = match pending.front() {
            Some((_, t)) => *t + cfg.reply_timeout,
            None if !cfg.announce_interval.is_zero() => next_send,
            None => Instant::now() + cfg.reply_timeout,
        };
        timer.as_mut().reset(tokio::time::Instant::from_std(wake));
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = &mut timer => {
                if let Some((_, t)) = pending.front()
                    && t.elapsed() >= cfg.reply_timeout
                {
                    pending.pop_front();
                    Counters::inc(&c.announce_timeouts);
                }
                continue;
            }
            _ = stop.wait_for(|&s| s) => return,
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                Ok(s) => s.into(),
                Err(_) => {
                    Counters::inc(&c.unparsable);
                    continue;
                }
            },
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return disconnected(shared, stop),
        };
        let Ok(m) = serde_json::from_str::<msg::Incoming<'_>>(text.as_str()) else {
            Counters::inc(&c.unparsable);
            continue;
        };
        match m.kind() {
            Kind::AnnounceReply(h) | Kind::Error(h @ Some(_)) => {
                if matches!(m.kind(), Kind::Error(_)) {
                    Counters::inc(&c.errors_in);
                    shared.note_error(m.failure.as_deref().unwrap_or(""));
                } else {
                    Counters::inc(&c.announce_replies);
                }
                // Replies come back in request order: earlier unmatched announces were dropped.
                if let Some(h) = h
                    && let Some(pos) = pending.iter().position(|(p, _)| *p == h)
                {
                    for _ in 0..pos {
                        pending.pop_front();
                        Counters::inc(&c.announce_replies_skipped);
                    }
                    if let Some((_, t0)) = pending.pop_front()
                        && shared.measuring.load(Ordering::Relaxed)
                    {
                        shared.latency.record(t0.elapsed().as_micros() as u64);
                    }
                }
            }
            Kind::Error(None) => {
                Counters::inc(&c.errors_in);
                shared.note_error(m.failure.as_deref().unwrap_or(""));
            }
            Kind::Offer => {
                Counters::inc(&c.offers_in);
                let (Some(ih), Some(from), Some(oid)) = (m.info_hash, m.peer_id, m.offer_id) else {
                    continue;
                };
                if cfg.answer_ratio >= 1.0 || rng.random_bool(cfg.answer_ratio.max(0.0)) {
                    let text = msg::answer(ih.get(), &peer_id, from.get(), oid.get(), &sdp);
                    if sink.send(send(text)).await.is_err() {
                        return disconnected(shared, stop);
                    }
                    Counters::inc(&c.answers_sent);
                }
            }
            Kind::Answer => Counters::inc(&c.answers_in),
            Kind::Scrape => Counters::inc(&c.scrape_replies),
            Kind::Other => Counters::inc(&c.unparsable),
        }
    }
}

fn disconnected(shared: &Shared, stop: &watch::Receiver<bool>) {
    if !*stop.borrow() {
        Counters::inc(&shared.counters.disconnects);
    }
}

/// Zipf popularity over `n` info_hashes: rank k (0-based) has weight 1 / (k + 1)^s.
#[derive(Debug)]
pub struct Popularity {
    cdf: Vec<f64>,
}

impl Popularity {
    /// `n` ≥ 1 ranks, exponent `s` ≥ 0 (0 is uniform).
    pub fn zipf(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = (0..n.max(1))
            .map(|k| {
                acc += 1.0 / ((k + 1) as f64).powf(s);
                acc
            })
            .collect();
        Popularity { cdf }
    }

    /// One rank.
    pub fn pick(&self, rng: &mut SmallRng) -> usize {
        let total = *self.cdf.last().unwrap_or(&1.0);
        let u = rng.random::<f64>() * total;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }

    /// `k` distinct ranks (fewer if there are fewer ranks), bounded attempts.
    pub fn pick_distinct(&self, rng: &mut SmallRng, k: usize) -> Vec<usize> {
        let k = k.min(self.cdf.len());
        let mut out: Vec<usize> = Vec::with_capacity(k);
        let mut tries = 0;
        while out.len() < k && tries < 64 * k + 64 {
            tries += 1;
            let r = self.pick(rng);
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    /// The share of picks that land on the most popular rank.
    pub fn top_share(&self) -> f64 {
        self.cdf[0] / self.cdf.last().copied().unwrap_or(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let p = Popularity::zipf(1000, 1.0);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut top = 0;
        for _ in 0..10_000 {
            let r = p.pick(&mut rng);
            assert!(r < 1000);
            if r == 0 {
                top += 1;
            }
        }
        // 1 / H(1000) = 13.4 %
        assert!((1000..1700).contains(&top), "top {top}");
        let d = p.pick_distinct(&mut rng, 5);
        assert_eq!(d.len(), 5);
        let one = Popularity::zipf(1, 1.0);
        assert_eq!(one.pick_distinct(&mut rng, 5), vec![0]);
    }
}
